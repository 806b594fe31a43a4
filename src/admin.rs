//! The gateway's own endpoints: `/healthz` (the process is alive), `/readyz` (ready to
//! proxy: configured and listening), `/status` (the shaper's keys as JSON) and `/metrics`
//! (Prometheus text). Later: a `/readyz` that follows the upstream. During a shutdown the listener is closed at once, so probes see
//! "connection refused" rather than a 503.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::HeaderValue;

use crate::app::Gateway;
use crate::error::GatewayError;
use crate::headers::REQUEST_ID;

pub async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

pub async fn readyz(State(gw): State<Arc<Gateway>>) -> Response {
    Json(serde_json::json!({
        "status": "ready",
        "upstream": gw.config.upstream.base.to_string().trim_end_matches('/'),
    }))
    .into_response()
}

/// The shaper's state per token and workspace: queue depth, configured and effective rate,
/// pause. Keys are integration names or token hash prefixes, never tokens.
pub async fn status(State(gw): State<Arc<Gateway>>) -> Response {
    let shaper = gw.shaper.snapshot();
    Json(serde_json::json!({
        "upstream": gw.config.upstream.base.to_string().trim_end_matches('/'),
        "limits": {
            "rate": gw.config.limits.rate,
            "burst": gw.config.limits.burst,
            "max_queue": gw.config.limits.max_queue,
            "max_wait_s": gw.config.limits.max_wait.as_secs_f64(),
            "adaptive": gw.config.limits.adaptive,
        },
        "tokens": shaper.tokens,
        "workspaces": shaper.workspaces,
    }))
    .into_response()
}

/// Prometheus text format, version 0.0.4.
pub async fn metrics(State(gw): State<Arc<Gateway>>) -> Response {
    let Some(handle) = &gw.metrics else {
        return GatewayError::NotFound("/metrics (another metrics recorder is installed)".into())
            .to_response("");
    };
    let body = crate::metrics::render(handle, &gw.shaper.snapshot());
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
