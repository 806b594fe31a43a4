//! `/metrics` stays the same size however many tokens arrive (docs/behaviour.md §5): only
//! configured integrations and workspaces have their own `integration` label; every other token
//! is `other`. In its own binary: the Prometheus recorder is process-wide.

mod support;

use http::Method;
use support::*;

fn integration_labels(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split_once("integration=\""))
        .filter_map(|(_, rest)| rest.split_once('"'))
        .map(|(v, _)| v.to_string())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn random_tokens_do_not_grow_the_metrics() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.limits
        .integrations
        .push(integration("sync-job", "ntn_configured", false));
    let gw = TestGateway::start(cfg).await;
    let send = |token: String| {
        let req = gw
            .request_as(Method::GET, "/v1/users/me", &token)
            .body(empty())
            .unwrap();
        gw.send(req)
    };
    assert_eq!(send("ntn_configured".into()).await.status, 200);
    for i in 0..5 {
        notion.push(Reply::rate_limited_because(
            1,
            "public_api_request_rate_limit",
        ));
        assert_eq!(send(format!("ntn_random_{i}")).await.status, 200);
    }
    let small = gw.get("/metrics").await.body.len();
    for i in 5..400 {
        if i % 10 == 0 {
            notion.push(Reply::rate_limited_because(
                1,
                "public_api_request_rate_limit",
            ));
        }
        assert_eq!(send(format!("ntn_random_{i}")).await.status, 200);
    }
    let text = String::from_utf8_lossy(&gw.get("/metrics").await.body).into_owned();
    let labels = integration_labels(&text);
    assert_eq!(
        labels,
        ["other", "sync-job"]
            .map(String::from)
            .into_iter()
            .collect(),
        "{text}"
    );
    // Histogram counts change, the series do not: the text grows by digits only.
    assert!(text.len() < small + 2048, "{small} -> {} bytes", text.len());
}

/// The counters the alert rules read exist at zero before any traffic (a rule comparing with
/// `== 0` never holds on an absent series: a gateway started while Notion is down would not
/// alert).
#[tokio::test(start_paused = true)]
async fn alerted_counters_exist_at_zero_from_start_up() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let text = String::from_utf8_lossy(&gw.get("/metrics").await.body).into_owned();
    for outcome in ["2xx", "4xx", "5xx", "connect", "reset", "timeout"] {
        let series = format!(
            "notion_gateway_upstream_attempts_total{{route=\"unknown\",outcome=\"{outcome}\"}}"
        );
        assert!(text.contains(&series), "{series} missing");
    }
    for reason in ["queue_full", "max_wait", "queue_expired"] {
        let series = format!("notion_gateway_rejections_total{{reason=\"{reason}\"}}");
        assert!(text.contains(&series), "{series} missing");
    }
}

/// Valid tokens each in a workspace of its own (discovered from `users/me`): only the first 50
/// discovered workspaces get a label and a `/status` row, and the workspaces of evicted
/// tokens do not pile up (found by `bench/soak.py --workspaces per-token`).
#[tokio::test(start_paused = true)]
async fn workspaces_of_many_tokens_do_not_grow_the_metrics_or_the_state() {
    let notion = FakeNotion::start().await;
    let tokens: Vec<String> = (0..400).map(|i| format!("ntn_ws_token_{i:04}")).collect();
    for (i, t) in tokens.iter().enumerate() {
        notion.workspace(&format!("0a0b0c0d-0000-4000-8000-{i:012}"), &[t], None);
    }
    let mut cfg = config_for(&notion);
    cfg.limits.discover_workspaces = true;
    cfg.limits.max_tokens = 100;
    let gw = TestGateway::start(cfg).await;
    for t in &tokens {
        let req = gw
            .request_as(Method::GET, "/v1/pages/p", t)
            .body(empty())
            .unwrap();
        assert_eq!(gw.send(req).await.status, 200);
        // Its discovery call goes in the background.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let discovered = notion
        .received()
        .iter()
        .filter(|r| r.uri == "/v1/users/me")
        .count();
    assert!(discovered >= 300, "only {discovered} discovery calls");
    let text = String::from_utf8_lossy(&gw.get("/metrics").await.body).into_owned();
    let labels = integration_labels(&text);
    assert!(labels.len() <= 51, "{} labels", labels.len());
    let status = gw.get("/status").await.json();
    assert!(status["workspaces"].as_array().unwrap().len() <= 50);
    let total = status["workspaces_total"].as_u64().unwrap();
    assert!(
        total <= 2 * 100 + 2,
        "{total} workspace groups for 100 tokens"
    );
}
