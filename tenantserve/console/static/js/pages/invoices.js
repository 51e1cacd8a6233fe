// Invoices: the tenant's invoices, each downloadable as JSON or CSV.
import { $, api, badge, download, fillTable, fmtTime, fmtUsd, h, showError, startPage } from "../api.js";

startPage("tenant", async () => {
  const invoices = (await api("/v1/invoices")).data;
  const tbody = $("#invoices-table tbody");
  fillTable(tbody, invoices, [
    (i) => i.period,
    (i) => h("code", {}, i.id),
    (i) => badge(i.status, i.status === "finalized" ? "ok" : "warn"),
    (i) => fmtUsd(i.subtotal_usd),
    (i) => (Number(i.credits_usd) ? `−${fmtUsd(i.credits_usd)}` : fmtUsd(0)),
    (i) => h("strong", {}, fmtUsd(i.total_usd)),
    (i) => fmtTime(i.generated_at),
    (i) => h("div", { class: "actions" }, downloadButton(i, "json"), downloadButton(i, "csv")),
  ], "No invoices yet: the first is issued when your first billing period ends.");
  for (const row of tbody.rows) for (const c of [3, 4, 5]) row.cells[c]?.classList.add("num");
});

function downloadButton(invoice, format) {
  return h("button", {
    type: "button",
    class: "secondary",
    attrs: { "aria-label": `Download ${invoice.period} as ${format.toUpperCase()}` },
    on: {
      click: async () => {
        try {
          await download(`/v1/invoices/${encodeURIComponent(invoice.id)}?format=${format}`, `${invoice.id}-${invoice.period}.${format}`);
        } catch (error) {
          showError(error);
        }
      },
    },
  }, format.toUpperCase());
}
