// Operator: the audit log — filtered pages of entries (newest first) and chain checks.
import { $, api, clearMessages, fillTable, filledFields, fmtTime, h, onSubmit, showError, startPage } from "../api.js";

let filters = {};
let before = null; // the page shown holds the entries before this seq (null: the newest)
let next = null;

// A datetime-local value (read as UTC) as the API's ISO time, or undefined.
function utc(value) {
  return value ? `${value}Z` : undefined;
}

async function load() {
  const { since, until, ...rest } = filters;
  const query = new URLSearchParams({ ...rest, order: "desc", limit: rest.limit || "50" });
  if (before !== null) query.set("before", String(before));
  if (utc(since)) query.set("since", utc(since));
  if (utc(until)) query.set("until", utc(until));
  const page = await api(`/admin/audit?${query}`);
  next = page.next;
  fillTable($("#entries tbody"), page.data, [
    (e) => h("span", { class: "num" }, String(e.seq)),
    (e) => fmtTime(e.at),
    (e) => e.actor,
    (e) => h("code", {}, e.action),
    (e) => h("code", {}, e.target),
    (e) => h("pre", {}, JSON.stringify(e.details)),
  ], "No entries match.");
  for (const row of $("#entries tbody").rows) row.cells[5]?.classList.add("details");
  $("#next-page").disabled = next === null;
  $("#first-page").disabled = before === null;
  const where = before === null ? "newest" : `before #${before}`;
  $("#page-info").textContent = `${page.data.length} entries, ${where}` + (next === null ? " (start of the log)" : "");
}

async function verify() {
  const result = $("#verify-result");
  result.className = "";
  result.textContent = "Verifying…";
  const report = await api("/admin/audit/verify");
  if (report.ok) {
    result.className = "verify-ok";
    result.textContent = `Chain intact: ${report.checked} entries checked, head ${report.head ? report.head.slice(0, 24) + "…" : "—"}.`;
  } else {
    result.className = "verify-bad";
    const p = report.problem;
    result.textContent = `Chain broken (${p.kind}) at entry #${p.seq}: ${p.message}`;
  }
}

startPage("admin", async () => {
  onSubmit($("#filter-form"), async (form) => {
    filters = filledFields(form);
    before = null;
    await load();
  });
  $("#next-page").addEventListener("click", () => {
    clearMessages();
    if (next === null) return;
    before = next;
    load().catch(showError);
  });
  $("#first-page").addEventListener("click", () => {
    clearMessages();
    before = null;
    load().catch(showError);
  });
  $("#verify").addEventListener("click", async () => {
    clearMessages();
    $("#verify").disabled = true;
    try {
      await verify();
    } catch (error) {
      $("#verify-result").textContent = "";
      showError(error);
    } finally {
      $("#verify").disabled = false;
    }
  });
  filters = filledFields(new FormData($("#filter-form")));
  await load();
});
