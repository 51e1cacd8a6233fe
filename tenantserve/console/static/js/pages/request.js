// One request's record: what happened to it, its timings and tokens.
import { $, api, badge, fillFacts, fmtInt, fmtMs, fmtTime, h, pathId, startPage } from "../api.js";

const STATUS_KIND = { completed: "ok", cancelled: "warn", error: "bad", rejected: "bad" };

startPage("tenant", async () => {
  let record;
  try {
    record = await api(`/v1/requests/${encodeURIComponent(pathId)}`);
  } catch (error) {
    if (error.status === 404) {
      document.title = `Not found · tenantserve console`;
      $("h1").textContent = "Request not found";
      $("#main").append(h("p", { class: "card not-found", attrs: { "data-testid": "not-found" } },
        `No request ${pathId} among this tenant's requests. It may belong to another tenant, or be older than the records kept.`));
      return;
    }
    throw error;
  }
  $("h1").replaceChildren("Request ", h("code", {}, record.id));
  document.title = `${record.id} · tenantserve console`;
  const t = record.timings || {};
  const u = record.usage || {};
  fillFacts($("#summary"), [
    ["Status", h("span", {}, badge(record.status, STATUS_KIND[record.status] || ""), record.http_status ? ` HTTP ${record.http_status}` : "")],
    ["Error", record.error_code || (record.failed ? "failed" : "—")],
    ["Model", record.model || "—"],
    ["Adapter", record.adapter || "— (base model)"],
    ["Pool", `${record.pool || "—"} · ${record.region || "—"}`],
    ["Tier", record.tier],
    ["Started", fmtTime(record.started_at)],
    ["Ended", fmtTime(record.ended_at)],
  ]);
  fillFacts($("#timings"), [
    ["Admission", fmtMs(t.admission_ms)],
    ["Fair queue", fmtMs(t.queue_ms)],
    ["Engine queue", fmtMs(t.engine_queue_ms)],
    ["Adapter load", fmtMs(t.adapter_wait_ms)],
    ["Time to first token", fmtMs(t.ttft_ms)],
    ["Total", fmtMs(t.total_ms)],
    ["Preemptions", fmtInt(record.preemptions)],
  ]);
  fillFacts($("#tokens"), [
    ["Prompt", fmtInt(u.prompt_tokens)],
    ["Of which cached", fmtInt(u.cached_tokens)],
    ["Completion", fmtInt(u.completion_tokens)],
    ["Engine time", record.engine_seconds === null || record.engine_seconds === undefined ? "—" : `${record.engine_seconds.toFixed(3)} s`],
  ]);
  $("#record").hidden = false;
  if (record.content) {
    $("#content").textContent = JSON.stringify(record.content, null, 2);
    $("#content-card").hidden = false;
  }
});
