//! The gateway's shared state and its HTTP surface: which paths exist and what guards them.
//!
//! Routes: `/healthz`, `/readyz` (admin), everything under `/v1/` and `/admin/v1/` (proxied to
//! Notion), anything else 404 in Notion's shape. In front of every route:
//!
//! 1. `SetRequestId` / `PropagateRequestId` (tower-http): every response carries `x-request-id`,
//!    the caller's own or a new UUID, and the gateway's error bodies quote it.
//! 2. [`guard`]: refuses what must never be forwarded (absolute-form targets, `CONNECT`,
//!    `TRACE`) and request heads over `server.max_header_bytes`, before any route runs. This is
//!    what keeps the gateway from being an open proxy (PRODUCT.md P1).
//!
//! The layers are stateless (state lives in [`Gateway`], shared by `Arc`), so it does not matter
//! that axum may instantiate them per connection.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use http::Method;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

use crate::config::Config;
use crate::error::GatewayError;
use crate::headers::{self, REQUEST_ID};
use crate::upstream::Upstream;
use crate::{admin, proxy};

/// State shared by every connection and request.
pub struct Gateway {
    pub config: Config,
    pub upstream: Upstream,
    /// Flips to `true` when the drain deadline passes: requests still waiting answer 503.
    hard_stop: watch::Receiver<bool>,
}

impl Gateway {
    pub fn new(
        config: Config,
        hard_stop: watch::Receiver<bool>,
    ) -> Result<Self, crate::body::BoxError> {
        let upstream = Upstream::new(&config.upstream)?;
        Ok(Self {
            config,
            upstream,
            hard_stop,
        })
    }

    /// Resolves when the drain deadline has passed. Never resolves if shutdown never comes.
    pub async fn hard_stopped(&self) {
        let mut rx = self.hard_stop.clone();
        if rx.wait_for(|stop| *stop).await.is_err() {
            // The sender is gone only after `run` returned; nothing will stop us then.
            std::future::pending::<()>().await;
        }
    }
}

/// The router with its guard and request-id layers.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .fallback(proxy::handle)
        .layer(middleware::from_fn_with_state(gw.clone(), guard))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(SetRequestIdLayer::new(
            REQUEST_ID.clone(),
            RequestIds::new(),
        ))
        .with_state(gw)
}

/// Makes request ids that look like random UUIDs: a random per-process half and a counter half
/// (scrambled), so ids are unique within a process and collide across processes only by
/// chance. Unlike `Uuid::new_v4`, no `getrandom` syscall per request.
#[derive(Clone)]
struct RequestIds {
    seed: [u8; 16],
    counter: Arc<AtomicU64>,
}

impl RequestIds {
    fn new() -> Self {
        Self {
            seed: *uuid::Uuid::new_v4().as_bytes(),
            counter: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _req: &http::Request<B>) -> Option<RequestId> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // splitmix64 scrambles the counter; the version/variant bits uuid sets take 2 of its 64
        // bits, so ids repeat only by (astronomically unlikely) chance.
        let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let mut bytes = self.seed;
        bytes[8..].copy_from_slice(&z.to_be_bytes());
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let mut buf = uuid::Uuid::encode_buffer();
        let text = id.hyphenated().encode_lower(&mut buf);
        http::HeaderValue::from_str(text).ok().map(RequestId::new)
    }
}

/// The request id the caller will see (set by `SetRequestIdLayer` before anything else runs).
pub fn request_id(req: &Request) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

async fn guard(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    match check(&gw.config, &req) {
        Ok(()) => next.run(req).await,
        Err(err) => {
            let id = request_id(&req);
            crate::telemetry::log_rejection(&req, &err, &id);
            err.to_response(&id)
        }
    }
}

fn check(config: &Config, req: &Request) -> Result<(), GatewayError> {
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
    Ok(())
}
