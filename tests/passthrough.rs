//! Black-box tests of the gateway core (issue 2): the real server on a real socket in front of
//! a fake Notion. Each test reads as a story: script the upstream, call the gateway, assert
//! what the caller and the upstream saw.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::BodyExt;
use support::*;

const WITHIN: Duration = Duration::from_secs(10);

#[tokio::test]
async fn get_passes_through_path_query_headers_status_and_body() {
    let notion = FakeNotion::start().await;
    notion.push(
        Reply::json(201, serde_json::json!({"object": "page", "id": "abc"}))
            .with_header("x-notion-request-id", "notion-req-42")
            .with_header("x-custom", "kept"),
    );
    let gw = TestGateway::start(config_for(&notion)).await;

    let req = gw
        .request(
            Method::GET,
            "/v1/pages/59833787-2cf9-4fdf-8782-e53db20768a5?filter_properties=title&x=%20y",
        )
        .header("x-caller-header", "hello")
        .body(empty())
        .unwrap();
    let resp = gw.send(req).await;

    assert_eq!(resp.status, 201);
    assert_eq!(resp.json()["id"], "abc");
    assert_eq!(resp.header("x-custom"), Some("kept"));
    assert_eq!(resp.header("x-notion-request-id"), Some("notion-req-42"));

    let seen = notion.received();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.method, Method::GET);
    assert_eq!(
        r.uri,
        "/v1/pages/59833787-2cf9-4fdf-8782-e53db20768a5?filter_properties=title&x=%20y"
    );
    assert_eq!(r.headers["authorization"], "Bearer ntn_test_token_0001");
    assert_eq!(r.headers["x-caller-header"], "hello");
    assert_eq!(r.headers["host"], notion.addr.to_string());
    assert_eq!(r.headers["notion-version"], "2025-09-03");
    assert_eq!(r.headers["via"], "1.1 notion-gateway");
}

#[tokio::test]
async fn every_method_and_body_is_forwarded_unchanged() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    for method in [
        Method::GET,
        Method::POST,
        Method::PATCH,
        Method::PUT,
        Method::DELETE,
    ] {
        let body = format!(r#"{{"method":"{method}","properties":{{"Name":"ü"}}}}"#);
        let req = gw
            .request(method.clone(), "/v1/blocks/b1/children")
            .header("content-type", "application/json")
            .body(full(body.clone()))
            .unwrap();
        let resp = gw.send(req).await;
        assert_eq!(resp.status, 200);
        let echo = resp.json();
        assert_eq!(echo["method"], method.as_str());
        assert_eq!(echo["body"], body);
    }
    // /admin/v1 is proxied too.
    let resp = gw.get("/admin/v1/workspaces").await;
    assert_eq!(resp.json()["uri"], "/admin/v1/workspaces");
    // HEAD and OPTIONS go through as well.
    let head = gw
        .send(gw.request(Method::HEAD, "/v1/users").body(empty()).unwrap())
        .await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(notion.received().len(), 7);
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    for _ in 0..10 {
        assert_eq!(gw.get("/v1/users/me").await.status, 200);
    }
    assert_eq!(notion.received().len(), 10);
    assert_eq!(
        notion.connections(),
        1,
        "one keep-alive connection served every request"
    );
}

#[tokio::test]
async fn callers_notion_version_wins_and_default_is_added() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let req = gw
        .request(Method::GET, "/v1/users/me")
        .header("notion-version", "2022-06-28")
        .body(empty())
        .unwrap();
    gw.send(req).await;
    gw.get("/v1/users/me").await;
    let seen = notion.received();
    assert_eq!(seen[0].headers.get_all("notion-version").iter().count(), 1);
    assert_eq!(seen[0].headers["notion-version"], "2022-06-28");
    assert_eq!(seen[1].headers["notion-version"], "2025-09-03");
}

#[tokio::test]
async fn hop_by_hop_and_gateway_headers_stay_on_their_hop() {
    let notion = FakeNotion::start().await;
    notion.push(
        Reply::json(200, serde_json::json!({}))
            .with_header("connection", "x-upstream-private")
            .with_header("x-upstream-private", "secret-hop")
            .with_header("keep-alive", "timeout=5"),
    );
    let gw = TestGateway::start(config_for(&notion)).await;
    let req = gw
        .request(Method::GET, "/v1/users")
        .header("connection", "x-caller-private")
        .header("x-caller-private", "1")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-gateway-client", "sync-job")
        .header("te", "trailers")
        .body(empty())
        .unwrap();
    let resp = gw.send(req).await;
    let seen = &notion.received()[0];
    for name in [
        "x-caller-private",
        "proxy-authorization",
        "x-gateway-client",
        "te",
    ] {
        assert!(!seen.headers.contains_key(name), "{name} was forwarded");
    }
    assert!(!resp.headers.contains_key("x-upstream-private"));
    assert!(!resp.headers.contains_key("keep-alive"));
}

#[tokio::test]
async fn request_ids_are_kept_or_created() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let req = gw
        .request(Method::GET, "/v1/users")
        .header("x-request-id", "caller-chosen-7")
        .body(empty())
        .unwrap();
    assert_eq!(
        gw.send(req).await.header("x-request-id"),
        Some("caller-chosen-7")
    );

    let a = gw.get("/v1/users").await;
    let b = gw.get("/nowhere").await;
    let (a, b) = (
        a.header("x-request-id").unwrap(),
        b.header("x-request-id").unwrap(),
    );
    assert_eq!(a.len(), 36, "a UUID: {a}");
    assert_ne!(a, b);
}

#[tokio::test]
async fn notion_errors_pass_through_byte_for_byte_and_edge_pages_become_notion_errors() {
    let notion = FakeNotion::start().await;
    // Notion's own JSON error, spacing and key order included, must arrive unchanged.
    let own = r#"{"object":"error","status":404,  "code":"object_not_found","message":"Could not find page with ID: x.","request_id":"n-1"}"#;
    notion.push(Reply::Full {
        status: 404,
        headers: vec![
            ("content-type", "application/json; charset=utf-8".into()),
            ("x-notion-request-id", "n-1".into()),
        ],
        body: bytes::Bytes::from_static(own.as_bytes()),
    });
    notion.push(Reply::html_502().with_header("cf-ray", "8f1e2d3c4b5a6978-AMS"));
    notion.push(Reply::Full {
        status: 403,
        headers: vec![],
        body: bytes::Bytes::new(),
    });
    // Retries off: this is about what reaches the caller (tests/retries.rs covers retries).
    let mut cfg = config_for(&notion);
    cfg.retry.max_attempts = 1;
    let gw = TestGateway::start(cfg).await;

    let r = gw.get("/v1/users").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, own.as_bytes(), "byte for byte");
    assert_eq!(r.header("x-notion-request-id"), Some("n-1"));

    // Cloudflare's HTML page: same status, Notion's shape, a code both SDKs know, and what
    // came back named in the message (for clients that show only the message).
    let r = gw.get("/v1/users").await;
    let v = r.assert_gateway_error(502, "service_unavailable");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cf-ray"), Some("8f1e2d3c4b5a6978-AMS"), "kept");
    let msg = v["message"].as_str().unwrap();
    for part in [
        "502",
        "text/html",
        "\"502 Bad Gateway\"",
        "cf-ray 8f1e2d3c4b5a6978-AMS",
    ] {
        assert!(msg.contains(part), "{part} in {msg}");
    }
    assert_eq!(v["additional_data"]["edge_page_title"], "502 Bad Gateway");
    assert_eq!(v["additional_data"]["cf_ray"], "8f1e2d3c4b5a6978-AMS");

    // An empty 403 from the edge.
    let r = gw.get("/v1/users").await;
    let v = r.assert_gateway_error(403, "restricted_resource");
    assert!(v["message"].as_str().unwrap().contains("empty body"));
}

#[tokio::test]
async fn edge_pages_pass_untouched_when_rewriting_is_off() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::html_502());
    let mut cfg = config_for(&notion);
    cfg.retry.max_attempts = 1;
    cfg.errors.rewrite_edge_pages = false;
    let gw = TestGateway::start(cfg).await;
    let r = gw.get("/v1/users").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("content-type"), Some("text/html"));
    assert!(String::from_utf8_lossy(&r.body).contains("cloudflare"));
}

#[tokio::test]
async fn server_sent_events_stream_through_as_they_are_produced() {
    let notion = FakeNotion::start().await;
    let (events, reply) = Reply::stream("text/event-stream");
    notion.push(reply);
    let gw = TestGateway::start(config_for(&notion)).await;
    let req = gw
        .request(Method::POST, "/v1/sessions")
        .body(full(r#"{"prompt":"hi"}"#))
        .unwrap();
    let resp = gw.send_streaming(req).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();

    // Each event reaches the caller before the next one exists upstream.
    for i in 0..3 {
        let event = format!("data: {{\"n\":{i}}}\n\n");
        events.send(Bytes::from(event.clone())).await.unwrap();
        let frame = tokio::time::timeout(WITHIN, body.frame())
            .await
            .expect("event streamed, not buffered")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), event);
    }
    drop(events);
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn request_body_streams_before_the_caller_finished_sending() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let (tx, body) = channel_body();
    let req = gw
        .request(Method::POST, "/v1/file_uploads/f1/send")
        .header("content-type", "multipart/form-data; boundary=x")
        .body(body)
        .unwrap();
    let call = tokio::spawn(gw.send_detached(req));
    tx.send(Bytes::from(vec![b'a'; 1000])).await.unwrap();
    // If the gateway buffered the body, the upstream would see nothing until the end.
    tokio::time::timeout(WITHIN, notion.body_bytes_at_least(1000))
        .await
        .expect("first chunk reached the upstream while the body was still open");
    tx.send(Bytes::from(vec![b'b'; 500])).await.unwrap();
    drop(tx);
    let resp = call.await.unwrap();
    assert_eq!(resp.json()["body_len"], 1500);
}

#[tokio::test]
async fn twenty_megabyte_upload_flows_intact() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let payload: Vec<u8> = (0..20 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let req = gw
        .request(Method::POST, "/v1/file_uploads/f2/send")
        .header("content-type", "multipart/form-data; boundary=x")
        .body(full(payload.clone()))
        .unwrap();
    let resp = gw.send(req).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["body_len"], payload.len());
    assert!(notion.received()[0].body == payload);
}

#[tokio::test]
async fn oversized_body_is_refused_before_anything_reaches_notion() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.server.max_body = 1024;
    let gw = TestGateway::start(cfg).await;

    // Declared length over the limit: 413 without contacting the upstream.
    let r = gw
        .post_json("/v1/pages", serde_json::json!({"x": "y".repeat(2000)}))
        .await;
    let v = r.assert_gateway_error(413, "validation_error");
    assert!(v["message"].as_str().unwrap().contains("1024 bytes"));
    assert_eq!(notion.connections(), 0);

    // Chunked, no declared length: cut at the limit; Notion never gets a complete request.
    let (tx, body) = channel_body();
    let req = gw.request(Method::POST, "/v1/pages").body(body).unwrap();
    let call = tokio::spawn(gw.send_detached(req));
    tx.send(Bytes::from(vec![b'x'; 800])).await.unwrap();
    tx.send(Bytes::from(vec![b'x'; 800])).await.unwrap();
    drop(tx);
    let r = call.await.unwrap();
    r.assert_gateway_error(413, "validation_error");
    assert!(notion.received().is_empty());
}

#[tokio::test]
async fn paths_outside_the_api_are_not_forwarded() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    for path in [
        "/",
        "/v1",
        "/v2/pages",
        "/admin/pages",
        "/v1x/users",
        "/favicon.ico",
    ] {
        let r = gw.get(path).await;
        let v = r.assert_gateway_error(404, "invalid_request_url");
        assert!(v["message"].as_str().unwrap().contains("/v1/*"));
    }
    assert_eq!(notion.connections(), 0);
}

#[tokio::test]
async fn absolute_form_and_connect_are_refused_not_an_open_proxy() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;

    let target = format!("http://{}/v1/users/me", notion.addr);
    let raw = format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        notion.addr
    );
    let out = raw_exchange(gw.addr, raw.as_bytes(), WITHIN).await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert_eq!(raw_json(&out)["code"], "invalid_request_url");

    let raw = format!(
        "CONNECT {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        notion.addr, notion.addr
    );
    let out = raw_exchange(gw.addr, raw.as_bytes(), WITHIN).await;
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    assert_eq!(raw_json(&out)["code"], "invalid_request");

    let out = raw_exchange(
        gw.addr,
        b"TRACE /v1/users HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        WITHIN,
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    assert_eq!(notion.connections(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn huge_headers_get_a_notion_shaped_431() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let req = gw
        .request(Method::GET, "/v1/users")
        .header("x-big", "a".repeat(100 * 1024))
        .body(empty())
        .unwrap();
    let r = gw.send(req).await;
    r.assert_gateway_error(431, "validation_error");
    assert_eq!(notion.connections(), 0);
}

#[tokio::test]
async fn malformed_requests_get_an_error_and_the_gateway_keeps_serving() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /v1/users HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        // Conflicting lengths (a smuggling attempt). Content-Length together with chunked is
        // resolved by hyper as RFC 9112 says: chunked wins, the length is dropped.
        b"POST /v1/pages HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let out = raw_exchange(gw.addr, garbage, WITHIN).await;
        // hyper's own answer: there is no request yet to answer in Notion's shape.
        assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    }
    assert_eq!(gw.get("/v1/users").await.status, 200);
    assert_eq!(notion.received().len(), 1);
}

#[tokio::test]
async fn refused_upstream_connection_is_a_502() {
    let closed = closed_port().await;
    let mut cfg = notion_gateway::Config::default();
    cfg.upstream.base = format!("http://{closed}/").parse().unwrap();
    let gw = TestGateway::start(cfg).await;
    let r = gw.get("/v1/users/me").await;
    let v = r.assert_gateway_error(502, "service_unavailable");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("could not connect"), "{msg}");
    assert!(msg.contains(&closed.to_string()), "{msg}");
    assert!(!msg.contains("ntn_test_token"), "token leaked: {msg}");
}

#[tokio::test]
async fn upstream_reset_before_answering_is_a_502() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::Reset);
    let mut cfg = config_for(&notion);
    cfg.retry.max_attempts = 1;
    let gw = TestGateway::start(cfg).await;
    let r = gw.get("/v1/users").await;
    let v = r.assert_gateway_error(502, "service_unavailable");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("failed before a response"));
}

#[tokio::test]
async fn health_and_readiness() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let h = gw
        .send(gw.request(Method::GET, "/healthz").body(empty()).unwrap())
        .await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json()["status"], "ok");
    // Nothing learned yet: /readyz probes the upstream once, then trusts that for a while.
    let r = gw.get("/readyz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ready");
    let probes = notion.received().len();
    assert_eq!(probes, 1);
    assert_eq!(
        notion.received()[0].header("authorization"),
        None,
        "no token in a probe"
    );
    assert_eq!(gw.get("/readyz").await.status, 200);
    assert_eq!(notion.received().len(), probes, "no second probe");
}

#[tokio::test]
async fn a_separate_admin_listener_takes_metrics_and_status_off_the_main_port() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.server.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let main = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (main_port, admin_port) = (
        main.local_addr().unwrap().port(),
        admin.local_addr().unwrap().port(),
    );
    let server = tokio::spawn(notion_gateway::server::run_with_admin(
        cfg,
        main,
        Some(admin),
        std::future::pending(),
    ));
    assert_eq!(raw_get(main_port, "/status").await.unwrap().0, 404);
    assert_eq!(raw_get(main_port, "/metrics").await.unwrap().0, 404);
    assert_eq!(raw_get(main_port, "/healthz").await.unwrap().0, 200);
    let (status, body) = raw_get(admin_port, "/status").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"tokens\""), "{body}");
    let (status, body) = raw_get(admin_port, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("notion_gateway_build_info"), "{body}");
    // The admin port proxies nothing.
    assert_eq!(raw_get(admin_port, "/v1/users/me").await.unwrap().0, 404);
    assert!(notion.received().is_empty());
    server.abort();
}

#[tokio::test(start_paused = true)]
async fn readiness_follows_an_upstream_that_goes_away_and_comes_back() {
    let notion = FakeNotion::start().await;
    let addr = notion.url().trim_start_matches("http://").to_owned();
    let mut cfg = config_for(&notion);
    cfg.upstream.pool_max_idle = 0; // every attempt connects: the port's state is the truth
    let gw = TestGateway::start(cfg).await;
    assert_eq!(gw.get("/v1/users/me").await.status, 200);
    assert_eq!(gw.get("/readyz").await.status, 200);

    drop(notion); // the port now refuses connections
    gw.get("/v1/users/me")
        .await
        .assert_gateway_error(502, "service_unavailable");
    let r = gw.get("/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "upstream_unreachable");
    assert_eq!(r.json()["last_error"], "upstream_connect");

    // Back on the same port: after a quiet spell /readyz probes and sees it.
    let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
    let notion = FakeNotion::serve(listener);
    tokio::time::sleep(Duration::from_secs(31)).await;
    let r = gw.get("/readyz").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(notion.received().len(), 1, "the probe");
}

mod tls {
    use super::*;
    use support::connect_proxy::ConnectProxy;

    fn https_config(port: u16) -> notion_gateway::Config {
        let mut cfg = notion_gateway::Config::default();
        // "localhost" must resolve; the certificate names it.
        cfg.upstream.base = format!("https://localhost:{port}/").parse().unwrap();
        cfg
    }

    fn trust(cfg: &mut notion_gateway::Config, ca_pem: &str) {
        // One file per call: tests run concurrently and each has its own CA.
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ngw-ca-{}-{n}.pem", std::process::id()));
        std::fs::write(&path, ca_pem).unwrap();
        use rustls::pki_types::pem::PemObject;
        cfg.upstream.extra_roots = rustls::pki_types::CertificateDer::pem_file_iter(&path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    }

    #[tokio::test]
    async fn untrusted_certificate_is_a_502_naming_tls() {
        let (addr, _ca, _task) = tls_notion().await;
        let gw = TestGateway::start(https_config(addr.port())).await;
        let r = gw.get("/v1/users/me").await;
        let v = r.assert_gateway_error(502, "service_unavailable");
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains("TLS handshake"), "{msg}");
    }

    #[tokio::test]
    async fn extra_ca_bundle_is_trusted() {
        let (addr, ca, _task) = tls_notion().await;
        let mut cfg = https_config(addr.port());
        trust(&mut cfg, &ca);
        let gw = TestGateway::start(cfg).await;
        let r = gw.get("/v1/users/me").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["object"], "user");
    }

    #[tokio::test]
    async fn corporate_proxy_tunnels_tls_with_credentials() {
        let (addr, ca, _task) = tls_notion().await;
        let proxy = ConnectProxy::start().await;
        let mut cfg = https_config(addr.port());
        trust(&mut cfg, &ca);
        cfg.upstream.proxy = Some(notion_gateway::config::ProxyConfig {
            uri: format!("http://{}/", proxy.addr).parse().unwrap(),
            authorization: Some(http::HeaderValue::from_static("Basic dXNlcjpwYXNz")),
        });
        let gw = TestGateway::start(cfg).await;
        let r = gw.get("/v1/users/me").await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let tunnels = proxy.tunnels();
        assert_eq!(tunnels.len(), 1);
        assert_eq!(tunnels[0].target, format!("localhost:{}", addr.port()));
        assert_eq!(
            tunnels[0].proxy_authorization.as_deref(),
            Some("Basic dXNlcjpwYXNz")
        );
    }

    #[tokio::test]
    async fn unreachable_proxy_is_a_502_naming_the_connection() {
        let (addr, _ca, _task) = tls_notion().await;
        let closed = closed_port().await;
        let mut cfg = https_config(addr.port());
        cfg.upstream.proxy = Some(notion_gateway::config::ProxyConfig {
            uri: format!("http://{closed}/").parse().unwrap(),
            authorization: None,
        });
        let gw = TestGateway::start(cfg).await;
        let v = gw
            .get("/v1/users/me")
            .await
            .assert_gateway_error(502, "service_unavailable");
        assert!(v["message"].as_str().unwrap().contains("could not connect"));
    }
}

/// The gateway's own 429 says when to come back in the body too, for clients that cannot read
/// headers (MCP tools), with a reason of its own that no Notion 429 carries.
#[tokio::test(start_paused = true)]
async fn the_gateways_own_429_carries_additional_data() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.limits.smoothing = Some(notion_gateway::config::Smoothing {
        rate: 1.0,
        burst: 1,
    });
    cfg.limits.max_wait = Duration::from_secs(2);
    let gw = TestGateway::start(cfg).await;
    let calls: Vec<_> = (0..5)
        .map(|i| {
            tokio::spawn(
                gw.send_detached(
                    gw.request(Method::GET, &format!("/v1/users/{i}"))
                        .body(empty())
                        .unwrap(),
                ),
            )
        })
        .collect();
    let mut refused = 0;
    for c in calls {
        let r = c.await.unwrap();
        if r.status == 429 {
            refused += 1;
            let v = r.assert_gateway_error(429, "rate_limited");
            let data = &v["additional_data"];
            assert_eq!(data["rate_limit_reason"], "gateway_max_wait", "{v}");
            assert_eq!(
                Some(data["retry_after"].as_str().unwrap()),
                r.header("retry-after")
            );
        }
    }
    assert_eq!(refused, 2);
}

fn json_req(
    gw: &TestGateway,
    method: Method,
    path: &str,
    body: String,
) -> http::Request<ClientBody> {
    gw.request(method, path)
        .header("content-type", "application/json")
        .body(full(body))
        .unwrap()
}

/// What Notion certainly refuses is refused before it spends budget, in Notion's wording, and
/// never reaches Notion; uploads keep their 20 MB.
#[tokio::test]
async fn requests_notion_would_refuse_are_refused_before_any_budget() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let block = r#"{"object":"block","type":"paragraph","paragraph":{"rich_text":[]}}"#;
    let children = |n: usize| format!(r#"{{"children":[{}]}}"#, vec![block; n].join(","));
    let page = "/v1/blocks/598337872cf94fdf8782e53db20768a5/children";

    let cases: Vec<(http::Request<ClientBody>, &str, &str)> = vec![
        (
            json_req(&gw, Method::PATCH, page, children(101)),
            "validation_error",
            "body failed validation: body.children.length should be ≤ `100`, instead was `101`.",
        ),
        (
            json_req(
                &gw,
                Method::POST,
                "/v1/pages",
                format!(
                    r#"{{"parent":{{"page_id":"x"}},"properties":{{}},"children":[{}]}}"#,
                    vec![block; 150].join(",")
                ),
            ),
            "validation_error",
            "instead was `150`",
        ),
        (
            gw.request(Method::GET, "/v1/users?page_size=250")
                .body(empty())
                .unwrap(),
            "validation_error",
            "query failed validation: query.page_size should be ≤ `100`, instead was `250`.",
        ),
        (
            json_req(
                &gw,
                Method::POST,
                "/v1/search",
                r#"{"page_size":101}"#.into(),
            ),
            "validation_error",
            "body failed validation: body.page_size should be ≤ `100`, instead was `101`.",
        ),
        (
            json_req(&gw, Method::POST, "/v1/search", r#"{"query": "x",}"#.into()),
            "invalid_json",
            "Error parsing JSON body.",
        ),
        (
            json_req(
                &gw,
                Method::POST,
                "/v1/pages",
                format!(r#"{{"x":"{}"}}"#, "a".repeat(600 * 1024)),
            ),
            "validation_error",
            "500KB",
        ),
    ];
    for (req, code, wording) in cases {
        let what = format!("{} {}", req.method(), req.uri().path());
        let r = gw.send(req).await;
        let v = r.assert_gateway_error(400, code);
        let msg = v["message"].as_str().unwrap();
        assert!(msg.contains(wording), "{what}: {msg}");
    }
    assert_eq!(notion.received().len(), 0, "nothing reached Notion");

    // At the limits, and a multipart upload over 500 KB, everything goes.
    let r = gw
        .send(json_req(&gw, Method::PATCH, page, children(100)))
        .await;
    assert_eq!(r.status, 200);
    let r = gw.get("/v1/users?page_size=100").await;
    assert_eq!(r.status, 200);
    let upload = gw
        .request(Method::POST, "/v1/file_uploads/f1/send")
        .header("content-type", "multipart/form-data; boundary=x")
        .body(full(vec![b'a'; 2 * 1024 * 1024]))
        .unwrap();
    assert_eq!(gw.send(upload).await.status, 200);
    assert_eq!(notion.received().len(), 3);

    // Counted by reason.
    let m = gw.get("/metrics").await;
    let text = String::from_utf8_lossy(&m.body);
    for reason in [
        "too_many_children",
        "page_size",
        "invalid_json",
        "json_too_large",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("notion_gateway_rejections_total")
                    && l.contains(&format!("reason=\"{reason}\""))),
            "{reason}"
        );
    }
}

#[tokio::test]
async fn pre_validation_can_be_switched_off() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.errors.prevalidate = false;
    let gw = TestGateway::start(cfg).await;
    let r = gw.get("/v1/users?page_size=250").await;
    assert_eq!(r.status, 200);
    let r = gw
        .send(json_req(&gw, Method::POST, "/v1/search", "{oops".into()))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(notion.received().len(), 2);
}

/// `/admin/v1/*` gets the Admin API's own version line (or none), never the public API's.
#[tokio::test]
async fn the_admin_api_gets_its_own_default_version() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let r = gw.get("/admin/v1/legal_holds").await;
    assert_eq!(r.json()["headers"]["notion-version"], "2026-06-01");
    let r = gw.get("/v1/users/me").await;
    assert_eq!(r.json()["headers"]["notion-version"], "2025-09-03");
    let r = gw
        .send(
            gw.request(Method::GET, "/admin/v1/legal_holds")
                .header("notion-version", "2027-01-01")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        r.json()["headers"]["notion-version"],
        "2027-01-01",
        "the caller's wins"
    );

    let mut cfg = config_for(&notion);
    cfg.upstream.admin_notion_version = None;
    let gw = TestGateway::start(cfg).await;
    let r = gw.get("/admin/v1/legal_holds").await;
    assert!(r.json()["headers"].get("notion-version").is_none());
}
