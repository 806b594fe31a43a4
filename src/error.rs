//! Errors the gateway itself answers, and the one place they become HTTP responses.
//!
//! Every answer that does not come from Notion uses Notion's error shape so the official SDKs
//! parse it (docs/behaviour.md §4):
//!
//! ```json
//! {"object":"error","status":504,"code":"gateway_timeout",
//!  "message":"notion-gateway: ...","request_id":"...","additional_data":{...}}
//! ```
//!
//! Every code is one that both official SDKs know ([`SDK_CODES`]): an unknown code makes them
//! throw `UnknownHTTPResponseError` and drop the message, the code and the request id. The HTTP
//! status stays what happened (502 for an unreachable Notion, with `service_unavailable`: see
//! docs/decisions.md, "Error codes the SDKs know"). 429 and 503 carry an integer `Retry-After`
//! and repeat it in `additional_data.retry_after` (a string of whole seconds, as Notion does,
//! https://developers.notion.com/reference/request-limits) with a `rate_limit_reason` of the
//! gateway's own (`gateway_queue_full`, `gateway_max_wait`, ...). `additional_data` values are
//! strings or string arrays: the JS SDK types them `Record<string, string | string[]>`.
//!
//! Messages never contain a token: variants carry only what the gateway itself decided (limits,
//! durations, the upstream's address) or the description of a transport error, which names
//! addresses but never headers.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, Method, StatusCode};

/// Everything that makes the gateway answer by itself instead of relaying Notion's answer.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `GET http://host/...`: the gateway is not a forward proxy.
    #[error("absolute-form request targets are not accepted; this is not a forward proxy. Send requests to the gateway with a path such as /v1/users/me")]
    AbsoluteForm,
    /// `CONNECT`, `TRACE`: never forwarded.
    #[error("method {0} is not supported by notion-gateway")]
    MethodNotAllowed(Method),
    /// A path outside `/v1/*` and `/admin/v1/*` (and not one of the gateway's own endpoints).
    #[error("no such endpoint: {0}; notion-gateway proxies /v1/* and /admin/v1/* and serves /healthz and /readyz")]
    NotFound(String),
    /// The request head is larger than `server.max_header_bytes`.
    #[error("request headers are {size} bytes, more than the limit of {limit} bytes")]
    HeadersTooLarge { size: usize, limit: usize },
    /// The request body is larger than `server.max_body`.
    #[error("request body exceeds the limit of {limit} bytes (server.max_body)")]
    BodyTooLarge { limit: u64 },
    /// The client stopped sending its body for longer than `server.body_idle_timeout`.
    #[error("the client sent no request body data for {}", fmt_duration(*.0))]
    RequestBodyStalled(Duration),
    /// The request body could not be read from the client (it disconnected or sent bad framing).
    #[error("could not read the request body from the client: {0}")]
    RequestBodyBroken(String),
    /// TCP connect (or the corporate proxy tunnel) to the upstream failed.
    #[error("could not connect to the upstream {upstream}: {detail}")]
    UpstreamConnect { upstream: String, detail: String },
    /// TLS handshake with the upstream failed (certificate, protocol).
    #[error("TLS handshake with the upstream {upstream} failed: {detail}")]
    UpstreamTls { upstream: String, detail: String },
    /// The connection broke after it was established (reset, EOF, bad HTTP).
    #[error("the connection to the upstream failed before a response arrived: {0}")]
    UpstreamBroken(String),
    /// One upstream attempt took longer than `upstream.attempt_timeout`.
    #[error("the upstream did not answer within {} (upstream.attempt_timeout)", fmt_duration(*.0))]
    UpstreamTimeout(Duration),
    /// The whole request took longer than `server.request_timeout`.
    #[error("the request did not complete within {} (server.request_timeout)", fmt_duration(*.0))]
    DeadlineExceeded(Duration),
    /// No `Authorization` header: there is no budget to charge and Notion would refuse it.
    #[error("the request has no Authorization header; send the integration token as `Authorization: Bearer <token>`")]
    Unauthorized,
    /// A bearer credential with the gateway-key prefix that is no configured key (wrong,
    /// revoked, malformed). Never forwarded: Notion must not see gateway keys.
    #[error("the gateway key is not valid (unknown, revoked or malformed); ask the gateway's operator for a key (notion-gateway keys new)")]
    UnknownKey,
    /// A Notion token where `access.mode` accepts only gateway keys (and, in `configured`
    /// mode, the tokens of configured integrations).
    #[error("this gateway accepts only gateway keys (access.mode); send `Authorization: Bearer <your gateway key>`")]
    KeysOnly,
    /// The key's own `rate` would make the request wait longer than allowed.
    #[error("this gateway key's own rate (keys.rate) is spoken for: retry after {retry_after} s")]
    KeyRate { retry_after: u64 },
    /// The token's queue is full (`limits.max_queue`).
    #[error("{queued} requests for this token are already waiting (limits.max_queue); retry after {retry_after} s")]
    QueueFull { queued: usize, retry_after: u64 },
    /// The predicted queue wait exceeds `limits.max_wait` or the request's deadline.
    #[error("this token's budget is spoken for: the predicted wait of {retry_after} s exceeds limits.max_wait or the request deadline; retry after {retry_after} s")]
    WaitTooLong { retry_after: u64 },
    /// Notion answered this token `public_api_request_blocked` ("This connection's API access
    /// has been restricted. Retrying won't help."): answered here until its `Retry-After`.
    #[error("Notion restricted this token's API access (public_api_request_blocked); retrying won't help before {retry_after} s have passed. Contact Notion support")]
    Blocked { retry_after: u64 },
    /// Every one of `limits.max_tokens` tokens has requests waiting: a new token gets no lane.
    #[error("the gateway keeps {0} tokens at once (limits.max_tokens) and every one of them has requests waiting; retry in a moment")]
    TokensFull(usize),
    /// The request's deadline passed while it waited (Notion paused or slowed the token).
    #[error("the request waited for this token's budget until its deadline; retry after {retry_after} s")]
    QueueExpired { retry_after: u64 },
    /// The gateway is draining and the drain deadline passed before this request finished.
    #[error("the gateway is shutting down; retry against another instance or in a moment")]
    ShuttingDown,
    /// A proxied path with a dot segment or an encoded separator (see `crate::path`): it
    /// could name something outside `/v1/` once an upstream or CDN normalises it. Notion's own
    /// answer to a bad URL is 400 `invalid_request_url` "Invalid request URL"
    /// (https://developers.notion.com/reference/status-codes).
    #[error("Invalid request URL: the path has {0}, which is never forwarded")]
    InvalidPath(&'static str),
    /// More than one `Authorization` header: which one is charged and which one Notion reads
    /// would be a guess.
    #[error("the request has more than one Authorization header; send exactly one")]
    DuplicateAuthorization,
    /// `Connection` names an end-to-end header the gateway needs (RFC 9110 §7.6.1: a sender
    /// must not).
    #[error("the Connection header names {0}, an end-to-end header; remove it from Connection")]
    ConnectionNamesEndToEnd(&'static str),
    /// Every one of the `server.max_connections` connections has a request in progress; this
    /// connection (from the reserve kept for health probes) cannot take a proxied request.
    #[error("all {0} client connections (server.max_connections) are busy; retry in a moment")]
    ConnectionsBusy(usize),
    /// A request Notion would certainly refuse (docs/behaviour.md §4), refused before it spends
    /// budget: `message` is Notion's own wording for the same refusal.
    #[error("{message}")]
    Refused {
        /// `invalid_json` or `validation_error`.
        code: &'static str,
        /// Metric and log label: `json_too_large`, `page_size`, `too_many_children`,
        /// `invalid_json`.
        reason: &'static str,
        message: String,
    },
}

/// The error codes both official SDKs recognise: `APIErrorCode` of `@notionhq/client` 5.26
/// (https://github.com/makenotion/notion-sdk-js/blob/v5.26.0/src/errors.ts) less `invalid_beta`
/// and `service_overload`, which notion-client 3.1 lacks
/// (https://github.com/ramnes/notion-sdk-py/blob/3.1.0/notion_client/errors.py).
pub const SDK_CODES: [&str; 12] = [
    "unauthorized",
    "restricted_resource",
    "object_not_found",
    "rate_limited",
    "invalid_json",
    "invalid_request_url",
    "invalid_request",
    "validation_error",
    "conflict_error",
    "internal_server_error",
    "service_unavailable",
    "gateway_timeout",
];

impl GatewayError {
    /// The HTTP status the caller sees.
    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            AbsoluteForm => StatusCode::BAD_REQUEST,
            MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            NotFound(_) => StatusCode::NOT_FOUND,
            HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestBodyStalled(_) => StatusCode::REQUEST_TIMEOUT,
            RequestBodyBroken(_) => StatusCode::BAD_REQUEST,
            UpstreamConnect { .. } | UpstreamTls { .. } | UpstreamBroken(_) => {
                StatusCode::BAD_GATEWAY
            }
            UpstreamTimeout(_) | DeadlineExceeded(_) => StatusCode::GATEWAY_TIMEOUT,
            ShuttingDown | ConnectionsBusy(_) | TokensFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            Unauthorized | UnknownKey | KeysOnly => StatusCode::UNAUTHORIZED,
            KeyRate { .. } => StatusCode::TOO_MANY_REQUESTS,
            InvalidPath(_) | DuplicateAuthorization | ConnectionNamesEndToEnd(_) => {
                StatusCode::BAD_REQUEST
            }
            QueueFull { .. } | WaitTooLong { .. } | QueueExpired { .. } | Blocked { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Refused { .. } => StatusCode::BAD_REQUEST,
        }
    }

    /// Notion's error code for this answer.
    pub fn code(&self) -> &'static str {
        use GatewayError::*;
        match self {
            AbsoluteForm | NotFound(_) => "invalid_request_url",
            MethodNotAllowed(_) | RequestBodyStalled(_) | RequestBodyBroken(_) => "invalid_request",
            HeadersTooLarge { .. } | BodyTooLarge { .. } => "validation_error",
            // Notion could not be reached: "Notion is unavailable. Try again later." is what
            // the caller needs to know; the status says it was the gateway that could not reach
            // it. Neither SDK knows Notion's `bad_gateway` (docs/decisions.md).
            UpstreamConnect { .. } | UpstreamTls { .. } | UpstreamBroken(_) => {
                "service_unavailable"
            }
            UpstreamTimeout(_) | DeadlineExceeded(_) => "gateway_timeout",
            ShuttingDown | ConnectionsBusy(_) | TokensFull(_) => "service_unavailable",
            Unauthorized | UnknownKey | KeysOnly => "unauthorized",
            KeyRate { .. } => "rate_limited",
            InvalidPath(_) => "invalid_request_url",
            DuplicateAuthorization | ConnectionNamesEndToEnd(_) => "invalid_request",
            QueueFull { .. } | WaitTooLong { .. } | QueueExpired { .. } | Blocked { .. } => {
                "rate_limited"
            }
            Refused { code, .. } => code,
        }
    }

    /// The gateway's own `rate_limit_reason` for the answers that carry a `Retry-After`.
    pub fn rate_limit_reason(&self) -> Option<&'static str> {
        match self {
            GatewayError::QueueFull { .. } => Some("gateway_queue_full"),
            GatewayError::WaitTooLong { .. } => Some("gateway_max_wait"),
            GatewayError::QueueExpired { .. } => Some("gateway_queue_expired"),
            GatewayError::ShuttingDown => Some("gateway_draining"),
            GatewayError::TokensFull(_) => Some("gateway_tokens_full"),
            GatewayError::KeyRate { .. } => Some("gateway_key_rate"),
            // Notion's own reason: the token is answered here because Notion said so.
            GatewayError::Blocked { .. } => Some("public_api_request_blocked"),
            _ => None,
        }
    }

    /// `additional_data` of the answer: for 429 and 503, `retry_after` (whole seconds, as a
    /// string) and the gateway's `rate_limit_reason`.
    pub fn additional_data(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        let secs = self.retry_after()?;
        let mut data = serde_json::Map::new();
        data.insert("retry_after".into(), secs.to_string().into());
        if let Some(reason) = self.rate_limit_reason() {
            data.insert("rate_limit_reason".into(), reason.into());
        }
        Some(data)
    }

    /// Seconds for `Retry-After`, for the answers that carry one.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::ShuttingDown
            | GatewayError::ConnectionsBusy(_)
            | GatewayError::TokensFull(_) => Some(1),
            GatewayError::QueueFull { retry_after, .. }
            | GatewayError::WaitTooLong { retry_after }
            | GatewayError::QueueExpired { retry_after }
            | GatewayError::Blocked { retry_after }
            | GatewayError::KeyRate { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// A short, stable name for logs and (later) metric labels.
    pub fn reason(&self) -> &'static str {
        use GatewayError::*;
        match self {
            AbsoluteForm => "absolute_form",
            MethodNotAllowed(_) => "method_not_allowed",
            NotFound(_) => "not_found",
            HeadersTooLarge { .. } => "headers_too_large",
            BodyTooLarge { .. } => "body_too_large",
            RequestBodyStalled(_) => "request_body_stalled",
            RequestBodyBroken(_) => "request_body_broken",
            UpstreamConnect { .. } => "upstream_connect",
            UpstreamTls { .. } => "upstream_tls",
            UpstreamBroken(_) => "upstream_broken",
            UpstreamTimeout(_) => "upstream_timeout",
            DeadlineExceeded(_) => "deadline_exceeded",
            ShuttingDown => "shutting_down",
            Unauthorized => "no_authorization",
            UnknownKey => "unknown_key",
            KeysOnly => "keys_only",
            KeyRate { .. } => "key_rate",
            QueueFull { .. } => "queue_full",
            WaitTooLong { .. } => "max_wait",
            QueueExpired { .. } => "queue_expired",
            Blocked { .. } => "blocked",
            TokensFull(_) => "tokens_full",
            InvalidPath(_) => "invalid_path",
            DuplicateAuthorization => "duplicate_authorization",
            ConnectionNamesEndToEnd(_) => "connection_names_end_to_end",
            ConnectionsBusy(_) => "connections_busy",
            Refused { reason, .. } => reason,
        }
    }

    /// Whether the gateway refused the request itself (bad input, no budget) rather than
    /// failing to get an answer from Notion: the `notion_gateway_rejections_total` ones.
    pub fn is_rejection(&self) -> bool {
        use GatewayError::*;
        !matches!(
            self,
            UpstreamConnect { .. }
                | UpstreamTls { .. }
                | UpstreamBroken(_)
                | UpstreamTimeout(_)
                | DeadlineExceeded(_)
                | ShuttingDown
        )
    }

    /// The Notion-shaped response, stamped with the request id the caller will also see in
    /// `x-request-id`.
    pub fn to_response(&self, request_id: &str) -> Response {
        self.to_response_with(request_id, None)
    }

    /// Like [`to_response`](Self::to_response), with more `additional_data` (the attempts a
    /// 502 or 504 made and what each got).
    pub fn to_response_with(
        &self,
        request_id: &str,
        extra: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Response {
        let mut data = self.additional_data();
        if let Some(extra) = extra {
            data.get_or_insert_with(Default::default).extend(extra);
        }
        notion_error_with(
            self.status(),
            self.code(),
            &self.to_string(),
            request_id,
            self.retry_after(),
            data,
        )
    }
}

impl From<&crate::body::BodyError> for GatewayError {
    /// A request body that failed on its way from the caller.
    fn from(e: &crate::body::BodyError) -> Self {
        use crate::body::BodyError;
        match e {
            BodyError::Stalled(d) => GatewayError::RequestBodyStalled(*d),
            BodyError::TooLarge(limit) => GatewayError::BodyTooLarge { limit: *limit },
            BodyError::Inner(e) => GatewayError::RequestBodyBroken(e.to_string()),
        }
    }
}

/// Whole seconds for `Retry-After`: rounded up, at least 1.
pub fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

impl GatewayError {
    /// The answer to a request the shaper would not queue.
    pub fn from_refusal(r: &crate::shaper::Refusal, max_tokens: usize) -> Self {
        use crate::shaper::Refusal;
        let retry_after = retry_after_secs(r.retry_after());
        match r {
            Refusal::QueueFull { queued, .. } => GatewayError::QueueFull {
                queued: *queued,
                retry_after,
            },
            Refusal::WaitTooLong { .. } => GatewayError::WaitTooLong { retry_after },
            Refusal::Expired { .. } => GatewayError::QueueExpired { retry_after },
            Refusal::Blocked { .. } => GatewayError::Blocked { retry_after },
            Refusal::TokensFull { .. } => GatewayError::TokensFull(max_tokens),
        }
    }
}

/// Builds a Notion-shaped error response. Also used for answers that are not failures of a
/// request (e.g. `/readyz` while draining).
pub fn notion_error(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
    retry_after: Option<u64>,
) -> Response {
    notion_error_with(status, code, message, request_id, retry_after, None)
}

/// [`notion_error`] with an `additional_data` object.
pub fn notion_error_with(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: &str,
    retry_after: Option<u64>,
    additional_data: Option<serde_json::Map<String, serde_json::Value>>,
) -> Response {
    let mut body = serde_json::json!({
        "object": "error",
        "status": status.as_u16(),
        "code": code,
        "message": format!("notion-gateway: {message}"),
        "request_id": request_id,
    });
    if let (Some(data), Some(obj)) = (additional_data, body.as_object_mut()) {
        obj.insert("additional_data".into(), data.into());
    }
    let mut response = (status, axum::Json(body)).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// `65s`, `250ms`: how the configuration spells durations, so messages match the config file.
pub fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_body_has_notion_shape() {
        let err = GatewayError::DeadlineExceeded(Duration::from_secs(58));
        let resp = err.to_response("req-1");
        assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            HeaderValue::from_static("application/json")
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["object"], "error");
        assert_eq!(v["status"], 504);
        assert_eq!(v["code"], "gateway_timeout");
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(
            v["message"],
            "notion-gateway: the request did not complete within 58s (server.request_timeout)"
        );
    }

    #[tokio::test]
    async fn shutting_down_carries_retry_after_in_the_header_and_the_body() {
        let resp = GatewayError::ShuttingDown.to_response("x");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["additional_data"]["retry_after"], "1");
        assert_eq!(
            v["additional_data"]["rate_limit_reason"],
            "gateway_draining"
        );
    }

    /// Every error the gateway produces carries a code both SDKs know.
    #[test]
    fn every_code_is_one_both_sdks_know() {
        let d = Duration::from_secs(1);
        let all = [
            GatewayError::AbsoluteForm,
            GatewayError::MethodNotAllowed(Method::CONNECT),
            GatewayError::NotFound("/x".into()),
            GatewayError::HeadersTooLarge { size: 2, limit: 1 },
            GatewayError::BodyTooLarge { limit: 1 },
            GatewayError::RequestBodyStalled(d),
            GatewayError::RequestBodyBroken("x".into()),
            GatewayError::UpstreamConnect {
                upstream: "u".into(),
                detail: "d".into(),
            },
            GatewayError::UpstreamTls {
                upstream: "u".into(),
                detail: "d".into(),
            },
            GatewayError::UpstreamBroken("x".into()),
            GatewayError::UpstreamTimeout(d),
            GatewayError::DeadlineExceeded(d),
            GatewayError::Unauthorized,
            GatewayError::QueueFull {
                queued: 1,
                retry_after: 1,
            },
            GatewayError::WaitTooLong { retry_after: 1 },
            GatewayError::QueueExpired { retry_after: 1 },
            GatewayError::ShuttingDown,
            GatewayError::Refused {
                code: "invalid_json",
                reason: "invalid_json",
                message: "x".into(),
            },
        ];
        for e in &all {
            assert!(SDK_CODES.contains(&e.code()), "{e:?}: {}", e.code());
            // The status is kept; 429 and 503 say when to come back, in both places.
            if matches!(e.status().as_u16(), 429 | 503) {
                let data = e.additional_data().unwrap();
                assert_eq!(data["retry_after"], e.retry_after().unwrap().to_string());
                assert!(data["rate_limit_reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("gateway_"));
            }
        }
        assert_eq!(all[9].status(), StatusCode::BAD_GATEWAY);
    }
}
