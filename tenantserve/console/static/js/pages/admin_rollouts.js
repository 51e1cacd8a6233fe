// Operator: canary rollouts — running ones with their step, metrics and history,
// promote / rollback, and a form to start one.
import {
  $, actionButton, api, badge, confirmed, fillTable, filledFields, fmtInt, fmtMs, fmtTime, h,
  onSubmit, showNotice, startPage,
} from "../api.js";

const PHASE_BADGE = { shadow: "warn", canary: "warn", done: "ok", rolled_back: "bad" };
const rolloutPath = (model) => `/admin/rollouts/${encodeURIComponent(model)}`;
const pct = (share) => (share === null || share === undefined ? "—" : `${(share * 100).toFixed(2)} %`);

function statsTable(stats) {
  const table = h("table", {},
    h("thead", {}, h("tr", {}, ["Version", "Requests", "Errors", "Error rate", "p95 latency", "Divergences"].map((t) => h("th", {}, t)))),
    h("tbody"));
  const rows = stats ? [["stable", stats.stable], ["candidate", stats.candidate]] : [];
  fillTable(table.querySelector("tbody"), rows, [
    ([name]) => name,
    ([, s]) => fmtInt(s.requests),
    ([, s]) => fmtInt(s.errors),
    ([, s]) => pct(s.error_rate),
    ([, s]) => (s.p95_latency_s === null ? "—" : fmtMs(s.p95_latency_s * 1000)),
    ([, s]) => fmtInt(s.divergences),
  ], "No metrics for this step in this process yet.");
  return h("div", { class: "table-wrap" }, table);
}

function historyTable(history) {
  const table = h("table", {},
    h("thead", {}, h("tr", {}, ["Time", "Phase", "Traffic", "Reason"].map((t) => h("th", {}, t)))),
    h("tbody"));
  fillTable(table.querySelector("tbody"), [...history].reverse(), [
    (e) => fmtTime(e.at), (e) => e.phase, (e) => `${e.percent} %`, (e) => e.reason || "—",
  ], "No steps yet.");
  return h("div", { class: "table-wrap" }, table);
}

function rolloutCard(r, reload) {
  const running = !r.finished_at;
  const act = (verb, question) => actionButton(verb === "promote" ? "Promote" : "Roll back", async () => {
    if (!confirmed(question)) return;
    const after = await api(`${rolloutPath(r.model)}/${verb}`, { method: "POST", json: { reason: "from the console" } });
    showNotice(`${r.model}: ${after.step} (${after.phase}).`);
    await reload();
  }, verb === "promote" ? "" : "danger");
  return h("section", { class: "card rollout", attrs: { "aria-label": `Rollout of ${r.model}` } },
    h("div", { class: "pool-head" }, h("h2", {}, r.model), badge(r.phase, PHASE_BADGE[r.phase] || ""), badge(r.step)),
    h("dl", { class: "facts" },
      h("dt", {}, "Stable"), h("dd", {}, h("code", {}, r.stable)),
      h("dt", {}, "Candidate"), h("dd", {}, h("code", {}, r.candidate)),
      h("dt", {}, "Candidate traffic"), h("dd", {}, `${r.percent} %`),
      h("dt", {}, "Plan"), h("dd", {}, `shadow ${r.plan.shadow_percent} % → canary ${r.plan.canary_steps.join(" / ")} %, ${r.plan.step_seconds} s and ${r.plan.min_requests} requests a step`),
      h("dt", {}, "Step since"), h("dd", {}, fmtTime(r.step_started_at)),
      r.finished_at ? [h("dt", {}, "Finished"), h("dd", {}, fmtTime(r.finished_at))] : null),
    h("h3", {}, "This step's metrics"), statsTable(r.stats),
    h("h3", {}, "Steps"), historyTable(r.history),
    running ? h("div", { class: "actions" },
      act("promote", `Promote ${r.model} to its next step now?`),
      act("rollback", `Roll ${r.model} back to ${r.stable}? All traffic returns to the stable version.`)) : null);
}

async function load() {
  const { data } = await api("/admin/rollouts");
  $("#rollouts").replaceChildren(...(data.length
    ? data.map((r) => rolloutCard(r, load))
    : [h("p", { class: "card muted" }, "No rollout is running.")]));
}

startPage("admin", async () => {
  onSubmit($("#start-form"), async (form) => {
    const fields = filledFields(form);
    const json = { model: fields.model, candidate: fields.candidate };
    if (fields.reason) json.reason = fields.reason;
    for (const name of ["shadow_percent", "step_seconds", "min_requests"]) {
      if (fields[name] !== undefined) json[name] = Number(fields[name]);
    }
    if (fields.canary_steps) json.canary_steps = fields.canary_steps.split(/[,\s]+/).filter(Boolean).map(Number);
    const rollout = await api("/admin/rollouts", { method: "POST", json });
    showNotice(`Rollout of ${rollout.model} to ${rollout.candidate} started (${rollout.step}).`);
    $("#start-form").reset();
    await load();
  });
  onSubmit($("#lookup-form"), async (form) => {
    const rollout = await api(rolloutPath(String(form.get("model")).trim()));
    $("#lookup").replaceChildren(rolloutCard(rollout, load));
  });
  await load();
});
