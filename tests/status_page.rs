//! The `/status` HTML page in a real browser: Debian's Chromium, headless, loads it from a
//! gateway in front of the fake Notion while traffic flows, and its DOM afterwards shows that
//! the page's script ran and kept it current (several refreshes, readiness and budget
//! backend filled in, the chart drawn, counts newer than the page's first render), that fields
//! it does not know are shown, and that no token appears. Gated: needs `chromium`
//! (`.ci/run` installs Debian's package and runs `cargo test --test status_page -- --ignored`).
// Chromium runs as a child process for real seconds.
#![allow(clippy::disallowed_types)]

mod support;

use std::process::Command;
use std::time::Duration;

use http::Method;
use support::*;

const TOKEN: &str = "ntn_BROWSERSECRET_token";

fn chromium() -> String {
    for c in ["chromium", "chromium-browser", "/usr/bin/chromium"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return c.to_owned();
        }
    }
    panic!(
        "chromium is not installed: apt-get install chromium (Debian's package; .ci/run does), \
         or run this test without --ignored"
    );
}

/// The page's DOM after the browser ran it for `budget_ms` of virtual time.
fn dump_dom(browser: &str, url: &str, budget_ms: u32) -> String {
    let profile =
        std::env::temp_dir().join(format!("ngw-chromium-{}-{budget_ms}", std::process::id()));
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("chromium runs");
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        dom.contains("</html>"),
        "chromium printed no DOM (status {}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    dom
}

/// The number in `data-updates="N"` on the page's body.
fn updates(dom: &str) -> u32 {
    dom.split("data-updates=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// "N ok" in the first token row.
fn ok_count(text: &str) -> u64 {
    text.split(" ok, ")
        .next()
        .and_then(|l| l.rsplit('>').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ok count in {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Debian's chromium; .ci/run installs it and runs this"]
async fn the_status_page_updates_itself_in_a_real_browser() {
    let browser = chromium();
    let notion = FakeNotion::start().await;
    let mut cfg = config_for(&notion);
    cfg.limits.per_minute = 1_000_000; // the shaper out of the way
    let gw = TestGateway::start(cfg).await;
    let send = |gw: &TestGateway| {
        gw.send_detached(
            gw.request_as(Method::GET, "/v1/users/me", TOKEN)
                .body(empty())
                .unwrap(),
        )
    };
    assert_eq!(send(&gw).await.status, 200);
    let before = gw.get("/status").await.json();
    let key = before["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["upstream"]["ok"] == 1)
        .map(|t| t["key"].as_str().unwrap().to_owned())
        .unwrap();

    // Traffic while the browser runs, so the counts it shows at the end are newer than the
    // ones it was served with.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let stop = stop.clone();
        let reqs: Vec<_> = (0..400).map(|_| send(&gw)).collect();
        tokio::spawn(async move {
            for r in reqs {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                assert_eq!(r.await.status, 200);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let url = gw.url("/status");
    let b = browser.clone();
    let dom = tokio::task::spawn_blocking(move || dump_dom(&b, &url, 6000))
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.await.unwrap();

    assert!(updates(&dom) >= 2, "the script refreshed the page: {dom}");
    assert!(dom.contains("<svg"), "the chart is drawn: {dom}");
    assert!(dom.contains("data-series=\"requests\""), "{dom}");
    assert!(
        dom.contains("id=\"ready\" class=\"ok\">ready<"),
        "readiness shown: {dom}"
    );
    assert!(
        dom.contains("id=\"backend\" class=\"\">local<"),
        "budget backend: {dom}"
    );
    assert!(dom.contains(">updated "), "{dom}");
    assert!(dom.contains(&key), "{dom}");
    let row = dom
        .split("<tr>")
        .find(|r| r.contains(&key))
        .unwrap_or_else(|| panic!("no row for {key}: {dom}"));
    assert!(
        ok_count(row) > 1,
        "the row shows counts from a later /status than the first render: {row}"
    );
    assert!(
        !dom.contains("BROWSERSECRET"),
        "no token on the page: {dom}"
    );
    assert!(!dom.contains("id=\"updated\">update failed"), "{dom}");
}

/// Without the script's help the page still reads (rendered by the gateway), and the script
/// and styles are inline: nothing is fetched from elsewhere.
#[tokio::test]
async fn the_status_page_is_self_contained() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    assert_eq!(gw.get("/v1/users/me").await.status, 200);
    let page = gw
        .send(
            gw.request(Method::GET, "/status")
                .header("accept", "text/html")
                .body(empty())
                .unwrap(),
        )
        .await;
    let html = String::from_utf8_lossy(&page.body);
    assert!(
        html.contains("<script>") && html.contains("setInterval(tick"),
        "{html}"
    );
    for external in ["src=", "href=", "http://", "https://", "@import", "url("] {
        let outside = html
            .replace("http://www.w3.org/2000/svg", "")
            .replace(&notion.url(), "");
        assert!(
            !outside.contains(external),
            "the page refers to something outside itself ({external})"
        );
    }
    assert!(html.contains("1 ok, 0 4xx, 0 5xx"), "{html}");
}
