// The tenant's overview: tokens per day this month (chart + table), per model and
// adapter, spend to date, quotas against their limits, TTFT against the tier's SLO.
import { $, api, chart, fillFacts, fillTable, fmtInt, fmtMs, fmtUsd, h, startPage } from "../api.js";

const DEFAULT_ALERT_AT = [0.8, 1.0];
const SERIES = [
  { key: "uncached", label: "Input tokens (not cached)", color: "#0b5cad" },
  { key: "cached", label: "Cached input tokens", color: "#7fb3e8" },
  { key: "output", label: "Output tokens", color: "#d4a72c" },
];

startPage("tenant", async () => {
  const results = await Promise.allSettled([
    api("/v1/me").then(showQuotas),
    api("/v1/usage?granularity=day").then(showUsage),
    showSpend(),
    showLatency(),
  ]);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) throw failed.reason;
});

// --- usage --------------------------------------------------------------------------

function daysOf(startIso, endIso) {
  const days = [];
  const day = new Date(startIso);
  day.setUTCHours(0, 0, 0, 0);
  const end = new Date(endIso);
  while (day < end) {
    days.push(day.toISOString().slice(0, 10));
    day.setUTCDate(day.getUTCDate() + 1);
  }
  return days;
}

function showUsage(usage) {
  const days = daysOf(usage.start, usage.end);
  const perDay = new Map(days.map((d) => [d, { input: 0, cached: 0, output: 0, requests: 0 }]));
  const perModel = new Map();
  for (const bucket of usage.data) {
    const day = perDay.get(bucket.start.slice(0, 10));
    if (day) {
      day.input += bucket.input_tokens;
      day.cached += bucket.cached_input_tokens;
      day.output += bucket.output_tokens;
      day.requests += bucket.requests;
    }
    const key = `${bucket.model}\u0000${bucket.adapter || ""}`;
    const row = perModel.get(key) || { model: bucket.model, adapter: bucket.adapter || "", requests: 0, input: 0, cached: 0, output: 0, errors: 0 };
    row.requests += bucket.requests;
    row.input += bucket.input_tokens;
    row.cached += bucket.cached_input_tokens;
    row.output += bucket.output_tokens;
    row.errors += bucket.errors;
    perModel.set(key, row);
  }
  $("#usage-period").textContent = `${usage.start.slice(0, 7)} (UTC days)`;

  const values = days.map((d) => perDay.get(d));
  const total = usage.total;
  const canvas = $("#usage-chart");
  canvas.setAttribute(
    "aria-label",
    `Stacked bar chart of tokens per day from ${days[0]} to ${days.at(-1)}: ` +
      `${fmtInt(total.input_tokens)} input tokens (${fmtInt(total.cached_input_tokens)} of them cached) ` +
      `and ${fmtInt(total.output_tokens)} output tokens in all. The table below has every day.`,
  );
  const dataOf = { uncached: (v) => v.input - v.cached, cached: (v) => v.cached, output: (v) => v.output };
  chart(canvas, {
    type: "bar",
    data: {
      labels: days,
      datasets: SERIES.map((s) => ({
        label: s.label,
        data: values.map(dataOf[s.key]),
        backgroundColor: s.color,
        stack: "tokens",
      })),
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      animation: false,
      scales: {
        x: { stacked: true, ticks: { callback: (_, i) => days[i].slice(8) } },
        y: { stacked: true, beginAtZero: true, title: { display: true, text: "tokens" } },
      },
      plugins: { tooltip: { mode: "index", intersect: false } },
    },
  });

  const tbody = $("#usage-table tbody");
  fillTable(tbody, days.map((d) => ({ day: d, ...perDay.get(d) })), [
    (r) => r.day,
    (r) => fmtInt(r.input),
    (r) => fmtInt(r.cached),
    (r) => fmtInt(r.output),
    (r) => fmtInt(r.requests),
  ]);
  numeric(tbody, [1, 2, 3, 4]);
  $("#usage-table tfoot").replaceChildren(
    h("tr", {},
      h("td", {}, "Total"),
      h("td", { class: "num", attrs: { "data-total": "input" } }, fmtInt(total.input_tokens)),
      h("td", { class: "num", attrs: { "data-total": "cached" } }, fmtInt(total.cached_input_tokens)),
      h("td", { class: "num", attrs: { "data-total": "output" } }, fmtInt(total.output_tokens)),
      h("td", { class: "num", attrs: { "data-total": "requests" } }, fmtInt(total.requests)),
    ),
  );

  const breakdown = $("#breakdown-table tbody");
  const rows = [...perModel.values()].sort((a, b) => b.input + b.output - (a.input + a.output));
  fillTable(breakdown, rows, [
    (r) => r.model,
    (r) => r.adapter || "— (base model)",
    (r) => fmtInt(r.requests),
    (r) => fmtInt(r.input),
    (r) => fmtInt(r.cached),
    (r) => fmtInt(r.output),
    (r) => fmtInt(r.errors),
  ], "No requests this month yet.");
  if (rows.length) numeric(breakdown, [2, 3, 4, 5, 6]);
}

function numeric(tbody, columns) {
  for (const row of tbody.rows) for (const i of columns) row.cells[i]?.classList.add("num");
}

// --- spend ----------------------------------------------------------------------------

async function showSpend() {
  let spend;
  try {
    spend = await api("/v1/spend");
  } catch (error) {
    if (error.status === 404) {
      $("#spend-total").textContent = "—";
      $("#spend-help").textContent = "This server does not price usage (billing is off).";
      return;
    }
    throw error;
  }
  $("#spend-total").textContent = fmtUsd(spend.total_usd);
  fillFacts($("#spend-facts"), [
    ["Period", `${spend.period} (to date)`],
    ["Usage", fmtUsd(spend.usage_usd)],
    ["Platform fee", fmtUsd(spend.platform_fee_usd)],
    ["Credits", Number(spend.credits_usd) ? `−${fmtUsd(spend.credits_usd)}` : fmtUsd(0)],
  ]);
}

// --- latency ----------------------------------------------------------------------------

async function showLatency() {
  const slo = await api("/v1/slo");
  const ttft = slo.ttft ?? {};
  const target = ttft.target_p95_ms ?? null;
  const verdict = (value) => {
    if (value === null || value === undefined || target === null) return fmtMs(value ?? null);
    const ok = value <= target;
    return h("span", {}, fmtMs(value), " ", h("span", { class: ok ? "slo-ok" : "slo-bad" }, ok ? "within SLO" : "over SLO"));
  };
  fillFacts($("#latency"), [
    ["p50, last 24 h", fmtMs(ttft.p50_ms_24h ?? null)],
    ["p95, last 24 h", verdict(ttft.p95_ms_24h)],
    ["p95, last hour", verdict(ttft.p95_ms_1h)],
    ["SLO target (p95)", target === null ? "best effort (no target)" : `${fmtMs(target)} · ${slo.tier} tier`],
    ["Error budget left", ttft.error_budget_remaining != null ? `${Math.round(ttft.error_budget_remaining * 100)}%` : "—"],
  ]);
  const samples = ttft.samples_24h ?? 0;
  $("#latency-help").textContent = `Time to first token of ${fmtInt(samples)} requests in the last 24 h` + (samples >= 5000 ? " (the newest 5,000)." : ".");
}

// --- quotas ---------------------------------------------------------------------------------

function showQuotas(me) {
  const box = $("#quotas");
  if (!me.quotas.length) {
    box.replaceChildren(h("p", { class: "muted" }, "No quotas: usage is limited only by your tier's rate limits."));
    return;
  }
  box.replaceChildren(...me.quotas.map((q) => quotaBar(q)));
}

function quotaBar(q) {
  const share = q.limit ? q.used / q.limit : 0;
  const alertAt = q.alert_at || DEFAULT_ALERT_AT;
  const reached = alertAt.filter((x) => share >= x);
  // The highest alert share (or the limit) reached: red; a lower one: amber.
  const level = share >= Math.min(1, Math.max(...alertAt)) ? "bad" : reached.length ? "warn" : "";
  const name = `${q.metric.replace("_", " ")} per ${q.period}`;
  const fill = h("span");
  fill.style.width = `${Math.min(100, share * 100).toFixed(1)}%`;
  const percent = Math.round(share * 100);
  return h("div", { class: "quota", attrs: { "data-metric": q.metric, "data-level": level || "ok" } },
    h("div", { class: "quota-head" },
      h("span", { class: "quota-name" }, name, " ", q.enforcement === "hard" ? h("span", { class: "badge bad" }, "hard") : h("span", { class: "badge" }, "soft")),
      h("span", { class: "quota-used" }, `${fmtInt(q.used)} of ${fmtInt(q.limit)} (${percent}%)`),
    ),
    h("div", {
      class: level ? `bar ${level}` : "bar",
      attrs: { role: "meter", "aria-valuemin": "0", "aria-valuemax": String(q.limit), "aria-valuenow": String(Math.min(q.used, q.limit)), "aria-label": `${name}: ${percent}% used` },
    }, fill),
    h("p", { class: "help" }, q.enforcement === "hard"
      ? "Hard: requests are refused (429) once the limit is reached."
      : "Soft: requests go on past the limit; you are alerted."),
  );
}
