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

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::body::{GuardedBody, RequestBody};
use crate::catalogue;
use crate::config::Config;
use crate::error::{retry_after_secs, GatewayError};
use crate::gateway::Gateway;
use crate::headers::{self, ATTEMPTS, GATEWAY_CLIENT, QUEUE_WAIT};
use crate::metrics;
use crate::retry::{self, Failure};
use crate::shaper::budget::Pushback;
use crate::shaper::Scope;
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
        Ok(resp) => resp,
        Err(err) => {
            log.error = Some(err.reason());
            if err.is_rejection() {
                metrics::rejection(err.reason());
            }
            err.to_response(id.to_str().unwrap_or(""))
        }
    };
    if !log.queue_wait.is_zero() {
        response.headers_mut().insert(
            QUEUE_WAIT.clone(),
            HeaderValue::from(log.queue_wait.as_millis() as u64),
        );
    }
    if log.attempts > 1 {
        response
            .headers_mut()
            .insert(ATTEMPTS.clone(), HeaderValue::from(log.attempts));
    }
    let took = start.elapsed();
    log.finish(&response, took);
    metrics::request(
        log.route,
        &log.method,
        response.status().as_u16(),
        took,
        log.request_bytes,
    );
    telemetry::log_request(&log);
    response
}

async fn forward(
    gw: &Gateway,
    req: Request<Incoming>,
    peer: IpAddr,
    deadline: Instant,
    log: &mut RequestLog,
) -> Result<Response, GatewayError> {
    let cfg = &gw.config;
    let (mut parts, body) = req.into_parts();

    // Every request is charged to its token; without one there is nothing to charge, and
    // Notion would answer 401 anyway.
    let credential = parts
        .headers
        .get(header::AUTHORIZATION)
        .filter(|v| !headers::credential_of(v).is_empty())
        .cloned()
        .ok_or(GatewayError::Unauthorized)?;
    let caller = gw.shaper.caller(
        parts
            .headers
            .get(&GATEWAY_CLIENT)
            .map(HeaderValue::as_bytes),
        peer,
    );
    let endpoint = catalogue::classify(&parts.method, parts.uri.path());
    log.route = endpoint.template;

    let body = request_body(cfg, &parts.headers, body, deadline).await?;
    let uri = gw.upstream.uri_for(parts.uri.path_and_query())?;
    headers::to_upstream(
        &mut parts.headers,
        &gw.upstream.host,
        &cfg.upstream.notion_version,
    );
    // What another attempt sends: the body kept in memory (or none). `None`: the body streams
    // and goes once.
    let replay: Option<Option<Bytes>> = match &body {
        RequestBody::Replayable(b) => Some(b.clone()),
        RequestBody::Streaming(_) => None,
    };
    let mut first_body = Some(body);
    gw.retries.record_request();

    // Notion's last 429/529, passed on if the request cannot go again.
    let mut pushed_back: Option<(http::response::Parts, Bytes, Instant)> = None;
    // The last failed attempt's answer, passed on unchanged if the retry cannot go.
    let mut failed: Option<Answer> = None;
    let mut failures = 0u32;
    loop {
        let acquired = gw
            .shaper
            .acquire(
                headers::credential_of(&credential),
                caller,
                deadline,
                pushed_back.is_some() || failed.is_some(),
            )
            .await;
        let ticket = match (acquired, pushed_back.take(), failed.take()) {
            (Ok(t), _, _) => t,
            (Err(_), Some((parts, body, until)), _) => {
                return Ok(pushback_response(parts, body, until))
            }
            (Err(_), None, Some(answer)) => return answer.into_result(),
            (Err(r), None, None) => return Err(GatewayError::from_refusal(&r)),
        };
        let waited = ticket.waited.unwrap_or_default();
        metrics::queue_wait(&ticket.label, waited);
        log.integration = Some(ticket.label.clone());
        log.queue_wait += waited;
        log.attempts += 1;

        let Some(body) = first_body
            .take()
            .or_else(|| replay.clone().map(RequestBody::Replayable))
        else {
            // Not reached: a streamed body never loops.
            return Err(GatewayError::UpstreamBroken(
                "request body already sent".into(),
            ));
        };
        let request = build(
            parts.method.clone(),
            uri.clone(),
            parts.headers.clone(),
            body,
        );
        let sent = Instant::now();
        let result = attempt(gw, request, deadline).await;
        // Of the last attempt only: a reset after a 502 logs no upstream status.
        log.upstream_status = result.as_ref().ok().map(|r| r.status().as_u16());
        let outcome = match &result {
            Ok(resp) => metrics::status_outcome(resp.status().as_u16()),
            Err(GatewayError::UpstreamConnect { .. }) => "connect",
            Err(GatewayError::UpstreamBroken(_)) => "reset",
            Err(GatewayError::UpstreamTimeout(_)) => "timeout",
            Err(_) => "error",
        };
        metrics::upstream_attempt(endpoint.template, outcome, sent.elapsed());
        ticket.outcomes.record(outcome);
        let failure = match &result {
            Ok(resp) => match resp.status().as_u16() {
                429 | 529 => None,
                s @ (500 | 502 | 503 | 504 | 409) => Some(Failure::Status(s)),
                _ => return result.map(|r| caller_response(cfg, r)),
            },
            Err(GatewayError::UpstreamConnect { .. }) => Some(Failure::Connect),
            Err(GatewayError::UpstreamBroken(_)) => Some(Failure::Broken),
            Err(GatewayError::UpstreamTimeout(_)) => Some(Failure::Timeout),
            Err(_) => return result.map(|r| caller_response(cfg, r)),
        };

        let Some(failure) = failure else {
            // Notion's 429/529: it did not process the request. Pause the key it named, then
            // send it again, first in line, if the body can be replayed and the deadline allows.
            let resp = result?;
            let kind = if resp.status().as_u16() == 429 {
                Pushback::RateLimited
            } else {
                Pushback::Overloaded
            };
            let retry_after = parse_retry_after(resp.headers()).unwrap_or(Duration::from_secs(1));
            let (parts, body) = resp.into_parts();
            let body = read_small(body, cfg.server.body_idle_timeout, deadline).await;
            let reason = rate_limit_reason(&body);
            metrics::notion_pushback(&ticket.label, parts.status.as_u16(), reason.as_deref());
            let scope = rate_limit_scope(reason.as_deref());
            let paused_until = gw.shaper.push_back(&ticket, scope, kind, retry_after);
            tracing::debug!(
                integration = &*ticket.label,
                status = parts.status.as_u16(),
                retry_after_s = retry_after.as_secs_f64(),
                scope = ?scope,
                "Notion pushed back; key paused"
            );
            if replay.is_none() {
                return Ok(pushback_response(parts, body, paused_until));
            }
            pushed_back = Some((parts, body, paused_until));
            continue;
        };

        // A 5xx, a 409, a broken or refused connection, a timeout: may it go again?
        failures += 1;
        log.failed_attempts.push(failure.reason());
        let retry_cfg = gw.retries.config();
        let safety = endpoint.safety_for(replay.as_ref().and_then(|b| b.as_deref()));
        let repeatable = replay.is_some()
            && retry::may_retry(
                safety,
                gw.retries.unsafe_ok(&parts.method, endpoint.template),
                failure,
            );
        if !repeatable {
            return result.map(|r| caller_response(cfg, r));
        }
        if failures >= retry_cfg.max_attempts {
            metrics::retry_denied(endpoint.template, "attempts");
            return result.map(|r| caller_response(cfg, r));
        }
        let retry_after = match &result {
            Ok(r) if r.status() == http::StatusCode::SERVICE_UNAVAILABLE => {
                parse_retry_after(r.headers())
            }
            _ => None,
        };
        let answer = match result {
            Ok(resp) => match Answer::keep(resp, cfg, deadline).await {
                Ok(a) => a,
                // Too large to hold: it goes to the caller as it is.
                Err(resp) => return Ok(resp),
            },
            Err(e) => Answer::Error(e),
        };
        let wait = gw.retries.backoff(failures, retry_after);
        if Instant::now() + wait >= deadline {
            metrics::retry_denied(endpoint.template, "deadline");
            return answer.into_result();
        }
        if !gw.retries.take_retry() {
            metrics::retry_denied(endpoint.template, "budget");
            return answer.into_result();
        }
        metrics::retry(endpoint.template, failure.reason());
        tracing::debug!(
            integration = &*ticket.label,
            route = endpoint.template,
            reason = failure.reason(),
            wait_ms = wait.as_millis() as u64,
            "attempt failed; retrying"
        );
        tokio::time::sleep(wait).await;
        failed = Some(answer);
    }
}

/// A failed attempt's answer, held while its retry waits: Notion's response (head and small
/// body, passed on unchanged) or the gateway's own error.
enum Answer {
    Response(http::response::Parts, Bytes),
    Error(GatewayError),
}

impl Answer {
    /// Reads a failed response's body to hold it; one larger than [`HELD_BODY_LIMIT`] (or that
    /// stalls) is not held but returned, streaming, for the caller.
    async fn keep(
        resp: http::Response<Incoming>,
        cfg: &Config,
        deadline: Instant,
    ) -> Result<Self, Response> {
        let (parts, mut body) = resp.into_parts();
        let mut buf = Vec::new();
        let idle = cfg.server.body_idle_timeout;
        loop {
            let next = tokio::time::timeout_at(deadline.min(Instant::now() + idle), body.frame());
            match next.await {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                    }
                    if buf.len() > HELD_BODY_LIMIT {
                        let prefix = Bytes::from(buf);
                        let rest = http_body_util::BodyStream::new(body);
                        let chained = futures_util::StreamExt::chain(
                            futures_util::stream::once(async move {
                                Ok::<_, hyper::Error>(http_body::Frame::data(prefix))
                            }),
                            rest,
                        );
                        let mut parts = parts;
                        headers::to_caller(&mut parts.headers);
                        return Err(Response::from_parts(
                            parts,
                            Body::new(GuardedBody::new(
                                http_body_util::StreamBody::new(chained),
                                idle,
                                None,
                            )),
                        ));
                    }
                }
                Ok(None) => return Ok(Answer::Response(parts, Bytes::from(buf))),
                // A body that breaks or stalls: the status is what matters; keep what arrived.
                Ok(Some(Err(_))) | Err(_) => return Ok(Answer::Response(parts, Bytes::from(buf))),
            }
        }
    }

    fn into_result(self) -> Result<Response, GatewayError> {
        match self {
            Answer::Response(parts, body) => Ok(buffered_response(parts, body)),
            Answer::Error(e) => Err(e),
        }
    }
}

/// Largest failed-response body held while its retry waits (Notion's error JSON and its CDN's
/// HTML pages are well under it).
const HELD_BODY_LIMIT: usize = 64 * 1024;

/// One upstream attempt, up to the response head.
async fn attempt(
    gw: &Gateway,
    request: http::Request<RequestBody>,
    deadline: Instant,
) -> Result<http::Response<Incoming>, GatewayError> {
    let cfg = &gw.config;
    // One timer for both bounds: whichever of the attempt timeout and the request deadline
    // comes first.
    let attempt = cfg.upstream.attempt_timeout;
    let attempt_end = Instant::now() + attempt;
    tokio::time::timeout_at(attempt_end.min(deadline), gw.upstream.send(request))
        .await
        .map_err(|_| {
            if attempt_end < deadline {
                GatewayError::UpstreamTimeout(attempt)
            } else {
                GatewayError::DeadlineExceeded(cfg.server.request_timeout)
            }
        })?
}

fn build(
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: RequestBody,
) -> http::Request<RequestBody> {
    let mut req = http::Request::new(body);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    req
}

/// The request body, read into memory when it is small enough to be sent again.
///
/// A declared length over the limit is refused before anything is sent upstream. Without a
/// length (chunked), the body is counted as it streams and cut at the limit, so the upstream
/// never sees a complete oversized request.
async fn request_body(
    cfg: &Config,
    headers: &HeaderMap,
    body: Incoming,
    deadline: Instant,
) -> Result<RequestBody, GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = cfg.server.max_body;
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    if body.is_end_stream() {
        return Ok(RequestBody::Replayable(None));
    }
    let idle = cfg.server.body_idle_timeout;
    if declared.is_some_and(|n| n <= cfg.retry.replay_limit) {
        let collect = GuardedBody::new(body, idle, None).collect();
        let bytes = tokio::time::timeout_at(deadline, collect)
            .await
            .map_err(|_| GatewayError::DeadlineExceeded(cfg.server.request_timeout))?
            .map_err(|e| GatewayError::from(&e))?
            .to_bytes();
        return Ok(RequestBody::Replayable(
            (!bytes.is_empty()).then_some(bytes),
        ));
    }
    let count_limit = if declared.is_some() {
        None
    } else {
        Some(limit)
    };
    Ok(RequestBody::Streaming(Box::pin(GuardedBody::new(
        body,
        idle,
        count_limit,
    ))))
}

/// Notion's response on its way to the caller, streamed.
fn caller_response(cfg: &Config, resp: http::Response<Incoming>) -> Response {
    let (mut parts, body) = resp.into_parts();
    headers::to_caller(&mut parts.headers);
    let body = GuardedBody::new(body, cfg.server.body_idle_timeout, None);
    Response::from_parts(parts, Body::new(body))
}

/// Notion's 429/529, passed on when it cannot be waited out: its own body, and a
/// `Retry-After` that counts until the key's pause ends.
fn pushback_response(parts: http::response::Parts, body: Bytes, paused_until: Instant) -> Response {
    let secs = retry_after_secs(paused_until.saturating_duration_since(Instant::now()));
    let mut resp = buffered_response(parts, body);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// A response of Notion's that was read into memory, on its way to the caller.
fn buffered_response(mut parts: http::response::Parts, body: Bytes) -> Response {
    headers::to_caller(&mut parts.headers);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    parts.headers.remove(header::TRANSFER_ENCODING);
    Response::from_parts(parts, Body::from(body))
}

/// Longest pause a `Retry-After` may ask for; Notion's workspace limit can ask for minutes.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Notion's `Retry-After`: an integer (or decimal) number of seconds, capped at
/// [`MAX_RETRY_AFTER`]; `None` when missing or unreadable.
fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// Notion's `additional_data.rate_limit_reason`, when the body has one.
fn rate_limit_reason(body: &[u8]) -> Option<String> {
    let v = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    v.pointer("/additional_data/rate_limit_reason")?
        .as_str()
        .map(str::to_owned)
}

/// Which limit a 429 names: a reason mentioning the workspace means the workspace budget,
/// anything else (or nothing) the token's.
fn rate_limit_scope(reason: Option<&str>) -> Scope {
    match reason {
        Some(r) if r.to_ascii_lowercase().contains("workspace") => Scope::Workspace,
        _ => Scope::Token,
    }
}

/// Largest 429/529 body read to learn which limit it names.
const PUSHBACK_BODY_LIMIT: usize = 64 * 1024;

/// Reads a small error body (best effort: what arrived before a stall, the limit or the
/// deadline).
async fn read_small(mut body: Incoming, idle: Duration, deadline: Instant) -> Bytes {
    let mut buf = Vec::new();
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                if buf.len() > PUSHBACK_BODY_LIMIT {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline.min(Instant::now() + idle), read).await;
    Bytes::from(buf)
}
