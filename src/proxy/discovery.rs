//! Finding out a token's workspace (docs/behaviour.md §2), so that the tokens of one workspace
//! share its budget without anyone configuring it.
//!
//! Notion's `GET /v1/users/me` answers the token's bot user, whose `bot.workspace_id` names the
//! workspace (`BotInfoResponse` in @notionhq/client: `owner`, `workspace_id`,
//! `workspace_limits`). Once per token and process, after the token's first answer that is not
//! a 401 or 403 (an invalid token costs no extra call), the gateway asks, on the token's own
//! budget; a `GET /v1/users/me` of the caller's own that passes through teaches the same
//! without the extra call. A failed attempt is tried again a minute later. Tokens whose
//! integration names a workspace, and every token when `limits.discover_workspaces` is off,
//! are never asked about.

use std::time::Duration;

use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::request::UpstreamRequest;
use super::response::buffered_response;
use crate::body::RequestBody;
use crate::gateway::Gateway;
use crate::headers::{self, NOTION_VERSION};
use crate::metrics;
use crate::shaper::{Shaper, Ticket};
use crate::upstream::Upstream;

/// The route whose answer names the workspace.
const USERS_ME: &str = "/v1/users/me";
/// Largest `users/me` body read (a bot user is a few hundred bytes).
const BODY_LIMIT: usize = 64 * 1024;
/// How long the discovery call may wait for the budget and take.
const DEADLINE: Duration = Duration::from_secs(30);

/// Whether an answer of `status` to `req` calls for discovery: the token is valid and its
/// workspace is not known.
pub(super) fn wanted(ticket: &Ticket, status: StatusCode) -> bool {
    ticket.discover && status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN
}

/// Whether `req`'s own answer names the workspace (the caller asked `GET /v1/users/me`).
pub(super) fn answers_itself(req: &UpstreamRequest, status: StatusCode) -> bool {
    status == StatusCode::OK && req.method == Method::GET && req.endpoint.template == USERS_ME
}

/// The caller's own `GET /v1/users/me` answer: read (it is small), learned from, and passed on
/// unchanged.
pub(super) async fn learn_from_answer(
    gw: &Gateway,
    ticket: &Ticket,
    resp: http::Response<Incoming>,
    deadline: Instant,
) -> Response {
    let (parts, body) = resp.into_parts();
    let body = read(
        body,
        deadline.min(Instant::now() + gw.config.server.body_idle_timeout),
    )
    .await;
    if gw.shaper.discovering(ticket) {
        gw.shaper.discovered(ticket, workspace_id(&body).as_deref());
    }
    buffered_response(parts, body)
}

/// Asks Notion, beside the request, which workspace `ticket`'s token is in.
pub(super) fn spawn(gw: &Gateway, ticket: &Ticket, req: &UpstreamRequest) {
    if !gw.shaper.discovering(ticket) {
        return;
    }
    let Some(authorization) = req.headers.get(header::AUTHORIZATION).cloned() else {
        gw.shaper.discovered(ticket, None);
        return;
    };
    let call = Call {
        shaper: gw.shaper.clone(),
        upstream: gw.upstream.clone(),
        authorization,
        notion_version: req
            .headers
            .get(&NOTION_VERSION)
            .cloned()
            .unwrap_or_else(|| gw.config.upstream.notion_version.clone()),
        attempt_timeout: gw.config.upstream.attempt_timeout,
        ticket: ticket.clone(),
    };
    tokio::spawn(call.run());
}

/// One discovery call, owned by its task.
struct Call {
    shaper: Shaper,
    upstream: Upstream,
    authorization: HeaderValue,
    notion_version: HeaderValue,
    attempt_timeout: Duration,
    ticket: Ticket,
}

impl Call {
    async fn run(self) {
        let found = self.ask().await;
        self.shaper.discovered(&self.ticket, found.as_deref());
    }

    async fn ask(&self) -> Option<String> {
        let deadline = Instant::now() + DEADLINE;
        // On the token's own budget, as any of its requests.
        let caller = self
            .shaper
            .caller(None, std::net::Ipv6Addr::UNSPECIFIED.into());
        let credential = headers::credential_of(&self.authorization);
        let ticket = self
            .shaper
            .acquire(credential, caller, USERS_ME, deadline, false)
            .await
            .ok()?;
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, self.authorization.clone());
        h.insert(NOTION_VERSION.clone(), self.notion_version.clone());
        h.insert(header::HOST, self.upstream.host.clone());
        let mut req = http::Request::new(RequestBody::Replayable(None));
        *req.uri_mut() = self
            .upstream
            .uri_for(Some(&http::uri::PathAndQuery::from_static(USERS_ME)))
            .ok()?;
        *req.headers_mut() = h;
        let sent = Instant::now();
        let end = deadline.min(sent + self.attempt_timeout);
        let result = tokio::time::timeout_at(end, self.upstream.send(req)).await;
        let outcome = match &result {
            Ok(Ok(resp)) => metrics::status_outcome(resp.status().as_u16()),
            Ok(Err(_)) => "error",
            Err(_) => "timeout",
        };
        metrics::upstream_attempt(USERS_ME, outcome, sent.elapsed());
        ticket.outcomes.record(outcome);
        let resp = result.ok()?.ok()?;
        if resp.status() != StatusCode::OK {
            return None;
        }
        workspace_id(&read(resp.into_body(), end).await)
    }
}

/// `bot.workspace_id` of a user object: Notion's ids are hex digits and dashes; anything else
/// is not taken.
pub(crate) fn workspace_id(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let id = v.pointer("/bot/workspace_id")?.as_str()?.trim();
    (!id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .then(|| id.to_ascii_lowercase())
}

/// A small body, as much as arrives before `until` (at most [`BODY_LIMIT`]).
async fn read(mut body: Incoming, until: Instant) -> Bytes {
    let mut buf = Vec::new();
    let read = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                if buf.len() > BODY_LIMIT {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout_at(until, read).await;
    Bytes::from(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_id_of_a_bot_user() {
        let bot = br#"{"object":"user","type":"bot","bot":{"owner":{"type":"workspace","workspace":true},"workspace_id":"8C1A0D6E-0000-4000-8000-000000000001","workspace_limits":{"max_file_upload_size_in_bytes":5242880}}}"#;
        assert_eq!(
            workspace_id(bot).as_deref(),
            Some("8c1a0d6e-0000-4000-8000-000000000001")
        );
        assert_eq!(workspace_id(br#"{"object":"user","type":"person"}"#), None);
        assert_eq!(workspace_id(br#"{"bot":{"workspace_id":"x y"}}"#), None);
        assert_eq!(workspace_id(b"<html>"), None);
    }
}
