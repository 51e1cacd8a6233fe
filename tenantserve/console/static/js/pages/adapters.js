// Adapters: upload (with progress) and the validation report, the list with versions,
// delete.
import { $, api, badge, clearMessages, fillTable, fmtBytes, fmtTime, h, showError, showNotice, startPage, upload } from "../api.js";

// What the server checks before it stores an upload (any failure: a 4xx naming it).
const STATIC_CHECKS = [
  "Files received (size limit; archive unpacked safely; no pickle files)",
  "adapter_config.json and the safetensors header are valid",
  "The base model exists for this tenant",
  "Every tensor fits the base model (shapes, rank limit, finite values)",
];
const SMOKE_CHECK = "Smoke test: the engine generates with it, and its output differs from the base model's (then the eval set, if any)";
const STATUS_KIND = { ready: "ok", failed: "bad", validating: "warn" };

startPage("tenant", async () => {
  const form = $("#upload-form");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearMessages();
    await submit(form);
  });
  await Promise.all([loadModels(), load()]);
});

async function loadModels() {
  const [models, adapters] = await Promise.all([api("/v1/models"), api("/v1/adapters")]);
  const own = new Set(adapters.data.map((a) => a.name));
  const select = $("#base_model");
  for (const model of models.data) {
    if (!own.has(model.id)) select.append(h("option", { value: model.id }, model.id));
  }
  if (select.options.length > 1) select.selectedIndex = 1;
}

async function submit(form) {
  const button = form.querySelector("[type=submit]");
  const data = new FormData();
  const name = form.elements.name.value.trim();
  data.append("name", name);
  if (form.elements.base_model.value) data.append("base_model", form.elements.base_model.value);
  const files = [...form.elements.files.files];
  if (files.length === 1 && !files[0].name.endsWith(".json") && !files[0].name.endsWith(".safetensors")) {
    data.append("archive", files[0], files[0].name);
  } else {
    for (const file of files) data.append(file.name, file, file.name);
  }
  const progress = $("#progress");
  $("#upload-progress").hidden = false;
  progress.value = 0;
  $("#progress-text").textContent = "Uploading…";
  button.disabled = true;
  try {
    const adapter = await upload("/v1/adapters", data, (fraction) => {
      progress.value = fraction;
      $("#progress-text").textContent = fraction < 1 ? `Uploading… ${Math.round(fraction * 100)}%` : "Uploaded; validating (smoke test on the engine)…";
    });
    progress.value = 1;
    $("#progress-text").textContent = `Done: version ${adapter.version} is ${adapter.status}.`;
    showReport(adapter, null);
    if (adapter.status === "ready") showNotice(`Adapter ${adapter.name} v${adapter.version} is ready: pass "${adapter.name}" as the model.`);
    else showError(`Adapter ${adapter.name} v${adapter.version} failed validation: ${adapter.report || "see the report"}`);
    form.reset();
    await load();
  } catch (error) {
    $("#progress-text").textContent = "The upload was refused.";
    showReport({ name, status: "failed" }, error);
    showError(error);
  } finally {
    button.disabled = false;
  }
}

function resultCell(state) {
  if (state === "pass") return badge("pass", "ok");
  if (state === "fail") return badge("fail", "bad");
  return badge("not run");
}

// Every check with its result: a refused upload (`error`) failed before it was stored;
// an accepted one passed those and its smoke test decided ready or failed.
function showReport(adapter, error) {
  const rows = error
    ? [
        { check: STATIC_CHECKS.join("; "), state: "fail", detail: error.message },
        { check: SMOKE_CHECK, state: "skip", detail: "" },
      ]
    : [
        ...STATIC_CHECKS.map((check) => ({ check, state: "pass", detail: "" })),
        {
          check: SMOKE_CHECK,
          state: adapter.status === "ready" ? "pass" : "fail",
          detail: adapter.report || (adapter.status === "ready" ? "The output changes with the adapter." : ""),
        },
      ];
  $("#report-summary").replaceChildren(
    `${adapter.name}${adapter.version ? ` v${adapter.version}` : ""}: `,
    badge(adapter.status, STATUS_KIND[adapter.status] || ""),
    adapter.rank ? ` · rank ${adapter.rank} · ${adapter.target_modules.join(", ")}` : "",
  );
  fillTable($("#report-table tbody"), rows, [(r) => r.check, (r) => resultCell(r.state), (r) => r.detail || "—"]);
  $("#report-card").hidden = false;
}

async function load() {
  const adapters = (await api("/v1/adapters")).data;
  adapters.sort((a, b) => a.name.localeCompare(b.name));
  const tbody = $("#adapters-table tbody");
  fillTable(tbody, adapters, [
    (a) => h("strong", {}, a.name),
    (a) => a.base_model,
    (a) => h("span", {}, badge(a.status, STATUS_KIND[a.status] || ""), a.report ? h("span", { class: "help" }, ` ${a.report}`) : ""),
    (a) => versionsCell(a),
    (a) => String(a.rank),
    (a) => fmtBytes(a.size_bytes),
    (a) => fmtTime(a.created_at),
    (a) => deleteButton(a),
  ], "No adapters yet: upload one above.");
  for (const row of tbody.rows) for (const i of [3, 4, 5]) row.cells[i]?.classList.add("num");
}

// The current version; the others on demand (GET /v1/adapters/{name} has them all).
function versionsCell(adapter) {
  const show = h("button", {
    type: "button",
    class: "link",
    attrs: { "aria-label": `Versions of ${adapter.name}` },
    on: {
      click: async () => {
        try {
          const full = await api(`/v1/adapters/${encodeURIComponent(adapter.name)}`);
          const list = h("ul", { class: "versions" }, (full.versions || []).map((v) =>
            h("li", {}, `v${v.version} · ${v.status}${v.superseded_at ? " (superseded)" : ""} · ${fmtTime(v.created_at)}`)));
          show.replaceWith(list);
        } catch (error) {
          showError(error);
        }
      },
    },
  }, `v${adapter.version}`);
  return show;
}

function deleteButton(adapter) {
  return h("button", {
    type: "button",
    class: "danger",
    attrs: { "aria-label": `Delete ${adapter.name}` },
    on: {
      click: async (event) => {
        if (!window.confirm(`Delete ${adapter.name} (every version)? Requests naming it will fail.`)) return;
        event.target.disabled = true;
        try {
          await api(`/v1/adapters/${encodeURIComponent(adapter.name)}`, { method: "DELETE" });
          showNotice(`Deleted ${adapter.name}.`);
          await load();
        } catch (error) {
          event.target.disabled = false;
          showError(error);
        }
      },
    },
  }, "Delete");
}
