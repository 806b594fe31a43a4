//! `notion-gateway doctor` (docs/behaviour.md §6) against the fake Notion: it passes when everything
//! works, and names the step that fails for a closed port, an untrusted certificate and a
//! refused token.

mod support;

use notion_gateway::doctor::{self, Options, Outcome};
use support::*;

const TOKEN: &str = "ntn_DOCTORSECRET_token";

#[tokio::test]
async fn everything_passes_against_a_working_upstream_and_gateway() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::Echo); // the credential-less request
    notion.push(Reply::json(
        200,
        serde_json::json!({"object": "user", "name": "Sync bot", "bot": {"workspace_name": "Acme"}}),
    ));
    let gw = TestGateway::start(config_for(&notion)).await;
    let report = doctor::run(
        Ok(config_for(&notion)),
        Options {
            token: Some(TOKEN.into()),
            gateway: Some(format!("http://{}", gw.addr)),
        },
    )
    .await;
    let text = report.to_text();
    assert!(!report.failed(), "{text}");
    for step in [
        "config",
        "proxy",
        "dns",
        "connect",
        "clock",
        "token",
        "notion-version",
        "gateway",
    ] {
        assert_eq!(
            report.outcome_of(step),
            Some(Outcome::Pass),
            "{step}: {text}"
        );
    }
    assert!(text.contains("Acme") && text.contains("Sync bot"), "{text}");
    assert!(
        !text.contains("DOCTORSECRET"),
        "the token is never printed: {text}"
    );
    let json = serde_json::to_string(&report).unwrap();
    assert!(!json.contains("DOCTORSECRET"));
    // The token went to the upstream, and only there.
    let sent = notion.received();
    assert_eq!(
        sent[1].header("authorization"),
        Some(&*format!("Bearer {TOKEN}"))
    );
}

#[tokio::test]
async fn a_closed_port_fails_at_connect() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let mut cfg = notion_gateway::Config::default();
    cfg.upstream.base = format!("http://{addr}/").parse().unwrap();
    let report = doctor::run(
        Ok(cfg),
        Options {
            token: None,
            gateway: None,
        },
    )
    .await;
    assert!(report.failed());
    assert_eq!(
        report.outcome_of("connect"),
        Some(Outcome::Fail),
        "{}",
        report.to_text()
    );
    assert!(report.to_text().contains("fix:"));
}

#[tokio::test]
async fn an_untrusted_certificate_fails_at_tls() {
    let (addr, _ca_pem, _task) = tls_notion().await;
    let mut cfg = notion_gateway::Config::default();
    cfg.upstream.base = format!("https://localhost:{}/", addr.port())
        .parse()
        .unwrap();
    let report = doctor::run(
        Ok(cfg),
        Options {
            token: None,
            gateway: None,
        },
    )
    .await;
    let text = report.to_text();
    assert_eq!(report.outcome_of("connect"), Some(Outcome::Pass), "{text}");
    assert_eq!(report.outcome_of("tls"), Some(Outcome::Fail), "{text}");
    assert!(text.contains("ca_bundle"), "{text}");
}

#[tokio::test]
async fn a_refused_token_fails_at_token() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::Echo);
    notion.push(Reply::notion_error(401, "unauthorized"));
    let report = doctor::run(
        Ok(config_for(&notion)),
        Options {
            token: Some(TOKEN.into()),
            gateway: None,
        },
    )
    .await;
    let text = report.to_text();
    assert!(report.failed());
    assert_eq!(report.outcome_of("token"), Some(Outcome::Fail), "{text}");
    assert!(text.contains("revoked"), "{text}");
    assert!(!text.contains("DOCTORSECRET"));
}

#[tokio::test]
async fn an_invalid_configuration_fails_first() {
    let err = notion_gateway::config::ConfigError::Surface("unknown field `litmits`".into());
    let report = doctor::run(
        Err(err),
        Options {
            token: None,
            gateway: None,
        },
    )
    .await;
    assert_eq!(report.outcome_of("config"), Some(Outcome::Fail));
    assert_eq!(report.checks.len(), 1);
}

/// Shared budgets configured but Redis not there: the `redis` step fails and names the fix;
/// without shared budgets it is skipped. (Passing against a real Redis: tests/redis.rs.)
#[tokio::test]
async fn an_unreachable_redis_fails_at_redis() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::Echo);
    let report = doctor::run(
        Ok(config_for(&notion)),
        Options {
            token: None,
            gateway: None,
        },
    )
    .await;
    assert_eq!(report.outcome_of("redis"), Some(Outcome::Skip));

    let closed = closed_port().await;
    let mut cfg = config_for(&notion);
    cfg.limits.shared = Some(notion_gateway::config::SharedBudgets {
        redis_url: format!("redis://:hunter2@{closed}"),
        timeout: std::time::Duration::from_millis(200),
        local_share: 0.5,
        prefix: "doctor".into(),
    });
    notion.push(Reply::Echo);
    let report = doctor::run(
        Ok(cfg),
        Options {
            token: None,
            gateway: None,
        },
    )
    .await;
    let text = report.to_text();
    assert_eq!(report.outcome_of("redis"), Some(Outcome::Fail), "{text}");
    assert!(text.contains("limits.redis_url"), "{text}");
    assert!(
        !text.contains("hunter2"),
        "the Redis password is never printed: {text}"
    );
}

fn no_token() -> Options {
    Options {
        token: None,
        gateway: None,
    }
}

/// Notion's status page (a fake in its shape): no incident passes, an incident fails and names
/// it, an unreachable page is a skip, never a failure (machines without internet).
#[tokio::test]
async fn notions_status_page_passes_fails_or_skips() {
    let notion = FakeNotion::start().await;
    let status = FakeNotion::start().await;
    let url = format!("{}/api/v2/status.json", status.url());

    notion.push(Reply::Echo);
    status.push(Reply::json(
        200,
        serde_json::json!({"page": {"url": "https://www.notion-status.com"},
            "status": {"indicator": "none", "description": "All Systems Operational"}}),
    ));
    let report =
        doctor::run_with_status_page(Ok(config_for(&notion)), no_token(), Some(&url)).await;
    let text = report.to_text();
    assert_eq!(
        report.outcome_of("notion-status"),
        Some(Outcome::Pass),
        "{text}"
    );
    assert!(text.contains("All Systems Operational"), "{text}");
    assert_eq!(status.received()[0].uri, "/api/v2/status.json");

    notion.push(Reply::Echo);
    status.push(Reply::json(
        200,
        serde_json::json!({"status": {"indicator": "major", "description": "Partial System Outage"}}),
    ));
    let report =
        doctor::run_with_status_page(Ok(config_for(&notion)), no_token(), Some(&url)).await;
    let text = report.to_text();
    assert_eq!(
        report.outcome_of("notion-status"),
        Some(Outcome::Fail),
        "{text}"
    );
    assert!(
        text.contains("Partial System Outage") && text.contains("major"),
        "{text}"
    );
    assert!(report.failed());

    let closed = closed_port().await;
    notion.push(Reply::Echo);
    let report = doctor::run_with_status_page(
        Ok(config_for(&notion)),
        no_token(),
        Some(&format!("http://{closed}/api/v2/status.json")),
    )
    .await;
    let text = report.to_text();
    assert_eq!(
        report.outcome_of("notion-status"),
        Some(Outcome::Skip),
        "{text}"
    );
    assert!(
        !report.failed(),
        "an unreachable status page fails nothing: {text}"
    );

    // Not the status page's shape (a captive portal, an HTML error page): a skip too.
    notion.push(Reply::Echo);
    status.push(Reply::html_502());
    let report =
        doctor::run_with_status_page(Ok(config_for(&notion)), no_token(), Some(&url)).await;
    assert_eq!(
        report.outcome_of("notion-status"),
        Some(Outcome::Skip),
        "{}",
        report.to_text()
    );
}

/// The binary's default status URL is Notion's, and `--status-url` (or NOTION_STATUS_URL)
/// points it elsewhere; "" leaves the step out.
#[tokio::test]
async fn the_doctor_command_asks_the_status_url_it_is_given() {
    let status = FakeNotion::start().await;
    status.push(Reply::json(
        200,
        serde_json::json!({"status": {"indicator": "none", "description": "All Systems Operational"}}),
    ));
    let closed = closed_port().await;
    let url = format!("{}/api/v2/status.json", status.url());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_notion-gateway"))
            .args(["doctor", "--json", "--status-url", &url])
            .env("NOTION_GATEWAY_UPSTREAM__URL", format!("http://{closed}"))
            .env_remove("NOTION_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let step = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["step"] == "notion-status")
        .cloned()
        .unwrap_or_default();
    assert_eq!(step["outcome"], "pass", "{v}");
    assert_eq!(status.received().len(), 1);
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_notion-gateway"))
        .args(["doctor", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains(doctor::NOTION_STATUS_URL) && help.contains("NOTION_STATUS_URL"),
        "{help}"
    );
}

/// A failed upstream step (here DNS) ends the upstream checks, but the local gateway is still
/// asked: "is the gateway here up?" does not depend on reaching Notion.
#[tokio::test]
async fn the_local_gateway_is_asked_even_after_dns_fails() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let mut cfg = notion_gateway::Config::default();
    cfg.upstream.base = "http://nonexistent.invalid/".parse().unwrap();
    let report = doctor::run(
        Ok(cfg),
        Options {
            token: None,
            gateway: Some(format!("http://{}", gw.addr)),
        },
    )
    .await;
    let text = report.to_text();
    assert_eq!(report.outcome_of("dns"), Some(Outcome::Fail), "{text}");
    assert_eq!(report.outcome_of("connect"), None, "{text}");
    assert_eq!(report.outcome_of("gateway"), Some(Outcome::Pass), "{text}");
    assert_eq!(report.outcome_of("redis"), Some(Outcome::Skip), "{text}");
}
