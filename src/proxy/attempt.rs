//! The attempt loop: wait for the budget, send one attempt, decide what its outcome means.
//!
//! Each attempt ends in one [`Outcome`]: an answer to pass on, Notion's 429/529 (the key is
//! paused and the request goes again, first in line, if its body was kept), or a failure a
//! retry may repair ([`crate::retry`] decides). While a request waits to go again, the answer
//! the caller would get if it cannot is [`Held`].

use std::ops::ControlFlow;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::discovery;
use super::pushback::{self, PushedBack};
use super::request::{Charge, UpstreamRequest};
use super::response::{buffered_response, caller_response};
use crate::body::{GuardedBody, RequestBody};
use crate::catalogue::Endpoint;
use crate::config::Config;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::headers;
use crate::metrics;
use crate::retry::{self, Failure};
use crate::shaper::{Limit, Ticket};
use crate::telemetry::RequestLog;

/// What one upstream attempt came to.
enum Outcome {
    /// Pass this on: Notion's answer (streamed) or the gateway's own error.
    Answer(Result<Response, GatewayError>),
    /// Notion's 429/529: it did not process the request; the key is paused.
    PushedBack(PushedBack),
    /// A 5xx, a 409, a broken or refused connection, a timeout: a retry may repair it.
    Failed(Failure, Result<http::Response<Incoming>, GatewayError>),
}

/// What the caller gets if a request waiting to go again cannot: Notion's last 429/529, or the
/// last failed attempt's answer (Notion's, passed on unchanged, or the gateway's own error).
enum Held {
    PushedBack(PushedBack),
    Response(http::response::Parts, Bytes),
    Error(GatewayError),
}

impl Held {
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
                Ok(None) => return Ok(Held::Response(parts, Bytes::from(buf))),
                // A body that breaks or stalls: the status is what matters; keep what arrived.
                Ok(Some(Err(_))) | Err(_) => return Ok(Held::Response(parts, Bytes::from(buf))),
            }
        }
    }

    /// Whether Notion's answer says not to send the request again: its
    /// `additional_data.retry_guidance` (a string or a list of them) says "do not repeat".
    fn forbids_repeat(&self) -> bool {
        let Held::Response(_, body) = self else {
            return false;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return false;
        };
        let says = |s: &str| s.to_ascii_lowercase().contains("do not repeat");
        match v.pointer("/additional_data/retry_guidance") {
            Some(serde_json::Value::String(s)) => says(s),
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|i| i.as_str()).any(says)
            }
            _ => false,
        }
    }

    fn into_result(self) -> Result<Response, GatewayError> {
        match self {
            Held::PushedBack(p) => Ok(p.into_response()),
            Held::Response(parts, body) => Ok(buffered_response(parts, body)),
            Held::Error(e) => Err(e),
        }
    }
}

/// Largest failed-response body held while its retry waits (Notion's error JSON and its CDN's
/// HTML pages are well under it).
const HELD_BODY_LIMIT: usize = 64 * 1024;

/// Sends `req` until an attempt's answer can be passed on: each attempt waits for the budget
/// (first in line after the first), and a 429/529 or a repairable failure sends it again.
pub(super) async fn run(
    gw: &Gateway,
    mut req: UpstreamRequest,
    charge: &Charge,
    deadline: Instant,
    log: &mut RequestLog,
) -> Result<Response, GatewayError> {
    let endpoint = req.endpoint;
    let queue_deadline = charge.queue_deadline.unwrap_or(deadline);
    gw.retries.record_request();
    let mut held: Option<Held> = None;
    let mut failures = 0u32;
    let mut resends = 0u32;
    loop {
        let acquire = gw.shaper.acquire(
            headers::credential_of(&charge.credential),
            charge.caller,
            endpoint.template,
            queue_deadline,
            held.is_some(),
            charge.priority,
        );
        // A reload that removes the key answers its waiting requests at once, and one it
        // removed while the request was on its way here never reaches Notion.
        let acquired = match &charge.key {
            None => acquire.await,
            Some(key) => {
                let acquired = tokio::select! {
                    biased;
                    () = key.revoked() => return Err(GatewayError::UnknownKey),
                    r = acquire => r,
                };
                if key.is_revoked() {
                    return Err(GatewayError::UnknownKey);
                }
                acquired
            }
        };
        let ticket = match (acquired, held.take()) {
            (Ok(t), _) => t,
            (Err(_), Some(held)) => return held.into_result(),
            (Err(r), None) => {
                return Err(GatewayError::from_refusal(&r, gw.config.limits.max_tokens))
            }
        };
        let waited = ticket.waited.unwrap_or_default();
        metrics::queue_wait(&ticket.metric_label, waited);
        log.integration = Some(ticket.label.clone());
        log.queue_wait += waited;
        log.attempts += 1;

        let request = req.build()?;
        // The states after the wait are boxed: a future is as large as its largest state, and
        // a queued request (waiting in `acquire` above) would otherwise hold their space too
        // (examples/future_sizes.rs, bench/queue_memory.py).
        let result = Box::pin(send(gw, request, &ticket, endpoint, deadline, log)).await;
        match Box::pin(outcome(gw, &ticket, &req, result, deadline)).await {
            Outcome::Answer(answer) => return answer,
            Outcome::PushedBack(p) => {
                // Sent again, first in line, if the body can be replayed, Notion did not say
                // retrying is useless, resends are left and the deadline allows.
                resends += 1;
                if !req.replayable()
                    || p.limit == Limit::Blocked
                    || resends > gw.config.limits.max_resends
                {
                    return Ok(p.into_response());
                }
                let backoff = pushback::resend_backoff(resends, fastrand::f64());
                if !backoff.is_zero() {
                    let at = p.paused_until.max(Instant::now()) + backoff;
                    if at >= deadline {
                        return Ok(p.into_response());
                    }
                    tokio::time::sleep_until(at).await;
                }
                held = Some(Held::PushedBack(p));
            }
            Outcome::Failed(failure, result) => {
                failures += 1;
                log.failed_attempts.push(failure.reason());
                match Box::pin(retry_or_answer(
                    gw, &req, &ticket, failure, failures, result, deadline,
                ))
                .await
                {
                    ControlFlow::Break(answer) => return answer,
                    ControlFlow::Continue(h) => held = Some(h),
                }
            }
        }
    }
}

/// One attempt, recorded: the last upstream status in the log, the outcome in the metrics and
/// in the token's `/status` counters.
async fn send(
    gw: &Gateway,
    request: http::Request<RequestBody>,
    ticket: &Ticket,
    endpoint: Endpoint,
    deadline: Instant,
    log: &mut RequestLog,
) -> Result<http::Response<Incoming>, GatewayError> {
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
    log.attempt_log.push(match &result {
        Ok(resp) => (
            status_label(resp.status().as_u16()),
            resp.headers().get(&headers::NOTION_REQUEST_ID).cloned(),
        ),
        Err(GatewayError::UpstreamTls { .. }) => ("tls", None),
        Err(_) => (outcome, None),
    });
    result
}

/// A status as a static label for the request log and the gateway's 502/504 bodies: the
/// statuses Notion documents by number, the others by class.
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        409 => "409",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        529 => "529",
        s => metrics::status_outcome(s),
    }
}

/// What an attempt's result means for the request.
async fn outcome(
    gw: &Gateway,
    ticket: &Ticket,
    req: &UpstreamRequest,
    result: Result<http::Response<Incoming>, GatewayError>,
    deadline: Instant,
) -> Outcome {
    let cfg = &gw.config;
    match result {
        Ok(resp) => match resp.status().as_u16() {
            429 | 529 => {
                Outcome::PushedBack(pushback::notion_pushed_back(gw, ticket, resp, deadline).await)
            }
            s @ (500 | 502 | 503 | 504 | 409) => Outcome::Failed(Failure::Status(s), Ok(resp)),
            _ if discovery::wanted(ticket, resp.status()) => {
                if discovery::answers_itself(req, resp.status()) {
                    let resp = discovery::learn_from_answer(gw, ticket, resp, deadline).await;
                    return Outcome::Answer(Ok(resp));
                }
                discovery::spawn(gw, ticket, req);
                Outcome::Answer(Ok(caller_response(cfg, resp)))
            }
            _ => Outcome::Answer(Ok(caller_response(cfg, resp))),
        },
        Err(e @ GatewayError::UpstreamConnect { .. }) => Outcome::Failed(Failure::Connect, Err(e)),
        Err(e @ GatewayError::UpstreamBroken(_)) => Outcome::Failed(Failure::Broken, Err(e)),
        Err(e @ GatewayError::UpstreamTimeout(_)) => Outcome::Failed(Failure::Timeout, Err(e)),
        Err(e) => Outcome::Answer(Err(e)),
    }
}

/// May a failed attempt go again? `Continue` with the answer to hold (after the backoff was
/// slept), or `Break` with what the caller gets now.
async fn retry_or_answer(
    gw: &Gateway,
    req: &UpstreamRequest,
    ticket: &Ticket,
    failure: Failure,
    failures: u32,
    result: Result<http::Response<Incoming>, GatewayError>,
    deadline: Instant,
) -> ControlFlow<Result<Response, GatewayError>, Held> {
    let cfg = &gw.config;
    let endpoint = req.endpoint;
    let retry_cfg = gw.retries.config();
    let safety = endpoint.safety_for(req.kept_body());
    let repeatable = req.replayable()
        && retry::may_retry(
            safety,
            gw.retries.unsafe_ok(&req.method, endpoint.template),
            failure,
        );
    if !repeatable {
        return ControlFlow::Break(result.map(|r| caller_response(cfg, r)));
    }
    let is_503 = failure == Failure::Status(503);
    if failures >= retry_cfg.max_attempts && !is_503 {
        metrics::retry_denied(endpoint.template, "attempts");
        return ControlFlow::Break(result.map(|r| caller_response(cfg, r)));
    }
    let retry_after = match &result {
        Ok(r) if is_503 => {
            crate::rate_limit::header_retry_after(r.headers(), std::time::SystemTime::now())
        }
        _ => None,
    };
    let held = match result {
        Ok(resp) => match Held::keep(resp, cfg, deadline).await {
            Ok(h) => h,
            // Too large to hold: it goes to the caller as it is.
            Err(resp) => return ControlFlow::Break(Ok(resp)),
        },
        Err(e) => Held::Error(e),
    };
    // A 503 whose body says the change was saved: "Do not repeat the write"
    // (https://developers.notion.com/reference/request-limits#retry-a-write-that-returns-503).
    if is_503 && held.forbids_repeat() {
        metrics::retry_denied(endpoint.template, "guidance");
        return ControlFlow::Break(held.into_result());
    }
    if failures >= retry_cfg.max_attempts {
        metrics::retry_denied(endpoint.template, "attempts");
        return ControlFlow::Break(held.into_result());
    }
    let wait = gw.retries.backoff(failures, retry_after);
    if Instant::now() + wait >= deadline {
        metrics::retry_denied(endpoint.template, "deadline");
        return ControlFlow::Break(held.into_result());
    }
    if !gw.retries.take_retry() {
        metrics::retry_denied(endpoint.template, "budget");
        return ControlFlow::Break(held.into_result());
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
    ControlFlow::Continue(held)
}

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
    let started = Instant::now();
    let mut attempt_end = started + attempt;
    let mut deadline = deadline;
    let mut upload = request.body().upload_done();
    let send = gw.upstream.send(request);
    tokio::pin!(send);
    loop {
        tokio::select! {
            r = &mut send => return r,
            () = tokio::time::sleep_until(attempt_end.min(deadline)) => {}
        }
        // Time is up, unless the caller is still uploading: a streamed body still making
        // progress (a stall ends it with a 408, `server.body_idle_timeout`) is not the
        // upstream's delay, so the clocks restart their remaining time once it has arrived.
        match upload.take() {
            Some(mut done) if !*done.borrow() => {
                tokio::select! {
                    r = &mut send => return r,
                    _ = done.wait_for(|d| *d) => {}
                }
                let uploading = started.elapsed();
                attempt_end += uploading;
                deadline += uploading;
            }
            _ => break,
        }
    }
    Err(if attempt_end < deadline {
        GatewayError::UpstreamTimeout(attempt)
    } else {
        GatewayError::DeadlineExceeded(cfg.server.request_timeout)
    })
}
