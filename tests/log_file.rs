//! `log.file`: request events appended to a file as JSON lines, beside stdout. In its own
//! binary because it installs the process-wide subscriber.

mod support;

use http::Method;
use notion_gateway::config::{LogConfig, LogFormat};
use support::*;

#[tokio::test]
async fn request_events_are_appended_to_the_log_file_as_json_lines() {
    let path = std::env::temp_dir().join(format!("ngw-requests-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let guard = notion_gateway::telemetry::init(&LogConfig {
        format: LogFormat::Pretty,
        level: "info".into(),
        file: Some(path.clone()),
    });
    let notion = FakeNotion::start().await;
    notion.push(Reply::html_502());
    let gw = TestGateway::start(config_for(&notion)).await;
    let req = gw
        .request_as(Method::GET, "/v1/users/me", "ntn_FILESECRET_token")
        .body(empty())
        .unwrap();
    assert_eq!(gw.send(req).await.status, 200);
    drop(guard); // flushes

    let text = std::fs::read_to_string(&path).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events.len(), 1, "only request events: {text}");
    let e = &events[0];
    assert_eq!(e["route"], "/v1/users/me");
    assert_eq!(e["status"], 200);
    assert_eq!(e["attempts"], 2);
    assert_eq!(e["failed_attempts"], "502");
    assert!(!text.contains("FILESECRET"), "{text}");
    let _ = std::fs::remove_file(&path);
}
