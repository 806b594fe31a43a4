//! The gateway's HTTP surface: which paths exist and what guards them.
//!
//! [`App::handle`] is the one entry point for every request hyper parses:
//!
//! 1. **Request id**: every response carries `x-request-id`, the caller's own (one header of
//!    at most 200 visible ASCII characters) or a new one, and the gateway's error bodies quote it.
//! 2. **Guard**: refuses what must never be forwarded (absolute-form targets, `CONNECT`,
//!    `TRACE`) and request heads over `server.max_header_bytes`, before anything else runs;
//!    for proxied paths also paths that could resolve elsewhere ([`crate::path`]), two
//!    `Authorization` headers, and a `Connection` header naming an end-to-end header the
//!    gateway relies on. Nothing refused here is charged or reaches Notion. This is what keeps
//!    the gateway from being an open proxy (docs/behaviour.md §1).
//! 3. **Dispatch**: `/v1/*` and `/admin/v1/*` go straight to [`proxy::handle`]; everything else
//!    (the gateway's own endpoints, and Notion-shaped 404s) goes to an axum router.
//!
//! The proxied path deliberately bypasses axum's router and middleware: their boxed futures,
//! extension maps and body boxing were the largest part of the gateway's own per-request work
//! in a callgrind profile. `bench/instructions.py` measures the result (README, Performance).
//!
//! State lives in [`Gateway`] (its own module, below this one and the pipeline); request ids
//! come from [`crate::request_id`].

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use http::{header, Method, Request};
use hyper::body::Incoming;
use tower::ServiceExt;

use crate::config::Config;
use crate::connections::Conn;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::headers::{self, REQUEST_ID};
use crate::request_id::{self, RequestIds};
use crate::{admin, proxy};

/// The whole HTTP surface as one service.
pub struct App {
    gw: Arc<Gateway>,
    admin: Router,
    ids: RequestIds,
}

impl App {
    pub fn new(gw: Arc<Gateway>) -> Self {
        // With a separate admin listener, the main port keeps only the probes.
        let admin = if gw.config.server.admin_listen.is_some() {
            probes_router(&gw)
        } else {
            admin_router(&gw)
        };
        Self {
            gw,
            admin,
            ids: RequestIds::new(),
        }
    }

    /// Answers one request from a client at `peer` on connection `conn`.
    pub async fn handle(&self, mut req: Request<Incoming>, peer: IpAddr, conn: &Conn) -> Response {
        let id = match request_id::callers(req.headers()) {
            Some(v) => v.clone(),
            None => {
                // None sent, or one that is too long, not visible ASCII, or sent twice: ours
                // replaces it upstream, in the log and in the response.
                let v = self.ids.next();
                req.headers_mut().insert(REQUEST_ID.clone(), v.clone());
                v
            }
        };
        let proxied = proxy::is_proxied(req.uri().path());
        // A connection of the probes' reserve takes proxied requests only if it can move into
        // the data plane now.
        let checked = check(&self.gw.config, &req, proxied).and_then(|()| {
            if proxied && !conn.may_proxy() {
                Err(GatewayError::ConnectionsBusy(
                    self.gw.config.server.max_connections,
                ))
            } else {
                Ok(())
            }
        });
        let mut resp = match checked {
            Err(err) => {
                crate::telemetry::log_rejection(&req, &err, &id);
                crate::metrics::rejection(err.reason());
                let mut resp = err.to_response(id.to_str().unwrap_or(""));
                if matches!(err, GatewayError::ConnectionsBusy(_)) {
                    // Its next request should open a connection of its own.
                    resp.headers_mut()
                        .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
                }
                resp
            }
            Ok(()) if proxied => proxy::handle(&self.gw, req, peer, &id).await,
            Ok(()) => match self.admin.clone().oneshot(req.map(Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            },
        };
        // The caller's id (or ours) wins over anything the upstream sent under the same name.
        resp.headers_mut().insert(REQUEST_ID.clone(), id);
        resp
    }
}

/// `/healthz` and `/readyz`; everything else is a Notion-shaped 404.
fn probes_router(gw: &Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .fallback(admin::not_found)
        .with_state(gw.clone())
}

/// The probes plus `/status` and `/metrics`: the main listener's admin routes, or the whole
/// of `server.admin_listen`.
pub fn admin_router(gw: &Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .route("/status", get(admin::status))
        .route("/metrics", get(admin::metrics))
        .fallback(admin::not_found)
        .with_state(gw.clone())
}

fn check<B>(config: &Config, req: &Request<B>, proxied: bool) -> Result<(), GatewayError> {
    if req.method() == Method::CONNECT || req.method() == Method::TRACE {
        return Err(GatewayError::MethodNotAllowed(req.method().clone()));
    }
    if req.uri().scheme().is_some() || req.uri().authority().is_some() {
        return Err(GatewayError::AbsoluteForm);
    }
    let size = headers::head_size(req.headers());
    let limit = config.server.max_header_bytes;
    if size > limit {
        return Err(GatewayError::HeadersTooLarge { size, limit });
    }
    if proxied {
        crate::path::check(req.uri().path()).map_err(GatewayError::InvalidPath)?;
        // Which one the budget is charged to and which one Notion reads would be a guess.
        if req
            .headers()
            .get_all(header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
        {
            return Err(GatewayError::DuplicateAuthorization);
        }
        if let Some(name) = headers::connection_names_end_to_end(req.headers()) {
            return Err(GatewayError::ConnectionNamesEndToEnd(name));
        }
    }
    Ok(())
}
