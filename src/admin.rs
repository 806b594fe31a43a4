//! The gateway's own endpoints: `/healthz` (the process is alive) and `/readyz` (ready to
//! proxy: configured and listening). Later: `/metrics` and `/status`, and a `/readyz` that
//! follows the upstream. During a shutdown the listener is closed at once, so probes see
//! "connection refused" rather than a 503.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;

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

/// Anything that is neither proxied nor one of the gateway's own endpoints.
pub async fn not_found(req: Request) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    GatewayError::NotFound(req.uri().path().to_owned()).to_response(id)
}
