// Operator: alerts — SLO burn rates now, and the operator event log newest first.
import { $, api, badge, fillTable, fmtTime, h, prefix, showError, startPage } from "../api.js";

// Each event kind's severity: [label, badge class].
const SEVERITY = {
  slo_burn_rate: ["critical", "bad"],
  adapter_failed: ["critical", "bad"],
  noisy_neighbor: ["warning", "warn"],
  quota_threshold_reached: ["warning", "warn"],
  soft_quota_exceeded: ["warning", "warn"],
  slo_burn_rate_resolved: ["resolved", "ok"],
};
const severity = (kind) => SEVERITY[kind] || ["info", ""];
const tenantLink = (id) => (id ? h("a", { href: `${prefix}/admin/tenants/${encodeURIComponent(id)}` }, h("code", {}, id)) : "—");

function detailsText(details) {
  return Object.entries(details || {}).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ") || "—";
}

async function load() {
  const [events, slo] = await Promise.all([api("/admin/events"), api("/admin/slo")]);
  const burning = slo.data.flatMap((s) => s.alerts.map((a) => ({ ...a, tenant_id: s.tenant_id, tier: s.tier })));
  burning.sort((a, b) => b.burn_rate - a.burn_rate);
  fillTable($("#burning tbody"), burning, [
    (a) => (a.rule === "page" ? badge("critical", "bad") : badge("warning", "warn")),
    (a) => tenantLink(a.tenant_id),
    (a) => a.tier,
    (a) => a.sli,
    (a) => a.rule,
    (a) => h("span", { class: "num" }, `×${a.burn_rate}`),
  ], "No error budget is burning too fast.");
  const newest = [...events.data].sort((a, b) => b.created_at - a.created_at || b.id - a.id);
  fillTable($("#events tbody"), newest, [
    (e) => fmtTime(e.created_at),
    (e) => badge(...severity(e.kind)),
    (e) => h("code", {}, e.kind),
    (e) => tenantLink(e.tenant_id),
    (e) => detailsText(e.details),
  ], "No operator events.");
}

startPage("admin", async () => {
  $("#refresh").addEventListener("click", () => load().catch(showError));
  await load();
});
