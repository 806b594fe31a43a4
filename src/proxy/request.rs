//! Request filter and upstream request: what is checked before a request may spend budget, and
//! the request Notion is sent.
//!
//! [`filter`]: an `Authorization` header must be present (there is nothing to charge without
//! one), the endpoint is classified ([`crate::catalogue`]), the body must fit `server.max_body`
//! and is read into memory when it may have to go again. [`UpstreamRequest::new`]: headers
//! rewritten ([`crate::headers::to_upstream`]), URI built by [`crate::upstream`];
//! [`UpstreamRequest::build`] makes each attempt's request.

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::access::Key;
use crate::body::{GuardedBody, RequestBody};
use crate::catalogue::{self, Endpoint};
use crate::config::Config;
use crate::config::KeyPriority;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::headers::{self, GATEWAY_CLIENT};
use crate::shaper::{Caller, Priority};
use crate::telemetry::RequestLog;

/// A request that passed the request filter.
pub(super) struct Filtered {
    pub parts: http::request::Parts,
    pub charge: Charge,
    pub endpoint: Endpoint,
    pub body: RequestBody,
}

/// Whose budget a request spends and how it queues.
pub(super) struct Charge {
    /// The `Authorization` value sent to Notion: the budget key.
    pub credential: HeaderValue,
    /// Who shares the token's queue.
    pub caller: Caller,
    pub priority: Priority,
    /// The gateway key the caller presented (the credential is then its integration's).
    pub key: Option<Arc<Key>>,
    /// When a key's `max_wait` ends its waiting (its own rate and the queue together); `None`:
    /// the request deadline.
    pub queue_deadline: Option<Instant>,
}

impl Charge {
    /// Who the caller is: a gateway key stands for its integration's token (put in the
    /// request's `Authorization` in its place); a Notion token is charged as it is. What the
    /// access mode does not let through is refused here, before any state exists for it.
    fn of(
        gw: &Gateway,
        parts: &mut http::request::Parts,
        presented: HeaderValue,
        peer: IpAddr,
        log: &mut RequestLog,
    ) -> Result<Self, GatewayError> {
        let Some(key) = gw.access.resolve(&presented)? else {
            let caller = gw.shaper.caller(
                parts
                    .headers
                    .get(&GATEWAY_CLIENT)
                    .map(HeaderValue::as_bytes),
                peer,
            );
            return Ok(Self {
                credential: presented,
                caller,
                priority: Priority::Normal,
                key: None,
                queue_deadline: None,
            });
        };
        parts
            .headers
            .insert(header::AUTHORIZATION, key.token.clone());
        log.key = Some(key.name.clone());
        Ok(Self {
            credential: key.token.clone(),
            caller: gw.shaper.key_caller(&key.name, key.weight),
            priority: match key.priority {
                KeyPriority::Normal => Priority::Normal,
                KeyPriority::Background => Priority::Background,
            },
            queue_deadline: None,
            key: Some(key),
        })
    }
}

/// Request filter: refuses what must not spend budget, classifies the endpoint, reads the body.
pub(super) async fn filter(
    gw: &Gateway,
    req: Request<Incoming>,
    peer: IpAddr,
    deadline: Instant,
    log: &mut RequestLog,
) -> Result<Filtered, GatewayError> {
    let (mut parts, body) = req.into_parts();

    // Every request is charged to its token; without one there is nothing to charge, and
    // Notion would answer 401 anyway.
    let presented = parts
        .headers
        .get(header::AUTHORIZATION)
        .filter(|v| !headers::credential_of(v).is_empty())
        .cloned()
        .ok_or(GatewayError::Unauthorized)?;
    let charge = Charge::of(gw, &mut parts, presented, peer, log)?;
    let endpoint = catalogue::classify(&parts.method, parts.uri.path());
    log.route = endpoint.template;

    let prevalidate = gw.config.errors.prevalidate;
    if prevalidate {
        check_declared_size(&parts)?;
        check_query(&parts)?;
    }
    let body = request_body(&gw.config, &parts.headers, body, deadline).await?;
    if prevalidate {
        if let RequestBody::Replayable(Some(bytes)) = &body {
            check_json_body(&parts, endpoint, bytes)?;
        }
    }
    Ok(Filtered {
        parts,
        charge,
        endpoint,
        body,
    })
}

/// The request as every attempt sends it: method, upstream URI, rewritten headers, and the body
/// kept for another attempt.
pub(super) struct UpstreamRequest {
    pub method: http::Method,
    /// The catalogue entry: route label and what a repeat would do.
    pub endpoint: Endpoint,
    pub uri: Uri,
    pub headers: HeaderMap,
    /// What another attempt sends: the body kept in memory (or none). `None`: the body streams
    /// and goes once.
    pub replay: Option<Option<Bytes>>,
    /// The body of the first attempt, until it is sent.
    first_body: Option<RequestBody>,
}

impl UpstreamRequest {
    /// Upstream request phase: headers rewritten for Notion, the URI built from the configured
    /// upstream and the caller's path and query.
    pub fn new(
        gw: &Gateway,
        mut parts: http::request::Parts,
        endpoint: Endpoint,
        body: RequestBody,
    ) -> Result<Self, GatewayError> {
        let uri = gw.upstream.uri_for(parts.uri.path_and_query())?;
        // The Admin API has its own version line (https://developers.notion.com/reference/admin/versioning).
        let version = if parts.uri.path().starts_with("/admin/v1/") {
            gw.config.upstream.admin_notion_version.as_ref()
        } else {
            Some(&gw.config.upstream.notion_version)
        };
        headers::to_upstream(&mut parts.headers, &gw.upstream.host, version);
        let replay = match &body {
            RequestBody::Replayable(b) => Some(b.clone()),
            RequestBody::Streaming(..) => None,
        };
        Ok(Self {
            method: parts.method,
            endpoint,
            uri,
            headers: parts.headers,
            replay,
            first_body: Some(body),
        })
    }

    /// Whether another attempt can send the body again.
    pub fn replayable(&self) -> bool {
        self.replay.is_some()
    }

    /// The kept body, when it was kept (`None` also when there was no body).
    pub fn kept_body(&self) -> Option<&[u8]> {
        self.replay.as_ref().and_then(|b| b.as_deref())
    }

    /// The request for the next attempt: the first one's body, then the kept copy.
    pub fn build(&mut self) -> Result<http::Request<RequestBody>, GatewayError> {
        let Some(body) = self
            .first_body
            .take()
            .or_else(|| self.replay.clone().map(RequestBody::Replayable))
        else {
            // Not reached: a streamed body never loops.
            return Err(GatewayError::UpstreamBroken(
                "request body already sent".into(),
            ));
        };
        let mut req = http::Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = self.headers.clone();
        Ok(req)
    }
}

/// The request body, read into memory when it is small enough to be sent again.
///
/// A declared length over the limit is refused before anything is sent upstream. Without a
/// length (chunked), the body is counted as it streams and cut at the limit, so the upstream
/// never sees a complete oversized request.
async fn request_body(
    cfg: &Config,
    headers: &HeaderMap,
    body: Incoming,
    deadline: Instant,
) -> Result<RequestBody, GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let limit = cfg.server.max_body;
    if declared.is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    if body.is_end_stream() {
        return Ok(RequestBody::Replayable(None));
    }
    let idle = cfg.server.body_idle_timeout;
    if declared.is_some_and(|n| n <= cfg.retry.replay_limit) {
        let collect = GuardedBody::new(body, idle, None).collect();
        let bytes = tokio::time::timeout_at(deadline, collect)
            .await
            .map_err(|_| GatewayError::DeadlineExceeded(cfg.server.request_timeout))?
            .map_err(|e| GatewayError::from(&e))?
            .to_bytes();
        return Ok(RequestBody::Replayable(
            (!bytes.is_empty()).then_some(bytes),
        ));
    }
    let count_limit = if declared.is_some() {
        None
    } else {
        Some(limit)
    };
    Ok(RequestBody::streaming(GuardedBody::new(
        body,
        idle,
        count_limit,
    )))
}

/// Largest JSON body Notion accepts: "payloads have a maximum size of 1000 block elements and
/// 500KB overall" (https://developers.notion.com/reference/request-limits). Read as 500 KiB, the
/// larger reading, so nothing Notion would accept is refused.
pub const NOTION_JSON_LIMIT: u64 = 500 * 1024;

/// Most results per page and most elements of an array Notion accepts in one request (same page).
pub const NOTION_ARRAY_LIMIT: u64 = 100;

fn refused(code: &'static str, reason: &'static str, message: String) -> GatewayError {
    GatewayError::Refused {
        code,
        reason,
        message,
    }
}

/// Whether the body is JSON Notion parses: a JSON `Content-Type` on a write (multipart
/// uploads are not).
fn json_write(parts: &http::request::Parts) -> bool {
    matches!(
        parts.method,
        http::Method::POST | http::Method::PATCH | http::Method::PUT
    ) && super::response::is_json(&parts.headers)
}

/// A JSON body declared larger than Notion's 500KB, refused before it is read.
fn check_declared_size(parts: &http::request::Parts) -> Result<(), GatewayError> {
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > NOTION_JSON_LIMIT && json_write(parts) => Err(too_large(n)),
        _ => Ok(()),
    }
}

fn too_large(n: u64) -> GatewayError {
    refused(
        "validation_error",
        "json_too_large",
        format!(
            "body failed validation: the JSON body is {n} bytes, more than the 500KB Notion accepts (https://developers.notion.com/reference/request-limits); split the request"
        ),
    )
}

/// `page_size` over 100 in the query string, in Notion's wording.
fn check_query(parts: &http::request::Parts) -> Result<(), GatewayError> {
    let Some(query) = parts.uri.query() else {
        return Ok(());
    };
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "page_size" {
            continue;
        }
        if let Ok(n) = value.parse::<u64>() {
            if n > NOTION_ARRAY_LIMIT {
                return Err(refused(
                    "validation_error",
                    "page_size",
                    format!(
                        "query failed validation: query.page_size should be ≤ `{NOTION_ARRAY_LIMIT}`, instead was `{n}`."
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A JSON body kept in memory: too large, not JSON, `page_size` over 100, or more than 100
/// `children` where Notion counts them (appending block children, creating a page).
fn check_json_body(
    parts: &http::request::Parts,
    endpoint: Endpoint,
    body: &[u8],
) -> Result<(), GatewayError> {
    if !json_write(parts) {
        return Ok(());
    }
    if body.len() as u64 > NOTION_JSON_LIMIT {
        return Err(too_large(body.len() as u64));
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        // Notion's own message for it (https://developers.notion.com/reference/status-codes).
        return Err(refused(
            "invalid_json",
            "invalid_json",
            "Error parsing JSON body.".into(),
        ));
    };
    if let Some(n) = value.get("page_size").and_then(serde_json::Value::as_u64) {
        if n > NOTION_ARRAY_LIMIT {
            return Err(refused(
                "validation_error",
                "page_size",
                format!(
                    "body failed validation: body.page_size should be ≤ `{NOTION_ARRAY_LIMIT}`, instead was `{n}`."
                ),
            ));
        }
    }
    let counts_children = matches!(
        (parts.method.as_str(), endpoint.template),
        ("PATCH", "/v1/blocks/{id}/children") | ("POST", "/v1/pages")
    );
    if counts_children {
        if let Some(n) = value
            .get("children")
            .and_then(|c| c.as_array())
            .map(Vec::len)
        {
            if n as u64 > NOTION_ARRAY_LIMIT {
                return Err(refused(
                    "validation_error",
                    "too_many_children",
                    format!(
                        "body failed validation: body.children.length should be ≤ `{NOTION_ARRAY_LIMIT}`, instead was `{n}`."
                    ),
                ));
            }
        }
    }
    Ok(())
}
