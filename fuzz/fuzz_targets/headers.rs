//! Header rewriting: `to_upstream`, `to_caller`, credential parsing, the caller's request id.
//!
//! Input: lines `name: value`, kept when they are a valid header. Properties: no panic; after
//! `to_upstream` no hop-by-hop header, no header the input's `Connection` named (except the
//! end-to-end ones it may not strip), no `x-gateway-*`, no `Expect`, one `Host` (the
//! upstream's), a `Notion-Version`, and exactly one `Authorization`, unchanged, when the input
//! had exactly one; after `to_caller` no hop-by-hop header; a kept request id is one header of
//! 1–200 visible ASCII bytes; a credential is a suffix of its header value.
#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use notion_gateway::{headers, request_id};

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

fn parse(data: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(i) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(line[..i].trim_ascii()),
            HeaderValue::from_bytes(line[i + 1..].trim_ascii()),
        ) else {
            continue;
        };
        h.append(name, value);
    }
    h
}

fuzz_target!(|data: &[u8]| {
    let input = parse(data);

    let nominated: Vec<String> = input
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    let protected = |n: &str| headers::END_TO_END.iter().any(|p| p.as_str() == n);
    assert_eq!(
        headers::connection_names_end_to_end(&input).is_some(),
        nominated.iter().any(|n| protected(n)),
        "{input:?}"
    );

    let auth: Vec<HeaderValue> = input.get_all("authorization").iter().cloned().collect();
    let mut up = input.clone();
    let host = HeaderValue::from_static("api.notion.com");
    let version = HeaderValue::from_static("2025-09-03");
    headers::to_upstream(&mut up, &host, Some(&version));
    for name in HOP_BY_HOP {
        assert!(!up.contains_key(name), "{name} forwarded: {up:?}");
    }
    for n in &nominated {
        if !protected(n) && HeaderName::from_bytes(n.as_bytes()).is_ok() {
            assert!(
                !up.contains_key(n.as_str()),
                "{n} named by Connection, forwarded"
            );
        }
    }
    assert!(up.keys().all(|k| !k.as_str().starts_with("x-gateway-")));
    assert!(!up.contains_key("expect"));
    assert_eq!(up.get_all("host").iter().collect::<Vec<_>>(), [&host]);
    assert!(up.contains_key("notion-version"));
    if auth.len() == 1 {
        let after: Vec<_> = up.get_all("authorization").iter().collect();
        assert_eq!(after, [&auth[0]], "the one Authorization header changed");
    }

    let mut down = input.clone();
    headers::to_caller(&mut down);
    for name in HOP_BY_HOP {
        assert!(!down.contains_key(name), "{name} passed to the caller");
    }

    if let Some(v) = input.get("authorization") {
        let c = headers::credential_of(v);
        assert!(
            v.as_bytes().ends_with(c) || c.is_empty() || v.as_bytes().trim_ascii_end().ends_with(c)
        );
    }
    let _ = headers::credential(&input);
    let _ = headers::head_size(&input);

    if let Some(id) = request_id::callers(&input) {
        let b = id.as_bytes();
        assert_eq!(input.get_all("x-request-id").iter().count(), 1);
        assert!((1..=request_id::MAX_LEN).contains(&b.len()));
        assert!(b.iter().all(|c| (b'!'..=b'~').contains(c)));
    }
});
