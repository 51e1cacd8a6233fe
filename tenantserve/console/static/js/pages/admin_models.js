// Operator: the model registry — versions, registration, deprecation, archival.
import {
  $, actionButton, api, badge, confirmed, fillTable, filledFields, fmtBytes, fmtTime, h, onSubmit,
  showNotice, startPage,
} from "../api.js";

const STATUS_BADGE = { active: "ok", canary: "warn", deprecated: "warn", archived: "bad" };
const versionPath = (ref) => {
  const at = ref.lastIndexOf("@");
  return `/admin/models/${encodeURIComponent(ref.slice(0, at))}/${encodeURIComponent(ref.slice(at + 1))}`;
};

async function load() {
  const { data } = await api("/admin/models");
  fillTable($("#versions tbody"), data, [
    (v) => h("code", {}, v.id),
    (v) => badge(v.status, STATUS_BADGE[v.status] || ""),
    (v) => v.format,
    (v) => v.quantization,
    (v) => h("code", { attrs: { title: v.digest } }, v.digest.replace(/^sha256:/, "").slice(0, 12)),
    (v) => fmtBytes(v.size_bytes),
    (v) => fmtTime(v.created_at),
    (v) => (v.replacement ? h("code", {}, v.replacement) : v.deprecation_end_date ? `ends ${v.deprecation_end_date}` : "—"),
    (v) => h("div", { class: "actions" },
      v.status === "archived" || v.status === "deprecated" ? null : actionButton("Deprecate…", async () => {
        $("#deprecate-ref").value = v.id;
        $("#deprecate-end").focus();
      }),
      v.status === "archived" ? null : actionButton("Archive", async () => {
        if (!confirmed(`Archive ${v.id}? Requests pinned to it are refused from then on.`)) return;
        await api(`${versionPath(v.id)}/archive`, { method: "POST", json: v.replacement ? { replacement: v.replacement } : {} });
        showNotice(`${v.id} archived.`);
        await load();
      }, "danger")),
  ], "No model versions registered.");
}

startPage("admin", async () => {
  onSubmit($("#register-form"), async (form) => {
    const json = filledFields(form);
    const version = await api("/admin/models", { method: "POST", json });
    showNotice(`${version.id} registered (${version.digest.slice(0, 19)}…).`);
    $("#register-form").reset();
    await load();
  });
  onSubmit($("#deprecate-form"), async (form) => {
    const { ref, ...json } = filledFields(form);
    const version = await api(`${versionPath(ref)}/deprecate`, { method: "POST", json });
    showNotice(`${version.id} deprecated until ${version.deprecation_end_date}.`);
    $("#deprecate-form").reset();
    await load();
  });
  await load();
});
