//! The request pipeline: a proxied request's life from the caller to Notion and back, in
//! pingora's phases, one module each:
//!
//! 1. *request filter* ([`request::filter`]): an `Authorization` header must be present, the
//!    endpoint is classified ([`crate::catalogue`]), the body must fit `server.max_body` and is
//!    read into memory when it is small enough to go again;
//! 2. *upstream request* ([`request::UpstreamRequest`]): headers rewritten
//!    ([`crate::headers`]), URI built by [`crate::upstream`];
//! 3. *the attempt loop* ([`attempt::run`]): wait for the budget ([`crate::shaper`]), one
//!    attempt, and one outcome per attempt: an answer to pass on, Notion's 429/529 (the key is
//!    paused, [`pushback`]) or a failure a retry may repair ([`crate::retry`]);
//! 4. *response filter* ([`response`]): hop-by-hop headers removed, the body streamed back
//!    through a [`crate::body::GuardedBody`]; a [`GatewayError`] becomes a Notion-shaped answer;
//! 5. *logging* ([`handle`]): one event per request, and the request's metrics.
//!
//! Deadlines: the whole pipeline up to response headers runs under `server.request_timeout`
//! (checked at every await, so one timer serves per await rather than one per bound);
//! one upstream attempt under `upstream.attempt_timeout`; bodies under
//! `server.body_idle_timeout`. When the drain deadline passes during shutdown, a request that
//! has no response yet is answered 503.

mod attempt;
mod discovery;
mod pushback;
mod request;
mod response;

use std::net::IpAddr;

use axum::response::Response;
use http::{HeaderValue, Request};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::metrics;
use crate::telemetry::{self, RequestLog};

/// Path prefixes that are forwarded; anything else is answered by the gateway itself.
pub const PROXIED_PREFIXES: [&str; 2] = ["/v1/", "/admin/v1/"];

/// Whether a path is forwarded to Notion.
pub fn is_proxied(path: &str) -> bool {
    PROXIED_PREFIXES.iter().any(|p| path.starts_with(p))
}

/// Proxies one `/v1/*` or `/admin/v1/*` request and logs it.
pub async fn handle(
    gw: &Gateway,
    req: Request<Incoming>,
    peer: IpAddr,
    id: &HeaderValue,
) -> Response {
    let start = Instant::now();
    let _in_flight = metrics::InFlight::start();
    let mut log = RequestLog::new(&req, id);

    let deadline = start + gw.config.server.request_timeout;
    let outcome = tokio::select! {
        r = forward(gw, req, peer, deadline, &mut log) => r,
        () = gw.hard_stopped() => Err(GatewayError::ShuttingDown),
    };

    let mut response = match outcome {
        // Response filter: an edge page becomes a Notion-shaped error.
        Ok(resp) => {
            let rid = id.to_str().unwrap_or("");
            response::normalise_error_page(resp, &gw.config, &log.method, rid).await
        }
        Err(err) => {
            log.error = Some(err.reason());
            if err.is_rejection() {
                metrics::rejection(err.reason());
            }
            err.to_response_with(id.to_str().unwrap_or(""), attempts_data(&err, &log))
        }
    };
    response::annotate(&mut response, &log);
    let took = start.elapsed();
    log.finish(&response, took);
    metrics::request(
        log.route,
        &log.method,
        response.status().as_u16(),
        took,
        log.request_bytes,
    );
    if let Some(key) = &log.key {
        metrics::key_request(key, response.status().as_u16(), log.queue_wait);
    }
    telemetry::log_request(&log);
    response
}

/// The pipeline up to the response head: request filter, upstream request, attempt loop.
async fn forward(
    gw: &Gateway,
    req: Request<Incoming>,
    peer: IpAddr,
    deadline: Instant,
    log: &mut RequestLog,
) -> Result<Response, GatewayError> {
    let filtered = request::filter(gw, req, peer, deadline, log).await?;
    let mut charge = filtered.charge;
    let _active = charge.key.as_ref().map(|k| k.start_request());
    let upstream =
        request::UpstreamRequest::new(gw, filtered.parts, filtered.endpoint, filtered.body)?;
    if let Some(key) = charge.key.clone() {
        // A key's `max_wait` bounds all its waiting, from here: its own rate, then the queue.
        let queue_deadline = key.max_wait.map_or(deadline, |w| {
            Instant::now()
                .checked_add(w)
                .map_or(deadline, |t| t.min(deadline))
        });
        charge.queue_deadline = Some(queue_deadline);
        pace(gw, &key, queue_deadline, log).await?;
    }
    attempt::run(gw, upstream, &charge, deadline, log).await
}

/// Waits for the key's own `rate` (`[[keys]] rate`) until `queue_deadline` at most; without a
/// `max_wait` of its own a normal key waits `limits.max_wait` at most, as it would in the
/// queue. A reload that removes the key ends the wait.
async fn pace(
    gw: &Gateway,
    key: &crate::access::Key,
    queue_deadline: Instant,
    log: &mut RequestLog,
) -> Result<(), GatewayError> {
    let now = Instant::now();
    let mut max_wait = queue_deadline.saturating_duration_since(now);
    if key.max_wait.is_none() && key.priority == crate::config::KeyPriority::Normal {
        max_wait = max_wait.min(gw.config.limits.max_wait);
    }
    let at = key
        .pace(now, max_wait)
        .map_err(|wait| GatewayError::KeyRate {
            retry_after: wait
                .as_secs()
                .saturating_add(u64::from(wait.subsec_nanos() > 0))
                .max(1),
        })?;
    if at > now {
        tokio::select! {
            biased;
            () = key.revoked() => return Err(GatewayError::UnknownKey),
            () = tokio::time::sleep_until(at) => {}
        }
        log.queue_wait += at - now;
    }
    Ok(())
}

/// For a 502 or 504 the gateway answers after trying Notion: how many attempts were made, what
/// each got, and Notion's request id of each that had one (strings, as the SDKs type
/// `additional_data`).
fn attempts_data(
    err: &GatewayError,
    log: &RequestLog,
) -> Option<serde_json::Map<String, serde_json::Value>> {
    if !matches!(err.status().as_u16(), 502 | 504) || log.attempt_log.is_empty() {
        return None;
    }
    let mut data = serde_json::Map::new();
    data.insert("attempts".into(), log.attempt_log.len().to_string().into());
    let got: Vec<serde_json::Value> = log
        .attempt_log
        .iter()
        .map(|(got, _)| (*got).into())
        .collect();
    data.insert("attempt_outcomes".into(), got.into());
    let ids: Vec<serde_json::Value> = log
        .attempt_log
        .iter()
        .filter_map(|(_, id)| {
            // Notion's ids are UUIDs: anything else from upstream is not echoed.
            let id = id.as_ref()?.to_str().ok()?;
            (id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                .then(|| id.into())
        })
        .collect();
    if !ids.is_empty() {
        data.insert("notion_request_ids".into(), ids.into());
    }
    Some(data)
}
