// Operator: the audit log — filtered pages of entries (oldest first) and chain checks.
import { $, api, clearMessages, fillTable, filledFields, fmtTime, h, onSubmit, showError, startPage } from "../api.js";

let filters = {};
let after = 0;
let next = null;

// A datetime-local value read as UTC, or null.
function utc(value) {
  if (!value) return null;
  const date = new Date(`${value}Z`);
  return Number.isNaN(date.getTime()) ? null : date;
}

async function load() {
  const { since, until, limit, ...server } = filters;
  const query = new URLSearchParams({ ...server, after: String(after), limit: limit || "50" });
  const page = await api(`/admin/audit?${query}`);
  next = page.next;
  const from = utc(since);
  const to = utc(until);
  const entries = page.data.filter((e) => {
    const at = new Date(e.at);
    return (!from || at >= from) && (!to || at <= to);
  });
  fillTable($("#entries tbody"), entries, [
    (e) => h("span", { class: "num" }, String(e.seq)),
    (e) => fmtTime(e.at),
    (e) => e.actor,
    (e) => h("code", {}, e.action),
    (e) => h("code", {}, e.target),
    (e) => h("pre", {}, JSON.stringify(e.details)),
  ], "No entries match.");
  for (const row of $("#entries tbody").rows) row.cells[5]?.classList.add("details");
  $("#next-page").disabled = next === null;
  $("#first-page").disabled = after === 0;
  $("#page-info").textContent = `${entries.length} of ${page.data.length} entries after #${after}` + (next === null ? " (end of the log)" : "");
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
    after = 0;
    await load();
  });
  $("#next-page").addEventListener("click", () => {
    clearMessages();
    if (next === null) return;
    after = next;
    load().catch(showError);
  });
  $("#first-page").addEventListener("click", () => {
    clearMessages();
    after = 0;
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
