//! The real clients, unmodified, against the released binary (docs/behaviour.md §4): the
//! official JavaScript SDK (`@notionhq/client` 5.26.0), the Python SDK (`notion-client` 3.1.0)
//! and Notion's MCP server (`@notionhq/notion-mcp-server` 2.5.2, stdio JSON-RPC, `BASE_URL`),
//! pinned in `tests/clients/` (package.json + package-lock.json, requirements.txt).
//!
//! Each scenario starts the real `notion-gateway` binary in front of the fake Notion
//! (`tests/support/fake_notion.rs`, answering like Notion, with faults), runs the three clients
//! at once (one token each) through the same mix of calls (users.me, search, pages
//! create/retrieve/update, a data source query and block children through the SDKs'
//! pagination helpers, block children append, comments, a file upload), and asserts per client
//! which calls succeed and that every failure is the client's known error type with a code both
//! SDKs know (the MCP server: an error object with such a code).
//!
//! Gated: `cargo test --test clients -- --ignored` (`.ci/run` installs the packages first). Each
//! test panics, naming what to install, when node, the npm packages or the Python package are
//! missing. `--nocapture` prints what each client saw (the source of docs/clients.md).

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use notion_gateway::error::SDK_CODES;
use serde_json::Value;
use support::*;

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Removes what could send the clients or the gateway elsewhere than loopback.
fn clean_env(cmd: &mut std::process::Command) {
    for (k, _) in std::env::vars() {
        let lower = k.to_ascii_lowercase();
        if k.starts_with("NOTION_GATEWAY_") || lower.ends_with("_proxy") || k.starts_with("NOTION_")
        {
            cmd.env_remove(&k);
        }
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost");
}

/// node, with the pinned packages installed; panics saying what to install otherwise.
fn node() -> PathBuf {
    let ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "`node` not found: install Node.js 20 or newer (.ci/run does) to run the client suite"
    );
    for pkg in ["@notionhq/client", "@notionhq/notion-mcp-server"] {
        let installed = suite_dir()
            .join("node_modules")
            .join(pkg)
            .join("package.json");
        assert!(
            installed.exists(),
            "{pkg} is not installed: run `npm ci --prefix tests/clients` (.ci/run does)"
        );
    }
    PathBuf::from("node")
}

/// A Python with notion-client: `NOTION_GATEWAY_SUITE_PYTHON`, else `tests/clients/.venv`.
fn python() -> PathBuf {
    let python = std::env::var_os("NOTION_GATEWAY_SUITE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| suite_dir().join(".venv/bin/python"));
    let ok = std::process::Command::new(&python)
        .args(["-c", "import notion_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import notion_client: run `python3 -m venv tests/clients/.venv && \
         tests/clients/.venv/bin/pip install -r tests/clients/requirements.txt` (.ci/run does)",
        python.display()
    );
    python
}

/// The released binary on a free loopback port, in front of `upstream`.
struct Binary {
    child: std::process::Child,
    url: String,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_binary(upstream: &str, env: &[(&str, &str)]) -> Binary {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_notion-gateway"));
    clean_env(&mut cmd);
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--upstream",
        upstream,
    ])
    .env("NOTION_GATEWAY_LOG__LEVEL", "warn")
    .envs(env.iter().copied())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let child = cmd.spawn().expect("the notion-gateway binary starts");
    let binary = Binary {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..200 {
        if raw_get(port, "/healthz")
            .await
            .is_some_and(|(s, _)| s == 200)
        {
            return binary;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway did not answer /healthz within 10 s");
}

/// Runs one client script; its JSON lines, one per call.
async fn run(program: &Path, script: &str, base_url: &str, token: &str) -> Vec<Value> {
    let mut cmd = std::process::Command::new(program);
    clean_env(&mut cmd);
    cmd.current_dir(suite_dir())
        .args([script, base_url, token])
        .stdin(Stdio::null());
    // The scripts end by themselves (every call is bounded by the gateway's deadline and the
    // SDKs' own timeouts).
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{script} did not start: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{script}: {e}: {l}")))
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Scenario {
    NoFaults,
    Html502s,
    Resets,
    RateLimited,
    Unreachable,
}

/// Calls that create or append: the gateway may not repeat them after a 502 or a reset (the
/// caller then sees the failure, in a form it knows).
const CREATES: [&str; 7] = [
    "pages.create",
    "blocks.children.append",
    "comments.create",
    "API-post-page",
    "API-patch-block-children",
    "API-create-a-comment",
    "fileUploads.create",
];

fn is_create(call: &str) -> bool {
    CREATES.contains(&call) || call == "file_uploads.create"
}

/// What every client must see in `scenario`.
fn check(client: &str, scenario: Scenario, lines: &[Value], calls: usize) {
    assert_eq!(lines.len(), calls, "{client}: one line per call: {lines:?}");
    for l in lines {
        let call = l["call"].as_str().unwrap();
        let ok = l["ok"].as_bool().unwrap();
        if ok {
            if let Some(n) = l.get("count") {
                assert_eq!(
                    n, 5,
                    "{client} {call}: the pagination helper got every page"
                );
            }
            continue;
        }
        // Every failure is one the client knows, with a code both SDKs know.
        let code = l["code"].as_str().unwrap_or("");
        if client == "mcp" {
            assert_eq!(
                l["object"], "error",
                "{client} {call}: flagged as an error: {l}"
            );
        } else {
            assert_eq!(l["type"], "APIResponseError", "{client} {call}: {l}");
        }
        assert!(
            SDK_CODES.contains(&code),
            "{client} {call}: code {code}: {l}"
        );
        match scenario {
            Scenario::NoFaults | Scenario::RateLimited => {
                panic!("{client} {call} failed in {scenario:?}: {l}")
            }
            Scenario::Html502s | Scenario::Resets => {
                assert!(
                    is_create(call),
                    "{client} {call}: a read or idempotent write failed: {l}"
                );
                assert_eq!(code, "service_unavailable", "{client} {call}: {l}");
                assert_eq!(l["status"], 502, "{client} {call}: {l}");
            }
            Scenario::Unreachable => {
                assert_eq!(code, "service_unavailable", "{client} {call}: {l}");
                assert_eq!(l["status"], 502, "{client} {call}: {l}");
            }
        }
    }
    if scenario == Scenario::Unreachable {
        assert!(
            lines.iter().all(|l| l["ok"] == false),
            "{client}: Notion is unreachable: {lines:?}"
        );
    }
}

async fn scenario(scenario: Scenario) {
    let node = node();
    let python = python();
    let _notion;
    let (upstream, env): (String, Vec<(&str, &str)>) = match scenario {
        // A short deadline: what the clients see is the same as with 58 s, sooner.
        Scenario::Unreachable => (
            format!("http://{}", closed_port().await),
            vec![
                ("NOTION_GATEWAY_SERVER__REQUEST_TIMEOUT", "3s"),
                ("NOTION_GATEWAY_LIMITS__MAX_WAIT", "2s"),
            ],
        ),
        s => {
            let notion = FakeNotion::start().await;
            notion.notion_like();
            notion.faults(match s {
                Scenario::Html502s => Some(Fault::Html502 { percent: 30 }),
                Scenario::Resets => Some(Fault::Reset { percent: 30 }),
                Scenario::RateLimited => Some(Fault::RateLimited { percent: 30 }),
                _ => None,
            });
            let url = notion.url();
            _notion = notion;
            (url, Vec::new())
        }
    };
    let gw = start_binary(&upstream, &env).await;
    let started = tokio::time::Instant::now();
    let (js, py, mcp) = tokio::join!(
        run(&node, "js_sdk.mjs", &gw.url, "ntn_suite_js_0001"),
        run(&python, "py_sdk.py", &gw.url, "ntn_suite_py_0001"),
        run(&node, "mcp.mjs", &gw.url, "ntn_suite_mcp_0001"),
    );
    for (client, lines) in [("js", &js), ("python", &py), ("mcp", &mcp)] {
        for l in lines.iter() {
            println!("{scenario:?} {client} {l}");
        }
    }
    println!("{scenario:?}: {:.1} s", started.elapsed().as_secs_f64());
    check("js", scenario, &js, 12);
    check("python", scenario, &py, 12);
    check("mcp", scenario, &mcp, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node and the pinned npm/pip packages: .ci/run installs them"]
async fn real_clients_without_faults() {
    scenario(Scenario::NoFaults).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node and the pinned npm/pip packages: .ci/run installs them"]
async fn real_clients_under_30_percent_html_502s() {
    scenario(Scenario::Html502s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node and the pinned npm/pip packages: .ci/run installs them"]
async fn real_clients_under_30_percent_resets() {
    scenario(Scenario::Resets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node and the pinned npm/pip packages: .ci/run installs them"]
async fn real_clients_under_30_percent_429s() {
    scenario(Scenario::RateLimited).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs node and the pinned npm/pip packages: .ci/run installs them"]
async fn real_clients_when_notion_is_unreachable() {
    scenario(Scenario::Unreachable).await;
}
