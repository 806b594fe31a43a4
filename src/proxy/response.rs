//! Response filter: Notion's answer on its way to the caller (hop-by-hop headers removed, body
//! streamed through a [`GuardedBody`], or sent whole when it was held in memory).

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderValue};
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
