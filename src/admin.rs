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
            "max_wait_s": gw.config.limits.max_wait.as_secs_f64(),
            "adaptive": gw.config.limits.adaptive,
        },
        "budgets": budgets_status(&gw),
        "tokens": shaper.tokens,
        "workspaces": shaper.workspaces,
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

/// The same as the JSON, as one self-contained page (no scripts, no external resources).
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
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{} ok, {} 4xx, {} 5xx, {} transport</td></tr>\n",
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
        ));
    }
    for w in &s.workspaces {
        rows.push_str(&format!(
            "<tr><td><i>workspace</i> {}</td><td></td><td>{}</td><td>{} / {}</td><td>{}</td><td>{} / {}</td><td></td><td></td></tr>\n",
            esc(&w.key),
            w.queued,
            w.effective_rate,
            w.rate,
            opt(w.paused_for_s),
            w.notion_429,
            w.notion_529,
        ));
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>notion-gateway status</title>\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}</style></head><body>\
<h1>notion-gateway</h1><p>upstream {}; default budget {} requests per minute; max wait {} s</p>\
<table><tr><th>integration</th><th>workspace</th><th>queued</th><th>rate now / configured</th>\
<th>paused (s)</th><th>Notion 429 / 529</th><th>last upstream answer</th><th>upstream answers</th></tr>\n{}</table>\
<p>JSON: <code>curl /status</code>. Keys are integration names or token hash prefixes.</p></body></html>\n",
        esc(gw.config.upstream.base.to_string().trim_end_matches('/')),
        gw.config.limits.per_minute,
        gw.config.limits.max_wait.as_secs_f64(),
        rows
    )
}

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
