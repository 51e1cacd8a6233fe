// Operator: the serving pools and their replicas (load, KV cache, adapters), refreshed.
import { $, api, badge, fillTable, fmtInt, fmtTime, h, meterBar, showError, startPage } from "../api.js";

const REFRESH_MS = 5000;
const TIERS = ["premium", "standard", "free"];
let timer = null;
let loading = false;

function upBadge(up) {
  if (up === null || up === undefined) return badge("external", "");
  return up ? badge("up", "ok") : badge("down", "bad");
}

function kvCell(kv) {
  if (!kv) return "—";
  const percent = Math.round(kv.usage * 100);
  return h("div", {}, meterBar(kv.usage, "KV cache usage"),
    h("span", { class: "muted" }, `${percent} % · ${fmtInt(kv.used_blocks)} used, ${fmtInt(kv.cached_blocks)} cached, ${fmtInt(kv.free_blocks)} free of ${fmtInt(kv.blocks)} blocks`));
}

function adaptersCell(a) {
  if (!a) return "—";
  const counts = `${a.active} hot (${a.pinned} in use) · ${a.host} in host memory · ${a.loading} loading` + (a.failed ? ` · ${a.failed} failed` : "");
  const hot = a.hot || [];
  if (!hot.length) return counts;
  // The hot adapters, most recently used first.
  return h("div", {}, h("span", {}, counts),
    h("ul", { class: "hot-adapters", attrs: { "aria-label": "Hot adapters" } }, hot.map((id) => h("li", {}, h("code", {}, id)))));
}

function poolCard(pool) {
  const table = h("table", {},
    h("thead", {}, h("tr", {}, ["Replica", "State", "Running", "Waiting", "KV cache", "Adapters", "Restarts"].map((t) => h("th", {}, t)))),
    h("tbody"));
  fillTable(table.querySelector("tbody"), pool.replicas, [
    (r) => h("code", {}, r.id),
    (r) => upBadge(r.up),
    (r) => fmtInt(r.running),
    (r) => fmtInt(r.waiting),
    (r) => kvCell(r.kv_cache),
    (r) => adaptersCell(r.adapters),
    (r) => fmtInt(r.restarts),
  ], "No replicas.");
  const q = pool.queue;
  const waiting = TIERS.map((t) => `${t} ${q.waiting[t] ?? 0}`).join(" · ");
  return h("section", { class: "card pool", attrs: { "aria-label": `Pool ${pool.name}` } },
    h("div", { class: "pool-head" }, h("h2", {}, pool.name), badge(pool.kind), badge(pool.region)),
    h("dl", { class: "facts" },
      h("dt", {}, "Models"), h("dd", {}, pool.models.join(", ") || "—"),
      h("dt", {}, "Reserved for"), h("dd", {}, pool.reserved_for.length ? pool.reserved_for.join(", ") : "shared"),
      h("dt", {}, "In flight"), h("dd", {}, fmtInt(q.in_flight)),
      h("dt", {}, "Queued"), h("dd", {}, waiting),
      h("dt", {}, "Demoted tenants"), h("dd", {}, fmtInt(q.demoted_tenants))),
    h("h3", {}, "Replicas"),
    h("div", { class: "table-wrap" }, table));
}

async function load() {
  if (loading) return;
  loading = true;
  try {
    const { data } = await api("/admin/pools");
    $("#pools").replaceChildren(...(data.length ? data.map(poolCard) : [h("p", { class: "muted" }, "No pools.")]));
    $("#updated").textContent = `Updated ${fmtTime(new Date().toISOString())}`;
  } finally {
    loading = false;
  }
}

function schedule(on) {
  clearInterval(timer);
  timer = on ? setInterval(() => load().catch(showError), REFRESH_MS) : null;
}

startPage("admin", async () => {
  $("#refresh").addEventListener("click", () => load().catch(showError));
  $("#auto-refresh").addEventListener("change", (event) => schedule(event.target.checked));
  await load();
  schedule($("#auto-refresh").checked);
});
