// The spendstream dashboard: polls the worker's /v1/dashboard/ endpoints and draws
// each panel. No library: the chart is SVG from the server; everything else is DOM.
"use strict";

const TOKEN_KEY = "spendstream.analystToken";
const params = new URLSearchParams(location.search);
const REFRESH_MS = Math.max(1, Number(params.get("refresh") || 5)) * 1000;
const state = { period: params.get("period") || "day", by: params.get("by") || "tenant", tenant: params.get("tenant"), sort: { key: "cost_usd", asc: false } };
const usdFormat = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });
const intFormat = new Intl.NumberFormat("en-US");

function usd(text) { return text === null || text === undefined ? "—" : usdFormat.format(Number(text)); }
function pct(text) { return text === null || text === undefined ? "—" : (Number(text) * 100).toFixed(1) + "%"; }
function signedUsd(text) { const n = Number(text); return (n > 0 ? "+" : n < 0 ? "−" : "") + usdFormat.format(Math.abs(n)); }
function $(id) { return document.getElementById(id); }
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (name === "class") node.className = value;
    else if (name === "style") node.setAttribute("style", value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

class Unauthorized extends Error {}

async function get(path, asText) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok) {
    let message = response.statusText;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(path + ": " + message);
  }
  return asText ? response.text() : response.json();
}

// -- Now ------------------------------------------------------------------------
function drawNow(now) {
  for (const period of ["hour", "day", "month"]) {
    const card = document.querySelector(`[data-testid="now-${period}"]`);
    const spend = now.spend[period];
    const figure = card.querySelector(".figure");
    figure.textContent = usd(spend.cost_usd);
    figure.dataset.value = spend.cost_usd;
    const change = card.querySelector(".change");
    const rising = Number(spend.change_usd) > 0;
    change.className = "change " + (rising ? "bad" : "good");
    change.textContent = `${signedUsd(spend.change_usd)} (${spend.change === null ? "new" : (Number(spend.change) >= 0 ? "+" : "") + pct(spend.change)}) vs ${usd(spend.previous_week_usd)} a week earlier`;
  }
  $("events-rate").textContent = now.events_per_second === null ? "—" : Number(now.events_per_second).toFixed(1);
  $("ledger-rows").textContent = intFormat.format(now.ledger_rows);
  $("ledger-rows").dataset.value = now.ledger_rows;
  $("dead-letter-count").textContent = intFormat.format(now.dead_letters);
  $("lag").textContent = intFormat.format(now.lag);
  const healthy = now.worker.healthy;
  $("health").textContent = healthy ? "pipeline healthy" : "pipeline degraded";
  $("health").className = "pill " + (healthy ? "ok" : "degraded");
}

// -- Who ------------------------------------------------------------------------
const COLUMNS = [
  { key: "label", title: "", num: false },
  { key: "tenant_id", title: "tenant", num: false },
  { key: "cost_usd", title: "spend", num: true, format: usd },
  { key: "share", title: "share", num: true },
  { key: "requests", title: "calls", num: true, format: (v) => intFormat.format(v) },
  { key: "previous_cost_usd", title: "a week earlier", num: true, format: usd },
];

function whoTable(data, title) {
  const sort = state.sort;
  const rows = [...data.rows].sort((a, b) => {
    const column = COLUMNS.find((c) => c.key === sort.key) || COLUMNS[2];
    const x = column.num ? Number(a[sort.key]) : String(a[sort.key] || "");
    const y = column.num ? Number(b[sort.key]) : String(b[sort.key] || "");
    return (x < y ? -1 : x > y ? 1 : 0) * (sort.asc ? 1 : -1);
  });
  const showTenant = data.by !== "tenant" && data.by !== "model" && !data.tenant;
  const columns = COLUMNS.filter((c) => c.key !== "tenant_id" || showTenant);
  const head = el("tr", {}, columns.map((c) => el("th", {
    class: ["sortable", c.num ? "num" : "", sort.key === c.key ? "sorted" : "", sort.key === c.key && sort.asc ? "asc" : ""].join(" "),
    onclick: () => { state.sort = { key: c.key, asc: sort.key === c.key ? !sort.asc : !c.num }; refreshWho(); },
  }, c.key === "label" ? data.by : c.title)));
  const body = rows.map((row) => {
    const drillable = data.by === "tenant" && !data.tenant;
    return el("tr", {
      class: drillable ? "drillable" : null,
      "data-key": row.key,
      title: drillable ? "show this tenant's workflows and models" : null,
      onclick: drillable ? () => drill(row.key) : null,
    }, columns.map((c) => {
      if (c.key === "share") {
        return el("td", { class: "num" }, el("span", { class: "share", style: `width:${Math.round(Number(row.share) * 80)}px` }), pct(row.share));
      }
      const value = row[c.key];
      return el("td", { class: c.num ? "num" : null, "data-value": c.num ? value : null }, c.format ? c.format(value) : (value || ""));
    }));
  });
  const total = el("tr", {}, el("th", {}, "total"), showTenant ? el("th") : null,
    el("th", { class: "num", "data-testid": "who-total", "data-value": data.total_usd }, usd(data.total_usd)),
    el("th"), el("th"), el("th", { class: "num" }, usd(data.previous_total_usd)));
  return el("div", { "data-testid": "who-" + data.by },
    title ? el("h3", {}, title) : null,
    el("table", {}, el("thead", {}, head), el("tbody", {}, body), el("tfoot", {}, total)),
    data.more ? el("p", { class: "muted" }, `and ${data.more} more`) : null);
}

async function refreshWho() {
  const q = (by) => `/v1/dashboard/who?by=${by}&period=${state.period}` + (state.tenant ? `&tenant=${encodeURIComponent(state.tenant)}` : "");
  const container = $("who-tables");
  let tables;
  if (state.tenant) {
    const [workflows, models] = await Promise.all([get(q("workflow")), get(q("model"))]);
    tables = [whoTable(workflows, "workflows"), whoTable(models, "models")];
    container.className = "split";
  } else {
    tables = [whoTable(await get(q(state.by)))];
    container.className = "";
  }
  container.replaceChildren(...tables);
  $("drill").hidden = !state.tenant;
  $("dimensions").hidden = Boolean(state.tenant);
  $("drill-tenant").textContent = state.tenant ? `tenant ${state.tenant}: workflows and models` : "";
  $("who-scope").textContent = `(${describePeriod()}; share of the total; click a column to sort${state.tenant || state.by !== "tenant" ? "" : ", a tenant to drill down"})`;
  for (const button of document.querySelectorAll("[data-by]")) button.classList.toggle("on", button.dataset.by === state.by);
}

function drill(tenant) { state.tenant = tenant; refreshWho().catch(report); }

function describePeriod() {
  return { hour: "this hour", day: "today", week: "the last 7 days", month: "the month to date" }[state.period];
}

// -- Chart ----------------------------------------------------------------------
async function refreshChart() {
  const svg = await get(`/v1/dashboard/series.svg?by=${state.by}&period=${state.period}`, true);
  $("chart").innerHTML = svg;
  const short = state.period === "hour" || state.period === "day";
  const span = short ? (state.by === "tenant" ? "hourly over the last 24 hours" : "daily over the last 7 days") : "daily over " + describePeriod();
  $("chart-note").textContent = `(by ${state.by}, ${span})`;
}

// -- Budgets --------------------------------------------------------------------
function budgetBar(used, forecast, label) {
  const width = (fraction) => Math.min(100, Number(fraction) * 100 / 1.25);
  const fill = Number(used);
  return el("div", { class: "bar", title: label },
    el("div", { class: "fill" + (fill >= 1 ? " over" : fill >= 0.8 ? " near" : ""), style: `width:${width(used)}%` }),
    forecast === null ? null : el("div", { class: "forecast", style: `left:${width(forecast)}%`, title: "forecast to month end" }),
    el("div", { class: "limit", style: `left:${width(1)}%`, title: "100 %" }));
}

function drawBudgets(data) {
  $("budgets-note").textContent = `(${pct(data.month_elapsed)} of the month elapsed; bar = spent, black tick = forecast, red line = 100 %)`;
  const items = data.tenants.map((t) => el("div", { class: "budget", "data-tenant": t.tenant_id },
    el("div", { class: "name" }, el("strong", {}, t.tenant_id),
      t.monthly_budget_usd ? el("span", {}, `${usd(t.month_to_date_usd)} of ${usd(t.monthly_budget_usd)} (${pct(t.used)}); forecast ${usd(t.forecast_usd)}`) : el("span", {}, `${usd(t.month_to_date_usd)} this month`)),
    t.monthly_budget_usd ? budgetBar(t.used, t.forecast_used, "month to date against the monthly budget") : null,
    t.contracted_hourly_usd ? el("div", { class: "name muted" }, el("span", {}, "this hour against the contract"), el("span", {}, `${usd(t.hour_usd)} of ${usd(t.contracted_hourly_usd)}/h`)) : null,
    t.contracted_hourly_usd ? budgetBar(t.hour_used, null, "this hour against the contracted hourly budget") : null));
  $("budget-bars").replaceChildren(...(items.length ? items : [el("p", { class: "muted" }, "No tenant has a budget in the spend config (tenants: … monthly_budget_usd).")]));
}

// -- Alerts ---------------------------------------------------------------------
function ratioList(ratios) {
  return Object.entries(ratios || {}).map(([name, value]) => `${name.replaceAll("_", " ")} ${Number(value).toFixed(2)}`).join(" · ");
}

function drawAlerts(data) {
  $("alerts-note").textContent = `(${data.open} open; resolved ones greyed)`;
  const items = data.incidents.map((i) => el("article", { class: `incident ${i.severity} ${i.open ? "open" : "resolved"}`, "data-fingerprint": i.fingerprint, "data-testid": "incident" },
    el("div", { class: "head" },
      el("span", { class: "badge " + i.severity }, i.severity),
      el("strong", {}, i.detector), el("span", {}, i.key),
      el("span", { class: "muted" }, `${i.open ? "open since" : "resolved"} ${new Date(i.open ? i.triggered_at : (i.resolved_at || i.triggered_at)).toISOString().slice(0, 16).replace("T", " ")} UTC`),
      i.paged.length ? el("span", { class: "muted", "data-testid": "paged" }, "paged: " + i.paged.map((p) => `${p.channel} ${p.outcome}`).join(", ")) : null),
    el("p", {}, i.summary),
    el("div", { class: "evidence" },
      el("span", {}, "observed ", el("b", {}, i.unit === "usd" ? usd(i.observed) : i.observed)),
      el("span", {}, "baseline ", el("b", {}, i.baseline === null ? "—" : i.unit === "usd" ? usd(i.baseline) : i.baseline)),
      el("span", {}, "ratio ", el("b", {}, i.ratio === null || i.ratio === undefined ? "—" : Number(i.ratio).toFixed(1) + "×")),
      el("span", { "data-testid": "cause" }, "cause ", el("b", {}, i.cause || "—"))),
    i.cause_explanation ? el("p", { class: "muted" }, i.cause_explanation) : null,
    Object.keys(i.cause_ratios).length ? el("p", { class: "muted" }, "cause ratios: " + ratioList(i.cause_ratios)) : null,
    i.query ? el("details", {}, el("summary", {}, "ClickHouse query behind it"), el("pre", {}, i.query)) : null));
  $("incident-list").replaceChildren(...(items.length ? items : [el("p", { class: "muted" }, "No incident in the last 7 days.")]));
}

// -- Why it moved -----------------------------------------------------------------
const DRIVERS = {
  volume: "volume (first calls)", retries: "retries", model_mix: "model mix",
  tokens_per_call: "tokens per call", unit_price: "unit price", cache_hit_rate: "cache hit rate",
};
// A change from or to no spend is one line, not split into drivers.
const ONE_LINE = {
  new_spend: (d) => `new spend: ${usd(d.change_usd)} (no spend in the previous period)`,
  stopped: (d) => `stopped: ${signedUsd(d.change_usd)}`,
};
function drawMovers(data) {
  const span = state.period === "hour" ? "today" : describePeriod();
  $("movers-note").textContent = `(${span} against the same span a week earlier, split into its drivers: Shapley decomposition, parts to the cent)`;
  const items = data.movers.map((m) => {
    const scale = Math.max(...m.drivers.map((d) => Math.abs(Number(d.change_usd))), 1e-9);
    return el("div", { class: "mover", "data-key": m.key },
      el("div", {}, el("strong", {}, `${m.kind} ${m.label}`), " ",
        el("span", { class: Number(m.change_usd) > 0 ? "bad" : "good", "data-testid": "mover-change", "data-value": m.change_usd }, signedUsd(m.change_usd)),
        el("span", { class: "muted" }, ` (${usd(m.previous_cost_usd)} → ${usd(m.cost_usd)}; cause ${m.cause})`)),
      m.drivers.map((d) => {
        const line = ONE_LINE[d.driver];
        if (line) return el("div", { class: "driver one-line", "data-driver": d.driver }, el("span", { "data-value": d.change_usd }, line(d)));
        const n = Number(d.change_usd);
        const width = `${Math.round(Math.abs(n) / scale * 50)}%`;
        return el("div", { class: "driver", "data-driver": d.driver }, el("span", {}, DRIVERS[d.driver] || d.driver),
          el("div", { class: "diverging" }, el("div", { class: n >= 0 ? "up" : "down", style: `width:${width}` })),
          el("span", { class: "num", "data-value": d.change_usd }, signedUsd(d.change_usd)),
          el("span", { class: "num muted" }, pct(d.share)));
      }));
  });
  $("mover-list").replaceChildren(...(items.length ? items : [el("p", { class: "muted" }, "Nothing moved.")]));
}

// -- Dead letters -----------------------------------------------------------------
function table(id, headers, rows) {
  $(id).replaceChildren(el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.length ? rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c)))) : el("tr", {}, el("td", { class: "muted", colspan: headers.length }, "none"))));
}

function drawDeadLetters(data) {
  table("dl-reasons", ["reason", "count", "latest"], data.by_reason.map((r) => [r.reason, intFormat.format(r.count), r.latest_at.slice(0, 19).replace("T", " ")]));
  table("dl-latest", ["received", "reason", "message", "tenant", "request id", "position"], data.latest.map((r) => [r.received_at.slice(0, 19).replace("T", " "), r.reason, r.message, r.tenant_id, r.request_id, `${r.topic}:${r.partition}@${r.offset}`]));
  $("unpriced-note").textContent = `(${intFormat.format(data.unpriced.calls)} calls; estimated ${usd(data.unpriced.estimated_cost_usd)}; providers reported ${usd(data.unpriced.reported_cost_usd)})`;
  table("unpriced", ["model", "calls", "tokens in / out", "estimate", "reported cost"], data.unpriced.by_model.map((m) => [`${m.provider}/${m.model}`, intFormat.format(m.calls), `${intFormat.format(m.input_tokens)} / ${intFormat.format(m.output_tokens)}`, usd(m.estimated_cost_usd), usd(m.reported_cost_usd)]));
}

// -- Refresh loop -----------------------------------------------------------------
function report(error) {
  if (error instanceof Unauthorized) { showLogin(sessionStorage.getItem(TOKEN_KEY) ? "That token was refused." : ""); return; }
  $("updated").textContent = "update failed: " + error.message;
  $("updated").className = "bad";
}

async function refresh() {
  const period = state.period;
  const [now, budgets, alerts, movers, deadLetters] = await Promise.all([
    get("/v1/dashboard/now"), get("/v1/dashboard/budgets"), get("/v1/dashboard/alerts"),
    get(`/v1/dashboard/movers?period=${period}`), get("/v1/dashboard/dead_letters"),
    refreshWho(), refreshChart(),
  ]);
  $("login").hidden = true;
  $("dashboard").hidden = false;
  drawNow(now); drawBudgets(budgets); drawAlerts(alerts); drawMovers(movers); drawDeadLetters(deadLetters);
  $("updated").textContent = "updated " + new Date().toISOString().slice(11, 19) + " UTC";
  $("updated").className = "muted";
  document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
}

let timer = null;
function schedule() {
  clearTimeout(timer);
  timer = setTimeout(() => refresh().catch(report).finally(schedule), REFRESH_MS);
}
function refreshNow() { refresh().catch(report).finally(schedule); }

function showLogin(message) {
  clearTimeout(timer);
  $("dashboard").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("token").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("[data-period]")) {
    button.classList.toggle("on", button.dataset.period === state.period);
    button.addEventListener("click", () => {
      state.period = button.dataset.period;
      for (const other of document.querySelectorAll("[data-period]")) other.classList.toggle("on", other === button);
      refreshNow();
    });
  }
  for (const button of document.querySelectorAll("[data-by]")) {
    button.addEventListener("click", () => { state.by = button.dataset.by; state.sort = { key: "cost_usd", asc: false }; refreshNow(); });
  }
  $("drill-back").addEventListener("click", () => { state.tenant = null; refreshNow(); });
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    start();
  });
  start();
});

// Ask whether this tab may read before reading: a refused request would be logged as
// an error in the console.
async function start() {
  try {
    const session = await get("/v1/dashboard/session");
    if (!session.authorized) {
      showLogin(sessionStorage.getItem(TOKEN_KEY) ? "That token was refused." : "");
      return;
    }
    refreshNow();
  } catch (error) { report(error); }
}
