//! Response filter: Notion's answer on its way to the caller (hop-by-hop headers removed, body
//! streamed through a [`GuardedBody`], or sent whole when it was held in memory).

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::body::GuardedBody;
use crate::config::Config;
use crate::headers::{self, ATTEMPTS, QUEUE_WAIT};
use crate::telemetry::RequestLog;

/// Notion's response on its way to the caller, streamed.
pub(super) fn caller_response(cfg: &Config, resp: http::Response<Incoming>) -> Response {
    let (mut parts, body) = resp.into_parts();
    headers::to_caller(&mut parts.headers);
    let body = GuardedBody::new(body, cfg.server.body_idle_timeout, None);
    Response::from_parts(parts, Body::new(body))
}

/// A response of Notion's that was read into memory, on its way to the caller.
pub(super) fn buffered_response(mut parts: http::response::Parts, body: Bytes) -> Response {
    headers::to_caller(&mut parts.headers);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    parts.headers.remove(header::TRANSFER_ENCODING);
    Response::from_parts(parts, Body::from(body))
}

/// The gateway's own headers on every proxied answer: the queue wait when there was one, the
/// number of attempts when there was more than one.
pub(super) fn annotate(response: &mut Response, log: &RequestLog) {
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
}

/// Largest error body read to tell Notion's error JSON from an edge page (Notion's errors and its
/// CDN's pages are a few KiB).
const EDGE_BODY_LIMIT: usize = 64 * 1024;

/// Response filter for Notion's 4xx/5xx (docs/behaviour.md §4): Notion's own error JSON passes
/// byte for byte; anything else (its CDN's HTML page, an empty body, JSON that is not Notion's
/// error shape) becomes a Notion-shaped error with the same status, a code both SDKs know and
/// a message naming what came back (content type, the page's `<title>`, `cf-ray`). Off with
/// `errors.rewrite_edge_pages = false`.
pub(super) async fn normalise_error_page(
    resp: Response,
    cfg: &Config,
    method: &http::Method,
    request_id: &str,
) -> Response {
    let status = resp.status();
    if status.as_u16() < 400 || !cfg.errors.rewrite_edge_pages || method == http::Method::HEAD {
        return resp;
    }
    let (parts, mut body) = resp.into_parts();
    let idle = cfg.server.body_idle_timeout;
    let mut buf = Vec::new();
    let whole = loop {
        // Bounded by the body's idle timeout, not the request deadline: the head arrived in
        // time, and a streamed upload may have run past the deadline legitimately.
        let next = tokio::time::timeout(idle, body.frame());
        match next.await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                }
                if buf.len() > EDGE_BODY_LIMIT {
                    break false;
                }
            }
            Ok(None) => break true,
            // Broke off or stalled: what arrived is all there is.
            Ok(Some(Err(_))) | Err(_) => break false,
        }
    };
    let json = is_json(&parts.headers);
    // Notion's own error object passes byte for byte, whatever its content type says.
    if whole && is_notion_error(&buf) {
        return Response::from_parts(parts, Body::from(Bytes::from(buf)));
    }
    if !whole && json && buf.len() > EDGE_BODY_LIMIT {
        // A large JSON body is not an edge page: passed on as it is, prefix and rest.
        let prefix = Bytes::from(buf);
        let rest = http_body_util::BodyStream::new(body);
        let chained = futures_util::StreamExt::chain(
            futures_util::stream::once(async move { Ok(http_body::Frame::data(prefix)) }),
            rest,
        );
        return Response::from_parts(parts, Body::new(http_body_util::StreamBody::new(chained)));
    }
    edge_error(parts, &buf, request_id)
}

/// Whether a body is Notion's error object: `"object": "error"` with a string `code` and
/// `message` (what the SDKs parse).
fn is_notion_error(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| {
        v.get("object").and_then(|o| o.as_str()) == Some("error")
            && v.get("code").is_some_and(serde_json::Value::is_string)
            && v.get("message").is_some_and(serde_json::Value::is_string)
    })
}

/// Whether a `Content-Type` is JSON (`application/json`, `…+json`).
pub(super) fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .is_some_and(|m| m == "application/json" || m.ends_with("+json"))
}

/// The code both SDKs know for a status Notion's edge answered without Notion's JSON.
fn edge_code(status: u16) -> &'static str {
    match status {
        401 => "unauthorized",
        403 => "restricted_resource",
        404 => "object_not_found",
        409 => "conflict_error",
        413 => "validation_error",
        // 529 too: both SDKs (Python has no `service_overload`) then retry it like a 429.
        429 | 529 => "rate_limited",
        500 => "internal_server_error",
        502 | 503 => "service_unavailable",
        504 => "gateway_timeout",
        s if s < 500 => "invalid_request",
        _ => "internal_server_error",
    }
}

/// Printable ASCII of a header or page value, whitespace collapsed, at most `max` characters.
fn printable(s: &str, max: usize) -> String {
    let mut out = String::new();
    for word in s.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().filter(|c| !c.is_control()));
    }
    if out.chars().count() > max {
        out = out.chars().take(max).collect::<String>() + "…";
    }
    out
}

/// The text of an HTML page's `<title>`, if it has one.
fn html_title(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let lower = text.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    let title = printable(&text[start..end], 120);
    (!title.is_empty()).then_some(title)
}

/// The Notion-shaped error that replaces an edge page: same status and headers (`cf-ray`,
/// `Retry-After`, `x-notion-request-id` kept), a JSON body saying what came back.
fn edge_error(mut parts: http::response::Parts, body: &[u8], request_id: &str) -> Response {
    let status = parts.status;
    let header_text = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| printable(v, 100))
            .filter(|v| !v.is_empty())
    };
    let content_type = header_text("content-type");
    let ray = header_text("cf-ray");
    let title = html_title(body);
    let retry_after = header_text("retry-after").filter(|v| v.bytes().all(|b| b.is_ascii_digit()));

    let mut message = format!(
        "Notion's edge answered {} with {}, not Notion's error JSON",
        status,
        match (&content_type, body.is_empty()) {
            (_, true) => "an empty body".to_string(),
            (Some(ct), false) => format!("a {ct} body ({} bytes)", body.len()),
            (None, false) => format!("a body of {} bytes and no content type", body.len()),
        }
    );
    if let Some(t) = &title {
        message.push_str(&format!(", page title \"{t}\""));
    }
    if let Some(r) = &ray {
        message.push_str(&format!(", cf-ray {r}"));
    }
    let mut data = serde_json::Map::new();
    data.insert("edge_status".into(), status.as_u16().to_string().into());
    if let Some(ct) = content_type {
        data.insert("edge_content_type".into(), ct.into());
    }
    if let Some(t) = title {
        data.insert("edge_page_title".into(), t.into());
    }
    if let Some(r) = ray {
        data.insert("cf_ray".into(), r.into());
    }
    if let Some(secs) = retry_after {
        data.insert("retry_after".into(), secs.into());
    }
    let answer = crate::error::notion_error_with(
        status,
        edge_code(status.as_u16()),
        &message,
        request_id,
        None,
        Some(data),
    );
    let (new_parts, new_body) = answer.into_parts();
    for name in [
        header::CONTENT_TYPE,
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::TRANSFER_ENCODING,
    ] {
        parts.headers.remove(name);
    }
    parts.headers.extend(new_parts.headers);
    Response::from_parts(parts, new_body)
}
