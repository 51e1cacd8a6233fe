// What every console page shares: the session (the credential the person signed in
// with, kept in this tab's sessionStorage), calls to the JSON API with it, OpenAI-shaped
// errors shown to the person, and small DOM helpers that only ever insert text (never
// HTML), so nothing the API returns can run as script.

const STORAGE_KEY = "tenantserve.console.session";
export const prefix = document.body.dataset.prefix || "/console";
export const pathId = decodeURIComponent(document.body.dataset.id || "");

export function session() {
  try {
    return JSON.parse(sessionStorage.getItem(STORAGE_KEY));
  } catch {
    return null;
  }
}

export function saveSession(value) {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify(value));
}

export function signOut(reason) {
  sessionStorage.removeItem(STORAGE_KEY);
  const query = reason ? `?reason=${encodeURIComponent(reason)}` : "";
  location.assign(`${prefix}/signin${query}`);
}

// An error answer of the API: `status`, and OpenAI's `error.message` / `code` / `param`.
export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `The server answered ${status}.`);
    this.status = status;
    this.code = error?.code || null;
    this.param = error?.param || null;
  }
}

function headers(credential, extra = {}) {
  return { authorization: `Bearer ${credential}`, ...extra };
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: the status says enough
  }
  return new ApiError(response.status, body?.error);
}

// Call the API with the session's credential. `json`: a body to send as JSON;
// `as`: "json" (default), "blob" or "response". A 401 ends the session.
export async function api(path, { method = "GET", json, as = "json", credential } = {}) {
  const token = credential || session()?.credential;
  const init = { method, headers: headers(token), cache: "no-store" };
  if (json !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && !credential) signOut("expired");
    throw error;
  }
  if (as === "response") return response;
  if (as === "blob") return response.blob();
  return response.json();
}

// POST a multipart form with upload progress (`onProgress(fraction)`); resolves to the
// JSON answer, rejects with an ApiError.
export function upload(path, formData, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    xhr.setRequestHeader("authorization", `Bearer ${session()?.credential}`);
    xhr.responseType = "json";
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable && onProgress) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
      else reject(new ApiError(xhr.status, xhr.response?.error));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, { message: "The upload failed: the connection was lost." })));
    xhr.send(formData);
  });
}

// Build an element: `h("td", { class: "num" }, "12")`. Props: class, text, attrs (set as
// attributes), on (event listeners), anything else as a property. Children: nodes or
// strings (inserted as text).
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === undefined || value === null) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name === "attrs") for (const [a, v] of Object.entries(value)) node.setAttribute(a, v);
    else if (name === "on") for (const [e, f] of Object.entries(value)) node.addEventListener(e, f);
    else node[name] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

// Fill `tbody` with one row per item; `columns`: [(item) => node | string, ...].
export function fillTable(tbody, items, columns, emptyText = "Nothing here yet.") {
  tbody.replaceChildren();
  if (!items.length) {
    const colspan = tbody.closest("table")?.querySelectorAll("thead th").length || columns.length;
    tbody.append(h("tr", {}, h("td", { class: "empty", attrs: { colspan } }, emptyText)));
    return;
  }
  for (const item of items) {
    tbody.append(h("tr", {}, columns.map((column) => h("td", {}, column(item)))));
  }
}

export function showError(error) {
  const box = $("#error");
  const text = error instanceof Error ? error.message : String(error);
  box.textContent = text;
  box.hidden = false;
}

export function showNotice(text) {
  const box = $("#notice");
  box.textContent = text;
  box.hidden = false;
}

export function clearMessages() {
  $("#error").hidden = true;
  $("#notice").hidden = true;
}

// Run a form's submit handler: no page reload, the button disabled while it runs,
// errors shown (and the field the API named focused).
export function onSubmit(form, handler) {
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearMessages();
    const button = form.querySelector("[type=submit]");
    if (button) button.disabled = true;
    try {
      await handler(new FormData(form));
    } catch (error) {
      showError(error);
      const field = error.param && form.elements.namedItem(error.param);
      if (field?.focus) field.focus();
    } finally {
      if (button) button.disabled = false;
    }
  });
}

// --- formatting -------------------------------------------------------------------

const integer = new Intl.NumberFormat("en-US");
export const fmtInt = (n) => (n === null || n === undefined ? "—" : integer.format(n));
export function fmtUsd(amount) {
  if (amount === null || amount === undefined) return "—";
  const n = Number(amount);
  const digits = Math.abs(n) < 1 && n !== 0 ? 6 : 2;
  return `$${n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: digits })}`;
}
export function fmtTime(value) {
  if (value === null || value === undefined || value === "") return "—";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toISOString().replace("T", " ").slice(0, 19) + "Z";
}
export const fmtMs = (ms) => (ms === null || ms === undefined ? "—" : `${Math.round(ms)} ms`);

// A Chart.js chart on `canvas` (the previous one there destroyed first).
export function chart(canvas, config) {
  const previous = window.Chart.getChart(canvas);
  if (previous) previous.destroy();
  return new window.Chart(canvas, config);
}

// Start a page: check that the session is of `role` (else to the sign-in page, back here
// after), show who is signed in, then run `main(session)` with its errors shown.
export async function startPage(role, main) {
  const current = session();
  if (role !== "public" && current?.kind !== role) {
    const next = encodeURIComponent(location.pathname + location.search);
    location.replace(`${prefix}/signin?next=${next}`);
    return;
  }
  const who = $("#who");
  if (who && current) who.textContent = current.label;
  $("#signout")?.addEventListener("click", () => signOut());
  try {
    await main(current);
  } catch (error) {
    showError(error);
  }
  document.body.dataset.ready = "true";
}

// --- tenant pages' helpers --------------------------------------------------------

// Fetch `path` with the session's credential and save it as `filename` (a blob behind an
// object URL: the credential never goes into a link).
export async function download(path, filename) {
  const blob = await api(path, { as: "blob" });
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: filename, class: "sr-only" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

// A status badge: kind "ok" | "warn" | "bad" | "" (neutral).
export const badge = (text, kind = "") => h("span", { class: kind ? `badge ${kind}` : "badge" }, text);

export function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

// A <dl> filled with [term, value] pairs (values: nodes or text).
export function fillFacts(dl, pairs) {
  dl.replaceChildren(...pairs.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]));
}

// --- operator pages' helpers ------------------------------------------------------

// A horizontal bar for a share 0..1 (KV cache usage): warn from 70 %, bad from 90 %.
export function meterBar(share, label) {
  const percent = Math.max(0, Math.min(1, Number(share) || 0)) * 100;
  const fill = h("span");
  fill.style.width = `${percent}%`;
  const level = percent >= 90 ? "bar bad" : percent >= 70 ? "bar warn" : "bar";
  return h(
    "div",
    { class: level, attrs: { role: "meter", "aria-label": label, "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": String(Math.round(percent)) } },
    fill,
  );
}

// Ask before an action that is hard to undo; false when the person declines.
export const confirmed = (question) => window.confirm(question);

// The text fields of a form that are not empty, trimmed: { name: value }.
export function filledFields(formData) {
  const out = {};
  for (const [name, value] of formData.entries()) {
    const text = typeof value === "string" ? value.trim() : "";
    if (text) out[name] = text;
  }
  return out;
}

// A button in a table row running `action`, its errors shown in the alert box.
export function actionButton(text, action, kind = "secondary") {
  const button = h("button", { type: "button", class: kind }, text);
  button.addEventListener("click", async () => {
    clearMessages();
    button.disabled = true;
    try {
      await action();
    } catch (error) {
      showError(error);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}
