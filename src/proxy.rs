//! The request pipeline: a proxied request's life from the caller to Notion and back.
//!
//! Stages (pingora's names): *request filter* — the path must be under `/v1/` or `/admin/v1/`,
//! the body within `server.max_body`; *upstream request* — headers rewritten
//! ([`crate::headers`]), URI built by [`crate::upstream`], body streamed through a
//! [`GuardedBody`]; *upstream response* — hop-by-hop headers removed, body streamed back through
//! a [`GuardedBody`]; *fail to proxy* — a [`GatewayError`] becomes a Notion-shaped answer;
//! *logging* — one event per request.
//!
//! Deadlines: the whole pipeline up to response headers runs under `server.request_timeout`
//! (checked at every await, so one timer serves per await rather than one per bound);
//! one upstream attempt under `upstream.attempt_timeout`; bodies under
//! `server.body_idle_timeout`. When the drain deadline passes during shutdown, a request that
//! has no response yet is answered 503.

use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderValue, Request, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::app::Gateway;
use crate::body::GuardedBody;
use crate::error::GatewayError;
use crate::headers;
use crate::telemetry::{self, RequestLog};

/// Path prefixes that are forwarded; anything else is answered by the gateway itself.
pub const PROXIED_PREFIXES: [&str; 2] = ["/v1/", "/admin/v1/"];

/// Whether a path is forwarded to Notion.
pub fn is_proxied(path: &str) -> bool {
    PROXIED_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// Proxies one `/v1/*` or `/admin/v1/*` request and logs it.
pub async fn handle(gw: &Gateway, req: Request<Incoming>, id: &HeaderValue) -> Response {
    let start = Instant::now();
    let mut log = RequestLog::new(&req, id);

    let deadline = start + gw.config.server.request_timeout;
    let outcome = tokio::select! {
        r = forward(gw, req, deadline) => r,
        () = gw.hard_stopped() => Err(GatewayError::ShuttingDown),
    };

    let response = match outcome {
        Ok(resp) => resp,
        Err(err) => {
            log.error = Some(err.reason());
            err.to_response(id.to_str().unwrap_or(""))
        }
    };
    log.finish(&response, start.elapsed());
    telemetry::log_request(&log);
    response
}

async fn forward(
    gw: &Gateway,
    req: Request<Incoming>,
    deadline: Instant,
) -> Result<Response, GatewayError> {
    let cfg = &gw.config;
    let (mut parts, body) = req.into_parts();

    // A declared length over the limit is refused before anything is sent upstream. Without a
    // length (chunked), the body is counted as it streams and cut at the limit, so the upstream
    // never sees a complete oversized request.
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = cfg.server.max_body;
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let count_limit = if declared.is_some() {
        None
    } else {
        Some(limit)
    };
    let body = GuardedBody::new(body, cfg.server.body_idle_timeout, count_limit);

    let uri = gw.upstream.uri_for(parts.uri.path_and_query())?;
    headers::to_upstream(
        &mut parts.headers,
        &gw.upstream.host,
        &cfg.upstream.notion_version,
    );
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.extensions = Default::default();
    let upstream_req = http::Request::from_parts(parts, body);

    // One timer for both bounds: whichever of the attempt timeout and the request deadline
    // comes first.
    let attempt = cfg.upstream.attempt_timeout;
    let attempt_end = Instant::now() + attempt;
    let resp = tokio::time::timeout_at(attempt_end.min(deadline), gw.upstream.send(upstream_req))
        .await
        .map_err(|_| {
            if attempt_end < deadline {
                GatewayError::UpstreamTimeout(attempt)
            } else {
                GatewayError::DeadlineExceeded(cfg.server.request_timeout)
            }
        })??;

    let (mut parts, body) = resp.into_parts();
    headers::to_caller(&mut parts.headers);
    let body = GuardedBody::new(body, cfg.server.body_idle_timeout, None);
    Ok(Response::from_parts(parts, Body::new(body)))
}
