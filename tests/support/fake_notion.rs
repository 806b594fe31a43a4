//! A fake api.notion.com whose answers each test scripts.
//!
//! ```ignore
//! let notion = FakeNotion::start().await;
//! notion.push(Reply::html_502());          // the next request gets an HTML 502 page
//! notion.push(Reply::rate_limited(2));     // the one after: 429 with Retry-After: 2
//! // ... anything unscripted is answered by Reply::Echo
//! let seen = notion.received();            // what actually arrived, in order
//! ```
//!
//! Every request's body is read completely before the reply is chosen (so "commit then fail"
//! is modelled faithfully); `received()` records only requests whose body arrived whole,
//! `incomplete()` counts the ones whose body broke off.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};

pub type FakeBody = UnsyncBoxBody<Bytes, Infallible>;

/// One scripted answer.
pub enum Reply {
    /// 200 with a JSON description of the request (method, uri, headers, body length, body).
    Echo,
    /// Any status, headers and body.
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Bytes,
    },
    /// Never answer; the connection stays open until the caller closes it.
    Hang,
    /// Reset the TCP connection (RST) after reading the request.
    Reset,
    /// 200 whose body chunks the test sends through the channel; ends when the sender drops.
    Stream {
        content_type: &'static str,
        chunks: mpsc::Receiver<Bytes>,
    },
    /// A plausible Notion answer for the endpoint (see [`FakeNotion::notion_like`]).
    Api,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Reply::Full {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: Bytes::from(body.to_string()),
        }
    }

    /// Notion's error shape, as Notion sends it.
    pub fn notion_error(status: u16, code: &str) -> Self {
        Self::json(
            status,
            serde_json::json!({"object": "error", "status": status, "code": code,
                "message": format!("fake {code}"), "request_id": "fake-req"}),
        )
    }

    /// The HTML page Notion's CDN answers in a 502 storm.
    pub fn html_502() -> Self {
        Reply::Full {
            status: 502,
            headers: vec![("content-type", "text/html".into())],
            body: Bytes::from_static(
                b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>cloudflare</center></body></html>",
            ),
        }
    }

    /// 429 `rate_limited` with `Retry-After`.
    pub fn rate_limited(retry_after: u64) -> Self {
        let mut r = Self::notion_error(429, "rate_limited");
        if let Reply::Full { headers, .. } = &mut r {
            headers.push(("retry-after", retry_after.to_string()));
        }
        r
    }

    /// 429 `rate_limited` naming the limit that was hit, as Notion's newer answers do.
    pub fn rate_limited_because(retry_after: u64, reason: &str) -> Self {
        let body = serde_json::json!({
            "object": "error", "status": 429, "code": "rate_limited",
            "message": "fake rate_limited",
            "additional_data": {"rate_limit_reason": reason},
        });
        Reply::json(429, body).with_header("retry-after", &retry_after.to_string())
    }

    /// 529 `service_overload` with `Retry-After`.
    pub fn overloaded(retry_after: u64) -> Self {
        Self::notion_error(529, "service_overload")
            .with_header("retry-after", &retry_after.to_string())
    }

    /// A 200 whose body the test writes chunk by chunk through the returned sender; the body
    /// ends when the sender is dropped.
    pub fn stream(content_type: &'static str) -> (mpsc::Sender<Bytes>, Self) {
        let (tx, chunks) = mpsc::channel(1);
        (
            tx,
            Reply::Stream {
                content_type,
                chunks,
            },
        )
    }

    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Reply::Full { headers, .. } = &mut self {
            headers.push((name, value.to_string()));
        }
        self
    }
}

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: http::Method,
    /// Path and query exactly as they arrived.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived (tokio's clock, so paused-clock tests see exact instants).
    pub at: tokio::time::Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A strict per-token GCRA like Notion's (and gatebench's fake): over the budget, 429 with an
/// integer `Retry-After`; rejected requests spend nothing.
struct Limit {
    interval: Duration,
    tolerance: Duration,
    tat: std::collections::HashMap<Vec<u8>, tokio::time::Instant>,
    rejected: Vec<tokio::time::Instant>,
}

/// Notion's limits as its request-limits page documents them (2026,
/// <https://developers.notion.com/reference/request-limits>): per connection a fixed budget per
/// 60-second window (the grid starts at the token's first request: the alignment where a burst
/// on top of a steady rate overflows); per workspace a limit shared by its tokens; endpoints
/// with their own limit; blocked connections. Over a limit: 429 `rate_limited` with
/// `Retry-After` = whole seconds until the window resets, and the body's
/// `additional_data.rate_limit_reason` and `additional_data.retry_after`. Rejected requests
/// spend nothing.
#[derive(Default)]
struct Documented {
    /// Budget per window of every connection (token), if enforced.
    connection: Option<u32>,
    windows: std::collections::HashMap<Vec<u8>, FixedWindow>,
    /// Workspace of each token (by Authorization value), for its limit and `GET /v1/users/me`.
    members: std::collections::HashMap<Vec<u8>, String>,
    /// Budget per window of each workspace, and its window.
    workspaces: std::collections::HashMap<String, (u32, FixedWindow)>,
    /// Path prefixes with their own budget per window, per token.
    endpoints: Vec<(String, u32)>,
    endpoint_windows: std::collections::HashMap<(Vec<u8>, String), FixedWindow>,
    /// Blocked tokens and the Retry-After they get.
    blocked: std::collections::HashMap<Vec<u8>, u64>,
    /// Every 429 these limits answered: when, and the reason.
    rejected: Vec<(tokio::time::Instant, &'static str)>,
}

/// A fixed 60-second window whose grid starts at its first request.
#[derive(Default, Clone, Copy)]
struct FixedWindow {
    start: Option<tokio::time::Instant>,
    count: u32,
}

const NOTION_WINDOW: Duration = Duration::from_secs(60);

impl FixedWindow {
    /// Rolls the window forward to `now`; `Err(seconds until reset)` when `budget` is spent.
    fn check(&mut self, budget: u32, now: tokio::time::Instant) -> Result<(), u64> {
        let start = *self.start.get_or_insert(now);
        let elapsed = now - start;
        if elapsed >= NOTION_WINDOW {
            let windows = (elapsed.as_secs_f64() / NOTION_WINDOW.as_secs_f64()).floor() as u32;
            self.start = Some(start + NOTION_WINDOW * windows);
            self.count = 0;
        }
        if self.count >= budget {
            let reset = self.start.unwrap_or(now) + NOTION_WINDOW - now;
            return Err(reset.as_secs_f64().ceil().max(1.0) as u64);
        }
        Ok(())
    }
}

#[derive(Default)]
struct State {
    documented: Mutex<Documented>,
    limit: Mutex<Option<Limit>>,
    script: Mutex<VecDeque<Reply>>,
    received: Mutex<Vec<Received>>,
    incomplete: AtomicUsize,
    connections: AtomicUsize,
    body_progress: Option<watch::Sender<usize>>,
    /// Unscripted requests get [`Reply::Api`] instead of [`Reply::Echo`].
    api: std::sync::atomic::AtomicBool,
    /// Injected into unscripted requests, and how many arrived so far.
    fault: Mutex<Option<Fault>>,
    arrivals: std::sync::atomic::AtomicU64,
}

/// Faults the fake injects into a share of the unscripted requests, chosen by a fixed
/// pseudo-random sequence over arrivals (the same run of faults every time).
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Cloudflare's HTML 502 page, with a `cf-ray`, for `percent` % of requests.
    Html502 { percent: u64 },
    /// The connection reset after the request arrived.
    Reset { percent: u64 },
    /// 429 `rate_limited` with `Retry-After: 1`.
    RateLimited { percent: u64 },
}

pub struct FakeNotion {
    pub addr: SocketAddr,
    state: Arc<State>,
    progress: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeNotion {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeNotion {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener)
    }

    pub fn serve(listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let (tx, progress) = watch::channel(0usize);
        let state = Arc::new(State {
            body_progress: Some(tx),
            ..Default::default()
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_conn(stream, st.clone()));
            }
        });
        FakeNotion {
            addr,
            state,
            progress,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next unscripted request gets `reply`.
    pub fn push(&self, reply: Reply) {
        self.state.script.lock().unwrap().push_back(reply);
    }

    /// From now on, enforce `rate` requests/s with bursts of `burst` per Authorization value,
    /// before any scripted reply.
    pub fn limit(&self, rate: f64, burst: u32) {
        let interval = Duration::from_secs_f64(1.0 / rate);
        *self.state.limit.lock().unwrap() = Some(Limit {
            interval,
            tolerance: interval * (burst - 1),
            tat: Default::default(),
            rejected: Vec::new(),
        });
    }

    /// Changes the rate and burst of [`FakeNotion::limit`] without forgetting what was spent,
    /// as Notion does when a workspace's plan or load changes mid-stream.
    pub fn change_limit(&self, rate: f64, burst: u32) {
        let interval = Duration::from_secs_f64(1.0 / rate);
        if let Some(l) = self.state.limit.lock().unwrap().as_mut() {
            l.interval = interval;
            l.tolerance = interval * (burst - 1);
        }
    }

    /// From now on, every connection (token) gets `budget` requests per fixed 60-second
    /// window, as Notion documents it.
    pub fn windows(&self, budget: u32) {
        self.state.documented.lock().unwrap().connection = Some(budget);
    }

    /// `tokens` belong to the workspace of id `workspace_id` (`GET /v1/users/me` answers their
    /// bot user with it); with `budget`, the workspace allows that many requests of all of them
    /// together per fixed 60-second window.
    pub fn workspace(&self, workspace_id: &str, tokens: &[&str], budget: Option<u32>) {
        let mut d = self.state.documented.lock().unwrap();
        for t in tokens {
            d.members
                .insert(format!("Bearer {t}").into_bytes(), workspace_id.to_string());
        }
        if let Some(b) = budget {
            d.workspaces
                .insert(workspace_id.to_string(), (b, FixedWindow::default()));
        }
    }

    /// Paths starting with `prefix` have their own budget per token and 60-second window.
    pub fn endpoint_limit(&self, prefix: &str, budget: u32) {
        self.state
            .documented
            .lock()
            .unwrap()
            .endpoints
            .push((prefix.to_string(), budget));
    }

    /// `token`'s access is restricted: every request gets 429 `public_api_request_blocked`.
    pub fn block(&self, token: &str, retry_after: u64) {
        self.state
            .documented
            .lock()
            .unwrap()
            .blocked
            .insert(format!("Bearer {token}").into_bytes(), retry_after);
    }

    /// Every 429 of the documented limits: when, and its `rate_limit_reason`.
    pub fn rate_limited(&self) -> Vec<(tokio::time::Instant, &'static str)> {
        self.state.documented.lock().unwrap().rejected.clone()
    }

    /// When the limit of [`FakeNotion::limit`] answered 429.
    pub fn rejected(&self) -> Vec<tokio::time::Instant> {
        self.state
            .limit
            .lock()
            .unwrap()
            .as_ref()
            .map_or(Vec::new(), |l| l.rejected.clone())
    }

    /// Every request whose body arrived completely, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Requests whose body broke off before its end.
    pub fn incomplete(&self) -> usize {
        self.state.incomplete.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` request-body bytes (over all requests) have arrived.
    pub async fn body_bytes_at_least(&self, n: usize) {
        let mut rx = self.progress.clone();
        rx.wait_for(|got| *got >= n).await.unwrap();
    }

    /// From now on, unscripted requests get a plausible Notion answer for their endpoint
    /// (lists paginated 2 at a time over 5 results, with cursors; objects with ids), so the real
    /// SDKs and their pagination helpers can run against the fake.
    pub fn notion_like(&self) {
        self.state.api.store(true, Ordering::SeqCst);
    }

    /// From now on, inject `fault` into a share of the unscripted requests (`None`: stop).
    pub fn faults(&self, fault: Option<Fault>) {
        *self.state.fault.lock().unwrap() = fault;
    }
}

async fn serve_conn(stream: TcpStream, state: Arc<State>) {
    // A second handle on the socket, so a scripted Reset can turn linger off and close it
    // abruptly (RST) instead of with a FIN.
    let std = stream.into_std().unwrap();
    let dup = std.try_clone().unwrap();
    let stream = TcpStream::from_std(std).unwrap();
    let reset = Arc::new(Notify::new());
    let svc = {
        let reset = reset.clone();
        service_fn(move |req| handle(req, state.clone(), reset.clone()))
    };
    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        _ = conn => {}
        () = reset.notified() => {
            let _ = socket2::SockRef::from(&dup).set_linger(Some(Duration::ZERO));
        }
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
    reset: Arc<Notify>,
) -> Result<Response<FakeBody>, Infallible> {
    let (parts, mut body) = req.into_parts();
    let mut buf = BytesMut::new();
    let mut complete = true;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    buf.extend_from_slice(d);
                    if let Some(p) = &state.body_progress {
                        p.send_modify(|n| *n += d.len());
                    }
                }
            }
            Err(_) => {
                complete = false;
                break;
            }
        }
    }
    if !complete {
        state.incomplete.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    let rec = Received {
        method: parts.method.clone(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body: buf.freeze(),
        at: tokio::time::Instant::now(),
    };
    state.received.lock().unwrap().push(rec.clone());
    let key = parts
        .headers
        .get("authorization")
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    if let Some(rejection) = documented_limits(&state, &key, rec.uri.as_str(), rec.at) {
        return Ok(rejection);
    }
    let bot_user = (rec.method == http::Method::GET
        && rec.uri.split('?').next() == Some("/v1/users/me"))
    .then(|| state.documented.lock().unwrap().members.get(&key).cloned())
    .flatten();
    if let Some(limit) = state.limit.lock().unwrap().as_mut() {
        let key = parts
            .headers
            .get("authorization")
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        let now = rec.at;
        let tat = limit.tat.get(&key).copied().unwrap_or(now).max(now);
        if tat > now + limit.tolerance {
            limit.rejected.push(now);
            let wait = (tat - limit.tolerance - now).as_secs_f64().ceil().max(1.0);
            return Ok(full(
                429,
                &[
                    ("content-type", "application/json".into()),
                    ("retry-after", format!("{wait}")),
                ],
                Bytes::from(
                    r#"{"object":"error","status":429,"code":"rate_limited","message":"fake limit"}"#,
                ),
            ));
        }
        limit.tat.insert(key, tat + limit.interval);
    }
    let scripted = state.script.lock().unwrap().pop_front();
    let reply = match (scripted.or_else(|| injected_fault(&state)), bot_user) {
        (Some(r), _) => r,
        // Notion's bot user (`BotInfoResponse` of @notionhq/client: owner, workspace_id,
        // workspace_limits).
        (None, Some(ws)) => Reply::json(
            200,
            serde_json::json!({
                "object": "user", "id": "fake-bot", "type": "bot", "name": "fake",
                "bot": {
                    "owner": {"type": "workspace", "workspace": true},
                    "workspace_id": ws, "workspace_name": "Fake workspace",
                    "workspace_limits": {"max_file_upload_size_in_bytes": 5242880}
                }
            }),
        ),
        (None, None) if state.api.load(Ordering::SeqCst) => Reply::Api,
        (None, None) => Reply::Echo,
    };

    let response = match reply {
        Reply::Echo => {
            let headers: serde_json::Map<String, serde_json::Value> = rec
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        serde_json::Value::String(v.to_str().unwrap_or("<binary>").to_string()),
                    )
                })
                .collect();
            let body = serde_json::json!({
                "object": "echo",
                "method": rec.method.as_str(),
                "uri": rec.uri,
                "headers": headers,
                "body_len": rec.body.len(),
                "body": if rec.body.len() <= 65536 { String::from_utf8_lossy(&rec.body).into_owned() } else { String::new() },
            });
            full(
                200,
                &[("content-type", "application/json".into())],
                Bytes::from(body.to_string()),
            )
        }
        Reply::Full {
            status,
            headers,
            body,
        } => full(status, &headers, body),
        Reply::Api => api_reply(&rec, state.arrivals.load(Ordering::SeqCst)),
        Reply::Hang => std::future::pending().await,
        Reply::Reset => {
            reset.notify_one();
            std::future::pending().await
        }
        Reply::Stream {
            content_type,
            chunks,
        } => {
            let stream = futures_util::stream::unfold(chunks, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
            });
            let mut resp = Response::new(StreamBody::new(stream).boxed_unsync());
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static(content_type));
            resp
        }
    };
    Ok(response)
}

/// The documented limits' answer to a request of `key` to `uri` at `now`, if it is over one.
fn documented_limits(
    state: &State,
    key: &[u8],
    uri: &str,
    now: tokio::time::Instant,
) -> Option<Response<FakeBody>> {
    let mut d = state.documented.lock().unwrap();
    let d = &mut *d;
    let reject = |d: &mut Documented, reason: &'static str, retry_after: u64| {
        d.rejected.push((now, reason));
        let body = serde_json::json!({
            "object": "error", "status": 429, "code": "rate_limited",
            "message": "You have been rate limited. Please try again in a few minutes.",
            "request_id": "fake-req",
            "additional_data": {"rate_limit_reason": reason, "retry_after": retry_after.to_string()},
        });
        Some(full(
            429,
            &[
                ("content-type", "application/json".into()),
                ("retry-after", retry_after.to_string()),
            ],
            Bytes::from(body.to_string()),
        ))
    };
    if let Some(&r) = d.blocked.get(key) {
        return reject(d, "public_api_request_blocked", r);
    }
    // Every window that counts this request must have room; only then is it counted.
    let mut windows: Vec<(&'static str, u32, FixedWindow)> = Vec::new();
    if let Some(b) = d.connection {
        let w = d.windows.get(key).copied().unwrap_or_default();
        windows.push(("public_api_request_rate_limit", b, w));
    }
    let ws = d.members.get(key).cloned();
    if let Some((b, w)) = ws.as_ref().and_then(|w| d.workspaces.get(w)) {
        windows.push(("public_api_space_request_rate_limit", *b, *w));
    }
    let path = uri.split('?').next().unwrap_or(uri);
    let endpoint = d
        .endpoints
        .iter()
        .find(|(p, _)| path.starts_with(p.as_str()))
        .cloned();
    if let Some((prefix, b)) = &endpoint {
        let w = d
            .endpoint_windows
            .get(&(key.to_vec(), prefix.clone()))
            .copied()
            .unwrap_or_default();
        windows.push(("public_api_endpoint_rate_limit", *b, w));
    }
    for (reason, budget, w) in windows.iter_mut() {
        if let Err(retry_after) = w.check(*budget, now) {
            let reason = *reason;
            // The windows rolled forward are kept even when the request is refused.
            store_windows(d, key, ws.as_deref(), endpoint.as_ref(), &windows, false);
            return reject(d, reason, retry_after);
        }
    }
    store_windows(d, key, ws.as_deref(), endpoint.as_ref(), &windows, true);
    None
}

fn store_windows(
    d: &mut Documented,
    key: &[u8],
    ws: Option<&str>,
    endpoint: Option<&(String, u32)>,
    windows: &[(&'static str, u32, FixedWindow)],
    admitted: bool,
) {
    for (reason, _, w) in windows {
        let mut w = *w;
        if admitted {
            w.count += 1;
        }
        match *reason {
            "public_api_request_rate_limit" => {
                d.windows.insert(key.to_vec(), w);
            }
            "public_api_space_request_rate_limit" => {
                if let Some(e) = ws.and_then(|ws| d.workspaces.get_mut(ws)) {
                    e.1 = w;
                }
            }
            _ => {
                if let Some((prefix, _)) = endpoint {
                    d.endpoint_windows.insert((key.to_vec(), prefix.clone()), w);
                }
            }
        }
    }
}

fn full(status: u16, headers: &[(&'static str, String)], body: Bytes) -> Response<FakeBody> {
    let mut resp = Response::new(Full::new(body).boxed_unsync());
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        resp.headers_mut()
            .append(*k, HeaderValue::from_str(v).unwrap());
    }
    resp
}

/// The fault for this arrival, if the fixed sequence picks it (splitmix64 of the arrival number).
fn injected_fault(state: &State) -> Option<Reply> {
    let n = state.arrivals.fetch_add(1, Ordering::SeqCst);
    let fault = (*state.fault.lock().unwrap())?;
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    let roll = z % 100;
    match fault {
        Fault::Html502 { percent } if roll < percent => {
            Some(Reply::html_502().with_header("cf-ray", &format!("8f{n:014x}-AMS")))
        }
        Fault::Reset { percent } if roll < percent => Some(Reply::Reset),
        Fault::RateLimited { percent } if roll < percent => Some(Reply::rate_limited(1)),
        _ => None,
    }
}

/// What [`Reply::Api`] answers: enough of Notion's shapes for the SDKs' calls and pagination
/// helpers.
fn api_reply(rec: &Received, n: u64) -> Response<FakeBody> {
    use serde_json::{json, Value};
    let (path, query) = rec.uri.split_once('?').unwrap_or((&rec.uri, ""));
    let body: Value = serde_json::from_slice(&rec.body).unwrap_or(Value::Null);
    let id = |i: u64| format!("59833787-2cf9-4fdf-8782-{i:012}");
    let list = |cursor: Option<&str>| {
        let start: u64 = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
        let end = (start + 2).min(5);
        let results: Vec<Value> = (start..end)
            .map(|i| json!({"object": "page", "id": id(i)}))
            .collect();
        json!({"object": "list", "results": results,
            "next_cursor": if end < 5 { Value::from(end.to_string()) } else { Value::Null },
            "has_more": end < 5, "type": "page_or_data_source"})
    };
    let query_cursor = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("start_cursor="));
    let body_cursor = body.get("start_cursor").and_then(Value::as_str);
    let method = rec.method.as_str();
    let value = match (method, path) {
        ("POST", p) if p == "/v1/search" || p.ends_with("/query") => list(body_cursor),
        ("GET", p) if p.ends_with("/children") || p == "/v1/comments" || p == "/v1/users" => {
            list(query_cursor)
        }
        ("PATCH", p) if p.ends_with("/children") => {
            json!({"object": "list", "results": [{"object": "block", "id": id(900)}],
                "next_cursor": null, "has_more": false})
        }
        ("GET", "/v1/users/me") => json!({"object": "user", "id": id(1), "type": "bot", "bot": {}}),
        ("POST", "/v1/file_uploads") => {
            json!({"object": "file_upload", "id": id(700), "status": "pending"})
        }
        ("POST", p) if p.starts_with("/v1/file_uploads/") => {
            json!({"object": "file_upload", "id": id(700), "status": "uploaded"})
        }
        (_, p) => {
            let kind = match p.split('/').nth(2) {
                Some("pages") => "page",
                Some("comments") => "comment",
                Some("blocks") => "block",
                Some("data_sources") => "data_source",
                Some("users") => "user",
                _ => "object",
            };
            json!({"object": kind, "id": id(n % 1000), "properties": {}})
        }
    };
    full(
        200,
        &[
            ("content-type", "application/json".into()),
            ("x-notion-request-id", format!("fake-{n}")),
        ],
        Bytes::from(value.to_string()),
    )
}
