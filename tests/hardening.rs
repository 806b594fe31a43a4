//! The gateway in front of strangers (issue 14): paths that could leave `/v1/` or change their
//! retry class, header tricks, connection floods, secrets in `check-config`. Requests are raw
//! bytes on a real socket, so nothing between the test and the gateway normalises them.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const ID: &str = "59833787-2cf9-4fdf-8782-e53db20768a5";

/// A raw request with a token and `Connection: close`, plus `extra` header lines.
fn raw_request(method: &str, target: &str, extra: &str) -> String {
    format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ntn_hardening\r\n{extra}Connection: close\r\nContent-Length: 0\r\n\r\n"
    )
}

async fn exchange(gw: &TestGateway, request: &str) -> String {
    raw_exchange(gw.addr, request.as_bytes(), Duration::from_secs(5)).await
}

fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {response:?}"))
}

fn header_of<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Asserts a Notion-shaped refusal of the gateway's own.
fn assert_refused(response: &str, status: u16, code: &str, what: &str) {
    assert_eq!(status_of(response), status, "{what}: {response}");
    let v = raw_json(response);
    assert_eq!(v["object"], "error", "{what}");
    assert_eq!(v["code"], code, "{what}: {v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("notion-gateway: "),
        "{what}: {v}"
    );
    assert_eq!(
        v["request_id"].as_str(),
        header_of(response, "x-request-id"),
        "{what}"
    );
}

// ---- Paths (14.4) ----

#[tokio::test]
async fn paths_that_could_resolve_outside_v1_are_refused_and_never_reach_notion() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let block_children = format!("/v1/blocks/{ID}%2Fchildren");
    let pages_up = format!("/v1/pages/{ID}/../../x");
    for target in [
        "/v1/../x",
        "/v1/%2e%2e/x",
        "/v1/%2E%2E/x",
        "/v1/%2e%2E/users/me",
        "/v1/..%2fx",
        "/v1/..%2Fx",
        &pages_up,
        "/v1/./users/me",
        "/v1/%2e/users/me",
        "/v1/users/me/..",
        "/v1/users/me/.",
        "/v1/.../x",
        "/v1/..;/x",
        "/v1/%252e%252e/x",
        "/admin/v1/../../v1/users/me",
        "/v1//users/me",
        "/v1/users/%00",
        "/v1/users/a%0d%0aX-Injected:%201",
        "/v1/users/%zz",
        "/v1/users/%c0%ae%c0%ae",
        "/v1/users/%2",
        &block_children,
        "/v1/blocks/x%5Cchildren",
        "/v1/blocks/x%5cchildren",
        "/v1/blocks/x\\children",
        "/v1/users/me%2f..%2f..%2fx",
    ] {
        let out = exchange(&gw, &raw_request("GET", target, "")).await;
        // hyper itself refuses some targets (a raw backslash) with a bare 400 before the
        // gateway sees them; either way nothing is forwarded.
        if raw_json_opt(&out).is_some() {
            assert_refused(&out, 400, "invalid_request_url", target);
        } else {
            assert_eq!(status_of(&out), 400, "{target}: {out}");
        }
    }
    assert_eq!(notion.received().len(), 0, "a refused path reached Notion");
}

fn raw_json_opt(response: &str) -> Option<serde_json::Value> {
    serde_json::from_str(response.split("\r\n\r\n").nth(1)?).ok()
}

#[tokio::test(start_paused = true)]
async fn an_encoded_slash_cannot_turn_an_append_into_a_retried_update() {
    // `PATCH /v1/blocks/{id}` is idempotent and retried on resets; `.../children` appends. With
    // the slash encoded, the path looked like the former to the gateway and, decoded, like the
    // latter to a server that decodes before routing.
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    for _ in 0..6 {
        notion.push(Reply::Reset);
    }
    for target in [
        format!("/v1/blocks/{ID}%2Fchildren"),
        format!("/v1/blocks/{ID}%2fchildren"),
        format!("/v1/blocks/{ID}%252Fchildren"),
    ] {
        let body = r#"{"children":[]}"#;
        let req = format!(
            "PATCH {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ntn_hardening\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let out = exchange(&gw, &req).await;
        assert_refused(&out, 400, "invalid_request_url", &target);
    }
    assert_eq!(notion.received().len(), 0);
    assert_eq!(notion.connections(), 0, "not even a connection to Notion");
}

#[tokio::test]
async fn ordinary_encodings_pass_unchanged_and_the_query_is_left_alone() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    for target in [
        // Notion's own property ids carry encoded slashes, and the SDK sends them as they are.
        format!("/v1/pages/{ID}/properties/%2F7eo"),
        format!("/v1/pages/{ID}/properties/%3E%24Pb?page_size=10"),
        format!("/v1/blocks/{ID}/%63hildren"),
        "/v1/users/me?x=../..&y=%2e%2e%2f".to_string(),
        "/v1/users/".to_string(),
    ] {
        let out = exchange(&gw, &raw_request("GET", &target, "")).await;
        assert_eq!(status_of(&out), 200, "{target}: {out}");
        assert_eq!(
            raw_json(&out)["uri"],
            target.as_str(),
            "forwarded byte for byte"
        );
    }
}

#[tokio::test]
async fn the_catalogue_classifies_the_decoded_path() {
    // An encoded letter is the same endpoint to Notion, so it is the same route (and class)
    // to the gateway: its metrics label says so.
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let out = exchange(
        &gw,
        &raw_request("PATCH", &format!("/v1/blocks/{ID}/%63hildren"), ""),
    )
    .await;
    assert_eq!(status_of(&out), 200, "{out}");
    let m = gw.get("/metrics").await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains(
            r#"notion_gateway_requests_total{route="/v1/blocks/{id}/children",method="PATCH",status="200"}"#
        ),
        "{text}"
    );
}

// ---- Headers (14.6) ----

#[tokio::test]
async fn two_authorization_headers_are_refused_before_anything_is_charged() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let out = exchange(
        &gw,
        &raw_request("GET", "/v1/users/me", "Authorization: Bearer ntn_other\r\n"),
    )
    .await;
    assert_refused(&out, 400, "invalid_request", "two Authorization headers");
    assert!(!out.contains("ntn_"), "no token in the answer: {out}");
    assert_eq!(notion.received().len(), 0);
}

#[tokio::test(start_paused = true)]
async fn connection_may_not_strip_end_to_end_headers_and_nothing_is_charged() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    // One request per second, no burst: a charged refusal would make the next request wait.
    cfg.limits.smoothing = Some(notion_gateway::config::Smoothing {
        rate: 1.0,
        burst: 1,
    });
    let gw = TestGateway::start(cfg).await;
    for name in [
        "authorization",
        "Authorization",
        "notion-version",
        "content-type",
        "content-length",
        "x-request-id",
        "keep-alive, X-Request-Id",
    ] {
        let out = exchange(
            &gw,
            &raw_request("GET", "/v1/users/me", &format!("Connection: {name}\r\n")),
        )
        .await;
        assert_refused(&out, 400, "invalid_request", name);
    }
    assert_eq!(notion.received().len(), 0);
    // The budget was never charged: the next request goes at once.
    let start = Instant::now();
    let ok = gw.get("/v1/users/me").await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-gateway-queue-wait-ms"), None);
    assert!(start.elapsed() < Duration::from_millis(100));
    // Hop-by-hop nominations still work.
    let out = exchange(
        &gw,
        &raw_request(
            "GET",
            "/v1/users/me",
            "Connection: x-private\r\nX-Private: 1\r\n",
        ),
    )
    .await;
    assert_eq!(status_of(&out), 200, "{out}");
    assert!(raw_json(&out)["headers"].get("x-private").is_none());
}

#[tokio::test]
async fn a_hostile_request_id_is_replaced_not_echoed_or_forwarded() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let long = "A".repeat(10 * 1024);
    let longest = "b".repeat(200);
    for (sent, kept) in [
        (long.as_str(), false),
        ("has space", false),
        ("caf\u{e9}", false),
        ("req-1\r\nX-Request-Id: req-2", false),
        (longest.as_str(), true),
        ("req-1", true),
    ] {
        let out = exchange(
            &gw,
            &raw_request("GET", "/v1/users/me", &format!("X-Request-Id: {sent}\r\n")),
        )
        .await;
        assert_eq!(status_of(&out), 200, "{sent}: {out}");
        let echoed = header_of(&out, "x-request-id").unwrap();
        let upstream = raw_json(&out)["headers"]["x-request-id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(echoed, upstream, "the same id upstream and back");
        if kept {
            assert_eq!(echoed, sent);
        } else {
            assert!(
                uuid::Uuid::parse_str(echoed).is_ok(),
                "{sent:.40} replaced by a generated id, got {echoed:.40}"
            );
        }
    }
}

// ---- Connections (14.3) ----

/// Opens a TCP connection and sends `bytes` (maybe nothing, maybe half a head).
async fn open(gw: &TestGateway, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    if !bytes.is_empty() {
        s.write_all(bytes).await.unwrap();
    }
    s
}

/// Whether the gateway has closed `s` (EOF or reset), waiting at most `within`.
async fn closed(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn idle_and_header_less_connections_cannot_lock_new_clients_out() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.server.max_connections = 4;
    let gw = TestGateway::start(cfg).await;
    // Every slot taken: two send nothing, two send half a head (slowloris).
    let mut idle = Vec::new();
    for bytes in [&b""[..], b"", b"GET /v1/users/me HTTP/1.1\r\nHo", b"GET /"] {
        idle.push(open(&gw, bytes).await);
    }
    tokio::task::yield_now().await;

    let start = Instant::now();
    let out = exchange(&gw, &raw_request("GET", "/v1/users/me", "")).await;
    assert_eq!(status_of(&out), 200, "{out}");
    let (probe, _) = raw_get(gw.addr.port(), "/healthz").await.unwrap();
    assert_eq!(probe, 200);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "new clients waited {:?}",
        start.elapsed()
    );
    // The oldest idle connection made room for the first client; the probe then found the
    // first client's slot free. The others are still open.
    assert!(closed(&mut idle[0], Duration::from_millis(100)).await);
    for s in &mut idle[1..] {
        assert!(!closed(s, Duration::from_millis(100)).await);
    }
    let m = gw.get("/metrics").await;
    let text = String::from_utf8_lossy(&m.body);
    assert!(
        text.contains(r#"notion_gateway_connections_evicted_total{pool="data"}"#),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_least_recently_used_idle_connection_is_closed_first() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.server.max_connections = 2;
    let gw = TestGateway::start(cfg).await;
    // `a` connects first but is used after `b` connected: `b` has been idle longer.
    let mut a = open(&gw, b"").await;
    let mut b = open(&gw, b"").await;
    tokio::task::yield_now().await;
    a.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    assert!(a.read(&mut buf).await.unwrap() > 0);

    let out = exchange(&gw, &raw_request("GET", "/v1/users/me", "")).await;
    assert_eq!(status_of(&out), 200, "{out}");
    assert!(closed(&mut b, Duration::from_millis(100)).await, "b closed");
    // `a` is still served on its keep-alive connection.
    a.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let n = a.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "a kept"
    );
}

#[tokio::test(start_paused = true)]
async fn health_probes_are_answered_when_every_connection_is_busy() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.server.max_connections = 3;
    let gw = TestGateway::start(cfg).await;
    // Every data-plane connection waits for a Notion that does not answer.
    let mut busy = Vec::new();
    for _ in 0..3 {
        notion.push(Reply::Hang);
        let mut s = open(&gw, b"").await;
        s.write_all(raw_request("GET", "/v1/users/me", "").as_bytes())
            .await
            .unwrap();
        busy.push(s);
    }
    while notion.received().len() < 3 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    let start = Instant::now();
    for _ in 0..20 {
        let (probe, body) = raw_get(gw.addr.port(), "/healthz").await.unwrap();
        assert_eq!(probe, 200, "{body}");
    }
    // `/readyz` probes Notion when it knows nothing recent: that probe is one more request.
    let (ready, _) = raw_get(gw.addr.port(), "/readyz").await.unwrap();
    assert!(ready == 200 || ready == 503);
    let sent = notion.received().len();
    // A proxied request has no connection to run on: a clear 503, not a silent wait.
    let out = exchange(&gw, &raw_request("GET", "/v1/users/me", "")).await;
    assert_refused(&out, 503, "service_unavailable", "all connections busy");
    assert_eq!(header_of(&out, "retry-after"), Some("1"));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "probes waited {:?}",
        start.elapsed()
    );
    assert_eq!(
        notion.received().len(),
        sent,
        "the refused request was not sent"
    );

    // When a data-plane connection frees up, proxied requests go through again.
    drop(busy.pop());
    tokio::time::sleep(Duration::from_millis(10)).await;
    let out = exchange(&gw, &raw_request("GET", "/v1/users/me", "")).await;
    assert_eq!(status_of(&out), 200, "{out}");
}

#[tokio::test(start_paused = true)]
async fn a_drain_does_not_wait_for_clients_that_never_sent_a_request() {
    let notion = FakeNotion::start().await;
    let mut gw = TestGateway::start(config_for(&notion)).await;
    let mut silent = open(&gw, b"").await;
    let mut half = open(&gw, b"GET /v1/users/me HTTP/1.1\r\nHo").await;
    tokio::task::yield_now().await;
    let start = Instant::now();
    gw.begin_shutdown();
    gw.wait_stopped().await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the drain waited {:?} for connections without a request",
        start.elapsed()
    );
    assert!(closed(&mut silent, Duration::from_millis(100)).await);
    assert!(closed(&mut half, Duration::from_millis(100)).await);
}

// ---- Secrets in check-config (14, smaller findings) ----

#[test]
fn check_config_redacts_every_redis_password() {
    let dir = std::env::temp_dir().join(format!("ngw-hardening-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("redis.toml");
    std::fs::write(
        &file,
        "[limits]\nbackend = \"redis\"\nredis_url = \"redis://user:hunter2@127.0.0.1:6379/0?password=s3cret&db=1&PASS=s3cond&Secret=th1rd&p%61ss=f0urth\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_notion-gateway"))
        .args(["check-config", "--config"])
        .arg(&file)
        .env_remove("NOTION_GATEWAY_LIMITS_REDIS_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for secret in ["hunter2", "s3cret", "s3cond", "th1rd", "f0urth"] {
        assert!(!stdout.contains(secret), "{secret} printed:\n{stdout}");
        assert!(!stderr.contains(secret), "{secret} printed:\n{stderr}");
    }
    // What is not secret stays readable.
    assert!(stdout.contains("127.0.0.1:6379/0?"), "{stdout}");
    assert!(stdout.contains("db=1"), "{stdout}");
}
