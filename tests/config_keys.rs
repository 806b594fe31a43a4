//! Every key of the reference configuration is applied, and a test says so.
//!
//! `docs/configuration.md` has one row per key of `config/notion-gateway.toml` naming the
//! test that fails if the key is ignored; [`every_reference_key_has_a_row_and_its_test_exists`]
//! fails when a key has no row or its test does not exist. The tests below cover keys no
//! other test file exercises with a non-default value.
// Some tests wait on a real child process, so the wall clock is the right one there.
#![allow(clippy::disallowed_types)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::Method;
use tokio::time::Instant;

use support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_notion-gateway");

/// The binary with nothing from the developer's shell that could configure it.
fn bin() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("NOTION_GATEWAY_")
            || k.to_ascii_lowercase().ends_with("_proxy")
            || k == "RUST_LOG"
        {
            c.env_remove(k);
        }
    }
    c.env("NO_COLOR", "1");
    c
}

/// Keys of the reference file: `section.key` for every `# key = ` or `## key = ` line, with
/// array tables as their name (`integrations.rate`), example table names as `<name>`
/// (`workspaces.<name>.rate`), and a map table as one key (`limits.client_weights`).
fn reference_keys() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("config/notion-gateway.toml")).unwrap();
    let mut section = String::new();
    let mut map_table = false;
    let mut keys = Vec::new();
    for line in text.lines() {
        let l = line.trim_start_matches('#').trim();
        if let Some(t) = l.strip_prefix('[') {
            let name = t.trim_start_matches('[').trim_end_matches(']').trim();
            section = match name.split_once('.') {
                Some(("workspaces", _)) => "workspaces.<name>".into(),
                _ => name.to_owned(),
            };
            // A table whose entries are free-form names (quoted keys): the table is the key.
            map_table = section == "limits.client_weights";
            if map_table {
                keys.push(section.clone());
            }
            continue;
        }
        if map_table {
            continue;
        }
        let Some((k, _)) = l.split_once(" = ") else {
            continue;
        };
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        let key = format!("{section}.{k}");
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys
}

/// Rows of the key table: key -> the tests named in its last column (`file.rs::name`).
fn table_rows() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docs/configuration.md")).unwrap();
    text.lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let key = cells[0].trim_matches('`').to_owned();
            // The `file.rs::name` spans of the last cell (notes such as "(gated)" aside).
            let tests = cells
                .last()
                .unwrap()
                .split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect();
            (key, tests)
        })
        .collect()
}

#[test]
fn every_reference_key_has_a_row_and_its_test_exists() {
    let keys = reference_keys();
    assert!(keys.len() >= 45, "parsed too few keys: {keys:?}");
    for expected in [
        "server.worker_threads",
        "integrations.token_env",
        "workspaces.<name>.rate",
    ] {
        assert!(keys.contains(&expected.to_string()), "{expected}: {keys:?}");
    }
    let rows = table_rows();
    let mut missing = Vec::new();
    for key in &keys {
        match rows.iter().find(|(k, _)| k == key) {
            None => missing.push(format!("{key}: no row in docs/configuration.md")),
            Some((_, tests)) if tests.is_empty() => {
                missing.push(format!("{key}: its row names no test"))
            }
            Some((_, tests)) => {
                for t in tests {
                    let Some((file, name)) = t.split_once("::") else {
                        missing.push(format!("{key}: `{t}` is not file.rs::test_name"));
                        continue;
                    };
                    let src =
                        std::fs::read_to_string(Path::new(ROOT).join(file)).unwrap_or_default();
                    if !src.contains(&format!("fn {name}(")) {
                        missing.push(format!("{key}: {file} has no test `{name}`"));
                    }
                }
            }
        }
    }
    for (k, _) in &rows {
        if !keys.contains(k) {
            missing.push(format!(
                "{k}: a row for a key the reference file does not have"
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "every key of config/notion-gateway.toml needs a row in docs/configuration.md naming \
         the test that fails if the key is ignored:\n  {}",
        missing.join("\n  ")
    );
}

/// A gateway process; killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary with `env` and waits for its "listening" line.
fn serve(env: &[(&str, &str)]) -> (Running, Vec<String>) {
    let mut child = bin()
        .env("NOTION_GATEWAY_SERVER__LISTEN", "127.0.0.1:0")
        .env("NOTION_GATEWAY_UPSTREAM__URL", "http://127.0.0.1:9")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take();
    let child = Running(child);
    let stdout = stdout.unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            let done = line.contains("listening");
            seen.push(line);
            if done {
                return (child, seen);
            }
        }
    }
    panic!("no listening line: {seen:?}");
}

/// Names of a process's threads, from /proc (Linux).
fn thread_names(pid: u32) -> Vec<String> {
    let dir = format!("/proc/{pid}/task");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e} (this test needs Linux's /proc)"))
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

/// `server.worker_threads`: 1 serves on a current-thread runtime (no worker threads), N starts
/// N workers, 0 one per core. Counted in the running process, so an ignored key fails.
#[test]
fn worker_threads_sets_the_runtime_threads_of_the_process() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cases: [(Option<&str>, usize); 4] = [
        (None, 0),
        (Some("1"), 0),
        (Some("3"), 3),
        (Some("0"), cores),
    ];
    for (value, workers) in cases {
        let env: Vec<(&str, &str)> = value
            .map(|v| ("NOTION_GATEWAY_SERVER__WORKER_THREADS", v))
            .into_iter()
            .collect();
        let (gw, _) = serve(&env);
        let names = thread_names(gw.0.id());
        let n = names.iter().filter(|n| *n == "ngw-worker").count();
        assert_eq!(
            n, workers,
            "worker_threads = {value:?}: threads of the process: {names:?}"
        );
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A budget high enough that nothing waits for the shaper.
fn unpaced(notion: &FakeNotion) -> notion_gateway::Config {
    let mut cfg = config_for(notion);
    cfg.limits.per_minute = 100_000_000;
    cfg.limits.smoothing = None;
    cfg
}

/// `server.drain_timeout`: on shutdown, a request still waiting for Notion is answered 503
/// when the drain deadline passes: 5 s here, not the default 30 s.
#[tokio::test(start_paused = true)]
async fn drain_timeout_bounds_how_long_in_flight_requests_may_take() {
    let notion = FakeNotion::start().await;
    notion.push(Reply::Hang);
    let mut cfg = config_for(&notion);
    cfg.server.drain_timeout = Duration::from_secs(5);
    let mut gw = TestGateway::start(cfg).await;
    let hanging = tokio::spawn(
        gw.send_detached(
            gw.request(Method::GET, "/v1/pages/a")
                .body(empty())
                .unwrap(),
        ),
    );
    tokio::time::sleep(ms(100)).await;
    let t0 = Instant::now();
    gw.begin_shutdown();
    let r = hanging.await.unwrap();
    r.assert_gateway_error(503, "service_unavailable");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(5) && took < Duration::from_secs(6),
        "{took:?}"
    );
    gw.wait_stopped().await;
}

/// `server.max_header_bytes`: a 3 KB head is refused 431 under a 2 KiB limit (the default
/// 64 KiB takes it).
#[tokio::test]
async fn max_header_bytes_bounds_the_request_head() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.server.max_header_bytes = 2048;
    let gw = TestGateway::start(cfg).await;
    let big = gw
        .request(Method::GET, "/v1/users/me")
        .header("x-filler", "a".repeat(3000))
        .body(empty())
        .unwrap();
    gw.send(big)
        .await
        .assert_gateway_error(431, "validation_error");
    let small = gw
        .request(Method::GET, "/v1/users/me")
        .header("x-filler", "a".repeat(1000))
        .body(empty())
        .unwrap();
    assert_eq!(gw.send(small).await.status, 200);
    assert_eq!(notion.received().len(), 1);
}

/// `upstream.notion_version`: the configured version is the one added to requests without
/// their own.
#[tokio::test]
async fn notion_version_is_the_one_added_when_the_caller_sends_none() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.upstream.notion_version = http::HeaderValue::from_static("2022-06-28");
    let gw = TestGateway::start(cfg).await;
    assert_eq!(gw.get("/v1/users/me").await.status, 200);
    assert_eq!(
        notion.received()[0].header("notion-version"),
        Some("2022-06-28")
    );
}

/// `upstream.pool_idle_timeout`: an upstream connection idle longer than 2 s is not reused
/// (with the default 90 s it would be).
#[tokio::test(start_paused = true)]
async fn pool_idle_timeout_retires_idle_upstream_connections() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.upstream.pool_idle_timeout = Duration::from_secs(2);
    let gw = TestGateway::start(cfg).await;
    assert_eq!(gw.get("/v1/users/me").await.status, 200);
    tokio::time::sleep(ms(500)).await;
    assert_eq!(gw.get("/v1/users/me").await.status, 200);
    assert_eq!(notion.connections(), 1, "reused while fresh");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(gw.get("/v1/users/me").await.status, 200);
    assert_eq!(
        notion.connections(),
        2,
        "a new connection after the idle timeout"
    );
}

/// `upstream.pool_max_idle`: 0 keeps no idle connection, so each request connects anew
/// (the default 64 reuses one).
#[tokio::test]
async fn pool_max_idle_bounds_the_kept_upstream_connections() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.upstream.pool_max_idle = 0;
    let gw = TestGateway::start(cfg).await;
    for _ in 0..3 {
        assert_eq!(gw.get("/v1/users/me").await.status, 200);
    }
    assert_eq!(notion.connections(), 3);
}

/// `limits.adaptive = false`: repeated 429s pause the token but never lower its rate (with
/// the default `true` the second 429 halves it; checked first so the test means something).
#[tokio::test(start_paused = true)]
async fn adaptive_false_never_lowers_the_rate() {
    for adaptive in [true, false] {
        let notion = FakeNotion::start().await;
        notion.push(Reply::rate_limited(1));
        notion.push(Reply::rate_limited(1));
        let mut cfg = config_for(&notion);
        // What adapts is the smoothing rate (answered without a rate_limit_reason, as
        // Notion's GCRA-era 429s were).
        cfg.limits.smoothing = Some(notion_gateway::config::Smoothing {
            rate: 3.0,
            burst: 3,
        });
        cfg.limits.adaptive = adaptive;
        let gw = TestGateway::start(cfg).await;
        assert_eq!(gw.get("/v1/users/me").await.status, 200);
        let v = gw.get("/status").await.json();
        let token = &v["tokens"][0];
        assert_eq!(token["notion_429"], 2, "{v}");
        let rate = token["effective_rate"].as_f64().unwrap();
        if adaptive {
            assert!(rate < 3.0, "the default learns: {v}");
        } else {
            assert_eq!(rate, 3.0, "adaptive = false keeps the configured rate: {v}");
        }
    }
}

/// `[limits.client_weights]`: a caller of weight 3 gets three releases for each of a caller
/// of weight 1 while both wait (equal weights would alternate).
#[tokio::test(start_paused = true)]
async fn client_weights_give_a_caller_more_turns() {
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.limits.smoothing = Some(notion_gateway::config::Smoothing {
        rate: 10.0,
        burst: 1,
    });
    for (name, weight) in [("heavy", 3), ("light", 1)] {
        cfg.limits.client_weights.insert(
            name.into(),
            notion_gateway::config::ClientWeight {
                weight,
                from: Vec::new(),
            },
        );
    }
    let gw = TestGateway::start(cfg).await;
    gw.send_as_callers(&["heavy", "light"], 8).await;
    let order: Vec<String> = notion.received().iter().map(|r| r.uri.clone()).collect();
    // The first heavy request left at once; of the next eight, both callers waiting:
    let heavy = order[1..9].iter().filter(|p| p.contains("heavy")).count();
    assert_eq!(heavy, 6, "weights 3:1 -> six of eight: {order:?}");
}

/// `retry.backoff_base` and `retry.backoff_cap`: with 1 ms and 2 ms every wait between
/// attempts is under 2 ms (the defaults, 100 ms growing to 5 s, would wait far longer for
/// nearly every one of these 20 retries).
#[tokio::test(start_paused = true)]
async fn backoff_base_and_cap_bound_the_wait_between_attempts() {
    let notion = FakeNotion::start().await;
    let mut cfg = unpaced(&notion);
    cfg.retry.backoff_base = ms(1);
    cfg.retry.backoff_cap = ms(2);
    let gw = TestGateway::start(cfg).await;
    for _ in 0..5 {
        for _ in 0..4 {
            notion.push(Reply::html_502());
        }
        let before = notion.received().len();
        let r = gw.get("/v1/users/me").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-gateway-attempts"), Some("5"));
        let got = notion.received();
        for pair in got[before..].windows(2) {
            let gap = pair[1].at - pair[0].at;
            assert!(gap <= ms(2), "a wait of {gap:?} between attempts");
        }
    }
}

/// `retry.replay_limit`: a read whose 1 KB body is over a 100-byte limit streams once, so a
/// 502 is passed on instead of retried (the default 1 MiB keeps it and retries).
#[tokio::test]
async fn replay_limit_decides_which_bodies_go_again() {
    for (limit, status, attempts) in [(1024 * 1024, 200, 2), (100, 502, 1)] {
        let notion = FakeNotion::start().await;
        notion.push(Reply::html_502());
        let mut cfg = unpaced(&notion);
        cfg.retry.replay_limit = limit;
        cfg.retry.backoff_base = ms(1);
        cfg.retry.backoff_cap = ms(1);
        let gw = TestGateway::start(cfg).await;
        let body = serde_json::json!({"query": "x".repeat(1000)});
        let r = gw.post_json("/v1/search", body).await;
        assert_eq!(r.status, status, "replay_limit {limit}");
        assert_eq!(notion.received().len(), attempts, "replay_limit {limit}");
    }
}

/// The binary with `env` on a free port; returns its stdout after a request and SIGTERM.
fn stdout_of_a_run(env: &[(&str, &str)]) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = bin()
        .env("NOTION_GATEWAY_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("NOTION_GATEWAY_UPSTREAM__URL", "http://127.0.0.1:9")
        // One attempt: the refused upstream answers 502 at once instead of after retries.
        .env("NOTION_GATEWAY_RETRY__MAX_ATTEMPTS", "1")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take();
    let child = Running(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            s.write_all(b"GET /v1/users/me HTTP/1.0\r\nAuthorization: Bearer ntn_x\r\n\r\n")
                .unwrap();
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway did not start"
        );
        std::thread::sleep(ms(20));
    }
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut text = String::new();
    use std::io::Read;
    stdout.unwrap().read_to_string(&mut text).unwrap();
    drop(child);
    text
}

/// `log.format` and `log.level`: json gives one JSON object per line; warn leaves out the
/// info-level start-up and request events that the default level prints.
#[test]
fn log_format_and_level_shape_stdout() {
    let pretty = stdout_of_a_run(&[]);
    assert!(
        pretty.contains("listening") && pretty.contains("request"),
        "{pretty}"
    );
    assert!(pretty.lines().all(|l| !l.starts_with('{')), "{pretty}");
    let json = stdout_of_a_run(&[("NOTION_GATEWAY_LOG__FORMAT", "json")]);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["route"] == "/v1/users/me" && l["status"] == 502),
        "{json}"
    );
    let quiet = stdout_of_a_run(&[("NOTION_GATEWAY_LOG__LEVEL", "warn")]);
    assert!(
        !quiet.contains("listening") && !quiet.contains("/v1/users/me"),
        "{quiet}"
    );
}

/// `limits.redis_timeout`: with a Redis that accepts connections and never answers, the
/// replica waits that long for its start-up PING before it works on its local share: never
/// before 2 s with a 2 s timeout (the default 250 ms gives up within the first poll or three).
/// Real time: no timer fires early, so the bound cannot flake.
#[tokio::test]
async fn redis_timeout_is_how_long_a_replica_waits_for_redis() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming().flatten() {
            held.push(c); // read nothing, answer nothing
        }
    });
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.limits.shared = Some(notion_gateway::config::SharedBudgets {
        redis_url: format!("redis://{addr}"),
        timeout: Duration::from_secs(2),
        local_share: 0.5,
        prefix: "config-keys".into(),
    });
    let started = Instant::now();
    let gw = TestGateway::start(cfg).await;
    let mut polls = 0;
    while started.elapsed() < Duration::from_secs(20) {
        let v = gw.get("/status").await.json();
        polls += 1;
        if v["budgets"]["mode"] == "local_share" {
            let after = started.elapsed();
            assert!(
                after >= Duration::from_secs(2),
                "gave up on Redis after {after:?}"
            );
            assert!(polls > 3, "{polls} polls");
            return;
        }
        assert_eq!(v["budgets"]["mode"], "shared", "{v}");
        tokio::time::sleep(ms(100)).await;
    }
    panic!("never fell back to the local share");
}

/// `limits.redis_prefix`: two replicas on one Redis share a budget only when their prefixes
/// match. Gated: needs Debian's `redis-server` (`.ci/run` installs it and runs
/// `cargo test --test config_keys -- --ignored`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs redis-server; .ci/run installs it and runs this"]
async fn redis_prefix_separates_the_budgets_of_gateways_on_one_redis() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("ngw-redis-prefix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let redis = Running(
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): apt-get install redis-server")
            }),
    );
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        tokio::time::sleep(ms(50)).await;
    }
    let notion = FakeNotion::start().await;
    let replica = |prefix: &str| {
        let mut cfg = config_for(&notion);
        cfg.limits.smoothing = Some(notion_gateway::config::Smoothing {
            rate: 1.0,
            burst: 1,
        });
        cfg.limits.shared = Some(notion_gateway::config::SharedBudgets {
            redis_url: format!("redis://127.0.0.1:{port}"),
            timeout: Duration::from_secs(2),
            local_share: 0.5,
            prefix: prefix.into(),
        });
        cfg
    };
    // The second request's wait, in ms, after one through `a` spent the token's burst.
    let second_wait = |a: TestGateway, b: TestGateway, token: &'static str| async move {
        let first = a
            .send(
                a.request_as(Method::GET, "/v1/users/me", token)
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(first.status, 200);
        let second = b
            .send(
                b.request_as(Method::GET, "/v1/users/me", token)
                    .body(empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(second.status, 200);
        second
            .header("x-gateway-queue-wait-ms")
            .map_or(0, |w| w.parse::<f64>().unwrap() as u64)
    };
    let same = second_wait(
        TestGateway::start(replica("prefix-a")).await,
        TestGateway::start(replica("prefix-a")).await,
        "ntn_prefix_token_1",
    )
    .await;
    assert!(
        same >= 500,
        "one prefix, one budget: the second waited {same} ms"
    );
    let apart = second_wait(
        TestGateway::start(replica("prefix-b")).await,
        TestGateway::start(replica("prefix-c")).await,
        "ntn_prefix_token_2",
    )
    .await;
    assert!(
        apart < 300,
        "two prefixes, two budgets: the second waited {apart} ms"
    );
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The configuration a file gives, read and validated as `serve` reads it, pointed at `notion`.
fn config_from_toml(notion: &FakeNotion, toml: &str) -> notion_gateway::Config {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("ngw-keys-{}-{n}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!("[upstream]\nurl = \"{}\"\n\n{toml}\n", notion.url()),
    )
    .unwrap();
    let loaded = notion_gateway::config::load(&notion_gateway::config::Overrides {
        config_file: Some(path.clone()),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let _ = std::fs::remove_file(&path);
    loaded.config
}

fn sha_hex(token: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `/status` entry of `key` (a token's name or hash prefix, or a workspace), after a
/// request with `token`.
async fn status_after(cfg: notion_gateway::Config, token: &str) -> serde_json::Value {
    let gw = TestGateway::start(cfg).await;
    let r = gw
        .send(
            gw.request_as(Method::GET, "/v1/pages/1", token)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    tokio::time::sleep(ms(200)).await; // workspace discovery runs beside the request
    gw.get("/status").await.json()
}

/// `limits.plan` and `limits.per_minute`: the window budget a token gets (standard 180 per
/// minute by default; business 600; per_minute overrides the plan's).
#[tokio::test]
async fn plan_and_per_minute_set_the_window_budget() {
    let notion = FakeNotion::start().await;
    for (toml, plan, budget) in [
        ("", "standard", 180),
        ("[limits]\nplan = \"business\"", "business", 600),
        ("[limits]\nper_minute = 60", "custom", 60),
    ] {
        let v = status_after(config_from_toml(&notion, toml), "ntn_window_token").await;
        let t = &v["tokens"][0];
        assert_eq!(t["plan"], plan, "{toml}: {v}");
        assert_eq!(t["window"]["budget"], budget, "{toml}: {v}");
    }
}

/// `integrations.plan`: one integration on the business plan gets 600 per minute while
/// other tokens keep the standard 180.
#[tokio::test]
async fn an_integrations_plan_is_its_own() {
    let notion = FakeNotion::start().await;
    let toml = format!(
        "[[integrations]]\nname = \"biz\"\ntoken_sha256 = \"{}\"\nplan = \"business\"\n",
        sha_hex("ntn_biz_token")
    );
    let v = status_after(config_from_toml(&notion, &toml), "ntn_biz_token").await;
    let t = &v["tokens"][0];
    assert_eq!(t["key"], "biz", "{v}");
    assert_eq!(t["plan"], "business", "{v}");
    assert_eq!(t["window"]["budget"], 600, "{v}");
    let v = status_after(config_from_toml(&notion, &toml), "ntn_plain_token").await;
    assert_eq!(v["tokens"][0]["window"]["budget"], 180, "{v}");
}

/// `workspaces.<name>.id` and `workspaces.<name>.per_minute`: a token Notion says belongs to
/// that id joins the configured workspace by name, whose window is the configured budget.
#[tokio::test]
async fn a_configured_workspace_id_and_budget_apply_to_discovered_tokens() {
    let notion = FakeNotion::start().await;
    let id = "0a0b0c0d-0000-4000-8000-00000000ac4e";
    notion.workspace(id, &["ntn_ws_token"], None);
    let toml = format!("[workspaces.acme]\nid = \"{id}\"\nper_minute = 60\n");
    let v = status_after(config_from_toml(&notion, &toml), "ntn_ws_token").await;
    assert_eq!(v["tokens"][0]["workspace"], "acme", "{v}");
    let ws = v["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["key"] == "acme")
        .cloned()
        .unwrap_or_else(|| panic!("no workspace acme: {v}"));
    assert_eq!(ws["window"]["budget"], 60, "{v}");
}

/// `limits.discover_workspaces`: on (the default) the gateway asks `GET /v1/users/me` once for
/// a new token; off it never does.
#[tokio::test]
async fn discover_workspaces_off_asks_notion_nothing() {
    for (toml, calls) in [("", 1), ("[limits]\ndiscover_workspaces = false", 0)] {
        let notion = FakeNotion::start().await;
        let _ = status_after(config_from_toml(&notion, toml), "ntn_discovery_token").await;
        let me = notion
            .received()
            .iter()
            .filter(|r| r.uri == "/v1/users/me")
            .count();
        assert_eq!(me, calls, "{toml:?}");
    }
}
