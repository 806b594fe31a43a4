//! Retries (docs/behaviour.md §3), black-box: the real gateway in front of the fake Notion, which
//! scripts each failure. Paused clock except where a port must change hands in real time.

mod support;

use std::time::Duration;

use http::Method;
use notion_gateway::Config;
use support::*;
use tokio::time::Instant;

const PAGE: &str = "/v1/pages/59833787-2cf9-4fdf-8782-e53db20768a5";
const BLOCK_CHILDREN: &str = "/v1/blocks/598337872cf94fdf8782e53db20768a5/children";
const QUERY: &str = "/v1/data_sources/59833787-2cf9-4fdf-8782-e53db20768a5/query";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn json_request(
    gw: &TestGateway,
    method: Method,
    path: &str,
    body: serde_json::Value,
) -> http::Request<ClientBody> {
    gw.request(method, path)
        .header("content-type", "application/json")
        .body(full(body.to_string()))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_read_survives_a_run_of_html_502s_and_resets() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::html_502());
    notion.push(Reply::Reset);
    notion.push(Reply::html_502());
    let gw = TestGateway::start(config_for(&notion)).await;
    let r = gw.get(PAGE).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-gateway-attempts"), Some("4"));
    assert_eq!(notion.received().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_query_is_a_read_and_goes_again_with_the_same_body() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::html_502());
    notion.push(Reply::notion_error(504, "gateway_timeout"));
    notion.push(Reply::notion_error(500, "internal_server_error"));
    let gw = TestGateway::start(config_for(&notion)).await;
    let body = serde_json::json!({"filter": {"property": "Done", "checkbox": {"equals": true}}});
    let r = gw.post_json(QUERY, body.clone()).await;
    assert_eq!(r.status, 200);
    let got = notion.received();
    assert_eq!(got.len(), 4);
    for g in got {
        assert_eq!(g.body, body.to_string().as_bytes(), "same body every time");
    }
}

#[tokio::test(start_paused = true)]
async fn creates_and_appends_go_once_and_the_caller_sees_notions_answer() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let page = serde_json::json!({"parent": {"page_id": "x"}, "properties": {}});

    // Notion committed the page, then its CDN answered 502: a second POST would be a second page.
    notion.push(Reply::html_502());
    let r = gw
        .send(json_request(&gw, Method::POST, "/v1/pages", page.clone()))
        .await;
    // The CDN's page, as a Notion error the SDKs read (tests/passthrough.rs has the details).
    let v = r.assert_gateway_error(502, "service_unavailable");
    assert!(v["message"].as_str().unwrap().contains("text/html"));
    assert_eq!(notion.received().len(), 1);

    // Appending children is a PATCH, and still not repeatable.
    notion.push(Reply::notion_error(502, "bad_gateway"));
    let children = serde_json::json!({"children": [{"paragraph": {"rich_text": []}}]});
    let r = gw
        .send(json_request(&gw, Method::PATCH, BLOCK_CHILDREN, children))
        .await;
    assert_eq!(r.status, 502);
    assert_eq!(
        r.json()["code"],
        "bad_gateway",
        "Notion's own body, unchanged"
    );
    assert_eq!(notion.received().len(), 2);

    // A connection that broke after the request left may have been processed.
    notion.push(Reply::Reset);
    let r = gw
        .send(json_request(&gw, Method::POST, "/v1/pages", page))
        .await;
    r.assert_gateway_error(502, "service_unavailable");
    assert_eq!(notion.received().len(), 3);
    assert_eq!(r.header("x-gateway-attempts"), None, "one attempt");
}

#[tokio::test(start_paused = true)]
async fn an_update_goes_again_after_a_conflict_but_a_template_apply_does_not() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    notion.push(Reply::notion_error(409, "conflict_error"));
    let update = serde_json::json!({"properties": {"Done": {"checkbox": true}}});
    let r = gw
        .send(json_request(&gw, Method::PATCH, PAGE, update))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(notion.received().len(), 2);

    notion.push(Reply::notion_error(409, "conflict_error"));
    let apply = serde_json::json!({"template": {"type": "default"}});
    let r = gw.send(json_request(&gw, Method::PATCH, PAGE, apply)).await;
    assert_eq!(
        r.status, 409,
        "applying a template twice adds its content twice"
    );
    assert_eq!(notion.received().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn an_operator_can_opt_a_create_route_in() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.retry.unsafe_routes = vec![(Method::POST, "/v1/comments")];
    let gw = TestGateway::start(cfg).await;
    notion.push(Reply::html_502());
    let comment = serde_json::json!({"parent": {"page_id": "x"}, "rich_text": []});
    let r = gw
        .send(json_request(&gw, Method::POST, "/v1/comments", comment))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(notion.received().len(), 2);
}

/// The one case where a create goes again without an opt-in: nothing was sent. The upstream
/// is a listener whose accept queue is full, so the first attempt cannot connect (the kernel
/// drops its SYN) and ends at `upstream.connect_timeout`; then the fake Notion takes the
/// listener over and accepts.
#[tokio::test(start_paused = true)]
async fn a_create_whose_connection_was_never_made_goes_again() {
    let hole = BlackHole::new();
    let addr = hole.addr;
    let mut cfg = Config::default();
    cfg.upstream.base = format!("http://{addr}/").parse().unwrap();
    cfg.upstream.connect_timeout = Duration::from_secs(1);
    cfg.retry.max_attempts = 10;
    cfg.limits.discover_workspaces = false;
    let gw = TestGateway::start(cfg).await;
    let page = serde_json::json!({"parent": {"page_id": "x"}, "properties": {}});
    let call = tokio::spawn(gw.send_detached(json_request(&gw, Method::POST, "/v1/pages", page)));
    // The first attempt's connect times out at 1 s; from 1.5 s the listener accepts.
    tokio::time::sleep(ms(1500)).await;
    let notion = hole.open();
    let r = call.await.unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let attempts: u32 = r.header("x-gateway-attempts").unwrap().parse().unwrap();
    assert!(attempts >= 2, "{attempts}");
    assert_eq!(notion.received().len(), 1, "the page was created once");
}

#[tokio::test(start_paused = true)]
async fn a_read_that_times_out_goes_again_a_create_does_not() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.upstream.attempt_timeout = Duration::from_secs(5);
    let gw = TestGateway::start(cfg).await;

    notion.push(Reply::Hang);
    let start = Instant::now();
    let r = gw.get(PAGE).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-gateway-attempts"), Some("2"));
    assert!(start.elapsed() >= Duration::from_secs(5));

    notion.push(Reply::Hang);
    let page = serde_json::json!({"parent": {"page_id": "x"}, "properties": {}});
    let r = gw
        .send(json_request(&gw, Method::POST, "/v1/pages", page))
        .await;
    r.assert_gateway_error(504, "gateway_timeout");
    assert_eq!(notion.received().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_503_with_retry_after_waits_that_long() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::notion_error(503, "service_unavailable").with_header("retry-after", "3"));
    let gw = TestGateway::start(config_for(&notion)).await;
    let r = gw.get(PAGE).await;
    assert_eq!(r.status, 200);
    let got = notion.received();
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_secs(3) && gap < ms(3200), "{gap:?}");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_retries_short_and_the_last_answer_is_passed_on() {
    let notion = FakeNotion::start().await;
    for _ in 0..4 {
        notion
            .push(Reply::notion_error(503, "service_unavailable").with_header("retry-after", "8"));
    }
    let mut cfg = config_for(&notion);
    cfg.server.request_timeout = Duration::from_secs(10);
    cfg.limits.max_wait = Duration::from_secs(5);
    let gw = TestGateway::start(cfg).await;
    let start = Instant::now();
    let r = gw.get(PAGE).await;
    // 503 at 0 s, again at 8 s; a third would start at 16 s, past the 10 s deadline: the
    // caller gets Notion's second 503 at once, as Notion sent it.
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(8) && elapsed < ms(8200),
        "{elapsed:?}"
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["code"], "service_unavailable");
    assert_eq!(r.header("retry-after"), Some("8"));
    assert_eq!(r.header("x-gateway-attempts"), Some("2"));
    assert_eq!(notion.received().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_budget_stops_a_retry_storm() {
    let notion = FakeNotion::start().await;
    for _ in 0..200 {
        notion.push(Reply::html_502());
    }
    let mut cfg = config_for(&notion);
    cfg.limits.per_minute = 1_000_000; // the shaper out of the way: this is about retries
    cfg.retry.budget_ratio = 0.1;
    cfg.retry.budget_min_per_second = 0.5; // 5 per 10 s window
    let gw = TestGateway::start(cfg).await;
    let calls: Vec<_> = (0..20)
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
    for c in calls {
        assert_eq!(c.await.unwrap().status, 502);
    }
    // Without a budget: 20 × 6 = 120 arrivals. With it: 20, plus 5 (floor) + 2 (10 % of 20).
    assert_eq!(notion.received().len(), 20 + 5 + 2);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_body_goes_once() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::html_502());
    let gw = TestGateway::start(config_for(&notion)).await;
    // Chunked (no declared length): streams through, cannot be sent again.
    let (tx, body) = channel_body();
    let req = gw
        .request(Method::POST, "/v1/search")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let call = tokio::spawn(gw.send_detached(req));
    tx.send(bytes::Bytes::from_static(b"{\"query\":\"x\"}"))
        .await
        .unwrap();
    drop(tx);
    assert_eq!(call.await.unwrap().status, 502);
    assert_eq!(notion.received().len(), 1);
}

/// Retries end at the deadline and the retry budget, not a count: twelve 502s in a row (a run
/// the old cap of six attempts turned into a failure) and the read still succeeds.
#[tokio::test(start_paused = true)]
async fn a_read_keeps_retrying_while_the_deadline_allows() {
    let notion = FakeNotion::start().await;
    for _ in 0..12 {
        notion.push(Reply::html_502());
    }
    let gw = TestGateway::start(config_for(&notion)).await;
    let start = Instant::now();
    let r = gw.get(PAGE).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("x-gateway-attempts"), Some("13"));
    // Full-jitter waits under ceilings of 0.1, 0.2, ... 5 s: at most 41.3 s in all.
    assert!(
        start.elapsed() < Duration::from_secs(42),
        "{:?}",
        start.elapsed()
    );
}

/// When the gateway gives up on an unreachable Notion, its 502 says how many attempts it made
/// and what each got, with a code both SDKs know.
#[tokio::test(start_paused = true)]
async fn the_gateways_502_lists_its_attempts() {
    let addr = closed_port().await;
    let mut cfg = Config::default();
    cfg.upstream.base = format!("http://{addr}/").parse().unwrap();
    cfg.retry.max_attempts = 3;
    let gw = TestGateway::start(cfg).await;
    let r = gw.get(PAGE).await;
    let v = r.assert_gateway_error(502, "service_unavailable");
    assert_eq!(v["additional_data"]["attempts"], "3", "{v}");
    assert_eq!(
        v["additional_data"]["attempt_outcomes"],
        serde_json::json!(["connect", "connect", "connect"])
    );
}

/// A 503 whose body says the write was saved ("Do not repeat the write") is passed on as Notion
/// sent it, even on a route that is otherwise retried.
#[tokio::test(start_paused = true)]
async fn a_503_that_says_do_not_repeat_the_write_is_not_repeated() {
    let notion = FakeNotion::start().await;
    // Notion's own example, https://developers.notion.com/reference/request-limits
    let saved = serde_json::json!({
        "object": "error", "status": 503, "code": "service_unavailable",
        "message": "The change was saved, but the response could not be built in time. Read the object again instead of repeating the write.",
        "additional_data": {
            "from": "publicApi.pageObjectPointerToPageObject.beforePreload",
            "elapsed_ms": "55012", "deadline_ms": "55000",
            "retry_guidance": ["Read the object again to confirm the saved change.", "Do not repeat the write."]
        }
    });
    notion.push(Reply::json(503, saved.clone()));
    let gw = TestGateway::start(config_for(&notion)).await;
    let update = serde_json::json!({"properties": {"Done": {"checkbox": true}}});
    let r = gw
        .send(json_request(&gw, Method::PATCH, PAGE, update.clone()))
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json(), saved, "Notion's answer, unchanged");
    assert_eq!(notion.received().len(), 1, "not repeated");

    // Without that guidance, the same update goes again.
    notion.push(Reply::notion_error(503, "service_unavailable"));
    let r = gw
        .send(json_request(&gw, Method::PATCH, PAGE, update))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(notion.received().len(), 3);
}

/// Sending a part of a file upload again duplicates nothing (parts are numbered), so a reset
/// send goes again.
#[tokio::test(start_paused = true)]
async fn a_file_upload_part_goes_again_after_a_reset() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::Reset);
    let gw = TestGateway::start(config_for(&notion)).await;
    let form = "--x\r\nContent-Disposition: form-data; name=\"part_number\"\r\n\r\n1\r\n--x--\r\n";
    let req = gw
        .request(Method::POST, "/v1/file_uploads/f1/send")
        .header("content-type", "multipart/form-data; boundary=x")
        .body(full(form))
        .unwrap();
    let r = gw.send(req).await;
    assert_eq!(r.status, 200);
    assert_eq!(notion.received().len(), 2);
}
