//! The shaper in front of strangers (docs/behaviour.md §2): state bounded however many tokens
//! arrive, and fair shares that a caller cannot multiply by inventing names or claiming one.
//! Black-box, on tokio's paused clock.

mod support;

use std::time::Duration;

use http::Method;
use notion_gateway::config::{ClientWeight, Smoothing};
use support::*;
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn known(cfg: &mut notion_gateway::Config, name: &str, weight: u32, from: &[&str]) {
    cfg.limits.client_weights.insert(
        name.into(),
        ClientWeight {
            weight,
            from: from.iter().map(|f| f.parse().unwrap()).collect(),
        },
    );
}

fn paced(notion: &FakeNotion) -> notion_gateway::Config {
    let mut cfg = config_for(notion);
    cfg.limits.smoothing = Some(Smoothing {
        rate: 10.0,
        burst: 1,
    });
    cfg
}

/// The rotation attack: a flood that sends every request under a new `X-Gateway-Client` value
/// stays one caller (its address's), so a known caller sharing the token still waits about one
/// release, not the whole flood.
#[tokio::test(start_paused = true)]
async fn inventing_client_names_does_not_multiply_a_share() {
    let notion = FakeNotion::start().await;
    let mut cfg = paced(&notion);
    known(&mut cfg, "dashboard", 1, &[]);
    let gw = TestGateway::start(cfg).await;
    let flood: Vec<_> = (0..150)
        .map(|i| {
            let req = gw
                .request(Method::GET, &format!("/v1/pages/{i}"))
                .header("x-gateway-client", format!("attacker-{i}"))
                .body(empty())
                .unwrap();
            tokio::spawn(gw.send_detached(req))
        })
        .collect();
    let t0 = Instant::now();
    let mut worst = Duration::ZERO;
    for i in 0..10u32 {
        tokio::time::sleep_until(t0 + Duration::from_millis(500 + 1000 * u64::from(i))).await;
        let sent = Instant::now();
        let req = gw
            .request(Method::GET, "/v1/users/me")
            .header("x-gateway-client", "dashboard")
            .body(empty())
            .unwrap();
        assert_eq!(gw.send(req).await.status, 200);
        worst = worst.max(sent.elapsed());
    }
    // Before: 150 callers in the rotation ahead of the dashboard, a 15 s wait.
    assert!(worst <= Duration::from_secs(2), "worst wait {worst:?}");
    for f in flood {
        let s = f.await.unwrap().status;
        assert!(s == 200 || s == 429, "{s}");
    }
}

/// A weight bound to addresses is not taken by a caller elsewhere that claims the name: from
/// another address the name is ignored, and the caller takes its address's share (weight 1).
#[tokio::test(start_paused = true)]
async fn a_bound_weight_cannot_be_claimed_from_another_address() {
    let notion = FakeNotion::start().await;
    let mut cfg = paced(&notion);
    known(&mut cfg, "reports", 3, &["10.9.9.9/32"]);
    known(&mut cfg, "wiki", 1, &[]);
    let gw = TestGateway::start(cfg).await;
    gw.send_as_callers(&["reports", "wiki"], 8).await;
    let order: Vec<String> = notion.received().iter().map(|r| r.uri.clone()).collect();
    // Equal shares (1:1), not the bound 3:1.
    let reports = order[1..9].iter().filter(|p| p.contains("reports")).count();
    assert_eq!(reports, 4, "{order:?}");
}

/// At most `limits.max_tokens` tokens have state: new ones evict the least recently used idle
/// ones; when every one has waiting requests, a new token is answered 503 at once (nothing
/// reaches Notion for it), and admitted once a lane is idle again.
#[tokio::test(start_paused = true)]
async fn the_token_table_is_bounded_and_a_full_one_of_busy_tokens_refuses_new_ones() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.limits.max_tokens = 4;
    cfg.limits.smoothing = Some(Smoothing {
        rate: 1.0,
        burst: 1,
    });
    let gw = TestGateway::start(cfg).await;
    // 40 tokens one after the other: the table never holds more than 4.
    for i in 0..40 {
        let r = gw
            .send(
                gw.request_as(Method::GET, "/v1/users/me", &format!("ntn_t{i}"))
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let s = gw.get("/status").await.json();
    assert_eq!(s["tokens_total"], 4, "{s}");
    // Four busy tokens (a request each waiting for the budget) fill the table.
    let mut busy = Vec::new();
    for i in 0..4 {
        for _ in 0..2 {
            let req = gw
                .request_as(Method::GET, "/v1/pages/p", &format!("ntn_busy{i}"))
                .body(empty())
                .unwrap();
            busy.push(tokio::spawn(gw.send_detached(req)));
        }
    }
    tokio::time::sleep(ms(100)).await;
    let before = notion.received().len();
    let r = gw
        .send(
            gw.request_as(Method::GET, "/v1/users/me", "ntn_newcomer")
                .body(empty())
                .unwrap(),
        )
        .await;
    let v = r.assert_gateway_error(503, "service_unavailable");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        v["additional_data"]["rate_limit_reason"], "gateway_tokens_full",
        "{v}"
    );
    assert_eq!(notion.received().len(), before, "nothing sent for it");
    for b in busy {
        assert_eq!(b.await.unwrap().status, 200);
    }
    let r = gw
        .send(
            gw.request_as(Method::GET, "/v1/users/me", "ntn_newcomer")
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200, "room again once a lane is idle");
}

/// `/status` lists the configured integrations and the most recently used other tokens, not
/// every token: its size does not grow with the number of tokens.
#[tokio::test(start_paused = true)]
async fn status_lists_a_bounded_number_of_tokens() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    for i in 0..60 {
        let r = gw
            .send(
                gw.request_as(Method::GET, "/v1/users/me", &format!("ntn_s{i}"))
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, 200);
    }
    let s = gw.get("/status").await.json();
    assert_eq!(s["tokens_total"], 60);
    let listed = s["tokens"].as_array().unwrap();
    assert_eq!(listed.len(), notion_gateway::shaper::status::OTHERS_SHOWN);
    let newest = notion_gateway::identity::TokenId::of(b"ntn_s59").to_string();
    assert!(
        listed.iter().any(|t| t["key"] == newest.as_str()),
        "the most recent is shown"
    );
}
