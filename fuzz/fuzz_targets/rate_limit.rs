//! Reading Notion's 429/529: `Retry-After` (seconds or an HTTP date), the body's
//! `additional_data.retry_after` and `rate_limit_reason`, and the limit they name.
//!
//! The input is split at its first NUL: before it the `Retry-After` header value, after it the
//! body. Properties: no panic; a wait is never longer than `MAX_RETRY_AFTER`; the limit is
//! `Blocked` exactly when a 429's reason is `public_api_request_blocked`, and a 529 is always
//! `Overload`; the reason label is one of the fixed label values.
#![no_main]

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use notion_gateway::rate_limit::{self, MAX_RETRY_AFTER};
use notion_gateway::shaper::Limit;

fuzz_target!(|data: &[u8]| {
    let (value, body) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(value) {
        headers.insert(header::RETRY_AFTER, v);
    }
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    if let Some(wait) = rate_limit::retry_after(&headers, body, now) {
        assert!(wait <= MAX_RETRY_AFTER, "{wait:?}");
    }
    let reason = rate_limit::reason(body);
    for status in [429, 529] {
        let limit = rate_limit::limit(status, reason.as_deref());
        assert!(Limit::LABELS.contains(&limit.label()));
        if status == 529 {
            assert_eq!(limit, Limit::Overload);
        } else {
            assert_eq!(
                limit == Limit::Blocked,
                reason.as_deref() == Some("public_api_request_blocked")
            );
        }
    }
});
