//! The gateway's own endpoints: `/healthz` (the process is alive) and `/readyz` (ready to
//! proxy: configured and listening). Later: `/metrics` and `/status`, and a `/readyz` that
//! follows the upstream. During a shutdown the listener is closed at once, so probes see
//! "connection refused" rather than a 503.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::app::Gateway;

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
