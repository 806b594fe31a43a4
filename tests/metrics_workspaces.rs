//! Discovered workspaces do not grow `/metrics` or the shaper's state (docs/behaviour.md §5).
//! In its own binary: the Prometheus recorder is process-wide, and the label count below must
//! not include another test's integrations.

mod support;

use http::Method;
use support::*;

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
