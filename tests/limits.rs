//! Notion's limits as its request-limits page documents them (2026), black-box: the real
//! gateway over real sockets in front of the fake Notion enforcing them (fixed 60-second
//! windows whose grid starts at a token's first request, a workspace limit shared by its
//! tokens, endpoint limits, blocked tokens), on tokio's paused clock.

mod support;

use std::time::Duration;

use http::Method;
use support::*;
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: f64) -> Duration {
    Duration::from_secs_f64(n)
}

fn get_as(gw: &TestGateway, path: &str, token: &str) -> http::Request<ClientBody> {
    gw.request_as(Method::GET, path, token)
        .body(empty())
        .unwrap()
}

/// Arrivals at the fake of requests from `token`, as offsets from `t0`.
fn arrivals_of(notion: &FakeNotion, token: &str, t0: Instant) -> Vec<Duration> {
    let auth = format!("Bearer {token}");
    notion
        .received()
        .iter()
        .filter(|r| r.header("authorization") == Some(auth.as_str()))
        .map(|r| r.at - t0)
        .collect()
}

/// Requests `n` at once and waits for all of them; returns their statuses.
async fn batch(gw: &TestGateway, token: &str, n: usize) -> Vec<u16> {
    let calls: Vec<_> = (0..n)
        .map(|i| tokio::spawn(gw.send_detached(get_as(gw, &format!("/v1/pages/{i}"), token))))
        .collect();
    let mut out = Vec::new();
    for c in calls {
        out.push(c.await.unwrap().status.as_u16());
    }
    out
}

/// "The budget can be spent at any pace within the window — spread out evenly or in a single
/// burst": 30 calls on an idle token leave at once (a sixth of the standard plan's 180).
#[tokio::test(start_paused = true)]
async fn a_batch_on_an_idle_token_leaves_at_once() {
    let notion = FakeNotion::start().await;
    notion.windows(180);
    let gw = TestGateway::start(config_for(&notion)).await;
    let t0 = Instant::now();
    assert!(batch(&gw, "ntn_batch", 30).await.iter().all(|s| *s == 200));
    assert!(t0.elapsed() < ms(10), "{:?}", t0.elapsed());
    let got = arrivals_of(&notion, "ntn_batch", t0);
    assert_eq!(got.len(), 30);
    assert!(got.iter().all(|a| *a < ms(10)), "{got:?}");
    // The 31st is spread: it waits about one floor interval (61 s / 150 = 0.41 s).
    let r = gw.send(get_as(&gw, "/v1/pages/31", "ntn_batch")).await;
    assert_eq!(r.status, 200);
    assert!(
        t0.elapsed() > ms(300) && t0.elapsed() < ms(500),
        "{:?}",
        t0.elapsed()
    );
}

/// A burst, then a steady caller at 3/s for three minutes, against fixed windows whose grid
/// starts at the first request (the alignment where a burst on top of a steady rate
/// overflows): the gateway causes no connection-limit 429, and the flow never stops.
#[tokio::test(start_paused = true)]
async fn a_burst_and_a_steady_flood_never_overflow_the_window() {
    let notion = FakeNotion::start().await;
    notion.windows(180);
    let gw = TestGateway::start(config_for(&notion)).await;
    let t0 = Instant::now();
    let mut calls: Vec<_> = (0..30)
        .map(|i| tokio::spawn(gw.send_detached(get_as(&gw, &format!("/v1/a/{i}"), "ntn_flood"))))
        .collect();
    for i in 0..540u32 {
        tokio::time::sleep_until(t0 + secs(f64::from(i) / 3.0)).await;
        calls.push(tokio::spawn(gw.send_detached(get_as(
            &gw,
            &format!("/v1/b/{i}"),
            "ntn_flood",
        ))));
    }
    let mut statuses = std::collections::BTreeMap::new();
    for c in calls {
        *statuses
            .entry(c.await.unwrap().status.as_u16())
            .or_insert(0) += 1;
    }
    assert_eq!(notion.rate_limited(), Vec::new(), "Notion's 429s");
    // 570 requests in three minutes on a budget of 180 per minute: some are refused at once
    // (max_wait), every other one goes, and in no minute more than the budget.
    assert_eq!(
        statuses.keys().filter(|s| **s != 200 && **s != 429).count(),
        0
    );
    let got = arrivals_of(&notion, "ntn_flood", t0);
    assert!(got.len() >= 520, "{statuses:?}");
    let worst_gap = got
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    eprintln!(
        "burst and flood: {} arrivals, statuses {statuses:?}, worst gap {worst_gap:?}",
        got.len()
    );
    assert!(worst_gap < ms(700), "a stall of {worst_gap:?}");
}

/// An interactive caller sharing a token with a flood waits at most about one release.
#[tokio::test(start_paused = true)]
async fn an_interactive_caller_beside_a_flood_waits_at_most_two_seconds() {
    let notion = FakeNotion::start().await;
    notion.windows(180);
    let mut cfg = config_for(&notion);
    for name in ["sync-job", "dashboard"] {
        cfg.limits.client_weights.insert(
            name.into(),
            notion_gateway::config::ClientWeight {
                weight: 1,
                from: Vec::new(),
            },
        );
    }
    let gw = TestGateway::start(cfg).await;
    let t0 = Instant::now();
    let flood: Vec<_> = (0..200)
        .map(|i| {
            let req = gw
                .request_as(Method::GET, &format!("/v1/pages/{i}"), "ntn_shared")
                .header("x-gateway-client", "sync-job")
                .body(empty())
                .unwrap();
            tokio::spawn(gw.send_detached(req))
        })
        .collect();
    let mut worst = Duration::ZERO;
    for i in 0..60u32 {
        tokio::time::sleep_until(t0 + secs(0.5 + f64::from(i))).await;
        let sent = Instant::now();
        let req = gw
            .request_as(Method::GET, "/v1/users/me", "ntn_shared")
            .header("x-gateway-client", "dashboard")
            .body(empty())
            .unwrap();
        assert_eq!(gw.send(req).await.status, 200);
        worst = worst.max(sent.elapsed());
    }
    eprintln!("interactive caller beside a flood: worst wait {worst:?}");
    assert!(worst <= Duration::from_secs(2), "worst wait {worst:?}");
    for f in flood {
        let s = f.await.unwrap().status;
        assert!(s == 200 || s == 429, "{s}");
    }
    assert_eq!(notion.rate_limited(), Vec::new());
}

/// Notion's workspace reason pauses every token of the workspace, discovered from
/// `GET /v1/users/me` (one extra call per token, none when the caller asks it itself), and
/// leaves the tokens of other workspaces alone.
#[tokio::test(start_paused = true)]
async fn tokens_of_a_discovered_workspace_share_its_pause() {
    let notion = FakeNotion::start().await;
    notion.workspace(
        "0a0b0c0d-0000-4000-8000-00000000aaaa",
        &["ntn_a", "ntn_b"],
        None,
    );
    notion.workspace("0a0b0c0d-0000-4000-8000-00000000bbbb", &["ntn_other"], None);
    let mut cfg = config_for(&notion);
    cfg.limits.discover_workspaces = true;
    let gw = TestGateway::start(cfg).await;
    // ntn_a: a page read, then the gateway asks users/me beside it. ntn_b asks itself.
    assert_eq!(
        gw.send(get_as(&gw, "/v1/pages/1", "ntn_a")).await.status,
        200
    );
    assert_eq!(
        gw.send(get_as(&gw, "/v1/users/me", "ntn_b")).await.status,
        200
    );
    assert_eq!(
        gw.send(get_as(&gw, "/v1/pages/1", "ntn_other"))
            .await
            .status,
        200
    );
    tokio::time::sleep(ms(100)).await;
    let me_calls = |token: &str| {
        let auth = format!("Bearer {token}");
        notion
            .received()
            .iter()
            .filter(|r| r.uri == "/v1/users/me" && r.header("authorization") == Some(&auth))
            .count()
    };
    assert_eq!(me_calls("ntn_a"), 1, "one discovery call");
    assert_eq!(me_calls("ntn_b"), 1, "its own call taught the gateway");
    let status = gw.get("/status").await.json();
    let ws_of = |key: &str| {
        status["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == key)
            .map(|t| (t["workspace"].clone(), t["workspace_from"].clone()))
            .unwrap()
    };
    let a = notion_gateway::identity::TokenId::of(b"ntn_a").to_string();
    let b = notion_gateway::identity::TokenId::of(b"ntn_b").to_string();
    assert_eq!(ws_of(&a).0, "0a0b0c0d-0000-4000-8000-00000000aaaa");
    assert_eq!(ws_of(&a).1, "discovered");
    assert_eq!(ws_of(&b).0, ws_of(&a).0);
    // A workspace 429 to ntn_a holds ntn_b too, not ntn_other.
    notion.push(Reply::rate_limited_because(
        3,
        "public_api_space_request_rate_limit",
    ));
    let t0 = Instant::now();
    let first = tokio::spawn(gw.send_detached(get_as(&gw, "/v1/pages/2", "ntn_a")));
    tokio::time::sleep(ms(50)).await;
    let other = gw.send(get_as(&gw, "/v1/pages/2", "ntn_other")).await;
    assert_eq!(other.status, 200);
    assert!(t0.elapsed() < ms(100), "another workspace is not held");
    assert_eq!(
        gw.send(get_as(&gw, "/v1/pages/2", "ntn_b")).await.status,
        200
    );
    assert!(t0.elapsed() >= Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(first.await.unwrap().status, 200);
    // No discovery for a token Notion refuses.
    notion.push(Reply::notion_error(401, "unauthorized"));
    assert_eq!(
        gw.send(get_as(&gw, "/v1/pages/3", "ntn_bad")).await.status,
        401
    );
    tokio::time::sleep(ms(100)).await;
    assert_eq!(me_calls("ntn_bad"), 0);
}

/// Three saturated tokens of one workspace whose limit the gateway does not know (300 a
/// minute, under the 540 the three could send): few 429s in a minute, then none; most of the
/// workspace's budget used; no caller error; another workspace's token unharmed.
#[tokio::test(start_paused = true)]
async fn an_undisclosed_workspace_limit_is_learned_with_few_429s() {
    const WS: &str = "0a0b0c0d-0000-4000-8000-000000000001";
    let notion = FakeNotion::start().await;
    notion.windows(180);
    notion.workspace(WS, &["ntn_w1", "ntn_w2", "ntn_w3"], Some(300));
    notion.workspace("0a0b0c0d-0000-4000-8000-000000000002", &["ntn_solo"], None);
    let mut cfg = config_for(&notion);
    cfg.limits.discover_workspaces = true;
    let gw = std::sync::Arc::new(TestGateway::start(cfg).await);
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs(180);
    // Each token: four workers, each sending its next request when the last one answered, and
    // honouring a 429's Retry-After as the official SDKs do (the gateway answers 429 when
    // Notion's pause is longer than max_wait).
    let mut workers = Vec::new();
    for token in ["ntn_w1", "ntn_w2", "ntn_w3"] {
        for w in 0..4 {
            let gw = gw.clone();
            workers.push(tokio::spawn(async move {
                let mut statuses = Vec::new();
                let mut i = 0;
                let mut refused = 0u32;
                while Instant::now() < end {
                    let path = format!("/v1/pages/{w}-{i}");
                    let r = gw.send(get_as(&gw, &path, token)).await;
                    if r.status == 429 {
                        refused += 1;
                        let v = r.assert_gateway_error(429, "rate_limited");
                        assert_eq!(
                            v["additional_data"]["rate_limit_reason"],
                            "gateway_max_wait"
                        );
                        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
                        tokio::time::sleep(Duration::from_secs(wait)).await;
                        continue;
                    }
                    statuses.push(r.status.as_u16());
                    i += 1;
                }
                (statuses, refused)
            }));
        }
    }
    // The other workspace's token: one call every 2 s, each answered at once.
    let mut solo_worst = Duration::ZERO;
    while Instant::now() < end {
        let sent = Instant::now();
        assert_eq!(
            gw.send(get_as(&gw, "/v1/users/x", "ntn_solo")).await.status,
            200
        );
        solo_worst = solo_worst.max(sent.elapsed());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let mut refused = 0;
    for w in workers {
        let (statuses, r) = w.await.unwrap();
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        refused += r;
    }
    assert!(solo_worst < ms(50), "{solo_worst:?}");
    let space: Vec<Duration> = notion
        .rate_limited()
        .iter()
        .filter(|(_, r)| *r == "public_api_space_request_rate_limit")
        .map(|(t, _)| *t - t0)
        .collect();
    let other: Vec<_> = notion
        .rate_limited()
        .iter()
        .filter(|(_, r)| *r != "public_api_space_request_rate_limit")
        .map(|(t, r)| (*t - t0, *r))
        .collect();
    assert!(other.is_empty(), "{other:?}");
    eprintln!(
        "undisclosed workspace limit: workspace 429s at {space:?}; callers told to retry later {refused} times"
    );
    assert!(space.len() <= 5, "workspace 429s at {space:?}");
    assert!(
        space.iter().all(|t| *t < Duration::from_secs(60)),
        "after the first minute, none: {space:?}"
    );
    // The workspace's budget used in the last two minutes: 600 of it at most.
    let admitted = ["ntn_w1", "ntn_w2", "ntn_w3"]
        .iter()
        .map(|t| {
            arrivals_of(&notion, t, t0)
                .iter()
                .filter(|a| **a >= Duration::from_secs(60))
                .count()
        })
        .sum::<usize>();
    let status = gw.get("/status").await.json();
    eprintln!(
        "undisclosed workspace limit: {admitted} of 600 in minutes 2-3, other token worst {solo_worst:?}, workspace window {}",
        status["workspaces"]
    );
    assert!(
        admitted as f64 >= 0.85 * 600.0,
        "{admitted} of the workspace's 600 in two minutes"
    );
}

/// An endpoint's own limit pauses that endpoint of the token only.
#[tokio::test(start_paused = true)]
async fn an_endpoint_limit_pauses_only_that_endpoint() {
    let notion = FakeNotion::start().await;
    notion.endpoint_limit("/v1/search", 2);
    let gw = TestGateway::start(config_for(&notion)).await;
    let search = |gw: &TestGateway| {
        gw.request_as(Method::POST, "/v1/search", "ntn_search")
            .header("content-type", "application/json")
            .body(full("{}"))
            .unwrap()
    };
    assert_eq!(gw.send(search(&gw)).await.status, 200);
    assert_eq!(gw.send(search(&gw)).await.status, 200);
    let t0 = Instant::now();
    // The third meets the limit; the window resets in 60 s, beyond the request's deadline.
    let third = tokio::spawn(gw.send_detached(search(&gw)));
    tokio::time::sleep(ms(10)).await;
    // Meanwhile another endpoint of the same token goes at once.
    assert_eq!(
        gw.send(get_as(&gw, "/v1/pages/1", "ntn_search"))
            .await
            .status,
        200
    );
    assert!(t0.elapsed() < ms(50));
    let third = third.await.unwrap();
    assert_eq!(
        third.status,
        429,
        "{}",
        String::from_utf8_lossy(&third.body)
    );
    assert_eq!(
        third.json()["additional_data"]["rate_limit_reason"],
        "public_api_endpoint_rate_limit",
        "Notion's own answer"
    );
    // A fourth search is refused here, without reaching Notion.
    let before = notion.received().len();
    let fourth = gw.send(search(&gw)).await;
    fourth.assert_gateway_error(429, "rate_limited");
    assert_eq!(notion.received().len(), before);
    let status = gw.get("/status").await.json();
    let token = &status["tokens"][0];
    assert!(token["paused_endpoints"]["/v1/search"].as_f64().unwrap() > 1.0);
    assert_eq!(
        token["notion_pushbacks"]["public_api_endpoint_rate_limit"],
        1
    );
}

/// `public_api_request_blocked`: "Retrying won't help". Passed on at once, never sent again,
/// and the token's next calls are answered here until Retry-After has passed.
#[tokio::test(start_paused = true)]
async fn a_blocked_token_is_answered_here_until_retry_after() {
    let notion = FakeNotion::start().await;
    notion.block("ntn_blocked", 120);
    let gw = TestGateway::start(config_for(&notion)).await;
    let first = gw.send(get_as(&gw, "/v1/pages/1", "ntn_blocked")).await;
    assert_eq!(first.status, 429);
    assert_eq!(
        first.json()["additional_data"]["rate_limit_reason"],
        "public_api_request_blocked"
    );
    assert_eq!(notion.received().len(), 1, "not sent again");
    let second = gw.send(get_as(&gw, "/v1/pages/2", "ntn_blocked")).await;
    let v = second.assert_gateway_error(429, "rate_limited");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("public_api_request_blocked"));
    let wait: u64 = second.header("retry-after").unwrap().parse().unwrap();
    assert!((119..=120).contains(&wait), "{wait}");
    assert_eq!(notion.received().len(), 1, "answered here");
    // Another token is not affected.
    assert_eq!(
        gw.send(get_as(&gw, "/v1/pages/1", "ntn_fine")).await.status,
        200
    );
    tokio::time::sleep(Duration::from_secs(121)).await;
    let later = gw.send(get_as(&gw, "/v1/pages/3", "ntn_blocked")).await;
    assert_eq!(later.status, 429, "Notion asked again after Retry-After");
    assert_eq!(notion.received().len(), 3);
}

/// Repeated 429s for one request back off more each time, and after `limits.max_resends`
/// resends Notion's 429 goes to the caller.
#[tokio::test(start_paused = true)]
async fn repeated_429s_back_off_and_stop_at_the_resend_cap() {
    let notion = FakeNotion::start().await;
    for _ in 0..10 {
        notion.push(Reply::rate_limited(1));
    }
    let mut cfg = config_for(&notion);
    cfg.limits.max_resends = 3;
    let gw = TestGateway::start(cfg).await;
    let t0 = Instant::now();
    let r = gw.send(get_as(&gw, "/v1/pages/1", "ntn_unlucky")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-gateway-attempts"), Some("4"));
    let got = arrivals_of(&notion, "ntn_unlucky", t0);
    assert_eq!(got.len(), 4, "{got:?}");
    let gaps: Vec<Duration> = got.windows(2).map(|w| w[1] - w[0]).collect();
    // 1: the pause; 2: the pause and 0.5-1 s; 3: the pause and 1-2 s.
    assert!(gaps[0] >= secs(1.0) && gaps[0] < secs(1.1), "{gaps:?}");
    assert!(gaps[1] >= secs(1.5) && gaps[1] <= secs(2.1), "{gaps:?}");
    assert!(gaps[2] >= secs(2.0) && gaps[2] <= secs(3.1), "{gaps:?}");
}

/// `additional_data.retry_after` is read when the header is missing; an HTTP-date
/// `Retry-After` is honoured.
#[tokio::test(start_paused = true)]
async fn retry_after_in_the_body_or_as_a_date_is_honoured() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::json(
        429,
        serde_json::json!({"object": "error", "status": 429, "code": "rate_limited",
            "message": "slow down",
            "additional_data": {"rate_limit_reason": "public_api_request_rate_limit", "retry_after": "4"}}),
    ));
    let gw = TestGateway::start(config_for(&notion)).await;
    let t0 = Instant::now();
    assert_eq!(
        gw.send(get_as(&gw, "/v1/pages/1", "ntn_body")).await.status,
        200
    );
    let got = arrivals_of(&notion, "ntn_body", t0);
    assert!(
        got[1] >= Duration::from_secs(4) && got[1] < secs(4.1),
        "{got:?}"
    );

    let date = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(6));
    notion.push(Reply::notion_error(429, "rate_limited").with_header("retry-after", &date));
    let t1 = Instant::now();
    assert_eq!(
        gw.send(get_as(&gw, "/v1/pages/2", "ntn_date")).await.status,
        200
    );
    let got = arrivals_of(&notion, "ntn_date", t1);
    // The date has whole seconds: 5 to 6 s from now.
    assert!(got[1] >= secs(4.9) && got[1] <= secs(6.1), "{got:?}");
}

/// `/status` shows each token's window and plan.
#[tokio::test(start_paused = true)]
async fn status_shows_the_window_and_the_plan() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    assert!(batch(&gw, "ntn_counted", 5).await.iter().all(|s| *s == 200));
    let v = gw.get("/status").await.json();
    let t = &v["tokens"][0];
    assert_eq!(t["plan"], "standard");
    assert_eq!(t["window"]["used"], 5);
    assert_eq!(t["window"]["budget"], 180);
    assert_eq!(t["window"]["burst"], 30);
    let resets = t["window"]["resets_in_s"].as_f64().unwrap();
    assert!((60.0..=61.5).contains(&resets), "{resets}");
}

/// Finding out a token's workspace never delays its callers: the extra `GET /v1/users/me`
/// goes only from budget none of them is waiting for (here: after the whole backlog).
#[tokio::test(start_paused = true)]
async fn discovery_waits_for_budget_nobody_else_wants() {
    let notion = FakeNotion::start().await;
    notion.workspace("0a0b0c0d-0000-4000-8000-00000000cccc", &["ntn_busy"], None);
    let mut cfg = config_for(&notion);
    cfg.limits.discover_workspaces = true;
    cfg.limits.smoothing = Some(notion_gateway::config::Smoothing {
        rate: 3.0,
        burst: 3,
    });
    let gw = TestGateway::start(cfg).await;
    let t0 = Instant::now();
    assert!(batch(&gw, "ntn_busy", 30).await.iter().all(|s| *s == 200));
    // 30 at 3/s after a burst of 3: the last at 9 s (and the 50 ms jitter slack), not later.
    assert!(t0.elapsed() < secs(9.2), "{:?}", t0.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = notion.received();
    let me: Vec<usize> = got
        .iter()
        .enumerate()
        .filter(|(_, r)| r.uri == "/v1/users/me")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(me, [30], "after every caller's request, once");
    let status = gw.get("/status").await.json();
    assert_eq!(status["tokens"][0]["workspace_from"], "discovered");
}

/// A budget Notion's 429 lowered is remembered for an hour, and `/status` says so and when it
/// ends; an idle token then shows its configured budget again, not a lowered one for ever.
#[tokio::test(start_paused = true)]
async fn a_learned_budget_shows_when_it_ends_and_is_forgotten_after_an_hour() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    assert!(batch(&gw, "ntn_learner", 100)
        .await
        .iter()
        .all(|s| *s == 200));
    notion.push(Reply::rate_limited_because(
        20,
        "public_api_request_rate_limit",
    ));
    assert_eq!(
        gw.send(get_as(&gw, "/v1/pages/x", "ntn_learner"))
            .await
            .status,
        200
    );
    let w = gw.get("/status").await.json()["tokens"][0]["window"].clone();
    assert_eq!(w["learned"], true, "{w}");
    assert!(w["budget"].as_u64().unwrap() < 180, "{w}");
    let left = w["forgotten_in_s"].as_f64().unwrap();
    assert!((3500.0..=3600.0).contains(&left), "{w}");
    tokio::time::sleep(Duration::from_secs(3601)).await;
    let w = gw.get("/status").await.json()["tokens"][0]["window"].clone();
    assert_eq!(w["learned"], false, "{w}");
    assert_eq!(w["budget"], 180, "{w}");
}
