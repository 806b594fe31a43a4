//! The gateway's shared state and its HTTP surface: which paths exist and what guards them.
//!
//! [`App::handle`] is the one entry point for every request hyper parses:
//!
//! 1. **Request id**: every response carries `x-request-id`, the caller's own or a new one, and
//!    the gateway's error bodies quote it.
//! 2. **Guard**: refuses what must never be forwarded (absolute-form targets, `CONNECT`,
//!    `TRACE`) and request heads over `server.max_header_bytes`, before anything else runs.
//!    This is what keeps the gateway from being an open proxy (PRODUCT.md P1).
//! 3. **Dispatch**: `/v1/*` and `/admin/v1/*` go straight to [`proxy::handle`]; everything else
//!    (the gateway's own endpoints, and Notion-shaped 404s) goes to an axum router.
//!
//! The proxied path deliberately bypasses axum's router and middleware: their boxed futures,
//! extension maps and body boxing were the largest part of the gateway's own per-request work
//! in a callgrind profile. `bench/instructions.py` measures the result (README, Performance).
//!
//! State lives in [`Gateway`], shared by `Arc`, so nothing depends on how many times a
//! service is cloned or instantiated per connection.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use http::{HeaderValue, Method, Request};
use hyper::body::Incoming;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::config::Config;
use crate::error::GatewayError;
use crate::headers::{self, REQUEST_ID};
use crate::shaper::Shaper;
use crate::upstream::Upstream;
use crate::{admin, proxy};

/// State shared by every connection and request.
pub struct Gateway {
    pub config: Config,
    pub upstream: Upstream,
    pub shaper: Shaper,
    pub retries: crate::retry::Retries,
    /// Renders `/metrics`; `None` when another metrics recorder was installed first.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Flips to `true` when the drain deadline passes: requests still waiting answer 503.
    hard_stop: watch::Receiver<bool>,
}

impl Gateway {
    pub fn new(
        config: Config,
        hard_stop: watch::Receiver<bool>,
    ) -> Result<Self, crate::body::BoxError> {
        let upstream = Upstream::new(&config.upstream)?;
        let redis = match config.limits.shared.clone() {
            Some(cfg) => Some(crate::shaper::redis::RedisBudgets::new(cfg)?),
            None => None,
        };
        let shaper = Shaper::with_redis(config.limits.clone(), redis);
        let retries = crate::retry::Retries::new(config.retry.clone());
        Ok(Self {
            config,
            upstream,
            shaper,
            retries,
            metrics: crate::metrics::install(),
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

    /// Answers one request from a client at `peer`.
    pub async fn handle(&self, mut req: Request<Incoming>, peer: IpAddr) -> Response {
        let id = match req.headers().get(&REQUEST_ID) {
            Some(v) => v.clone(),
            None => {
                let v = self.ids.next();
                req.headers_mut().insert(REQUEST_ID.clone(), v.clone());
                v
            }
        };
        let mut resp = match check(&self.gw.config, &req) {
            Err(err) => {
                crate::telemetry::log_rejection(&req, &err, &id);
                crate::metrics::rejection(err.reason());
                err.to_response(id.to_str().unwrap_or(""))
            }
            Ok(()) if proxy::is_proxied(req.uri().path()) => {
                proxy::handle(&self.gw, req, peer, &id).await
            }
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

/// Makes request ids that look like random UUIDs: a random per-process half and a counter half
/// (scrambled), so ids are unique within a process and collide across processes only by
/// chance. Unlike `Uuid::new_v4`, no `getrandom` syscall per request.
struct RequestIds {
    seed: [u8; 16],
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        Self {
            seed: *uuid::Uuid::new_v4().as_bytes(),
            counter: AtomicU64::new(1),
        }
    }

    fn next(&self) -> HeaderValue {
        let n = self
            .counter
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(u64::from_le_bytes([
                self.seed[0],
                self.seed[1],
                self.seed[2],
                self.seed[3],
                self.seed[4],
                self.seed[5],
                self.seed[6],
                self.seed[7],
            ]));
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
        HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("-"))
    }
}

fn check<B>(config: &Config, req: &Request<B>) -> Result<(), GatewayError> {
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
