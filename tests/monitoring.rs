//! The shipped monitoring configuration (`config/prometheus/`, `config/grafana/`): its
//! expressions name only metrics the gateway exports, Prometheus's own checker accepts it, and
//! a real Prometheus scraping a real gateway answers every expression. In its own binary: the
//! metrics recorder is process-wide.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use http::Method;
use support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Metric names (`notion_gateway_*`) mentioned in a file, histogram suffixes removed.
fn metric_names(path: &Path) -> Vec<String> {
    names_in(&std::fs::read_to_string(path).unwrap())
}

fn names_in(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("notion_gateway_"))
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .filter(|base| notion_gateway::metrics::ALL.contains(base))
                .unwrap_or(w)
                .to_owned()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn alert_rules_name_only_exported_metrics() {
    let names = metric_names(&Path::new(ROOT).join("config/prometheus/alerts.yml"));
    assert!(names.len() >= 4, "{names:?}");
    for n in names {
        assert!(
            notion_gateway::metrics::ALL.contains(&n.as_str()),
            "alerts.yml uses {n}, which the gateway does not export"
        );
    }
}

#[test]
#[ignore = "needs promtool (Debian's prometheus package); .ci/run installs it and runs this"]
fn promtool_accepts_the_prometheus_config_and_alert_rules() {
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(Path::new(ROOT).join("config/prometheus/prometheus.yml"))
        .output()
        .expect("promtool is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("alerts.yml"), "rule file checked too: {text}");
}

fn dashboard() -> serde_json::Value {
    let path = Path::new(ROOT).join("config/grafana/dashboards/notion-gateway.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// What Grafana puts in place of the dashboard's variables: every gateway and integration
/// ("All"), and a one-hour step and range.
fn substitute(expr: &str) -> String {
    let out = expr
        .replace("$instance", ".*")
        .replace("$integration", ".*")
        .replace("$__interval", "1h")
        .replace("$__range", "1h");
    assert!(
        !out.contains('$'),
        "a variable the test does not know: {expr}"
    );
    out
}

/// Every panel of the shipped dashboard: its title and its PromQL expressions, variables
/// substituted as Grafana would.
fn dashboard_panels() -> Vec<(String, Vec<String>)> {
    dashboard()["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let exprs = p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| substitute(t["expr"].as_str().unwrap()))
                .collect();
            (p["title"].as_str().unwrap().to_owned(), exprs)
        })
        .collect()
}

/// Imports into any Grafana (a `DS_PROMETHEUS` input, no hard-coded datasource uid), keeps
/// working when provisioned (a datasource variable of the same name), filters by gateway and
/// integration, and shows what the 502 analysis needs: hourly error buckets, errors by request
/// size as bars over the size buckets, and the shared-budget (Redis) mode.
#[test]
fn the_dashboard_imports_anywhere_and_filters_by_gateway_and_integration() {
    let d = dashboard();
    assert_eq!(
        d["__inputs"][0]["name"], "DS_PROMETHEUS",
        "{}",
        d["__inputs"]
    );
    assert_eq!(d["__inputs"][0]["pluginId"], "prometheus");
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("DS_PROMETHEUS")["type"], "datasource");
    assert_eq!(var("DS_PROMETHEUS")["query"], "prometheus");
    assert!(var("instance")["includeAll"].as_bool().unwrap());
    assert!(var("integration")["includeAll"].as_bool().unwrap());
    let text = serde_json::to_string(&d).unwrap();
    assert!(
        !text.contains(r#""uid":"prometheus""#),
        "no hard-coded datasource uid"
    );
    let panels = d["panels"].as_array().unwrap();
    for p in panels {
        let title = p["title"].as_str().unwrap();
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        for t in p["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let e = t["expr"].as_str().unwrap();
            assert!(e.contains(r#"instance=~"$instance""#), "{title}: {e}");
            if e.contains("integration") && !e.contains("shared_budgets") {
                assert!(e.contains(r#"integration=~"$integration""#), "{title}: {e}");
            }
        }
    }
    let find = |needle: &str| {
        panels
            .iter()
            .find(|p| p["title"].as_str().unwrap().contains(needle))
            .unwrap_or_else(|| panic!("no panel titled ...{needle}..."))
    };
    let hourly = find("Errors per hour");
    assert_eq!(hourly["interval"], "1h");
    assert!(hourly["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .contains("[$__interval]"));
    let by_size = find("Failed requests by request size");
    assert_eq!(by_size["type"], "bargauge");
    assert_eq!(by_size["targets"][0]["format"], "heatmap");
    let redis = find("Redis");
    assert!(redis["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .contains("notion_gateway_shared_budgets"));
}

/// The `expr` of every alert rule.
fn alert_exprs() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("config/prometheus/alerts.yml")).unwrap();
    let mut out = Vec::new();
    let mut name = String::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let t = l.trim();
        if let Some(n) = t.strip_prefix("- alert: ") {
            name = n.to_owned();
        } else if let Some(e) = t.strip_prefix("expr:") {
            let mut expr = e.trim().trim_start_matches('|').trim().to_owned();
            if expr.is_empty() {
                // A block scalar: the lines indented deeper than `expr:` itself.
                let indent = l.len() - l.trim_start().len();
                while let Some(next) = lines.peek() {
                    if next.len() - next.trim_start().len() <= indent {
                        break;
                    }
                    expr.push(' ');
                    expr.push_str(next.trim());
                    lines.next();
                }
            }
            out.push((name.clone(), expr.trim().to_owned()));
        }
    }
    out
}

#[test]
fn the_dashboard_names_only_exported_metrics() {
    let panels = dashboard_panels();
    assert!(panels.len() >= 10);
    for (title, exprs) in panels {
        for e in exprs {
            let names = names_in(&e);
            assert!(!names.is_empty(), "{title}: {e}");
            for n in names {
                assert!(
                    notion_gateway::metrics::ALL.contains(&n.as_str()),
                    "panel {title:?} uses {n}, which the gateway does not export"
                );
            }
        }
    }
    assert_eq!(alert_exprs().len(), 6, "{:?}", alert_exprs());
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The body of a plain GET, or `None` if nothing listens.
async fn http_get(port: u16, path: &str) -> Option<String> {
    raw_get(port, path).await.map(|(_, body)| body)
}

async fn query(port: u16, expr: &str) -> serde_json::Value {
    let body = http_get(
        port,
        &format!("/api/v1/query?query={}", percent_encode(expr)),
    )
    .await
    .expect("prometheus answers");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Scrapes of the gateway Prometheus has taken in the last minute.
async fn scrapes(port: u16) -> Option<u32> {
    let body = http_get(port, "/api/v1/query?query=count_over_time(up%5B1m%5D)").await?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// A read retried after a 502, a create that gets Notion's 502, a 429 waited out, refusals,
/// bodies.
const MONITORING_KEY: &str = "ngw_d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4";

async fn traffic(gw: &TestGateway, notion: &FakeNotion) {
    notion.push(Reply::html_502());
    let read = gw
        .get("/v1/pages/59833787-2cf9-4fdf-8782-e53db20768a5")
        .await;
    assert_eq!(read.status, 200);
    notion.push(Reply::html_502());
    let created = gw
        .post_json("/v1/pages", serde_json::json!({"parent": {}}))
        .await;
    assert_eq!(created.status, 502);
    notion.push(Reply::rate_limited_because(
        1,
        "public_api_request_rate_limit",
    ));
    assert_eq!(gw.get("/v1/users/me").await.status, 200);
    let anonymous = http::Request::get(gw.url("/v1/users"))
        .body(empty())
        .unwrap();
    assert_eq!(gw.send(anonymous).await.status, 401);
    let search = gw
        .post_json("/v1/search", serde_json::json!({"query": "x"}))
        .await;
    assert_eq!(search.status, 200);
    let nowhere = gw.request(Method::GET, "/nowhere").body(empty()).unwrap();
    assert_eq!(gw.send(nowhere).await.status, 404);
    let keyed = gw
        .request_as(Method::GET, "/v1/users/me", MONITORING_KEY)
        .body(empty())
        .unwrap();
    assert_eq!(gw.send(keyed).await.status, 200);
}

/// A real Prometheus scrapes a real gateway after traffic with retries, Notion 429s and
/// refusals; every dashboard panel returns data, every alert expression is valid. Prints each
/// panel's query and value (run with --nocapture to see them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's prometheus package; .ci/run installs it and runs this"]
async fn a_real_prometheus_answers_every_dashboard_and_alert_expression() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.limits.max_queue = 1;
    // The per-integration panels show configured integrations only (labels stay bounded), so the
    // test token is one, as a team's tokens would be.
    cfg.limits
        .integrations
        .push(integration("sync-job", "ntn_test_token_0001", true));
    // And a gateway key of it, for the per-key panel.
    cfg.access.keys.push(notion_gateway::config::KeyConfig {
        name: "alice".into(),
        key_sha256: sha256(MONITORING_KEY),
        integration: "sync-job".into(),
        token: notion_gateway::config::HeldToken::new("ntn_test_token_0001").unwrap(),
        token_sha256: sha256("ntn_test_token_0001"),
        weight: 1,
        rate: None,
        priority: notion_gateway::config::KeyPriority::Normal,
        max_wait: None,
    });
    let gw = TestGateway::start(cfg).await;
    // Traffic before the first scrape and again between scrapes, so rates are not all zero.
    traffic(&gw, &notion).await;

    let dir = std::env::temp_dir().join(format!("ngw-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: notion-gateway\n    static_configs:\n      - targets: [\"{}\"]\n",
            Path::new(ROOT).join("config/prometheus/alerts.yml").display(),
            gw.addr
        ),
    )
    .unwrap();
    let port = free_port();
    let _prometheus = KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus is installed"),
    );
    // Two scrapes after the traffic has finished, so its last requests are in the samples.
    let wait_for = |target: u32| async move {
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if scrapes(port).await.is_some_and(|n| n >= target) {
                return;
            }
        }
        panic!("prometheus did not scrape the gateway {target} times");
    };
    wait_for(1).await;
    traffic(&gw, &notion).await;
    let after = scrapes(port).await.unwrap_or(0);
    wait_for(after + 2).await;

    let mut empty_panels = Vec::new();
    for (title, exprs) in dashboard_panels() {
        let mut any = false;
        for e in &exprs {
            let v = query(port, e).await;
            assert_eq!(v["status"], "success", "panel {title:?}: {e}: {v}");
            let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
            any |= !result.is_empty();
            let shown: Vec<String> = result
                .iter()
                .map(|r| format!("{} = {}", r["metric"], r["value"][1]))
                .collect();
            println!(
                "panel {title:?}\n  {e}\n  -> {}",
                if shown.is_empty() {
                    "(no data)".into()
                } else {
                    shown.join("; ")
                }
            );
        }
        if !any {
            empty_panels.push(title);
        }
    }
    assert!(
        empty_panels.is_empty(),
        "panels without data: {empty_panels:?}"
    );
    for (alert, e) in alert_exprs() {
        let v = query(port, &e).await;
        assert_eq!(v["status"], "success", "alert {alert}: {e}: {v}");
        println!("alert {alert}: {e}\n  -> {}", v["data"]["result"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
