//! Gateway keys under attack and at the edges: what a review of the keys change found, each
//! a black-box reproduction (revocation races, mangled keys, extreme settings, reloads).

mod support;

use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use sha2::Digest as _;
use support::*;
use tokio::sync::mpsc;
use tokio::time::Instant;

const TOKEN: &str = "ntn_sync_job_token_0001";
const ALICE: &str = "ngw_a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const CAROL: &str = "ngw_c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3";

fn hex(s: &str) -> String {
    sha2::Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `mode`, the `sync-job` integration (`integration_extra`), and keys `(name, secret, extra)`.
fn cfg(
    notion: &FakeNotion,
    mode: &str,
    integration_extra: &str,
    keys: &[(&str, &str, &str)],
) -> notion_gateway::Config {
    cfg_token(notion, TOKEN, mode, integration_extra, keys)
}

fn cfg_token(
    notion: &FakeNotion,
    held: &str,
    mode: &str,
    integration_extra: &str,
    keys: &[(&str, &str, &str)],
) -> notion_gateway::Config {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ngw-review-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::File::create(&token)
        .unwrap()
        .write_all(held.as_bytes())
        .unwrap();
    let mut t = format!(
        "[access]\nmode = \"{mode}\"\n\n[[integrations]]\nname = \"sync-job\"\ntoken_file = \"{}\"\n{integration_extra}\n",
        token.display()
    );
    for (name, secret, extra) in keys {
        t.push_str(&format!(
            "\n[[keys]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\nintegration = \"sync-job\"\n{extra}\n",
            hex(secret)
        ));
    }
    let path = dir.join("gateway.toml");
    std::fs::write(&path, t).unwrap();
    let mut c = notion_gateway::config::load(&notion_gateway::config::Overrides {
        config_file: Some(path),
        upstream: Some(notion.url()),
        ..Default::default()
    })
    .unwrap()
    .config;
    c.limits.discover_workspaces = false;
    c
}

type Reload = mpsc::UnboundedSender<Result<notion_gateway::Config, String>>;

async fn start_reloading(c: notion_gateway::Config) -> (TestGateway, Reload) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(notion_gateway::server::run_reloading(
        c,
        listener,
        std::future::pending(),
        rx,
    ));
    (TestGateway::attach(addr), tx)
}

async fn has_key(gw: &TestGateway, name: &str) -> bool {
    gw.get("/status").await.json()["access"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["name"] == name)
}

async fn reload_until(
    gw: &TestGateway,
    tx: &Reload,
    c: notion_gateway::Config,
    name: &str,
    present: bool,
) {
    tx.send(Ok(c)).unwrap();
    for _ in 0..200 {
        if has_key(gw, name).await == present {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("reload not applied");
}

/// A request that resolved its key before a reload removed it (here: while its body was
/// still uploading) never reaches Notion: the revocation wins over a ticket granted in the
/// same instant, and is checked again once the ticket is granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_before_its_request_is_sent_never_reaches_notion() {
    let notion = FakeNotion::start().await;
    let with = || cfg(&notion, "keys", "", &[("alice", ALICE, "")]);
    let without = || cfg(&notion, "keys", "", &[]);
    let (gw, tx) = start_reloading(with()).await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        reload_until(&gw, &tx, with(), "alice", true).await;
        let (body_tx, body) = channel_body();
        let req = gw
            .request_as(Method::POST, "/v1/pages", ALICE)
            .header("content-type", "application/json")
            .header("content-length", "2")
            .body(body)
            .unwrap();
        let pending = tokio::spawn(gw.send_detached(req));
        body_tx.send(Bytes::from_static(b"{")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await; // the key is resolved now
        reload_until(&gw, &tx, without(), "alice", false).await; // alice revoked
        body_tx.send(Bytes::from_static(b"}")).await.unwrap();
        statuses.push(pending.await.unwrap().status.as_u16());
    }
    assert!(
        notion.received().is_empty(),
        "a revoked key's requests reached Notion: statuses {statuses:?}"
    );
}

/// A gateway key never reaches Notion in `open` mode, whatever the whitespace between the
/// scheme and the key (SP or HTAB, RFC 9110) and however it is mangled.
#[tokio::test]
async fn a_gateway_key_never_reaches_notion_whatever_the_spacing() {
    let notion = FakeNotion::start().await;
    let (gw, _tx) = start_reloading(cfg(&notion, "open", "", &[("alice", ALICE, "")])).await;
    for auth in [format!("Bearer\t{ALICE}"), "Bearer\tngw_typo".to_string()] {
        let req = http::Request::builder()
            .method(Method::GET)
            .uri(gw.url("/v1/users/me"))
            .header("authorization", auth.as_str())
            .body(empty())
            .unwrap();
        let _ = gw.send(req).await;
    }
    let leaked: Vec<String> = notion
        .received()
        .iter()
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .filter(|a| a.contains("ngw_"))
        .collect();
    assert!(leaked.is_empty(), "Notion received {leaked:?}");
}

/// Settings a request could overflow on are refused when the configuration is read: a `rate`
/// below 0.001 per second, a `max_wait` beyond the request deadline.
#[test]
fn extreme_rates_and_waits_are_refused_by_validation() {
    let notion_url = "http://127.0.0.1:9";
    for (extra, expect) in [
        ("rate = 1e-300", "rate must be between 0.001 and 1000"),
        ("rate = 0.0", "rate must be between 0.001 and 1000"),
        (
            "max_wait = \"300000000000y\"",
            "max_wait must be greater than zero and at most",
        ),
        (
            "max_wait = \"59s\"",
            "max_wait must be greater than zero and at most",
        ),
    ] {
        let dir = std::env::temp_dir().join(format!("ngw-edges-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, TOKEN).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(
            &path,
            format!(
                "[[integrations]]\nname = \"sync-job\"\ntoken_file = \"{}\"\n\n[[keys]]\nname = \"alice\"\nkey_sha256 = \"{}\"\nintegration = \"sync-job\"\n{extra}\n",
                token.display(),
                hex(ALICE)
            ),
        )
        .unwrap();
        let err = notion_gateway::config::load(&notion_gateway::config::Overrides {
            config_file: Some(path),
            upstream: Some(notion_url.into()),
            ..Default::default()
        })
        .err()
        .unwrap_or_else(|| panic!("{extra} was accepted"))
        .to_string();
        assert!(
            err.contains("`keys`") && err.contains(expect),
            "{extra}: {err}"
        );
    }
}

/// A key's `max_wait` bounds all its waiting together: its own rate first, then the queue.
#[tokio::test(start_paused = true)]
async fn a_keys_max_wait_bounds_its_whole_wait() {
    let notion = FakeNotion::start().await;
    let c = cfg(
        &notion,
        "keys",
        "per_minute = 6",
        &[
            (
                "alice",
                ALICE,
                "rate = 0.2\nmax_wait = \"6s\"\npriority = \"background\"",
            ),
            ("carol", CAROL, ""),
        ],
    );
    let (gw, _tx) = start_reloading(c).await;
    let gw = std::sync::Arc::new(gw);
    // carol keeps the integration's budget busy.
    let mut carol = Vec::new();
    for i in 0..20 {
        let gw = gw.clone();
        carol.push(tokio::spawn(async move {
            let _ = gw
                .send(
                    gw.request_as(Method::GET, &format!("/v1/pages/c{i}"), CAROL)
                        .body(empty())
                        .unwrap(),
                )
                .await;
        }));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    let first = gw.clone();
    let a1 = tokio::spawn(async move {
        first
            .send(
                first
                    .request_as(Method::GET, "/v1/pages/a1", ALICE)
                    .body(empty())
                    .unwrap(),
            )
            .await
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let sent = Instant::now();
    let r = gw
        .send(
            gw.request_as(Method::GET, "/v1/pages/a2", ALICE)
                .body(empty())
                .unwrap(),
        )
        .await;
    let took = sent.elapsed();
    let _ = a1.await;
    for c in carol {
        c.abort();
    }
    assert!(
        took <= Duration::from_millis(6500),
        "alice's request (max_wait 6s) was answered {} after {took:?}",
        r.status
    );
}

/// A reload applies the integrations' rotated tokens only: an integration it adds (with its
/// own budget) waits for a restart, as the reload's log line says.
#[tokio::test]
async fn a_reload_does_not_half_apply_integration_budgets() {
    let notion = FakeNotion::start().await;
    let (gw, tx) = start_reloading(cfg(&notion, "open", "", &[("alice", ALICE, "")])).await;
    let other = "ntn_other_token_0002";
    let extra = format!(
        "\n[[integrations]]\nname = \"other\"\ntoken_sha256 = \"{}\"\nplan = \"business\"\n",
        hex(other)
    );
    reload_until(
        &gw,
        &tx,
        cfg(&notion, "open", &extra, &[("bob", ALICE, "")]),
        "bob",
        true,
    )
    .await;
    let r = gw
        .send(
            gw.request_as(Method::GET, "/v1/users/me", other)
                .body(empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, 200);
    let status = gw.get("/status").await.json();
    let names: Vec<String> = status["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{} {}", t["key"], t["plan"]))
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with("\"other\"")),
        "restart-only [[integrations]] budget applied by a reload: {names:?}"
    );
}

/// After a token rotation the integration's name (in `/status` and the metrics) means its
/// new token only; the old token's lane is an ordinary one until it goes idle.
#[tokio::test]
async fn a_rotated_token_keeps_one_lane_per_integration() {
    let notion = FakeNotion::start().await;
    let keys = [("alice", ALICE, "")];
    let (gw, tx) = start_reloading(cfg_token(&notion, TOKEN, "keys", "", &keys)).await;
    for i in 0..3 {
        let p = format!("/v1/pages/a{i}");
        assert_eq!(
            gw.send(gw.request_as(Method::GET, &p, ALICE).body(empty()).unwrap())
                .await
                .status,
            200
        );
    }
    // rotate: same key, the file now holds a new token (bob is only a marker of the reload)
    let rotated = cfg_token(
        &notion,
        "ntn_rotated_0002",
        "keys",
        "",
        &[("alice", ALICE, ""), ("bob", CAROL, "")],
    );
    reload_until(&gw, &tx, rotated, "bob", true).await;
    assert_eq!(
        gw.send(
            gw.request_as(Method::GET, "/v1/pages/b", ALICE)
                .body(empty())
                .unwrap()
        )
        .await
        .status,
        200
    );
    let status = gw.get("/status").await.json();
    let lanes: Vec<String> = status["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["key"] == "sync-job")
        .map(|t| t["window"].to_string())
        .collect();
    let metrics = String::from_utf8_lossy(&gw.get("/metrics").await.body).into_owned();
    let used: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("notion_gateway_window_used{integration=\"sync-job\""))
        .collect();
    assert_eq!(
        lanes.len(),
        1,
        "sync-job lanes: {lanes:?}; metrics: {used:?}"
    );
}

/// A background key without a `max_wait` of its own waits for its `rate` up to the request
/// deadline (`server.request_timeout`), not `limits.max_wait`.
#[tokio::test(start_paused = true)]
async fn a_background_keys_rate_waits_up_to_the_request_deadline() {
    let notion = FakeNotion::start().await;
    let c = cfg(
        &notion,
        "keys",
        "",
        &[("bulk", ALICE, "rate = 0.05\npriority = \"background\"")],
    );
    let (gw, _tx) = start_reloading(c).await;
    let gw = std::sync::Arc::new(gw);
    let mut calls = Vec::new();
    for i in 0..3 {
        let gw = gw.clone();
        calls.push(tokio::spawn(async move {
            let p = format!("/v1/pages/b{i}");
            gw.send(gw.request_as(Method::GET, &p, ALICE).body(empty()).unwrap())
                .await
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut got = Vec::new();
    for c in calls {
        let r = c.await.unwrap();
        got.push((
            r.status.as_u16(),
            r.json()["additional_data"]["rate_limit_reason"].clone(),
        ));
    }
    assert!(got.iter().all(|(s, _)| *s == 200), "{got:?}");
}

/// Raising a key's `rate` by a reload takes effect at its next request.
#[tokio::test]
async fn raising_a_keys_rate_by_reload_takes_effect_at_once() {
    let notion = FakeNotion::start().await;
    let slow = cfg(&notion, "keys", "", &[("alice", ALICE, "rate = 0.001")]);
    let (gw, tx) = start_reloading(slow).await;
    let get =
        |p: &'static str| gw.send(gw.request_as(Method::GET, p, ALICE).body(empty()).unwrap());
    assert_eq!(get("/v1/pages/1").await.status, 200);
    let fast = cfg(
        &notion,
        "keys",
        "",
        &[("alice", ALICE, "rate = 100.0"), ("bob", CAROL, "")],
    );
    reload_until(&gw, &tx, fast, "bob", true).await;
    let r = get("/v1/pages/2").await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
}
