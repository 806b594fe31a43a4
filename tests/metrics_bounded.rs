//! `/metrics` stays the same size however many tokens arrive (docs/behaviour.md §5): only
//! configured integrations and workspaces have their own `integration` label; every other token
//! is `other`. In its own binary: the Prometheus recorder is process-wide, and a test that
//! compares two scrapes must see only its own traffic (the workspaces test, which makes series
//! of its own, is in `tests/metrics_workspaces.rs` for that reason: run beside this one, its
//! `/v1/pages/{id}` series once landed between the two scrapes here).

mod support;

use http::Method;
use support::*;

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
    let before = String::from_utf8_lossy(&gw.get("/metrics").await.body).into_owned();
    let small = before.len();
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
    assert!(
        text.len() < small + 2048,
        "{small} -> {} bytes; new series:\n{}",
        text.len(),
        new_series(&before, &text).join("\n")
    );
}

/// The series (name and labels, without the value) in `after` that `before` does not have.
fn new_series<'a>(before: &str, after: &'a str) -> Vec<&'a str> {
    let key = |l: &str| l.rsplit_once(' ').map_or(l, |(k, _)| k).to_string();
    let known: std::collections::HashSet<String> = before.lines().map(key).collect();
    after
        .lines()
        .filter(|l| !l.starts_with('#') && !known.contains(&key(l)))
        .collect()
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
