// API keys: list, create (the plaintext shown once), revoke.
import { $, api, badge, fillTable, fmtTime, h, onSubmit, showError, showNotice, startPage } from "../api.js";

// The id of the key this tab signed in with (a JWT has none).
let currentKeyId = null;

startPage("tenant", async () => {
  currentKeyId = (await api("/v1/me")).credential.key_id;
  onSubmit($("#create-form"), async (form) => {
    const body = {};
    const days = String(form.get("expires_days") || "").trim();
    if (days) body.expires_days = Number(days);
    const models = String(form.get("allowed_models") || "").split(",").map((m) => m.trim()).filter(Boolean);
    if (models.length) body.allowed_models = models;
    const created = await api("/v1/keys", { method: "POST", json: body });
    showSecret(created.key);
    $("#create-form").reset();
    await load();
  });
  $("#copy-key").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText($("#new-key-value").textContent);
      showNotice("Copied to the clipboard.");
    } catch {
      showError("The browser refused the clipboard: select the key and copy it by hand.");
    }
  });
  await load();
});

function showSecret(plaintext) {
  $("#new-key-value").textContent = plaintext;
  $("#new-key").hidden = false;
  $("#new-key").scrollIntoView({ block: "nearest" });
}

function status(key) {
  if (key.revoked_at) return badge("revoked", "bad");
  if (key.expires_at && new Date(key.expires_at) <= new Date()) return badge("expired", "warn");
  return badge("active", "ok");
}

async function load() {
  let keys;
  try {
    keys = (await api("/v1/keys")).data;
  } catch (error) {
    if (error.status === 403) {
      // A JWT or a model-limited key: the API refuses key management to it.
      $("#create-form").hidden = true;
      fillTable($("#keys-table tbody"), [], [], "This credential cannot manage keys (a JWT or a key limited to some models).");
    }
    throw error;
  }
  keys.sort((a, b) => Boolean(a.revoked_at) - Boolean(b.revoked_at) || b.created_at.localeCompare(a.created_at));
  const tbody = $("#keys-table tbody");
  fillTable(tbody, keys, [
    (k) => h("code", {}, `${k.prefix}-…`),
    (k) => (k.allowed_models.length ? k.allowed_models.join(", ") : "all models"),
    (k) => fmtTime(k.created_at),
    (k) => (k.expires_at ? fmtTime(k.expires_at) : "never"),
    (k) => status(k),
    (k) => (k.revoked_at ? "" : revokeButton(k)),
  ], "No keys.");
  keys.forEach((k, i) => {
    const row = tbody.rows[i];
    if (!row) return;
    row.dataset.keyId = k.id;
    if (k.revoked_at) row.classList.add("revoked");
  });
}

function revokeButton(key) {
  return h("button", {
    type: "button",
    class: "danger",
    attrs: { "aria-label": `Revoke ${key.prefix}` },
    on: {
      click: async (event) => {
        const self = key.id === currentKeyId ? " This is the key you are signed in with: you will be signed out." : "";
        if (!window.confirm(`Revoke ${key.prefix}? Requests with it will be refused (401) from now on.${self}`)) return;
        event.target.disabled = true;
        try {
          await api(`/v1/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" });
          showNotice(`Revoked ${key.prefix}.`);
          await load();
        } catch (error) {
          event.target.disabled = false;
          showError(error);
        }
      },
    },
  }, "Revoke");
}
