//! Header rewriting between the caller and Notion (RFC 9110 §7.6.1, docs/behaviour.md §1).
//!
//! End-to-end headers pass unchanged in both directions, including `Authorization` (the token
//! is Notion's business, and ours only as a budget key) and `x-request-id`. The gateway removes:
//!
//! * hop-by-hop headers: `Connection` and every header it names, `Keep-Alive`,
//!   `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-Authorization`,
//!   `Proxy-Authenticate`; hyper frames each hop itself. `Connection` may not name the
//!   end-to-end headers the gateway relies on ([`END_TO_END`]: the token it charges, the
//!   version, the body's type and length, the request id): the guard refuses such a request
//!   (400, [`connection_names_end_to_end`]) before anything is charged, and
//!   [`strip_hop_by_hop`] never removes them, so what was charged is what Notion receives;
//! * `Expect`: hyper answers `100-continue` to the caller; the upstream gets the body directly;
//! * the gateway's own control headers (`x-gateway-*`), which are meant for the gateway only.
//!
//! It sets `Host` to the upstream's authority, adds `Via: 1.1 notion-gateway` (RFC 9110 §7.6.3
//! asks gateways to) and adds `Notion-Version` when the caller sent none: a caller's own value
//! always wins.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

pub static NOTION_VERSION: HeaderName = HeaderName::from_static("notion-version");
pub static NOTION_REQUEST_ID: HeaderName = HeaderName::from_static("x-notion-request-id");
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Names the caller among those that share a token, for fair queueing (docs/behaviour.md §2).
pub static GATEWAY_CLIENT: HeaderName = HeaderName::from_static("x-gateway-client");
/// On responses to requests that waited for their budget: the wait in milliseconds.
pub static QUEUE_WAIT: HeaderName = HeaderName::from_static("x-gateway-queue-wait-ms");
/// On responses that took more than one upstream attempt: how many.
pub static ATTEMPTS: HeaderName = HeaderName::from_static("x-gateway-attempts");
const VIA_VALUE: HeaderValue = HeaderValue::from_static("1.1 notion-gateway");

/// End-to-end headers a `Connection` header may not name: RFC 9110 §7.6.1 forbids a sender to
/// nominate a field meant for every recipient, and removing these would forward something else
/// than what the gateway charged and logged.
pub static END_TO_END: [HeaderName; 5] = [
    header::AUTHORIZATION,
    HeaderName::from_static("notion-version"),
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    HeaderName::from_static("x-request-id"),
];

/// The first of [`END_TO_END`] that a `Connection` header names, if any.
pub fn connection_names_end_to_end(headers: &HeaderMap) -> Option<&'static str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|name| {
            let name = name.trim();
            END_TO_END
                .iter()
                .find(|p| p.as_str().eq_ignore_ascii_case(name))
                .map(HeaderName::as_str)
        })
}

/// Removes hop-by-hop headers, including the ones a `Connection` header names (never one of
/// [`END_TO_END`]).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Usually there are none: one scan of the names, no hashing, and done.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    // Names listed in Connection are removed first, while Connection is still there.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !END_TO_END.contains(name))
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Rewrites a caller's request headers for the upstream. `notion_version` is added when the
/// caller sent none (`None`: nothing is added; the Admin API may be configured so).
pub fn to_upstream(
    headers: &mut HeaderMap,
    host: &HeaderValue,
    notion_version: Option<&HeaderValue>,
) {
    strip_hop_by_hop(headers);
    headers.remove(header::EXPECT);
    if headers.keys().any(|k| k.as_str().starts_with("x-gateway-")) {
        let ours: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-gateway-"))
            .cloned()
            .collect();
        for k in ours {
            headers.remove(k);
        }
    }
    headers.insert(header::HOST, host.clone());
    headers.append(header::VIA, VIA_VALUE);
    if let Some(v) = notion_version {
        if !headers.contains_key(&NOTION_VERSION) {
            headers.insert(NOTION_VERSION.clone(), v.clone());
        }
    }
}

/// Rewrites Notion's response headers for the caller.
pub fn to_caller(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
}

/// The credential in `Authorization` (after the scheme: the bearer token, or the Basic
/// credentials of the OAuth endpoints), if there is a non-empty one.
pub fn credential(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .map(credential_of)
        .filter(|c| !c.is_empty())
}

/// The credential part of an `Authorization` value (possibly empty).
pub fn credential_of(authorization: &HeaderValue) -> &[u8] {
    let value = authorization.as_bytes();
    // RFC 9110: the scheme and its credentials are separated by whitespace (SP or HTAB).
    match value.iter().position(|b| *b == b' ' || *b == b'\t') {
        Some(i) => value[i + 1..].trim_ascii(),
        None => value,
    }
}

/// Size of a request head as the caller sent it, near enough for a limit: names, values and
/// the `": "` and CRLF around each.
pub fn head_size(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn removes_hop_by_hop_and_connection_listed_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic abc"),
            ("authorization", "Bearer secret_x"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut h);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["authorization", "content-type"]);
    }

    #[test]
    fn connection_cannot_strip_end_to_end_headers() {
        let mut h = map(&[
            ("connection", "Authorization, x-private"),
            (
                "connection",
                "notion-version,CONTENT-TYPE , content-length, X-Request-Id",
            ),
            ("authorization", "Bearer secret_x"),
            ("notion-version", "2025-09-03"),
            ("content-type", "application/json"),
            ("content-length", "2"),
            ("x-request-id", "abc"),
            ("x-private", "1"),
        ]);
        assert_eq!(connection_names_end_to_end(&h), Some("authorization"));
        strip_hop_by_hop(&mut h);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "authorization",
                "content-length",
                "content-type",
                "notion-version",
                "x-request-id"
            ]
        );
        assert_eq!(
            connection_names_end_to_end(&map(&[("connection", "close, x-request-id")])),
            Some("x-request-id")
        );
        assert_eq!(
            connection_names_end_to_end(&map(&[("connection", "keep-alive, x-private")])),
            None
        );
    }

    #[test]
    fn upstream_headers_get_host_via_and_default_version() {
        let mut h = map(&[
            ("host", "127.0.0.1:8787"),
            ("x-gateway-client", "sync-job"),
            ("expect", "100-continue"),
        ]);
        let host = HeaderValue::from_static("api.notion.com");
        let v = HeaderValue::from_static("2025-09-03");
        to_upstream(&mut h, &host, Some(&v));
        assert_eq!(h[header::HOST], "api.notion.com");
        assert_eq!(h[&NOTION_VERSION], "2025-09-03");
        assert_eq!(h[header::VIA], "1.1 notion-gateway");
        assert!(!h.contains_key("x-gateway-client"));
        assert!(!h.contains_key(header::EXPECT));
    }

    #[test]
    fn callers_notion_version_wins() {
        let mut h = map(&[("notion-version", "2022-06-28")]);
        to_upstream(
            &mut h,
            &HeaderValue::from_static("h"),
            Some(&HeaderValue::from_static("2025-09-03")),
        );
        assert_eq!(h.get_all(&NOTION_VERSION).iter().count(), 1);
        assert_eq!(h[&NOTION_VERSION], "2022-06-28");
    }
}
