//! The request log: one event per request, with the integration's hash and never its token.
//! In its own binary because it installs the process-wide subscriber.

mod support;

use http::Method;
use support::*;

#[tokio::test]
async fn tokens_never_reach_the_log() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Capture {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .finish();
    // Global, in a test binary of its own: a thread-local subscriber can miss events when other
    // tests, running concurrently without one, have cached the callsites' interest.
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let notion = FakeNotion::start().await;
    notion.push(Reply::notion_error(401, "unauthorized"));
    let mut cfg = config_for(&notion);
    // A gateway key of an integration whose token the gateway holds: its name is logged,
    // neither the key nor the held token.
    const KEY: &str = "ngw_5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75e00";
    cfg.limits
        .integrations
        .push(integration("team", "ntn_HELDSECRET_token", true));
    cfg.access.keys.push(notion_gateway::config::KeyConfig {
        name: "alice".into(),
        key_sha256: sha256(KEY),
        integration: "team".into(),
        token: notion_gateway::config::HeldToken::new("ntn_HELDSECRET_token").unwrap(),
        token_sha256: sha256("ntn_HELDSECRET_token"),
        weight: 1,
        rate: None,
        priority: notion_gateway::config::KeyPriority::Normal,
        max_wait: None,
    });
    let gw = TestGateway::start(cfg).await;
    let req = gw
        .request_as(Method::POST, "/v1/pages", "ntn_SUPERSECRET_value")
        .body(full("{}"))
        .unwrap();
    assert_eq!(gw.send(req).await.status, 401);
    let nowhere = gw.get("/nowhere").await;
    assert_eq!(nowhere.status, 404);
    // A read that needed three attempts: each failed one is listed, the route is a template.
    notion.push(Reply::html_502());
    notion.push(Reply::Reset);
    let retried = gw
        .get("/v1/pages/59833787-2cf9-4fdf-8782-e53db20768a5")
        .await;
    assert_eq!(retried.status, 200);
    let keyed = gw
        .request_as(Method::GET, "/v1/users/me", KEY)
        .body(empty())
        .unwrap();
    assert_eq!(gw.send(keyed).await.status, 200);

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("\"path\":\"/v1/pages\""),
        "request event logged: {logs}"
    );
    assert!(logs.contains("\"status\":401"), "{logs}");
    assert!(
        logs.contains("\"route\":\"/v1/pages/{id}\"")
            && logs.contains("\"attempts\":3")
            && logs.contains("\"failed_attempts\":\"502,reset\""),
        "each attempt's outcome logged: {logs}"
    );
    let expected_id = notion_gateway::identity::TokenId::of(b"ntn_SUPERSECRET_value");
    assert!(
        logs.contains(expected_id.as_str()),
        "integration hash logged"
    );
    assert!(
        !logs.contains("SUPERSECRET"),
        "token leaked into logs: {logs}"
    );
    assert!(
        logs.contains("\"key\":\"alice\"") && logs.contains("\"integration\":\"team\""),
        "the key's name and integration logged: {logs}"
    );
    assert!(
        !logs.contains("5ec2e7") && !logs.contains("HELDSECRET"),
        "a gateway key or a held token leaked into logs: {logs}"
    );
}
