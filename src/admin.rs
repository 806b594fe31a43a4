//! The gateway's own endpoints: `/healthz` (the process is alive), `/readyz` (ready to
//! proxy: configured and listening), `/status` (the shaper's keys as JSON) and `/metrics`
//! (Prometheus text). `/readyz` follows the upstream: ready while it answered more recently
//! than it failed, probing it when nothing was learned for a while. During a shutdown the listener is closed at once, so probes see
//! "connection refused" rather than a 503.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::HeaderValue;

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::headers::REQUEST_ID;

pub async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// How long `/readyz` trusts what the last attempts said before it probes the upstream.
const PROBE_AFTER: Duration = Duration::from_secs(30);

/// Ready while the upstream answered more recently than it failed. When nothing was learned
/// for [`PROBE_AFTER`] (an idle gateway, or a fresh one), a light probe asks first.
pub async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    let up = &gw.upstream;
    if up.health.is_stale(PROBE_AFTER) {
        up.probe(gw.config.upstream.connect_timeout + Duration::from_secs(5))
            .await;
    }
    let r = up.health.reachability();
    let budgets = budgets_status(&gw);
    // Redis unreachable is "degraded", not "unready": the replica still serves (on its local
    // share); taking every replica out of a load balancer would fail every request.
    let degraded = budgets["mode"] == "local_share";
    let body = Json(serde_json::json!({
        "status": match (r.ready, degraded) {
            (false, _) => "upstream_unreachable",
            (true, true) => "degraded",
            (true, false) => "ready",
        },
        "upstream": gw.config.upstream.base.to_string().trim_end_matches('/'),
        "last_answer_s_ago": r.last_answer_ago.map(|d| d.as_secs_f64()),
        "last_error": r.last_error,
        "budgets": budgets,
    }));
    if r.ready {
        body.into_response()
    } else {
        (http::StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// The shaper's state per token and workspace: queue depth, configured and effective rate,
/// pause, Notion's 429/529 and what Notion answered recently. Keys are integration names or
/// token hash prefixes, never tokens. JSON, or a small HTML page for a browser
/// (`Accept: text/html`).
pub async fn status(State(gw): State<Arc<Gateway>>, headers: http::HeaderMap) -> Response {
    let shaper = gw.shaper.snapshot();
    let wants_html = headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if wants_html {
        return axum::response::Html(status_html(&gw, &shaper)).into_response();
    }
    Json(serde_json::json!({
        "upstream": gw.config.upstream.base.to_string().trim_end_matches('/'),
        "limits": {
            "plan": gw.config.limits.plan.name(),
            "per_minute": gw.config.limits.per_minute,
            "rate": gw.config.limits.smoothing.map(|s| s.rate),
            "burst": gw.config.limits.smoothing.map(|s| s.burst),
            "max_queue": gw.config.limits.max_queue,
            "max_tokens": gw.config.limits.max_tokens,
            "max_wait_s": gw.config.limits.max_wait.as_secs_f64(),
            "adaptive": gw.config.limits.adaptive,
        },
        "budgets": budgets_status(&gw),
        // Configured integrations, then the most recently used others (at most
        // shaper::status::OTHERS_SHOWN); every token is counted in tokens_total.
        "tokens": shaper.tokens,
        "tokens_total": shaper.tokens_total,
        "queued_other_tokens": shaper.queued_other_tokens,
        // Configured workspaces and the first discovered ones (bounded); all are counted.
        "workspaces": shaper.workspaces,
        "workspaces_total": shaper.workspaces_total,
        // Who may use the gateway, and every gateway key by name (never the key).
        "access": {
            "mode": gw.access.mode().name(),
            "keys": gw.access.status(),
        },
    }))
    .into_response()
}

/// Where budgets live: `{"mode": "local"}`, or the shared budgets' state (`shared`, or
/// `local_share` while Redis is unreachable). The Redis URL is shown without its password.
fn budgets_status(gw: &Gateway) -> serde_json::Value {
    match gw.shaper.redis_status() {
        None => serde_json::json!({"mode": "local"}),
        Some(s) => {
            serde_json::to_value(s).unwrap_or_else(|_| serde_json::json!({"mode": "unknown"}))
        }
    }
}

/// The same as the JSON, as one self-contained page that keeps itself current: rendered here
/// once (so it reads without scripts too), then its inline script fetches `/status` and
/// `/readyz` every 1.5 s and updates the table in place (no reload, no flicker), counts pauses
/// down between fetches, and draws the last ten minutes it has seen (queue depth, requests,
/// Notion's 429s) as inline SVG. No external resources: it works offline. Fields the script
/// does not know (newer gateways add some) are shown as `name=value` in the last column.
fn status_html(gw: &Gateway, s: &crate::shaper::Snapshot) -> String {
    fn esc(t: &str) -> String {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    }
    fn opt(v: Option<f64>) -> String {
        v.map_or("–".into(), |x| format!("{x:.1}"))
    }
    let mut rows = String::new();
    for k in &s.tokens {
        let u = k.upstream.as_ref();
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{} ok, {} 4xx, {} 5xx, {} transport, {} 429/529</td><td></td></tr>\n",
            esc(&k.key),
            esc(k.workspace.as_deref().unwrap_or("")),
            k.queued,
            k.effective_rate,
            k.rate,
            opt(k.paused_for_s),
            k.notion_429,
            k.notion_529,
            esc(&u.and_then(|u| u.last).map_or("–".into(), |l| {
                format!("{l} {}s ago", opt(u.and_then(|u| u.last_s_ago)))
            })),
            u.map_or(0, |u| u.ok),
            u.map_or(0, |u| u.client_errors),
            u.map_or(0, |u| u.server_errors),
            u.map_or(0, |u| u.transport_errors),
            u.map_or(0, |u| u.pushed_back),
        ));
    }
    for w in &s.workspaces {
        rows.push_str(&format!(
            "<tr><td><i>workspace</i> {}</td><td></td><td>{}</td><td>{} / {}</td><td>{}</td><td>{} / {}</td><td></td><td></td><td></td></tr>\n",
            esc(&w.key),
            w.queued,
            w.effective_rate,
            w.rate,
            opt(w.paused_for_s),
            w.notion_429,
            w.notion_529,
        ));
    }
    let backend = match gw.shaper.redis_status() {
        None => "local".to_owned(),
        Some(st) => st.mode.to_owned(),
    };
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>notion-gateway status</title>\
<meta name=\"viewport\" content=\"width=device-width\"><style>{STATUS_CSS}</style></head>\
<body data-updates=\"0\"><h1>notion-gateway</h1><p>upstream {}; default budget {} requests per minute; max wait {} s</p>\
<p class=\"bar\"><span>readiness: <b id=\"ready\">–</b></span><span>budgets: <b id=\"backend\">{}</b></span>\
<span id=\"updated\">rendered by the gateway; live updates need scripts</span></p>\
<div id=\"chart\"></div>\
<table><thead><tr><th>integration</th><th>workspace</th><th>queued</th><th>rate now / configured</th>\
<th>paused (s)</th><th>Notion 429 / 529</th><th>last upstream answer</th><th>upstream answers</th><th>window, plan, other</th></tr></thead>\
<tbody id=\"rows\">\n{}</tbody></table>\
<p>JSON: <code>curl /status</code>. Keys are integration names or token hash prefixes.</p>\
<script>{STATUS_SCRIPT}</script></body></html>\n",
        esc(gw.config.upstream.base.to_string().trim_end_matches('/')),
        gw.config.limits.per_minute,
        gw.config.limits.max_wait.as_secs_f64(),
        esc(&backend),
        rows
    )
}

const STATUS_CSS: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}\
.bar span{margin-right:2em}.bad{color:#b00}.ok{color:#070}.warn{color:#a60}\
#chart svg{border:1px solid #ccc;background:#fcfcfc}.legend span{margin-right:1.5em}";

/// The page's script: plain DOM calls, `textContent` only (nothing from the JSON is parsed
/// as HTML).
const STATUS_SCRIPT: &str = r##"
"use strict";
const KNOWN = new Set(["key","workspace","queued","rate","effective_rate","burst","paused_for_s",
  "notion_429","notion_529","upstream","window","plan"]);
const HISTORY_MS = 10 * 60 * 1000, EVERY_MS = 1500;
const history = [];
let fetchedAt = 0, updates = 0;
const $ = (id) => document.getElementById(id);
function cell(tr, text, cls) {
  const td = document.createElement("td");
  if (text instanceof Node) td.appendChild(text); else td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
function num(x, d) { return (typeof x === "number") ? x.toFixed(d) : "–"; }
function shortValue(v) {
  const s = (v !== null && typeof v === "object") ? JSON.stringify(v) : String(v);
  return s.length > 80 ? s.slice(0, 77) + "..." : s;
}
function extras(k) {
  const parts = [];
  const w = k.window;
  if (w && typeof w === "object") {
    parts.push("window " + (w.used ?? "?") + " / " + (w.budget ?? "?") +
      (typeof w.resets_in_s === "number" ? ", resets in " + Math.ceil(w.resets_in_s) + " s" : ""));
  }
  if (k.plan !== undefined && k.plan !== null) parts.push("plan " + shortValue(k.plan));
  for (const [name, v] of Object.entries(k)) {
    if (!KNOWN.has(name) && v !== null && v !== undefined) parts.push(name + "=" + shortValue(v));
  }
  return parts.join("; ");
}
function row(k, isWorkspace) {
  const tr = document.createElement("tr");
  if (isWorkspace) {
    const i = document.createElement("i"); i.textContent = "workspace ";
    const span = document.createElement("span"); span.append(i, String(k.key));
    cell(tr, span);
  } else {
    cell(tr, String(k.key));
  }
  cell(tr, k.workspace ? String(k.workspace) : "");
  cell(tr, String(k.queued ?? 0), k.queued > 0 ? "warn" : "");
  cell(tr, k.effective_rate + " / " + k.rate, k.effective_rate < k.rate ? "warn" : "");
  const p = cell(tr, "–");
  if (typeof k.paused_for_s === "number") { p.dataset.pausedFor = k.paused_for_s; p.className = "bad"; }
  cell(tr, (k.notion_429 ?? 0) + " / " + (k.notion_529 ?? 0));
  const u = k.upstream;
  if (u && !isWorkspace) {
    cell(tr, u.last ? u.last + " " + num(u.last_s_ago, 1) + "s ago" : "–");
    const pushed = (typeof u.pushed_back === "number") ? ", " + u.pushed_back + " 429/529" : "";
    cell(tr, u.ok + " ok, " + u.client_errors + " 4xx, " + u.server_errors + " 5xx, " +
      u.transport_errors + " transport" + pushed, u.server_errors + u.transport_errors > 0 ? "warn" : "");
  } else {
    cell(tr, ""); cell(tr, "");
  }
  cell(tr, extras(k));
  return tr;
}
function countdown() {
  const gone = (Date.now() - fetchedAt) / 1000;
  for (const td of document.querySelectorAll("td[data-paused-for]")) {
    const left = Number(td.dataset.pausedFor) - gone;
    td.textContent = left > 0 ? left.toFixed(1) : "0.0";
  }
}
function sample(s) {
  let queued = 0, answered = 0, r429 = 0;
  for (const k of (s.tokens || [])) {
    queued += k.queued || 0;
    r429 += k.notion_429 || 0;
    const u = k.upstream || {};
    answered += (u.ok || 0) + (u.client_errors || 0) + (u.server_errors || 0) +
      (u.transport_errors || 0) + (u.pushed_back || 0);
  }
  for (const w of (s.workspaces || [])) r429 += w.notion_429 || 0;
  const now = Date.now();
  const prev = history[history.length - 1];
  history.push({ t: now, queued, answered, r429,
    requests: prev ? Math.max(0, answered - prev.answered) : 0,
    limited: prev ? Math.max(0, r429 - prev.r429) : 0 });
  while (history.length && history[0].t < now - HISTORY_MS) history.shift();
}
const SERIES = [["queued", "queue depth", "#36c"], ["requests", "upstream answers per update", "#393"],
  ["limited", "Notion 429s per update", "#c33"]];
function chart() {
  const W = 600, H = 120, ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H);
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  const t1 = Date.now(), t0 = t1 - HISTORY_MS;
  const legend = document.createElement("div"); legend.className = "legend";
  for (const [field, label, color] of SERIES) {
    const max = Math.max(1, ...history.map((h) => h[field]));
    const pts = history.map((h) =>
      (((h.t - t0) / HISTORY_MS) * W).toFixed(1) + "," + (H - 4 - (h[field] / max) * (H - 8)).toFixed(1));
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("fill", "none"); line.setAttribute("stroke", color);
    line.setAttribute("stroke-width", "1.5"); line.setAttribute("points", pts.join(" "));
    line.dataset.series = field;
    svg.appendChild(line);
    const last = history.length ? history[history.length - 1][field] : 0;
    const span = document.createElement("span"); span.style.color = color;
    span.textContent = label + ": " + last + " (max " + max + ")";
    legend.appendChild(span);
  }
  const note = document.createElement("span");
  note.textContent = "last 10 minutes seen by this page, " + history.length + " samples";
  legend.appendChild(note);
  $("chart").replaceChildren(svg, legend);
}
async function ready() {
  try {
    const r = await fetch("/readyz", { cache: "no-store" });
    const j = await r.json().catch(() => ({}));
    return { code: r.status, status: j.status || String(r.status), error: j.last_error };
  } catch (e) {
    return { code: 0, status: "gateway unreachable" };
  }
}
async function tick() {
  try {
    const [res, rd] = await Promise.all([
      fetch("/status", { headers: { accept: "application/json" }, cache: "no-store" }), ready()]);
    const s = await res.json();
    fetchedAt = Date.now();
    const rows = [];
    for (const k of (s.tokens || [])) rows.push(row(k, false));
    for (const w of (s.workspaces || [])) rows.push(row(w, true));
    $("rows").replaceChildren(...rows);
    const b = s.budgets || {};
    $("backend").textContent = (b.mode || "?") + (b.last_error ? " (" + b.last_error + ")" : "");
    $("backend").className = b.mode === "local_share" ? "bad" : "";
    $("ready").textContent = rd.status + (rd.error ? " (" + rd.error + ")" : "");
    $("ready").className = rd.code === 200 && rd.status === "ready" ? "ok" : (rd.code === 200 ? "warn" : "bad");
    sample(s);
    chart();
    countdown();
    updates += 1;
    document.body.dataset.updates = updates;
    $("updated").textContent = "updated " + new Date(fetchedAt).toLocaleTimeString() +
      " (every " + EVERY_MS / 1000 + " s)";
  } catch (e) {
    $("updated").textContent = "update failed: " + e + "; retrying";
  }
}
tick();
setInterval(tick, EVERY_MS);
setInterval(countdown, 250);
"##;

/// Prometheus text format, version 0.0.4.
pub async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let Some(handle) = &gw.metrics else {
        return GatewayError::NotFound("/metrics (another metrics recorder is installed)".into())
            .to_response("");
    };
    let body = crate::metrics::render(handle, gw.shaper.snapshot().gauges());
    (
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

/// Anything that is neither proxied nor one of the gateway's own endpoints.
/// Logged like any refused request; the probes of `/healthz` and `/readyz` are not logged.
pub async fn not_found(req: Request) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .cloned()
        .unwrap_or(HeaderValue::from_static(""));
    let err = GatewayError::NotFound(req.uri().path().to_owned());
    crate::telemetry::log_rejection(&req, &err, &id);
    crate::metrics::rejection(err.reason());
    err.to_response(id.to_str().unwrap_or(""))
}
