//! Timeouts and shutdown, on tokio's paused clock: the runtime jumps to the next timer whenever
//! every task is idle, so "58 seconds" take no wall time and elapsed times are exact. Sockets
//! are real (loopback, single-threaded runtime).

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Elapsed paused-clock time is exact up to the few milliseconds the runtime advances while
/// tasks exchange bytes.
fn assert_about(elapsed: Duration, expected: Duration) {
    assert!(
        elapsed >= expected && elapsed < expected + Duration::from_millis(100),
        "took {elapsed:?}, expected {expected:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn hung_upstream_gets_a_504_at_the_request_deadline() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::Hang);
    let gw = TestGateway::start(config_for(&notion)).await;
    let start = Instant::now();
    let r = gw.get("/v1/databases/d1").await;
    let v = r.assert_gateway_error(504, "gateway_timeout");
    assert_about(start.elapsed(), Duration::from_secs(58));
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("server.request_timeout"));
}

#[tokio::test(start_paused = true)]
async fn one_attempt_is_bounded_by_the_attempt_timeout() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::Hang);
    let mut cfg = config_for(&notion);
    cfg.upstream.attempt_timeout = Duration::from_secs(20);
    cfg.retry.max_attempts = 1; // one attempt; tests/retries.rs retries timeouts
    let gw = TestGateway::start(cfg).await;
    let start = Instant::now();
    let v = gw
        .post_json("/v1/databases/d1/query", serde_json::json!({}))
        .await
        .assert_gateway_error(504, "gateway_timeout");
    assert_about(start.elapsed(), Duration::from_secs(20));
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("upstream.attempt_timeout"));
}

#[tokio::test(start_paused = true)]
async fn connect_timeout_applies_when_the_upstream_never_accepts() {
    let hole = BlackHole::new();
    let addr = hole.addr;
    let mut cfg = notion_gateway::Config::default();
    cfg.upstream.base = format!("http://{addr}/").parse().unwrap();
    cfg.retry.max_attempts = 1; // one attempt; tests/retries.rs retries refused connections
    let gw = TestGateway::start(cfg).await;
    let start = Instant::now();
    let v = gw
        .get("/v1/users/me")
        .await
        .assert_gateway_error(502, "service_unavailable");
    assert_about(start.elapsed(), Duration::from_secs(5));
    assert!(v["message"].as_str().unwrap().contains("could not connect"));
}

#[tokio::test(start_paused = true)]
async fn client_that_stops_sending_its_body_gets_a_408() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(
        b"POST /v1/pages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert_eq!(raw_json(&out)["code"], "invalid_request");
    assert_about(start.elapsed(), Duration::from_secs(30));
    assert!(
        notion.received().is_empty(),
        "no complete request reached Notion"
    );
}

#[tokio::test(start_paused = true)]
async fn upstream_that_stalls_mid_body_is_cut_after_the_body_idle_timeout() {
    let notion = FakeNotion::start().await;
    let (tx, reply) = Reply::stream("application/json");
    notion.push(reply);
    let gw = TestGateway::start(config_for(&notion)).await;
    let resp = gw
        .send_streaming(
            gw.request(Method::GET, "/v1/blocks/b/children")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    tx.send(Bytes::from_static(b"{\"results\":["))
        .await
        .unwrap();
    assert!(body.frame().await.unwrap().is_ok());
    let start = Instant::now();
    // The upstream keeps the stream open but sends nothing more.
    let end = body.frame().await;
    assert!(matches!(end, Some(Err(_)) | None), "stream cut: {end:?}");
    assert_about(start.elapsed(), Duration::from_secs(30));
    drop(tx);
}

#[tokio::test(start_paused = true)]
async fn idle_and_slow_header_connections_are_closed() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;

    // Idle keep-alive: one request, then silence.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let start = Instant::now();
    assert_eq!(s.read(&mut buf).await.unwrap(), 0, "closed by the gateway");
    assert_about(start.elapsed(), Duration::from_secs(30));

    // Slowloris: half a request head, then nothing.
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /v1/users HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    assert_about(start.elapsed(), Duration::from_secs(30));
    assert!(notion.received().is_empty());
}

#[tokio::test(start_paused = true)]
async fn client_that_stops_reading_is_disconnected_and_the_upstream_released() {
    let notion = FakeNotion::start().await;
    let (tx, reply) = Reply::stream("application/octet-stream");
    notion.push(reply);
    let gw = TestGateway::start(config_for(&notion)).await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /v1/files/big HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n")
        .await
        .unwrap();
    // The client never reads. Push data until the buffers on the way are full and the
    // gateway has been unable to write for body_idle_timeout: then the upstream stream is
    // dropped and our sender closes.
    let chunk = Bytes::from(vec![b'x'; 256 * 1024]);
    let mut sent = 0usize;
    let mut last_progress = Instant::now();
    loop {
        tokio::select! {
            r = tx.send(chunk.clone()) => {
                if r.is_err() { break; }
                sent += chunk.len();
                last_progress = Instant::now();
            }
            () = tx.closed() => break,
        }
        assert!(sent < 1 << 30, "the gateway kept buffering without bound");
    }
    let stalled_for = last_progress.elapsed();
    assert!(
        stalled_for >= Duration::from_secs(30) && stalled_for < Duration::from_secs(61),
        "released after {stalled_for:?} without progress"
    );
    drop(s);
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_in_flight_requests_then_answers_503() {
    let notion = FakeNotion::start().await;
    // First request: its answer arrives during the drain. Second: hangs past the deadline.
    let (tx, reply) = Reply::stream("application/json");
    notion.push(reply);
    notion.push(Reply::Hang);
    let mut gw = TestGateway::start(config_for(&notion)).await;

    let slow = tokio::spawn(
        gw.send_detached(
            gw.request(Method::GET, "/v1/pages/a")
                .body(empty())
                .unwrap(),
        ),
    );
    let hung = tokio::spawn(
        gw.send_detached(
            gw.request(Method::GET, "/v1/pages/b")
                .body(empty())
                .unwrap(),
        ),
    );
    while notion.received().len() < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // An idle keep-alive connection, to see it closed when the drain begins.
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let _ = idle.read(&mut buf).await.unwrap();

    let start = Instant::now();
    gw.begin_shutdown();
    tokio::time::sleep(Duration::from_secs(1)).await;
    // No new connections; the idle one was closed.
    assert!(
        TcpStream::connect(gw.addr).await.is_err(),
        "listener closed"
    );
    assert_eq!(idle.read(&mut buf).await.unwrap(), 0);

    // The first request finishes normally during the drain.
    tx.send(Bytes::from_static(b"{\"object\":\"page\"}"))
        .await
        .unwrap();
    drop(tx);
    let first = slow.await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.json()["object"], "page");

    // The second is answered 503 when the 30 s drain deadline passes, not dropped.
    let second = hung.await.unwrap();
    second.assert_gateway_error(503, "service_unavailable");
    assert_eq!(second.header("retry-after"), Some("1"));
    assert_about(start.elapsed(), Duration::from_secs(30));
    gw.wait_stopped().await;
}

/// A streamed upload that keeps making progress is not cut by `server.request_timeout`: the
/// time the caller spends uploading is not Notion's delay.
#[tokio::test(start_paused = true)]
async fn a_slow_upload_still_making_progress_is_not_cut() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let (tx, body) = channel_body();
    let req = gw
        .request(Method::POST, "/v1/file_uploads/f1/send")
        .header("content-type", "multipart/form-data; boundary=x")
        .body(body)
        .unwrap();
    let call = tokio::spawn(gw.send_detached(req));
    let start = Instant::now();
    // A chunk every 20 s (within the 30 s body idle timeout) for 100 s.
    for _ in 0..5 {
        tx.send(Bytes::from(vec![b'a'; 1000])).await.unwrap();
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    drop(tx);
    let r = call.await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["body_len"], 5000);
    assert!(start.elapsed() >= Duration::from_secs(100));
}

/// A caller that stalls its upload is told so (408 `invalid_request`), not blamed on Notion
/// with a 504, even when the stall outlasts the request deadline.
#[tokio::test(start_paused = true)]
async fn a_stalled_upload_is_a_408_not_a_504() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let (tx, body) = channel_body();
    let req = gw
        .request(Method::POST, "/v1/file_uploads/f1/send")
        .header("content-type", "multipart/form-data; boundary=x")
        .body(body)
        .unwrap();
    let call = tokio::spawn(gw.send_detached(req));
    let start = Instant::now();
    for _ in 0..2 {
        tx.send(Bytes::from_static(b"part")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    tx.send(Bytes::from_static(b"more")).await.unwrap();
    // Then nothing from 40 s: the idle timeout (30 s) ends it at 70 s, past the 58 s deadline.
    let r = call.await.unwrap();
    let v = r.assert_gateway_error(408, "invalid_request");
    assert!(v["message"].as_str().unwrap().contains("client"), "{v}");
    assert_about(start.elapsed(), Duration::from_secs(70));
    assert!(notion.received().is_empty());
    drop(tx);
}
