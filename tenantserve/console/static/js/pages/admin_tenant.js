// Operator: one tenant — settings, limits, quotas, suspend / resume, keys, usage, SLO.
import {
  $, ApiError, actionButton, api, badge, clearMessages, confirmed, fillFacts, fillTable, fmtInt,
  fmtMs, fmtTime, h, onSubmit, pathId, showError, showNotice, startPage,
} from "../api.js";

const path = `/admin/tenants/${encodeURIComponent(pathId)}`;
const LIMITS = ["requests_per_minute", "tokens_per_minute", "max_concurrent", "max_prompt_tokens", "max_output_tokens"];
let tenant = null;

function show(t) {
  tenant = t;
  $("#tenant-name").textContent = t.name;
  document.title = `${t.name} · tenantserve console`;
  fillFacts($("#facts"), [
    ["Name", t.name],
    ["ID", h("code", {}, t.id)],
    ["Tier", t.tier],
    ["Region", t.region],
    ["Status", badge(t.status, t.status === "active" ? "ok" : "bad")],
    ["Content logging", t.log_content ? "on" : "off"],
    ["Created", fmtTime(t.created_at)],
  ]);
  $("#tier").value = t.tier;
  $("#region").value = t.region;
  $("#log-content").checked = t.log_content;
  for (const name of LIMITS) $(`#limits-form [name=${name}]`).value = t.limits[name] ?? "";
  $("#quotas").value = JSON.stringify(t.quotas, null, 2);
  const button = $("#status-button");
  button.textContent = t.status === "active" ? "Suspend" : "Resume";
  button.className = t.status === "active" ? "danger" : "";
}

async function patch(json, what) {
  show(await api(path, { method: "PATCH", json }));
  showNotice(`${what} saved.`);
}

async function loadKeys() {
  const { data } = await api(`${path}/keys`);
  fillTable($("#keys tbody"), data, [
    (k) => h("code", {}, k.prefix),
    (k) => h("code", {}, k.id),
    (k) => (k.allowed_models.length ? k.allowed_models.join(", ") : "all"),
    (k) => fmtTime(k.created_at),
    (k) => fmtTime(k.expires_at),
    (k) => (k.revoked_at ? badge("revoked", "bad") : badge("active", "ok")),
    (k) => (k.revoked_at ? "" : actionButton("Revoke", async () => {
      if (!confirmed(`Revoke key ${k.prefix}? Clients using it are refused at once.`)) return;
      await api(`/admin/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
      showNotice(`Key ${k.prefix} revoked.`);
      await loadKeys();
    }, "danger")),
  ], "No keys.");
}

async function loadUsage() {
  try {
    const usage = await api(`/admin/usage?tenant=${encodeURIComponent(pathId)}&granularity=day`);
    const t = usage.total;
    fillFacts($("#usage"), [
      ["Requests", fmtInt(t.requests)],
      ["Input tokens", fmtInt(t.input_tokens)],
      ["Cached input", fmtInt(t.cached_input_tokens)],
      ["Output tokens", fmtInt(t.output_tokens)],
      ["Errors", fmtInt(t.errors)],
      ["Engine seconds", t.engine_seconds === undefined ? "—" : Number(t.engine_seconds).toFixed(2)],
      ["Since", fmtTime(usage.start)],
    ]);
  } catch (error) {
    fillFacts($("#usage"), [["Usage", h("span", { class: "muted" }, error.message)]]);
  }
}

async function loadSlo() {
  try {
    const { data } = await api(`/admin/slo?tenant=${encodeURIComponent(pathId)}`);
    const slo = data[0];
    if (!slo) {
      fillFacts($("#slo"), [["SLO", h("span", { class: "muted" }, "No requests measured yet.")]]);
      return;
    }
    const a = slo.availability;
    fillFacts($("#slo"), [
      ["Tier", slo.best_effort ? `${slo.tier} (best effort)` : slo.tier],
      ["TTFT p95 (1 h)", `${fmtMs(slo.ttft.p95_ms_1h)} / target ${fmtMs(slo.ttft.target_p95_ms)}`],
      ["Availability (30 d)", a.value_30d === null ? "—" : `${(a.value_30d * 100).toFixed(3)} %` + (a.target ? ` / target ${(a.target * 100).toFixed(2)} %` : "")],
      ["Budget left", a.error_budget_remaining === null ? "—" : `${(a.error_budget_remaining * 100).toFixed(1)} %`],
      ["Alerts", slo.alerts.length
        ? h("span", {}, slo.alerts.map((x) => badge(`${x.sli} ${x.rule} ×${x.burn_rate}`, x.rule === "page" ? "bad" : "warn")))
        : badge("none", "ok")],
    ]);
  } catch (error) {
    fillFacts($("#slo"), [["SLO", h("span", { class: "muted" }, error.message)]]);
  }
}

startPage("admin", async () => {
  show(await api(path));
  onSubmit($("#settings-form"), async (form) => {
    const json = {};
    if (form.get("tier") !== tenant.tier) json.tier = form.get("tier");
    if (form.get("region") !== tenant.region) json.region = form.get("region");
    const logContent = form.get("log_content") === "on";
    if (logContent !== tenant.log_content) json.log_content = logContent;
    if (!Object.keys(json).length) {
      showNotice("Nothing to change.");
      return;
    }
    await patch(json, "Settings");
  });
  onSubmit($("#limits-form"), async (form) => {
    const limits = {};
    for (const name of LIMITS) {
      const text = String(form.get(name) || "").trim();
      limits[name] = text === "" ? null : Number(text);
    }
    await patch({ limits }, "Limits");
  });
  onSubmit($("#quotas-form"), async (form) => {
    let quotas;
    try {
      quotas = JSON.parse(String(form.get("quotas") || "[]"));
    } catch (error) {
      throw new ApiError(400, { message: `Quotas are not valid JSON: ${error.message}`, param: "quotas" });
    }
    await patch({ quotas }, "Quotas");
  });
  $("#status-button").addEventListener("click", async () => {
    clearMessages();
    const suspend = tenant.status === "active";
    const question = suspend
      ? `Suspend ${tenant.name}? None of its credentials will authenticate until it is resumed.`
      : `Resume ${tenant.name}?`;
    if (!confirmed(question)) return;
    try {
      await patch({ status: suspend ? "suspended" : "active" }, suspend ? "Suspension" : "Resumption");
    } catch (error) {
      showError(error);
    }
  });
  $("#create-key").addEventListener("click", async () => {
    clearMessages();
    try {
      const key = await api(`${path}/keys`, { method: "POST", json: {} });
      $("#new-key-text").textContent = key.key;
      $("#new-key").hidden = false;
      await loadKeys();
    } catch (error) {
      showError(error);
    }
  });
  await Promise.all([loadKeys(), loadUsage(), loadSlo()]);
});
