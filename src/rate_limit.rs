//! What Notion's 429 and 529 answers say, read as pure functions (Notion facts, no I/O).
//!
//! From Notion's request-limits page (<https://developers.notion.com/reference/request-limits>,
//! 2026):
//!
//! * "Requests that exceed a limit return a `"rate_limited"` error code and an HTTP 429
//!   response. `additional_data.rate_limit_reason` says which limit was exceeded":
//!   `public_api_request_rate_limit` (the connection), `public_api_space_request_rate_limit`
//!   (the workspace's shared budget), `public_api_endpoint_rate_limit` (the endpoint's own
//!   limit), `public_api_request_blocked` ("This connection's API access has been restricted.
//!   Retrying won't help."). "Other `rate_limit_reason` values can appear. Handle them like any
//!   other 429 and wait for `Retry-After`."
//! * "A 529 response carries the `"service_overload"` code [...] retry it the same way as a
//!   429."
//! * "Whenever a response includes `Retry-After`, the body repeats the wait as
//!   `additional_data.retry_after`, a string of whole seconds, for clients that can't read
//!   response headers."
//!
//! `Retry-After` itself may also be an HTTP-date (RFC 9110 §10.2.3); a CDN in front of Notion
//! may send one. Both forms are read, capped at [`MAX_RETRY_AFTER`].

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap};

use crate::shaper::Limit;

/// Longest pause a `Retry-After` may ask for; Notion's workspace limit can ask for minutes.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The wait Notion asked for: the `Retry-After` header (seconds, or an HTTP-date measured
/// against `now`), else the body's `additional_data.retry_after`. `None` when neither is there
/// or readable.
pub fn retry_after(headers: &HeaderMap, body: &[u8], now: SystemTime) -> Option<Duration> {
    header_retry_after(headers, now).or_else(|| body_retry_after(body))
}

/// `Retry-After` as delay-seconds (an integer; a decimal is accepted too) or an HTTP-date.
pub fn header_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = match value.parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs >= 0.0 => {
            Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64()))
        }
        Ok(_) => return None,
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// `additional_data.retry_after`: a string of whole seconds (a number is accepted too).
pub fn body_retry_after(body: &[u8]) -> Option<Duration> {
    let v = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let field = v.pointer("/additional_data/retry_after")?;
    let secs = match field {
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        serde_json::Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())))
}

/// `additional_data.rate_limit_reason`, when the body has one.
pub fn reason(body: &[u8]) -> Option<String> {
    let v = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    v.pointer("/additional_data/rate_limit_reason")?
        .as_str()
        .map(str::to_owned)
}

/// Which limit an answer of `status` (429 or 529) with `reason` names. Unknown reasons, and
/// none, are the connection's, as Notion asks ([`Limit::Other`]: the token pauses and slows).
pub fn limit(status: u16, reason: Option<&str>) -> Limit {
    if status == 529 {
        return Limit::Overload;
    }
    match reason {
        Some("public_api_request_rate_limit") => Limit::Connection,
        Some("public_api_space_request_rate_limit") => Limit::Workspace,
        Some("public_api_endpoint_rate_limit") => Limit::Endpoint,
        Some("public_api_request_blocked") => Limit::Blocked,
        _ => Limit::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(retry_after).unwrap(),
        );
        h
    }

    #[test]
    fn seconds_dates_and_the_body_copy() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            header_retry_after(&headers("7"), now),
            Some(Duration::from_secs(7))
        );
        // RFC 9110's own example date, 5 minutes after `now`.
        assert_eq!(
            header_retry_after(&headers("Wed, 21 Oct 2015 07:33:00 GMT"), now),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            header_retry_after(&headers("Wed, 21 Oct 2015 07:00:00 GMT"), now),
            Some(Duration::ZERO),
            "a date in the past: no wait"
        );
        assert_eq!(header_retry_after(&headers("soon"), now), None);
        assert_eq!(header_retry_after(&headers("-1"), now), None);
        assert_eq!(
            header_retry_after(&headers("99999999"), now),
            Some(MAX_RETRY_AFTER)
        );
        let body = br#"{"object":"error","status":429,"code":"rate_limited","additional_data":{"retry_after":"12"}}"#;
        assert_eq!(
            retry_after(&HeaderMap::new(), body, now),
            Some(Duration::from_secs(12))
        );
        assert_eq!(
            retry_after(&headers("3"), body, now),
            Some(Duration::from_secs(3)),
            "the header wins"
        );
        assert_eq!(retry_after(&HeaderMap::new(), b"<html>", now), None);
    }

    #[test]
    fn the_documented_reasons_and_the_rest() {
        let body = |r: &str| {
            format!(r#"{{"code":"rate_limited","additional_data":{{"rate_limit_reason":"{r}"}}}}"#)
        };
        for (r, l) in [
            ("public_api_request_rate_limit", Limit::Connection),
            ("public_api_space_request_rate_limit", Limit::Workspace),
            ("public_api_endpoint_rate_limit", Limit::Endpoint),
            ("public_api_request_blocked", Limit::Blocked),
            ("mcp_tool_rate_limit", Limit::Other),
        ] {
            let reason = reason(body(r).as_bytes());
            assert_eq!(reason.as_deref(), Some(r));
            assert_eq!(limit(429, reason.as_deref()), l, "{r}");
        }
        assert_eq!(limit(429, None), Limit::Other);
        assert_eq!(limit(529, None), Limit::Overload);
        assert_eq!(
            limit(529, Some("public_api_request_blocked")),
            Limit::Overload
        );
    }
}
