//! The gateway's own endpoints: `/healthz` (the process is alive) and `/readyz` (ready to
//! proxy: configured, listening, and not draining). Later: `/metrics` and `/status`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;

use crate::app::{request_id, Gateway};
use crate::error::notion_error;

pub async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

pub async fn readyz(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    if gw.is_draining() {
        return notion_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "the gateway is shutting down",
            &request_id(&req),
            Some(1),
        );
    }
    Json(serde_json::json!({
        "status": "ready",
        "upstream": gw.config.upstream.base.to_string().trim_end_matches('/'),
    }))
    .into_response()
}
