//! `notion-gateway report` over a log the gateway itself wrote: the binary serves with
//! `log.file` in front of the fake Notion, takes traffic with failures (a 502 storm on a read,
//! a large create Notion answers 502, a refused path), stops, and `report` reads the file.
// The gateway runs as a child process; waiting on it uses the wall clock.
#![allow(clippy::disallowed_types)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use http::Method;
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_notion-gateway");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn report(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).arg("report").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_analyses_the_log_the_gateway_wrote() {
    let notion = FakeNotion::start().await;
    let dir = std::env::temp_dir().join(format!("ngw-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("requests.jsonl");
    let _ = std::fs::remove_file(&log);
    let port = free_port();
    let mut child = Command::new(BIN)
        .env("NOTION_GATEWAY_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("NOTION_GATEWAY_UPSTREAM__URL", notion.url())
        .env("NOTION_GATEWAY_LOG__FILE", &log)
        .env("NOTION_GATEWAY_RETRY__BACKOFF_BASE", "1ms")
        .env("NOTION_GATEWAY_RETRY__BACKOFF_CAP", "2ms")
        .env("NOTION_GATEWAY_LIMITS__PER_MINUTE", "100000")
        // Six attempts, so the storm below (six 502s) reaches the caller.
        .env("NOTION_GATEWAY_RETRY__MAX_ATTEMPTS", "6")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut up = false;
    for _ in 0..200 {
        if raw_get(port, "/healthz").await.is_some() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the gateway did not start");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<ClientBody>();
    let send = |method: Method, path: &str, body: Vec<u8>| {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://127.0.0.1:{port}{path}"))
            .header("authorization", "Bearer ntn_REPORTSECRET_token")
            .header("content-length", body.len())
            .body(full(body))
            .unwrap();
        let c = client.clone();
        async move { Resp::read(c.request(req).await.unwrap()).await }
    };

    // Two reads that work, one after a 502 (retried).
    assert_eq!(send(Method::GET, "/v1/users/me", vec![]).await.status, 200);
    notion.push(Reply::html_502());
    assert_eq!(send(Method::GET, "/v1/pages/abc", vec![]).await.status, 200);
    // A read that meets six HTML 502s: the caller gets the last one.
    for _ in 0..6 {
        notion.push(Reply::html_502().with_header("x-notion-request-id", "storm-req-id"));
    }
    assert_eq!(
        send(Method::GET, "/v1/databases/xyz", vec![]).await.status,
        502
    );
    // A create of 2 MB that Notion answers 502: never retried, called out as large.
    notion.push(
        Reply::notion_error(502, "bad_gateway").with_header("x-notion-request-id", "large-req-id"),
    );
    let big = vec![b'x'; 2_000_000];
    assert_eq!(send(Method::POST, "/v1/pages", big).await.status, 502);
    // A path outside the API, refused by the gateway.
    assert_eq!(send(Method::GET, "/nowhere", vec![]).await.status, 404);

    // SIGTERM flushes the log.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let _ = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap();

    let path = log.to_str().unwrap().to_owned();
    let (ok, out, err) = report(&["--json", &path]);
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(r["requests"], 5, "{r:#}");
    assert_eq!(r["errors"], 3, "{r:#}");
    assert_eq!(r["server_errors"], 2, "{r:#}");
    assert_eq!(r["by_status"]["502"], 2, "{r:#}");
    assert_eq!(r["by_status"]["404"], 1, "{r:#}");
    assert_eq!(r["large_requests"]["requests"], 1, "{r:#}");
    assert_eq!(r["large_requests"]["errors"], 1, "{r:#}");
    assert_eq!(
        r["large_requests"]["failures"][0]["notion_request_id"], "large-req-id",
        "{r:#}"
    );
    assert_eq!(r["retries"]["retried_requests"], 2, "{r:#}");
    // Every failed attempt is listed: one before the retried read worked, six of the storm
    // (the last one is what the caller got), and the create's one.
    assert_eq!(r["retries"]["failed_attempts"]["502"], 8, "{r:#}");
    let ids: Vec<&str> = r["recent_failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["notion_request_id"].as_str())
        .collect();
    assert!(
        ids.contains(&"storm-req-id") && ids.contains(&"large-req-id"),
        "{ids:?}"
    );
    let hours = r["by_hour"].as_object().unwrap();
    assert_eq!(hours.len(), 1, "one hour of traffic: {hours:?}");
    assert_eq!(r["peak_error_hour"]["errors"], 3, "{r:#}");
    let routes: Vec<&str> = r["slowest_routes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["route"].as_str())
        .collect();
    assert!(routes.contains(&"/v1/databases/{id}"), "{routes:?}");
    assert!(!out.contains("REPORTSECRET"));

    // The text form says the same, and a line still being written is counted, not fatal.
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    f.write_all(br#"{"timestamp":"2026-11-25T10:00:00Z","message":"requ"#)
        .unwrap();
    drop(f);
    let (ok, text, err) = report(&[&path]);
    assert!(ok, "{err}");
    assert!(
        text.contains("requests: 5; errors (4xx and 5xx): 3"),
        "{text}"
    );
    assert!(text.contains("peak error hour: "), "{text}");
    assert!(text.contains("1 cut off at the end of a file"), "{text}");
    assert!(
        text.contains("large requests (over 1 MiB): 1, of which 1 failed"),
        "{text}"
    );
    assert!(text.contains("large-req-id"), "{text}");

    // Without a file and without log.file: a clear error.
    let (ok, _, err) = report(&[]);
    assert!(!ok && err.contains("log.file"), "{err}");
    // With log.file configured, that file is read.
    let out = Command::new(BIN)
        .arg("report")
        .env("NOTION_GATEWAY_LOG__FILE", &log)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("requests: 5;"));
    let _ = std::fs::remove_dir_all(&dir);
}
