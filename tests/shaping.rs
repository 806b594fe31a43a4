//! Shaping (docs/behaviour.md §2), black-box: the real gateway over real sockets in front of the fake
//! Notion, on tokio's paused clock, so every instant below is exact rather than a sleep and
//! a hope.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use notion_gateway::config::{Integration, WorkspaceBudget};
use sha2::Digest;
use support::*;
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A gateway config with the given budget for every token.
fn budget(notion: &FakeNotion, rate: f64, burst: u32) -> notion_gateway::Config {
    let mut cfg = config_for(notion);
    cfg.limits.smoothing = Some(notion_gateway::config::Smoothing { rate, burst });
    cfg
}

fn get_as(gw: &TestGateway, path: &str, token: &str) -> http::Request<ClientBody> {
    gw.request_as(Method::GET, path, token)
        .body(empty())
        .unwrap()
}

/// Offsets of the upstream arrivals from `t0`, in arrival order.
fn arrivals(notion: &FakeNotion, t0: Instant) -> Vec<Duration> {
    notion.received().iter().map(|r| r.at - t0).collect()
}

fn assert_near(actual: Duration, expected: Duration) {
    let diff = actual.abs_diff(expected);
    assert!(diff <= ms(5), "{actual:?} is not {expected:?}");
}

#[tokio::test(start_paused = true)]
async fn a_backlog_leaves_at_the_configured_rate_after_the_burst() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(budget(&notion, 2.0, 2)).await;
    let t0 = Instant::now();
    let calls: Vec<_> = (0..6)
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
    let mut waited = Vec::new();
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200);
        waited.push(r.header("x-gateway-queue-wait-ms").map(String::from));
    }
    // The burst of two (its second 50 ms late: the jitter slack, paid once per backlog), then
    // one every 500 ms.
    let expected = [0, 50, 550, 1050, 1550, 2050].map(ms);
    let got = arrivals(&notion, t0);
    assert_eq!(got.len(), 6);
    for (g, e) in got.iter().zip(expected) {
        assert_near(*g, e);
    }
    assert_eq!(
        waited.iter().filter(|w| w.is_none()).count(),
        1,
        "{waited:?}"
    );
    assert!(waited.contains(&Some("2050".into())), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn tokens_have_separate_budgets() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(budget(&notion, 1.0, 1)).await;
    let t0 = Instant::now();
    let a = tokio::spawn(gw.send_detached(get_as(&gw, "/v1/users/a", "ntn_a")));
    let b = tokio::spawn(gw.send_detached(get_as(&gw, "/v1/users/b", "ntn_b")));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
    assert_eq!(t0.elapsed(), Duration::ZERO, "neither waited for the other");
}

#[tokio::test(start_paused = true)]
async fn callers_sharing_a_token_take_turns() {
    let notion = FakeNotion::start().await;
    let mut cfg = budget(&notion, 10.0, 1);
    // Two known callers on one host (names nobody configured are the address's caller).
    for name in ["nightly-sync", "dashboard"] {
        cfg.limits.client_weights.insert(
            name.into(),
            notion_gateway::config::ClientWeight {
                weight: 1,
                from: Vec::new(),
            },
        );
    }
    let gw = TestGateway::start(cfg).await;
    let job: Vec<_> = (0..10)
        .map(|i| {
            let req = gw
                .request(Method::GET, &format!("/v1/users/job-{i}"))
                .header("x-gateway-client", "nightly-sync")
                .body(empty())
                .unwrap();
            tokio::spawn(gw.send_detached(req))
        })
        .collect();
    tokio::time::sleep(ms(10)).await; // the job's backlog is queued
    let ui = gw
        .request(Method::GET, "/v1/users/ui")
        .header("x-gateway-client", "dashboard")
        .body(empty())
        .unwrap();
    let t_ui = Instant::now();
    assert_eq!(gw.send(ui).await.status, 200);
    // One request of the job went at once, one more is released before the dashboard's:
    // it waits two intervals, not the job's whole backlog.
    assert!(t_ui.elapsed() <= ms(200), "{:?}", t_ui.elapsed());
    for j in job {
        assert_eq!(j.await.unwrap().status, 200);
    }
    let paths: Vec<String> = notion.received().iter().map(|r| r.uri.clone()).collect();
    let ui_at = paths.iter().position(|p| p == "/v1/users/ui").unwrap();
    assert!(ui_at <= 2, "{paths:?}");
    let job_order: Vec<&String> = paths.iter().filter(|p| p.contains("job")).collect();
    let mut sorted = job_order.clone();
    sorted.sort_by_key(|p| {
        p.trim_start_matches("/v1/users/job-")
            .parse::<u32>()
            .unwrap()
    });
    assert_eq!(job_order, sorted, "one caller's requests keep their order");
}

#[tokio::test(start_paused = true)]
async fn a_wait_beyond_max_wait_is_refused_at_once_with_the_predicted_wait() {
    let notion = FakeNotion::start().await;
    let mut cfg = budget(&notion, 1.0, 1);
    cfg.limits.max_wait = Duration::from_secs(3);
    let gw = TestGateway::start(cfg).await;
    let t0 = Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let fut = gw.send_detached(
                gw.request(Method::GET, &format!("/v1/users/{i}"))
                    .body(empty())
                    .unwrap(),
            );
            tokio::spawn(async move { (fut.await, Instant::now()) })
        })
        .collect();
    let mut refused = 0;
    for c in calls {
        let (r, at) = c.await.unwrap();
        if r.status == 429 {
            refused += 1;
            let v = r.assert_gateway_error(429, "rate_limited");
            assert!(v["message"].as_str().unwrap().contains("max_wait"), "{v}");
            assert_eq!(
                r.header("retry-after"),
                Some("4"),
                "predicted wait, rounded up"
            );
            assert_eq!(at - t0, Duration::ZERO, "answered at once");
        } else {
            assert_eq!(r.status, 200);
        }
    }
    // Waits of 0, 1, 2 and 3 s are accepted; the next two would wait 4 s.
    assert_eq!(refused, 2);
    assert_eq!(notion.received().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_is_refused_at_once() {
    let notion = FakeNotion::start().await;
    let mut cfg = budget(&notion, 1.0, 1);
    cfg.limits.max_queue = 2;
    let gw = TestGateway::start(cfg).await;
    let calls: Vec<_> = (0..5)
        .map(|_| tokio::spawn(gw.send_detached(get_as(&gw, "/v1/users/me", "ntn_q"))))
        .collect();
    let mut statuses = Vec::new();
    for c in calls {
        let r = c.await.unwrap();
        if r.status == 429 {
            let v = r.assert_gateway_error(429, "rate_limited");
            assert!(v["message"].as_str().unwrap().contains("max_queue"), "{v}");
            assert_eq!(r.header("retry-after"), Some("3"));
        }
        statuses.push(r.status.as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_leaves_the_queue_is_never_sent_and_spends_nothing() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(budget(&notion, 1.0, 1)).await;
    let t0 = Instant::now();
    assert_eq!(gw.get("/v1/users/a").await.status, 200); // spends the budget until t0 + 1 s
    let b = tokio::spawn(
        gw.send_detached(
            gw.request(Method::GET, "/v1/users/b")
                .body(empty())
                .unwrap(),
        ),
    );
    tokio::time::sleep(ms(500)).await;
    b.abort(); // the caller disconnects while queued
    let _ = b.await;
    tokio::time::sleep(ms(100)).await;
    assert_eq!(gw.get("/v1/users/c").await.status, 200);
    let paths: Vec<String> = notion.received().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(
        paths,
        ["/v1/users/a", "/v1/users/c"],
        "b never reached Notion"
    );
    // c took b's slot at t0 + 1 s: b spent nothing.
    assert_near(arrivals(&notion, t0)[1], Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn notion_429_pauses_the_token_and_the_request_goes_again_first_in_line() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::rate_limited(2));
    let gw = TestGateway::start(budget(&notion, 10.0, 10)).await;
    let t0 = Instant::now();
    let body = serde_json::json!({"parent": {"page_id": "x"}, "properties": {}});
    let a = tokio::spawn(
        gw.send_detached(
            gw.request(Method::POST, "/v1/pages")
                .header("content-type", "application/json")
                .body(full(body.to_string()))
                .unwrap(),
        ),
    );
    tokio::time::sleep(ms(100)).await;
    let b = tokio::spawn(
        gw.send_detached(
            gw.request(Method::GET, "/v1/users/b")
                .body(empty())
                .unwrap(),
        ),
    );
    let a = a.await.unwrap();
    assert_eq!(a.status, 200, "the caller never sees the 429");
    assert_eq!(a.header("x-gateway-attempts"), Some("2"));
    assert_eq!(b.await.unwrap().status, 200);

    let got = notion.received();
    let order: Vec<&str> = got.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(order, ["/v1/pages", "/v1/pages", "/v1/users/b"]);
    assert_eq!(got[0].body, got[1].body, "the same body, sent again");
    assert_near(got[1].at - t0, Duration::from_secs(2));
    assert!(got[2].at >= got[1].at, "b waited for the pause too");
}

#[tokio::test(start_paused = true)]
async fn notion_529_pauses_and_sends_again() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::overloaded(1));
    let gw = TestGateway::start(config_for(&notion)).await;
    let t0 = Instant::now();
    let r = gw.get("/v1/users/me").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-gateway-attempts"), Some("2"));
    assert_near(t0.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_pause_beyond_the_deadline_passes_notions_429_on_and_refuses_what_follows() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::rate_limited(120));
    let gw = TestGateway::start(config_for(&notion)).await;
    let t0 = Instant::now();
    let r = gw.get("/v1/users/me").await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.json()["message"],
        "fake rate_limited",
        "Notion's own answer"
    );
    assert_eq!(r.header("retry-after"), Some("120"));
    assert_eq!(t0.elapsed(), Duration::ZERO);

    tokio::time::sleep(Duration::from_secs(20)).await;
    let r = gw.get("/v1/users/me").await;
    r.assert_gateway_error(429, "rate_limited");
    assert_eq!(
        r.header("retry-after"),
        Some("100"),
        "what is left of the pause"
    );
    assert_eq!(notion.received().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_upload_is_not_sent_twice_after_a_429() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::rate_limited(1));
    let gw = TestGateway::start(config_for(&notion)).await;
    let (tx, body) = channel_body();
    let req = gw
        .request(Method::POST, "/v1/file_uploads/x/send")
        .header("content-type", "application/octet-stream")
        .body(body)
        .unwrap();
    let call = tokio::spawn(gw.send_detached(req));
    tx.send(bytes::Bytes::from_static(b"chunk")).await.unwrap();
    drop(tx);
    let r = call.await.unwrap();
    assert_eq!(r.status, 429, "a chunked body cannot be replayed");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(notion.received().len(), 1);
}

fn sha(token: &str) -> [u8; 32] {
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// Two integrations of workspace `acme`.
fn workspace_config(notion: &FakeNotion) -> notion_gateway::Config {
    let mut cfg = config_for(notion);
    let acme: Arc<str> = Arc::from("acme");
    cfg.limits.workspaces.insert(
        acme.clone(),
        WorkspaceBudget {
            rate: Some(10.0),
            burst: Some(10),
            ..Default::default()
        },
    );
    for (name, token) in [("sync", "ntn_sync"), ("wiki", "ntn_wiki")] {
        cfg.limits.integrations.push(Integration {
            name: Arc::from(name),
            token_sha256: sha(token),
            plan: notion_gateway::config::Plan::Standard,
            per_minute: 180,
            smoothing: Some(notion_gateway::config::Smoothing {
                rate: 10.0,
                burst: 10,
            }),
            workspace: Some(acme.clone()),
            token: None,
        });
    }
    cfg
}

#[tokio::test(start_paused = true)]
async fn a_workspace_429_pauses_every_token_of_the_workspace() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::rate_limited_because(
        3,
        "public_api_space_request_rate_limit",
    ));
    let gw = TestGateway::start(workspace_config(&notion)).await;
    let t0 = Instant::now();
    let sync = tokio::spawn(gw.send_detached(get_as(&gw, "/v1/users/sync", "ntn_sync")));
    tokio::time::sleep(ms(100)).await;
    let wiki = gw.send(get_as(&gw, "/v1/users/wiki", "ntn_wiki")).await;
    assert_eq!(wiki.status, 200);
    assert!(t0.elapsed() >= Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(sync.await.unwrap().status, 200);
    let got = notion.received();
    assert_eq!(got.len(), 3);
    assert!(got[1..].iter().all(|r| r.at - t0 >= Duration::from_secs(3)));
}

#[tokio::test(start_paused = true)]
async fn a_token_429_does_not_hold_the_other_tokens_of_the_workspace() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::rate_limited(3));
    let gw = TestGateway::start(workspace_config(&notion)).await;
    let t0 = Instant::now();
    let sync = tokio::spawn(gw.send_detached(get_as(&gw, "/v1/users/sync", "ntn_sync")));
    tokio::time::sleep(ms(100)).await;
    assert_eq!(
        gw.send(get_as(&gw, "/v1/users/wiki", "ntn_wiki"))
            .await
            .status,
        200
    );
    assert_near(t0.elapsed(), ms(100));
    assert_eq!(sync.await.unwrap().status, 200);
    assert_near(t0.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_workspace_budget_is_shared_by_its_tokens() {
    let notion = FakeNotion::start().await;
    let mut cfg = workspace_config(&notion);
    cfg.limits.workspaces.insert(
        Arc::from("acme"),
        WorkspaceBudget {
            rate: Some(2.0),
            burst: Some(1),
            ..Default::default()
        },
    );
    let gw = TestGateway::start(cfg).await;
    let t0 = Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let token = if i % 2 == 0 { "ntn_sync" } else { "ntn_wiki" };
            tokio::spawn(gw.send_detached(get_as(&gw, &format!("/v1/users/{i}"), token)))
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().status, 200);
    }
    // Each token alone could send 10 at once; together they get the workspace's 2/s.
    let got = arrivals(&notion, t0);
    for (g, e) in got.iter().zip([0, 500, 1000, 1500].map(ms)) {
        assert_near(*g, e);
    }
}

#[tokio::test(start_paused = true)]
async fn an_upstream_stricter_than_the_configuration_is_learned() {
    let notion = FakeNotion::start().await;
    notion.limit(1.0, 1); // the plan allows a third of the configured 3/s
                          // The GCRA model of Notion's limit (before 2026), answered without a rate_limit_reason:
                          // the gateway slows the token's smoothing rate down.
    let gw = TestGateway::start(budget(&notion, 3.0, 3)).await;
    let batch = |n: usize| -> Vec<_> {
        (0..n)
            .map(|i| {
                tokio::spawn(
                    gw.send_detached(
                        gw.request(Method::GET, &format!("/v1/users/{i}"))
                            .body(empty())
                            .unwrap(),
                    ),
                )
            })
            .collect()
    };
    // A sync job's batch: predicted at the configured rate, every request is accepted.
    for c in batch(12) {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let t0 = notion.received()[0].at;
    let first: Vec<Duration> = notion.rejected().iter().map(|t| *t - t0).collect();
    assert!(first.len() <= 6, "upstream 429s at {first:?}");
    // The next batch, a minute later, runs at the learned rate: no 429 at all.
    tokio::time::sleep(Duration::from_secs(60)).await;
    for c in batch(10) {
        assert_eq!(c.await.unwrap().status, 200);
    }
    assert_eq!(
        notion.rejected().len(),
        first.len(),
        "{:?}",
        notion.rejected()
    );
}

/// gatebench's `tighten`: a steady 3/s while Notion's limit drops to 1/s for ten seconds.
#[tokio::test(start_paused = true)]
async fn a_tightened_limit_costs_few_429s_and_the_backlog_never_leaves_in_clumps() {
    let notion = FakeNotion::start().await;
    notion.limit(3.0, 3);
    // As gatebench runs it: the GCRA model of Notion's limit (before 2026), without a
    // rate_limit_reason, and the gateway configured for it.
    let gw = TestGateway::start(budget(&notion, 3.0, 3)).await;
    let t0 = Instant::now();
    let mut calls = Vec::new();
    for i in 0..90u32 {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(f64::from(i) / 3.0)).await;
        match i {
            30 => notion.change_limit(1.0, 3),
            60 => notion.change_limit(3.0, 3),
            _ => {}
        }
        calls.push(tokio::spawn(gw.send_detached(get_as(
            &gw,
            &format!("/v1/pages/{i}"),
            "ntn_steady",
        ))));
    }
    for c in calls {
        let r = c.await.unwrap();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let rejected = notion.rejected();
    let offsets: Vec<Duration> = rejected.iter().map(|t| *t - t0).collect();
    assert!(
        (1..=3).contains(&rejected.len()),
        "upstream 429s at {offsets:?}"
    );
    // From the first 429 on, the key is paced (paused, slowed, recovering): every release is
    // charged to its budget, so no two requests leave together, even when a recovery step
    // raises the rate or the burst.
    let after: Vec<Instant> = notion
        .received()
        .iter()
        .map(|r| r.at)
        .filter(|t| *t >= rejected[0])
        .collect();
    for w in after.windows(2) {
        assert!(
            w[1] - w[0] >= ms(250),
            "two requests {:?} apart at {:?}",
            w[1] - w[0],
            w[0] - t0
        );
    }
}

#[tokio::test]
async fn a_request_without_authorization_is_answered_locally() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let req = http::Request::get(gw.url("/v1/users/me"))
        .body(empty())
        .unwrap();
    let r = gw.send(req).await;
    let v = r.assert_gateway_error(401, "unauthorized");
    assert!(v["message"].as_str().unwrap().contains("Authorization"));
    assert_eq!(notion.connections(), 0);
}

#[tokio::test(start_paused = true)]
async fn status_shows_queues_by_name_or_hash_and_never_the_token() {
    let notion = FakeNotion::start().await;
    let mut cfg = workspace_config(&notion);
    cfg.limits.smoothing = Some(notion_gateway::config::Smoothing {
        rate: 1.0,
        burst: 1,
    });
    let gw = TestGateway::start(cfg).await;
    let token = "ntn_secret_status_token";
    let calls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(gw.send_detached(get_as(&gw, "/v1/users/me", token))))
        .collect();
    assert_eq!(
        gw.send(get_as(&gw, "/v1/users/me", "ntn_sync"))
            .await
            .status,
        200
    );
    tokio::time::sleep(ms(10)).await;
    let r = gw.get("/status").await;
    assert_eq!(r.status, 200);
    let text = String::from_utf8_lossy(&r.body).to_string();
    assert!(!text.contains("secret"), "{text}");
    let v = r.json();
    let tokens = v["tokens"].as_array().unwrap();
    let hashed = tokens
        .iter()
        .find(|t| t["workspace"].is_null())
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(hashed["key"].as_str().unwrap().len(), 12);
    assert_eq!(hashed["queued"], 2);
    assert_eq!(hashed["rate"], 1.0);
    assert!(tokens
        .iter()
        .any(|t| t["key"] == "sync" && t["workspace"] == "acme"));
    assert_eq!(v["workspaces"][0]["key"], "acme");
    for c in calls {
        assert_eq!(c.await.unwrap().status, 200);
    }
}

#[tokio::test(start_paused = true)]
async fn status_shows_what_notion_answered_each_token_as_json_and_html() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::html_502());
    let gw = TestGateway::start(config_for(&notion)).await;
    let token = "ntn_secret_outcomes_token";
    assert_eq!(
        gw.send(get_as(&gw, "/v1/users/me", token)).await.status,
        200
    );
    let v = gw.get("/status").await.json();
    let up = &v["tokens"][0]["upstream"];
    assert_eq!(up["ok"], 1, "{v}");
    assert_eq!(up["server_errors"], 1, "{v}");
    assert_eq!(up["transport_errors"], 0, "{v}");
    assert_eq!(up["last"], "2xx", "{v}");

    let html = gw
        .send(
            gw.request(Method::GET, "/status")
                .header("accept", "text/html")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(html.status, 200);
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let page = String::from_utf8_lossy(&html.body);
    let key = v["tokens"][0]["key"].as_str().unwrap();
    assert!(page.contains("<table>") && page.contains(key), "{page}");
    assert!(page.contains("1 ok, 0 4xx, 1 5xx"), "{page}");
    assert!(!page.contains("secret"), "{page}");
}
