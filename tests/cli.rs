//! The `notion-gateway` binary as a person runs it: configuration layering and errors,
//! `check-config`, the default listener, and SIGTERM.
// These tests wait on a real child process, so the wall clock is the right one here.
#![allow(clippy::disallowed_types)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_notion-gateway"));
    // The tests set what they need; nothing from the developer's shell leaks in.
    for (k, _) in std::env::vars() {
        if k.starts_with("NOTION_GATEWAY_")
            || k.eq_ignore_ascii_case("https_proxy")
            || k.eq_ignore_ascii_case("http_proxy")
            || k.eq_ignore_ascii_case("no_proxy")
            || k == "RUST_LOG"
        {
            c.env_remove(k);
        }
    }
    c
}

fn run(c: &mut Command) -> (i32, String, String) {
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_file(name: &str, contents: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ngw-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, contents).unwrap();
    p
}

fn effective(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("{key} not printed:\n{out}"))
        .to_string()
}

#[test]
fn precedence_is_defaults_then_file_then_env_then_flags() {
    let file = temp_file(
        "prec.toml",
        "[server]\nlisten = \"127.0.0.1:1001\"\nrequest_timeout = \"40s\"\n[upstream]\nurl = \"http://127.0.0.1:9001\"\n",
    );
    let (code, out, err) = run(bin().args(["check-config", "--config"]).arg(&file));
    assert_eq!(code, 0, "{err}");
    assert_eq!(effective(&out, "listen"), "\"127.0.0.1:1001\"");
    assert_eq!(effective(&out, "request_timeout"), "\"40s\"");
    assert_eq!(effective(&out, "idle_timeout"), "\"30s\"", "default kept");

    let (_, out, _) = run(bin()
        .args(["check-config", "--config"])
        .arg(&file)
        .env("NOTION_GATEWAY_SERVER__LISTEN", "127.0.0.1:1002")
        .env("NOTION_GATEWAY_UPSTREAM__URL", "http://127.0.0.1:9002"));
    assert_eq!(effective(&out, "listen"), "\"127.0.0.1:1002\"");
    assert_eq!(effective(&out, "url"), "\"http://127.0.0.1:9002\"");
    assert_eq!(
        effective(&out, "request_timeout"),
        "\"40s\"",
        "file value kept"
    );

    let (_, out, _) = run(bin()
        .args([
            "check-config",
            "--listen",
            "127.0.0.1:1003",
            "--upstream",
            "http://127.0.0.1:9003",
            "--config",
        ])
        .arg(&file)
        .env("NOTION_GATEWAY_SERVER__LISTEN", "127.0.0.1:1002")
        .env("NOTION_GATEWAY_UPSTREAM__URL", "http://127.0.0.1:9002"));
    assert_eq!(effective(&out, "listen"), "\"127.0.0.1:1003\"");
    assert_eq!(effective(&out, "url"), "\"http://127.0.0.1:9003\"");

    // The config path itself can come from the environment.
    let (_, out, _) = run(bin()
        .arg("check-config")
        .env("NOTION_GATEWAY_CONFIG", &file));
    assert_eq!(effective(&out, "listen"), "\"127.0.0.1:1001\"");
}

#[test]
fn bad_configuration_names_the_key_and_where_it_came_from() {
    let file = temp_file("unknown.toml", "[server]\nlisten_addr = \"x\"\n");
    let (code, _, err) = run(bin().args(["check-config", "--config"]).arg(&file));
    assert_eq!(code, 2);
    assert!(err.contains("server.listen_addr"), "{err}");
    // figment prints the path relative to the working directory when that is shorter.
    let dir_and_name = file.iter().rev().take(2).collect::<Vec<_>>();
    let tail = format!(
        "{}/{}",
        dir_and_name[1].to_string_lossy(),
        dir_and_name[0].to_string_lossy()
    );
    assert!(err.contains(&tail), "{err}");

    let (code, _, err) = run(bin()
        .arg("check-config")
        .env("NOTION_GATEWAY_UPSTREAM__ATTEMPT_TIMEOUT", "soon"));
    assert_eq!(code, 2);
    assert!(err.contains("upstream.attempt_timeout"), "{err}");
    assert!(
        err.contains("NOTION_GATEWAY_UPSTREAM__ATTEMPT_TIMEOUT"),
        "{err}"
    );

    let file = temp_file("badurl.toml", "[upstream]\nurl = \"api.notion.com\"\n");
    let (code, _, err) = run(bin().args(["check-config", "--config"]).arg(&file));
    assert_eq!(code, 2);
    assert!(
        err.contains("`upstream.url`") && err.contains("TOML file"),
        "{err}"
    );

    let (code, _, err) = run(bin().args(["check-config", "--listen", "everywhere"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("server.listen") && err.contains("command-line flag"),
        "{err}"
    );

    let (code, _, err) = run(bin().args(["check-config", "--config", "/nonexistent/ngw.toml"]));
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/ngw.toml"), "{err}");

    let (code, _, err) = run(bin().args(["check-config", "--log-format", "xml"]));
    assert_eq!(code, 2);
    assert!(err.contains("xml"), "{err}");
}

#[test]
fn check_config_redacts_proxy_credentials() {
    let (code, out, err) = run(bin().arg("check-config").env(
        "NOTION_GATEWAY_UPSTREAM__PROXY",
        "http://alice:hunter2@127.0.0.1:3128",
    ));
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("hunter2") && !out.contains("alice"), "{out}");
    assert!(out.contains("127.0.0.1:3128"), "{out}");
    assert!(out.contains("credentials set, redacted"), "{out}");

    // From the standard environment variable too.
    let (_, out, _) = run(bin()
        .arg("check-config")
        .env("HTTPS_PROXY", "http://bob:pw@127.0.0.1:3129")
        .env("NO_PROXY", "example.com"));
    assert!(
        !out.contains("bob") && out.contains("127.0.0.1:3129"),
        "{out}"
    );
    // NO_PROXY naming the upstream disables it.
    let (_, out, _) = run(bin()
        .arg("check-config")
        .env("HTTPS_PROXY", "http://127.0.0.1:3129")
        .env("NO_PROXY", "api.notion.com"));
    assert!(out.contains("proxy: none"), "{out}");
}

#[test]
fn ca_bundle_is_read_and_checked_at_start() {
    // Any PEM certificate will do; generate one.
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["ca.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let pem = temp_file("ca.pem", &cert.pem());
    let (code, out, err) = run(bin()
        .arg("check-config")
        .env("NOTION_GATEWAY_UPSTREAM__CA_BUNDLE", &pem));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("extra CA certificates: 1"), "{out}");

    let not_pem = temp_file("not-a-ca.pem", "hello\n");
    let (code, _, err) = run(bin()
        .arg("check-config")
        .env("NOTION_GATEWAY_UPSTREAM__CA_BUNDLE", &not_pem));
    assert_eq!(code, 2);
    assert!(
        err.contains("upstream.ca_bundle") && err.contains("no PEM certificate"),
        "{err}"
    );

    let (code, _, err) = run(bin()
        .arg("check-config")
        .env("NOTION_GATEWAY_UPSTREAM__CA_BUNDLE", "/nonexistent/ca.pem"));
    assert_eq!(code, 2);
    assert!(
        err.contains("upstream.ca_bundle") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
}

/// The shipped reference file lists every key at its default: with every commented key line
/// uncommented, the effective configuration is exactly the defaults.
#[test]
fn reference_config_file_lists_every_key_at_its_default() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/notion-gateway.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let key_line = |l: &str| {
        let l = l.trim_start_matches("# ");
        l.split_once(" = ").is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
    };
    let uncommented: String = text
        .lines()
        .filter(|l| !l.starts_with("# ") || key_line(l))
        // Optional keys are documented with an example value, not a default.
        .filter(|l| {
            !["# ca_bundle", "# proxy", "# no_proxy", "# redis_url"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(|l| l.trim_start_matches("# "))
        .collect::<Vec<_>>()
        .join("\n");
    let file = temp_file("reference.toml", &uncommented);
    let (code, with_file, err) = run(bin().args(["check-config", "--config"]).arg(&file));
    assert_eq!(code, 0, "{err}\n{uncommented}");
    let (_, defaults, _) = run(bin().arg("check-config"));
    assert_eq!(with_file, defaults);

    // And every key the gateway knows is in the file.
    let known: Vec<String> = defaults
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.to_string()))
        .chain(["ca_bundle", "proxy", "no_proxy", "redis_url"].map(String::from))
        .collect();
    for key in known {
        assert!(
            text.contains(&format!("# {key} = ")),
            "{key} is not documented in {path}"
        );
    }
}

/// `notion-gateway` with no arguments serves on 127.0.0.1:8787 and stops cleanly on SIGTERM.
#[test]
fn no_arguments_serves_on_8787_and_sigterm_stops_it() {
    let mut child = bin()
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut listening = false;
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if line.contains("listening") {
            assert!(line.contains("127.0.0.1:8787"), "{line}");
            assert!(line.contains("https://api.notion.com"), "{line}");
            listening = true;
            break;
        }
    }
    assert!(listening, "no listening line");

    let mut s = std::net::TcpStream::connect("127.0.0.1:8787").unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(code) = child.try_wait().unwrap() {
            assert!(code.success(), "exit status {code}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("shutdown complete")),
        "{rest:?}"
    );
}
