//! Gateway keys (docs/team.md): a team shares one gateway without sharing the Notion token.
//! Black-box: the real gateway over real sockets against the fake Notion; the reload tests run
//! the real binary and send it SIGHUP.

mod support;

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use sha2::Digest as _;
use support::*;
use tokio::time::Instant;

/// The Notion token the gateway holds for the `sync-job` integration (fake).
const SYNC_TOKEN: &str = "ntn_sync_job_token_0001";
const ALICE: &str = "ngw_a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const BULK: &str = "ngw_b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";

fn sha(s: &str) -> [u8; 32] {
    sha2::Sha256::digest(s.as_bytes()).into()
}

fn hex(d: [u8; 32]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The configuration, from TOML as an operator writes it: the `sync-job` integration holding
/// its token in a file, and `keys` as `(name, secret, extra lines)`.
fn config_with(
    notion: &FakeNotion,
    mode: &str,
    keys: &[(&str, &str, &str)],
) -> notion_gateway::Config {
    let files = Files::new(&format!("cfg-{}", fastrand_suffix()));
    let token = files.write("token", SYNC_TOKEN);
    let text =
        toml_with(&token, keys).replacen("mode = \"keys\"", &format!("mode = \"{mode}\""), 1);
    let path = files.write("gateway.toml", &text);
    let loaded = notion_gateway::config::load(&notion_gateway::config::Overrides {
        config_file: Some(path),
        upstream: Some(notion.url()),
        ..Default::default()
    })
    .unwrap();
    let mut cfg = loaded.config;
    cfg.limits.discover_workspaces = false;
    cfg
}

/// `alice` with `alice` extra lines, and `bulk`, a background key.
fn config_toml(notion: &FakeNotion, mode: &str, alice: &str) -> notion_gateway::Config {
    config_with(
        notion,
        mode,
        &[
            ("alice", ALICE, alice),
            ("bulk", BULK, "priority = \"background\""),
        ],
    )
}

/// A name for a scratch directory no other test in this process uses.
fn fastrand_suffix() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

fn config(notion: &FakeNotion, mode: &str) -> notion_gateway::Config {
    config_toml(notion, mode, "")
}

async fn get_as(gw: &TestGateway, path: &str, bearer: &str) -> Resp {
    let req = gw
        .request_as(Method::GET, path, bearer)
        .body(empty())
        .unwrap();
    gw.send(req).await
}

#[tokio::test]
async fn a_keys_request_reaches_notion_with_the_integrations_token_and_never_the_key() {
    let notion = FakeNotion::start().await;
    // A key name no other test of this binary uses: the metrics recorder is process-wide, and
    // the per-key counter below must count this test's request only.
    let gw = TestGateway::start(config_with(&notion, "open", &[("dora", ALICE, "")])).await;
    let r = get_as(&gw, "/v1/users/me", ALICE).await;
    assert_eq!(r.status, 200);
    let got = notion.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].header("authorization"),
        Some(format!("Bearer {SYNC_TOKEN}").as_str())
    );
    for (name, value) in &got[0].headers {
        assert!(
            !value.as_bytes().windows(4).any(|w| w == b"ngw_"),
            "{name} carried the key"
        );
    }
    let status = gw.get("/status").await;
    let text = String::from_utf8_lossy(&status.body).into_owned();
    assert!(
        !text.contains(ALICE) && !text.contains(SYNC_TOKEN),
        "{text}"
    );
    let keys = status.json()["access"]["keys"].clone();
    let dora = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "dora")
        .cloned()
        .unwrap();
    assert_eq!(dora["integration"], "sync-job");
    assert_eq!(dora["requests"], 1);
    let metrics = String::from_utf8_lossy(&gw.get("/metrics").await.body).into_owned();
    assert!(
        metrics
            .lines()
            .any(|l| l == "notion_gateway_key_requests_total{key=\"dora\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains(ALICE));
}

#[tokio::test]
async fn wrong_and_malformed_keys_are_refused_before_notion_in_every_mode() {
    for mode in ["open", "keys", "configured"] {
        let notion = FakeNotion::start().await;
        let gw = TestGateway::start(config(&notion, mode)).await;
        for bad in [
            "ngw_wrong".to_string(),
            format!("{ALICE}x"),
            ALICE[..ALICE.len() - 1].to_string(),
            "ngw_".to_string(),
        ] {
            let r = get_as(&gw, "/v1/users/me", &bad).await;
            assert_eq!(r.status, 401, "{mode:?} {bad}");
            assert_eq!(r.json()["code"], "unauthorized");
            assert!(!String::from_utf8_lossy(&r.body).contains(&bad));
        }
        assert!(notion.received().is_empty(), "{mode:?}");
        assert_eq!(gw.get("/status").await.json()["tokens_total"], 0);
    }
}

#[tokio::test]
async fn keys_mode_refuses_notion_tokens_before_any_state_exists() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config(&notion, "keys")).await;
    for token in ["ntn_someone_else", SYNC_TOKEN] {
        let r = get_as(&gw, "/v1/users/me", token).await;
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["code"], "unauthorized");
    }
    assert!(notion.received().is_empty());
    let status = gw.get("/status").await.json();
    assert_eq!(status["tokens_total"], 0);
    assert_eq!(status["access"]["mode"], "keys");
    assert_eq!(get_as(&gw, "/v1/users/me", ALICE).await.status, 200);
    assert_eq!(notion.received().len(), 1);
}

#[tokio::test]
async fn configured_mode_lets_only_keys_and_configured_tokens_through() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config(&notion, "configured")).await;
    assert_eq!(get_as(&gw, "/v1/users/me", SYNC_TOKEN).await.status, 200);
    assert_eq!(get_as(&gw, "/v1/users/me", ALICE).await.status, 200);
    assert_eq!(
        get_as(&gw, "/v1/users/me", "ntn_someone_else").await.status,
        401
    );
    assert_eq!(notion.received().len(), 2);
}

/// A background key saturates the token; an interactive key sending once a second never
/// waits a second, and the background key gets every slot the interactive one leaves.
#[tokio::test(start_paused = true)]
async fn a_background_key_takes_only_the_budget_nobody_else_waits_for() {
    let notion = FakeNotion::start().await;
    let gw = Arc::new(TestGateway::start(config(&notion, "open")).await);
    let started = Instant::now();
    let mut bulk = Vec::new();
    for i in 0..200 {
        let gw = gw.clone();
        bulk.push(tokio::spawn(async move {
            get_as(&gw, &format!("/v1/pages/bulk-{i}"), BULK)
                .await
                .status
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Two interactive requests at once every second: two thirds of the token's 3/s. Shared
    // round robin with the bulk key, they would get half and fall further behind each second.
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        let sent = Instant::now();
        let (pa, pb) = (
            format!("/v1/pages/alice-{i}-a"),
            format!("/v1/pages/alice-{i}-b"),
        );
        let (a, b) = tokio::join!(get_as(&gw, &pa, ALICE), get_as(&gw, &pb, ALICE));
        assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
        worst = worst.max(sent.elapsed());
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(sent.elapsed())).await;
    }
    let mut bulk_ok = 0;
    for b in bulk {
        if b.await.unwrap() == 200 {
            bulk_ok += 1;
        }
    }
    assert!(
        worst < Duration::from_secs(1),
        "the interactive key waited {worst:?}"
    );
    // The token's budget over the background requests' life (the 58 s request deadline):
    // 180 per minute; what the 40 interactive requests left went to the bulk key.
    let alice_sent = notion
        .received()
        .iter()
        .filter(|r| r.uri.contains("alice"))
        .count();
    let bulk_sent = notion
        .received()
        .iter()
        .filter(|r| r.uri.contains("bulk"))
        .count();
    assert_eq!(alice_sent, 40);
    assert_eq!(bulk_sent, bulk_ok);
    assert!(
        bulk_ok + alice_sent >= 170,
        "bulk got {bulk_ok} in {:?}",
        started.elapsed()
    );
}

/// A key's own `rate` paces it below the integration's budget.
#[tokio::test(start_paused = true)]
async fn a_keys_rate_caps_it_below_the_integrations_budget() {
    let notion = FakeNotion::start().await;
    let cfg = config_toml(&notion, "open", "rate = 2.0");
    let gw = Arc::new(TestGateway::start(cfg).await);
    let started = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move { get_as(&gw, &format!("/v1/pages/p{i}"), ALICE).await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().status, 200);
    }
    let at: Vec<Duration> = notion
        .received()
        .iter()
        .map(|r| r.at.duration_since(started))
        .collect();
    assert_eq!(at.len(), 10);
    // Ten at 2/s: the last goes 4.5 s after the first.
    assert!(
        at[9] >= Duration::from_millis(4400),
        "released at {at:?} (no pacing?)"
    );
}

/// Two keys of one integration, both saturating it: releases follow their weights.
#[tokio::test(start_paused = true)]
async fn keys_share_their_integrations_queue_by_weight() {
    const CAROL: &str = "ngw_c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";
    let notion = FakeNotion::start().await;
    let cfg = config_with(
        &notion,
        "keys",
        &[("alice", ALICE, "weight = 3"), ("carol", CAROL, "")],
    );
    let gw = Arc::new(TestGateway::start(cfg).await);
    let mut calls = Vec::new();
    for i in 0..60 {
        for (who, secret) in [("alice", ALICE), ("carol", CAROL)] {
            let gw = gw.clone();
            calls.push(tokio::spawn(async move {
                get_as(&gw, &format!("/v1/pages/{who}-{i}"), secret)
                    .await
                    .status
            }));
        }
    }
    for c in calls {
        c.await.unwrap();
    }
    // After the idle token's burst, 40 releases of the saturated queue: 3 to 1.
    let received = notion.received();
    let alice = received[30..70]
        .iter()
        .filter(|r| r.uri.contains("alice"))
        .count();
    assert!((27..=33).contains(&alice), "alice got {alice} of 40");
}

/// A key's `max_wait` bounds how long its requests may wait (here for its own rate).
#[tokio::test(start_paused = true)]
async fn a_keys_max_wait_bounds_its_waits() {
    let notion = FakeNotion::start().await;
    let cfg = config_toml(&notion, "open", "rate = 0.1\nmax_wait = \"5s\"");
    let gw = TestGateway::start(cfg).await;
    assert_eq!(get_as(&gw, "/v1/users/me", ALICE).await.status, 200);
    let sent = Instant::now();
    let r = get_as(&gw, "/v1/users/me", ALICE).await;
    assert_eq!(r.status, 429);
    assert!(sent.elapsed() < Duration::from_secs(1));
    let body = r.json();
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(
        body["additional_data"]["rate_limit_reason"],
        "gateway_key_rate"
    );
    assert_eq!(r.headers["retry-after"], "10");
    assert_eq!(notion.received().len(), 1);
}

// ---- Reload (SIGHUP) of the real binary ------------------------------------------------

struct Binary {
    child: std::process::Child,
    gw: TestGateway,
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Binary {
    fn hup(&self) {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    /// Waits until the gateway has handled `n` reloads with `result`.
    async fn reloads(&self, result: &str, n: u32) {
        let series = format!("notion_gateway_config_reloads_total{{result=\"{result}\"}} {n}");
        for _ in 0..200 {
            let m = String::from_utf8_lossy(&self.gw.get("/metrics").await.body).into_owned();
            if m.contains(&series) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no {series}");
    }
}

struct Files {
    dir: std::path::PathBuf,
}

impl Files {
    fn new(test: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ngw-keys-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir }
    }

    fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        std::fs::File::create(&tmp)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A configuration file: `sync-job` holding the token of `token_file`, the keys given as
/// `(name, secret, extra TOML)`.
fn toml_with(token_file: &std::path::Path, keys: &[(&str, &str, &str)]) -> String {
    let mut t = format!(
        "[access]\nmode = \"keys\"\n\n[[integrations]]\nname = \"sync-job\"\ntoken_file = \"{}\"\n",
        token_file.display()
    );
    for (name, secret, extra) in keys {
        t.push_str(&format!(
            "\n[[keys]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\nintegration = \"sync-job\"\n{extra}\n",
            hex(sha(secret))
        ));
    }
    t
}

async fn start_binary(notion: &FakeNotion, config: &std::path::Path) -> Binary {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_notion-gateway"));
    for (k, _) in std::env::vars() {
        if k.starts_with("NOTION_GATEWAY_") {
            cmd.env_remove(k);
        }
    }
    let child = cmd
        .arg("--config")
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--upstream", &notion.url()])
        .env("NOTION_GATEWAY_LIMITS__DISCOVER_WORKSPACES", "false")
        .env("NOTION_GATEWAY_LOG__LEVEL", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let gw = TestGateway::attach(([127, 0, 0, 1], port).into());
    let binary = Binary { child, gw };
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return binary;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the gateway did not listen");
}

/// Requests queued across a SIGHUP are all answered, none twice; a reload that removes a key
/// answers that key's waiting requests 401 at once, and its next requests too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_queued_requests_and_revokes_a_removed_key() {
    let notion = FakeNotion::start().await;
    let files = Files::new("revoke");
    let token = files.write("token", SYNC_TOKEN);
    // Both keys paced by their own rate, so their requests wait in the gateway.
    let both = [
        ("alice", ALICE, "rate = 2.0"),
        ("bulk", BULK, "rate = 0.1\nmax_wait = \"50s\""),
    ];
    let config = files.write("gateway.toml", &toml_with(&token, &both));
    let bin = Arc::new(start_binary(&notion, &config).await);

    let mut alice = Vec::new();
    for i in 0..8 {
        let bin = bin.clone();
        alice.push(tokio::spawn(async move {
            get_as(&bin.gw, &format!("/v1/pages/alice-{i}"), ALICE)
                .await
                .status
        }));
    }
    // bulk: the first goes, the second waits 10 s for the key's rate.
    assert_eq!(get_as(&bin.gw, "/v1/pages/bulk-0", BULK).await.status, 200);
    let bulk_waiting = {
        let bin = bin.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let r = get_as(&bin.gw, "/v1/pages/bulk-1", BULK).await;
            (r.status, r.json()["code"].clone(), sent.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    config_rewrite(&files, &token, &both[..1]);
    bin.hup();
    bin.reloads("ok", 1).await;

    let (status, code, took) = bulk_waiting.await.unwrap();
    assert_eq!(
        (status.as_u16(), code.as_str()),
        (401, Some("unauthorized"))
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    assert_eq!(get_as(&bin.gw, "/v1/pages/bulk-2", BULK).await.status, 401);
    for a in alice {
        assert_eq!(a.await.unwrap(), 200);
    }
    let received = notion.received();
    for i in 0..8 {
        let path = format!("/v1/pages/alice-{i}");
        assert_eq!(
            received.iter().filter(|r| r.uri == path).count(),
            1,
            "{path}"
        );
    }
    assert_eq!(
        received.iter().filter(|r| r.uri.contains("bulk")).count(),
        1
    );
}

fn config_rewrite(files: &Files, token: &std::path::Path, keys: &[(&str, &str, &str)]) {
    files.write("gateway.toml", &toml_with(token, keys));
}

/// An invalid file keeps the running configuration (and says so in the metrics); a rotated
/// token file takes effect at the next reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_changes_nothing_and_a_rotated_token_file_is_picked_up() {
    let notion = FakeNotion::start().await;
    let files = Files::new("rotate");
    let token = files.write("token", SYNC_TOKEN);
    let keys = [("alice", ALICE, "")];
    files.write("gateway.toml", &toml_with(&token, &keys));
    let bin = start_binary(&notion, &files.dir.join("gateway.toml")).await;
    assert_eq!(get_as(&bin.gw, "/v1/users/me", ALICE).await.status, 200);

    files.write("gateway.toml", "[access]\nmode = \"nobody\"\n");
    bin.hup();
    bin.reloads("error", 1).await;
    assert_eq!(get_as(&bin.gw, "/v1/users/me", ALICE).await.status, 200);

    files.write("token", "ntn_rotated_token_0002\n");
    files.write("gateway.toml", &toml_with(&token, &keys));
    bin.hup();
    bin.reloads("ok", 1).await;
    assert_eq!(get_as(&bin.gw, "/v1/users/me", ALICE).await.status, 200);
    let auth: Vec<String> = notion
        .received()
        .iter()
        .map(|r| r.header("authorization").unwrap_or("").to_string())
        .collect();
    assert_eq!(
        auth,
        [
            format!("Bearer {SYNC_TOKEN}"),
            format!("Bearer {SYNC_TOKEN}"),
            "Bearer ntn_rotated_token_0002".to_string()
        ]
    );
    // The rotated token is still the integration's: its budget and name, not a stranger's.
    let status = bin.gw.get("/status").await.json();
    let named = status["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["key"] == "sync-job")
        .count();
    assert!(named >= 1, "{status}");
}

/// `notion-gateway keys new` prints a fresh key once and the entry with its digest.
#[test]
fn keys_new_prints_a_key_and_its_entry() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_notion-gateway"))
        .args(["keys", "new", "alice", "--integration", "sync-job"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text.lines().next().unwrap();
    assert!(key.starts_with("ngw_") && key.len() == 68, "{key}");
    assert!(text.contains(&format!("key_sha256 = \"{}\"", hex(sha(key)))));
    assert!(text.contains("name = \"alice\"") && text.contains("integration = \"sync-job\""));
    let again = std::process::Command::new(env!("CARGO_BIN_EXE_notion-gateway"))
        .args(["keys", "new", "alice", "--integration", "sync-job"])
        .output()
        .unwrap();
    assert_ne!(
        String::from_utf8(again.stdout).unwrap().lines().next(),
        Some(key)
    );
}
