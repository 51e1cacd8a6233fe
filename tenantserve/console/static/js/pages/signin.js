// The sign-in page: check the credential against the API, keep it for this tab.
import { $, api, onSubmit, prefix, saveSession, showNotice, startPage } from "../api.js";

const HOME = { tenant: `${prefix}/overview`, admin: `${prefix}/admin/tenants` };

startPage("public", async () => {
  const params = new URLSearchParams(location.search);
  if (params.get("reason") === "expired") {
    showNotice("Your credential was refused (revoked, expired or the tenant suspended). Sign in again.");
  }
  onSubmit($("#signin-form"), async (form) => {
    const kind = form.get("kind");
    const credential = String(form.get("credential") || "").trim();
    let label;
    let tenantId = null;
    if (kind === "tenant") {
      const me = await api("/v1/me", { credential });
      label = `${me.name} · ${me.tier}`;
      tenantId = me.id;
    } else {
      await api("/admin/tenants", { credential });
      label = "operator";
    }
    saveSession({ kind, credential, label, tenantId });
    const next = params.get("next");
    const safeNext = next && next.startsWith(`${prefix}/`) && !next.startsWith("//") ? next : null;
    location.assign(safeNext || HOME[kind]);
  });
});
