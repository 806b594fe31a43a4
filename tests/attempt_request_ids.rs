//! The request log keeps Notion's `x-notion-request-id` of every attempt, failed ones included
//! (Notion's support asks for them). In its own binary because it installs the process-wide
//! subscriber.

mod support;

use notion_gateway::config::{LogConfig, LogFormat};
use support::*;

#[tokio::test]
async fn every_attempts_notion_request_id_is_in_the_request_log() {
    let path = std::env::temp_dir().join(format!("ngw-attempt-ids-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let guard = notion_gateway::telemetry::init(&LogConfig {
        format: LogFormat::Pretty,
        level: "info".into(),
        file: Some(path.clone()),
    });
    let notion = FakeNotion::start().await;
    notion.push(
        Reply::notion_error(503, "service_unavailable")
            .with_header("x-notion-request-id", "n-first"),
    );
    notion.push(Reply::Reset);
    notion.push(
        Reply::json(200, serde_json::json!({"object": "user"}))
            .with_header("x-notion-request-id", "n-third"),
    );
    let gw = TestGateway::start(config_for(&notion)).await;
    assert_eq!(gw.get("/v1/users/me").await.status, 200);
    drop(guard); // flushes

    let text = std::fs::read_to_string(&path).unwrap();
    let e: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(e["attempts"], 3);
    assert_eq!(e["failed_attempts"], "503,reset");
    assert_eq!(e["notion_request_ids"], "n-first,-,n-third", "{text}");
    assert_eq!(
        e["notion_request_id"], "n-third",
        "the answer's own, as before"
    );
    let _ = std::fs::remove_file(&path);
}
