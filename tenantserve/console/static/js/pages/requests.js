// Requests: the tenant's request records, filtered by status and time window, paged
// with the API's cursor; each links to its detail page.
import { $, api, badge, fillTable, fmtInt, fmtMs, fmtTime, h, onSubmit, prefix, startPage } from "../api.js";

const PAGE_SIZE = 50;
const STATUS_KIND = { completed: "ok", cancelled: "warn", error: "bad", rejected: "bad" };
let query = null;
let cursor = null;

startPage("tenant", async () => {
  const form = $("#filter-form");
  const params = new URLSearchParams(location.search);
  if (params.has("status")) form.elements.status.value = params.get("status");
  if (params.has("window")) form.elements.window.value = params.get("window");
  onSubmit(form, async (data) => {
    const next = new URLSearchParams();
    for (const name of ["status", "window"]) next.set(name, String(data.get(name) || ""));
    history.replaceState(null, "", `${location.pathname}?${next}`);
    await first(data);
  });
  $("#more").addEventListener("click", async (event) => {
    event.target.disabled = true;
    try {
      await more();
    } finally {
      event.target.disabled = false;
    }
  });
  await first(new FormData(form));
});

function queryOf(data) {
  const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
  const status = String(data.get("status") || "");
  if (status) q.set("status", status);
  const window = Number(data.get("window") || 0);
  if (window) q.set("start", new Date(Date.now() - window * 1000).toISOString());
  return q;
}

async function first(data) {
  query = queryOf(data);
  cursor = null;
  $("#requests-table tbody").replaceChildren();
  await more();
}

async function more() {
  const q = new URLSearchParams(query);
  if (cursor) q.set("cursor", cursor);
  const page = await api(`/v1/requests?${q}`);
  const tbody = $("#requests-table tbody");
  const scratch = h("tbody");
  const hadRows = tbody.querySelector("tr:not(:has(td.empty))");
  if (!page.data.length && !hadRows) {
    fillTable(tbody, [], [], "No requests in this window.");
  } else {
    fillTable(scratch, page.data, [
      (r) => h("a", { href: `${prefix}/requests/${encodeURIComponent(r.id)}` }, h("code", {}, r.id)),
      (r) => fmtTime(r.started_at),
      (r) => badge(r.status, STATUS_KIND[r.status] || ""),
      (r) => (r.adapter ? `${r.adapter} (${r.model})` : r.model || "—"),
      (r) => fmtInt(r.usage?.prompt_tokens),
      (r) => fmtInt(r.usage?.completion_tokens),
      (r) => fmtMs(r.timings?.ttft_ms),
      (r) => fmtMs(r.timings?.total_ms),
    ]);
    for (const row of scratch.rows) for (const i of [4, 5, 6, 7]) row.cells[i]?.classList.add("num");
    tbody.append(...scratch.rows);
  }
  cursor = page.next_cursor;
  $("#more").hidden = !page.has_more;
}
