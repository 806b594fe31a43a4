//! The shipped monitoring configuration (`config/prometheus/`): its expressions name only
//! metrics the gateway exports, and Prometheus's own checker accepts it.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Metric names (`notion_gateway_*`) mentioned in a file, histogram suffixes removed.
fn metric_names(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
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
