//! Notion's 429/529 (docs/behaviour.md §2): the request was not processed, so the key it named
//! is paused and the request may go again, first in line.
//!
//! [`notion_pushed_back`] reads the answer (`Retry-After`, `additional_data.rate_limit_reason`),
//! records it, and pauses the token's or the workspace's budget through
//! [`crate::shaper::Shaper::push_back`]; [`pushback_response`] is what the caller gets when the
//! request cannot go again.

use std::time::Duration;

use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::response::buffered_response;
use crate::gateway::Gateway;
use crate::error::retry_after_secs;
use crate::metrics;
use crate::shaper::budget::Pushback;
use crate::shaper::{Scope, Ticket};

/// Notion's 429/529, read and acted on: the key is paused. Holds what the caller gets if the
/// request cannot go again.
pub(super) struct PushedBack {
    pub parts: http::response::Parts,
    pub body: Bytes,
    /// When the key's pause ends.
    pub paused_until: Instant,
}

impl PushedBack {
    /// The answer for the caller, with a `Retry-After` counting to the end of the pause.
    pub fn into_response(self) -> Response {
        pushback_response(self.parts, self.body, self.paused_until)
    }
}

/// Handles Notion's 429 or 529 to an attempt of `ticket`: reads its body (small, best effort),
/// pauses the key it names and adapts its rate.
pub(super) async fn notion_pushed_back(
    gw: &Gateway,
    ticket: &Ticket,
    resp: http::Response<Incoming>,
    deadline: Instant,
) -> PushedBack {
    let kind = if resp.status().as_u16() == 429 {
        Pushback::RateLimited
    } else {
        Pushback::Overloaded
    };
    let retry_after = parse_retry_after(resp.headers()).unwrap_or(Duration::from_secs(1));
    let (parts, body) = resp.into_parts();
    let body = read_small(body, gw.config.server.body_idle_timeout, deadline).await;
    let reason = rate_limit_reason(&body);
    metrics::notion_pushback(&ticket.label, parts.status.as_u16(), reason.as_deref());
    let scope = rate_limit_scope(reason.as_deref());
    let paused_until = gw.shaper.push_back(ticket, scope, kind, retry_after);
    tracing::debug!(
        integration = &*ticket.label,
        status = parts.status.as_u16(),
        retry_after_s = retry_after.as_secs_f64(),
        scope = ?scope,
        "Notion pushed back; key paused"
    );
    PushedBack {
        parts,
        body,
        paused_until,
    }
}

/// Notion's 429/529, passed on when it cannot be waited out: its own body, and a
/// `Retry-After` that counts until the key's pause ends.
pub(super) fn pushback_response(
    parts: http::response::Parts,
    body: Bytes,
    paused_until: Instant,
) -> Response {
    let secs = retry_after_secs(paused_until.saturating_duration_since(Instant::now()));
    let mut resp = buffered_response(parts, body);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

/// Longest pause a `Retry-After` may ask for; Notion's workspace limit can ask for minutes.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Notion's `Retry-After`: an integer (or decimal) number of seconds, capped at
/// [`MAX_RETRY_AFTER`]; `None` when missing or unreadable.
pub(super) fn parse_retry_after(headers: &HeaderMap) -> Option<Duration> {
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
