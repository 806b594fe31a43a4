//! Notion's 429/529 (docs/behaviour.md §2): the request was not processed, so what Notion
//! named is paused and the request may go again, first in line.
//!
//! [`notion_pushed_back`] reads the answer ([`crate::rate_limit`]: `Retry-After`, its copy in
//! `additional_data.retry_after`, `additional_data.rate_limit_reason`), records it, and tells
//! the shaper ([`crate::shaper::Shaper::push_back`]) which limit it was. Whether the request
//! goes again is the attempt loop's decision: never after `public_api_request_blocked`
//! ("Retrying won't help"), at most `limits.max_resends` times, and from the second resend on
//! after a growing, jittered backoff on top of the pause ([`resend_backoff`]), as Notion asks:
//! "If another 429 or 529 arrives, increase the delay with exponential backoff and jitter. Set
//! a retry limit." (<https://developers.notion.com/reference/request-limits>).
//! [`PushedBack::into_response`] is what the caller gets when the request cannot go again.

use std::time::{Duration, SystemTime};

use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderValue};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::response::buffered_response;
use crate::error::retry_after_secs;
use crate::gateway::Gateway;
use crate::metrics;
use crate::rate_limit;
use crate::shaper::{Limit, Ticket};

/// Notion's 429/529, read and acted on. Holds what the caller gets if the request cannot go
/// again.
pub(super) struct PushedBack {
    pub parts: http::response::Parts,
    pub body: Bytes,
    /// Which limit Notion named.
    pub limit: Limit,
    /// When the pause of what it named ends.
    pub paused_until: Instant,
}

impl PushedBack {
    /// The answer for the caller: Notion's own, with a `Retry-After` counting to the end of
    /// the pause.
    pub fn into_response(self) -> Response {
        let secs = retry_after_secs(self.paused_until.saturating_duration_since(Instant::now()));
        let mut resp = buffered_response(self.parts, self.body);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        resp
    }
}

/// When Notion sends neither `Retry-After` nor `additional_data.retry_after`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Handles Notion's 429 or 529 to an attempt of `ticket`: reads its body (small, best effort)
/// and pauses what it names.
pub(super) async fn notion_pushed_back(
    gw: &Gateway,
    ticket: &Ticket,
    resp: http::Response<Incoming>,
    deadline: Instant,
) -> PushedBack {
    let status = resp.status().as_u16();
    let (parts, body) = resp.into_parts();
    let body = read_small(body, gw.config.server.body_idle_timeout, deadline).await;
    let reason = rate_limit::reason(&body);
    let limit = rate_limit::limit(status, reason.as_deref());
    let retry_after =
        rate_limit::retry_after(&parts.headers, &body, SystemTime::now()).unwrap_or(match limit {
            Limit::Blocked => crate::shaper::BLOCKED_DEFAULT,
            _ => DEFAULT_RETRY_AFTER,
        });
    metrics::notion_pushback(&ticket.metric_label, status, limit.label());
    let paused_until = gw.shaper.push_back(ticket, limit, retry_after);
    tracing::debug!(
        integration = &*ticket.label,
        status,
        retry_after_s = retry_after.as_secs_f64(),
        limit = limit.label(),
        "Notion pushed back; paused"
    );
    PushedBack {
        parts,
        body,
        limit,
        paused_until,
    }
}

/// Cap of [`resend_backoff`].
const RESEND_BACKOFF_CAP: Duration = Duration::from_secs(30);

/// Extra wait before the `n`-th resend of one request (1 = the first resend, which waits only
/// for the pause): from the second on, between half and all of `2^(n-2)` seconds, at most
/// [`RESEND_BACKOFF_CAP`] ("equal jitter": it grows every time, and replicas or callers that
/// were rejected together do not come back together).
pub(super) fn resend_backoff(n: u32, jitter: f64) -> Duration {
    if n < 2 {
        return Duration::ZERO;
    }
    let ceiling = Duration::from_secs(1)
        .saturating_mul(1 << (n - 2).min(16))
        .min(RESEND_BACKOFF_CAP);
    ceiling.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Largest 429/529 body read to learn which limit it names.
const PUSHBACK_BODY_LIMIT: usize = 64 * 1024;

/// Reads a small error body (best effort: what arrived before a stall, the limit or the
/// deadline).
async fn read_small(mut body: Incoming, idle: Duration, deadline: Instant) -> Bytes {
    use http_body_util::BodyExt;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_back_off_more_each_time_up_to_the_cap() {
        assert_eq!(resend_backoff(1, 0.7), Duration::ZERO);
        assert_eq!(resend_backoff(2, 0.0), Duration::from_millis(500));
        assert_eq!(resend_backoff(2, 1.0), Duration::from_secs(1));
        assert_eq!(resend_backoff(4, 1.0), Duration::from_secs(4));
        for n in 2..12 {
            assert!(
                resend_backoff(n + 1, 0.0) >= resend_backoff(n, 0.0),
                "the least wait never shrinks"
            );
            assert!(resend_backoff(n, 1.0) <= RESEND_BACKOFF_CAP);
        }
        assert_eq!(resend_backoff(20, 1.0), RESEND_BACKOFF_CAP);
    }
}
