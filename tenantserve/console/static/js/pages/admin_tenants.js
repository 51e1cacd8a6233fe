// Operator: every tenant, and a form to create one.
import { $, api, badge, fillTable, filledFields, fmtTime, h, onSubmit, prefix, showNotice, startPage } from "../api.js";

const STATUS_BADGE = { active: "ok", suspended: "bad" };

async function load() {
  const { data } = await api("/admin/tenants");
  fillTable($("#tenants tbody"), data, [
    (t) => h("a", { href: `${prefix}/admin/tenants/${encodeURIComponent(t.id)}` }, t.name),
    (t) => h("code", {}, t.id),
    (t) => t.tier,
    (t) => t.region,
    (t) => badge(t.status, STATUS_BADGE[t.status] || ""),
    (t) => fmtTime(t.created_at),
  ], "No tenants yet.");
}

startPage("admin", async () => {
  onSubmit($("#create-form"), async (form) => {
    const tenant = await api("/admin/tenants", { method: "POST", json: filledFields(form) });
    $("#create-form").reset();
    showNotice(`Tenant ${tenant.name} created (${tenant.id}).`);
    await load();
  });
  await load();
});
