//! The container image and the compose stack agree with the binary: the Dockerfile's port,
//! user, health check and paths; every variable they set is a real configuration key; every
//! file the stack mounts exists; every variable it reads is in `.env.example`; ports are
//! published on loopback unless `.env` opts in; Prometheus scrapes every gateway service on
//! its port; the compose configuration starts with its token variables empty. (`.ci/run` also
//! runs `docker-compose config -q`, and `.ci/docker-context.py` builds the Dockerfile's build
//! stage from exactly the files it copies.)

mod support;

use std::path::Path;
use std::process::Command;

use sha2::Digest as _;

use support::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_notion-gateway");

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(path)).unwrap()
}

/// `NAME=value` pairs of every NOTION_GATEWAY_* variable in a Dockerfile `ENV` or a compose
/// `environment:` mapping.
fn gateway_env(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim().trim_end_matches('\\').trim();
            let l = l
                .strip_prefix("ENV ")
                .or_else(|| l.strip_prefix("- "))
                .unwrap_or(l);
            if !l.starts_with("NOTION_GATEWAY_") {
                return None;
            }
            let (k, v) = l.split_once('=').or_else(|| l.split_once(": "))?;
            Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

#[test]
fn the_dockerfile_matches_the_binary() {
    let d = read("Dockerfile");
    let env = gateway_env(&d);
    let listen = env
        .iter()
        .find(|(k, _)| k == "NOTION_GATEWAY_SERVER__LISTEN")
        .map(|(_, v)| v.clone())
        .expect("the image sets server.listen");
    assert!(
        listen.starts_with("0.0.0.0:"),
        "reachable from outside the container: {listen}"
    );
    let port = listen.rsplit(':').next().unwrap();
    assert!(
        d.lines().any(|l| l.trim() == format!("EXPOSE {port}")),
        "EXPOSE {port}"
    );
    let user = d
        .lines()
        .find_map(|l| l.trim().strip_prefix("USER "))
        .expect("a USER line");
    assert!(!["root", "0"].contains(&user.trim()), "non-root: {user}");
    assert!(
        d.contains(r#"CMD ["/usr/local/bin/notion-gateway", "healthcheck"]"#),
        "the health check is the binary's own subcommand"
    );
    assert!(d.contains(
        "COPY --from=build /src/target/release/notion-gateway /usr/local/bin/notion-gateway"
    ));
    assert!(d.contains(r#"ENTRYPOINT ["/usr/local/bin/notion-gateway"]"#));
    let config = env
        .iter()
        .find(|(k, _)| k == "NOTION_GATEWAY_CONFIG")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(d.contains(&format!("COPY config/notion-gateway.toml {config}")));
    // The image's settings are accepted by the binary, with the file it ships.
    let out = Command::new(BIN)
        .arg("check-config")
        .envs(
            env.iter()
                .filter(|(k, _)| k != "NOTION_GATEWAY_CONFIG")
                .cloned(),
        )
        .env(
            "NOTION_GATEWAY_CONFIG",
            Path::new(ROOT).join("config/notion-gateway.toml"),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_compose_stack_mounts_existing_files_and_sets_real_keys() {
    let c = read("docker-compose.yml");
    let mut mounts = 0;
    for l in c.lines() {
        if let Some(m) = l.trim().strip_prefix("- ./") {
            let host = m.split(':').next().unwrap();
            assert!(
                Path::new(ROOT).join(host).exists(),
                "compose mounts ./{host}, which is missing"
            );
            mounts += 1;
        }
    }
    assert!(mounts >= 6, "{mounts} mounts found");
    let env = gateway_env(&c);
    assert!(env.len() >= 2, "{env:?}");
    let env: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| (k, with_defaults(&v)))
        .collect();
    let out = Command::new(BIN)
        .arg("check-config")
        .envs(env.iter().cloned())
        .env(
            "NOTION_GATEWAY_CONFIG",
            Path::new(ROOT).join("config/compose/notion-gateway.toml"),
        )
        .env("SYNC_JOB_NOTION_TOKEN", "")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And an unknown key would have been caught.
    let out = Command::new(BIN)
        .arg("check-config")
        .env("NOTION_GATEWAY_SERVER__LISTN", "0.0.0.0:1")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn the_healthcheck_subcommand_follows_the_gateway() {
    let notion = FakeNotion::start().await;
    let gw = TestGateway::start(config_for(&notion)).await;
    let check = |listen: String| {
        Command::new(BIN)
            .arg("healthcheck")
            .env("NOTION_GATEWAY_SERVER__LISTEN", listen)
            .output()
            .unwrap()
    };
    let ok = tokio::task::spawn_blocking(move || check(format!("0.0.0.0:{}", gw.addr.port())));
    let out = ok.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let out = tokio::task::spawn_blocking(move || check(addr.to_string()))
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("healthcheck"));
}

/// `${VAR:-default}` replaced by its default (what compose does with `.env.example` as is).
fn with_defaults(v: &str) -> String {
    let mut out = v.to_owned();
    while let Some(start) = out.find("${") {
        let Some(end) = out[start..].find('}') else {
            break;
        };
        let inner = &out[start + 2..start + end];
        let default = inner.split_once(":-").map_or("", |(_, d)| d).to_owned();
        out.replace_range(start..start + end + 1, &default);
    }
    out
}

/// Variables compose reads: `${NAME}`, `${NAME:-default}`.
fn compose_variables(text: &str) -> Vec<String> {
    let mut vars: Vec<String> = text
        .split("${")
        .skip(1)
        .filter_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty()).then_some(name)
        })
        .collect();
    vars.sort();
    vars.dedup();
    vars
}

/// The compose file's services: name -> the lines of its block.
fn services(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() && !line.starts_with('#') {
            inside = line.trim_end() == "services:";
            continue;
        }
        if !inside {
            continue;
        }
        if let Some(name) = line
            .strip_prefix("  ")
            .filter(|l| !l.starts_with(' ') && !l.starts_with('#'))
            .and_then(|l| l.trim_end().strip_suffix(':'))
        {
            out.push((name.to_owned(), Vec::new()));
        } else if let Some((_, lines)) = out.last_mut() {
            lines.push(line.trim().to_owned());
        }
    }
    out
}

#[test]
fn compose_variables_are_in_env_example_and_ports_stay_on_loopback() {
    let c = read("docker-compose.yml");
    let example = read(".env.example");
    let documented: Vec<&str> = example
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    let used = compose_variables(&c);
    assert!(used.len() >= 5, "{used:?}");
    for v in &used {
        assert!(
            documented.contains(&v.as_str()),
            "docker-compose.yml reads ${{{v}}}, which .env.example does not list"
        );
    }
    for v in &documented {
        assert!(
            used.iter().any(|u| u == v),
            ".env.example lists {v}, which docker-compose.yml does not read"
        );
    }
    let svcs = services(&c);
    assert!(
        svcs.len() >= 6,
        "{:?}",
        svcs.iter().map(|s| &s.0).collect::<Vec<_>>()
    );
    let mut published = 0;
    for (name, lines) in &svcs {
        let mut in_ports = false;
        for l in lines {
            if l.ends_with(':') {
                in_ports = l == "ports:";
                continue;
            }
            if in_ports {
                if let Some(p) = l.strip_prefix("- ") {
                    let p = p.trim_matches('"');
                    published += 1;
                    assert!(
                        p.starts_with("${GATEWAY_BIND:-127.0.0.1}:")
                            || p.starts_with("${MONITORING_BIND:-127.0.0.1}:"),
                        "{name} publishes {p} beyond loopback by default"
                    );
                }
            }
        }
        // A service that runs the gateway's image builds it: compose never pulls it.
        if lines.iter().any(|l| l == "image: notion-gateway:latest") {
            assert!(lines.iter().any(|l| l == "build: ."), "{name} has no build");
        }
    }
    assert!(published >= 5, "{published} published ports");
    let grafana = &svcs.iter().find(|(n, _)| n == "grafana").unwrap().1;
    assert!(
        grafana
            .iter()
            .any(|l| l == "GF_AUTH_ANONYMOUS_ENABLED: \"false\""),
        "Grafana without anonymous access: {grafana:?}"
    );
}

#[test]
fn prometheus_scrapes_every_gateway_service_on_its_port() {
    let c = read("docker-compose.yml");
    let svcs = services(&c);
    let gateways: Vec<(&String, String)> = svcs
        .iter()
        .filter(|(_, lines)| lines.iter().any(|l| l == "image: notion-gateway:latest"))
        .map(|(name, lines)| {
            // /metrics is on server.admin_listen when it is set, else on server.listen.
            let listen = lines
                .iter()
                .find_map(|l| l.strip_prefix("NOTION_GATEWAY_SERVER__ADMIN_LISTEN: "))
                .or_else(|| {
                    lines
                        .iter()
                        .find_map(|l| l.strip_prefix("NOTION_GATEWAY_SERVER__LISTEN: "))
                })
                .unwrap_or_else(|| panic!("{name} sets server.listen"))
                .trim_matches('"');
            (name, listen.rsplit(':').next().unwrap().to_owned())
        })
        .collect();
    assert_eq!(gateways.len(), 2, "{gateways:?}");
    let prom = read("config/prometheus/prometheus.yml");
    let mut targets = Vec::new();
    let mut dns_port = None;
    for l in prom.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
        for list in [l.strip_prefix("- targets: "), l.strip_prefix("- names: ")]
            .into_iter()
            .flatten()
        {
            let names = list.trim_matches(|c| c == '[' || c == ']');
            for n in names.split(',') {
                targets.push(n.trim().trim_matches('"').to_owned());
            }
        }
        if let Some(p) = l.strip_prefix("port: ") {
            dns_port = Some(p.trim().to_owned());
        }
    }
    for (name, port) in &gateways {
        let static_target = format!("{name}:{port}");
        assert!(
            targets.contains(&static_target)
                || (targets.contains(name) && dns_port.as_deref() == Some(port.as_str())),
            "Prometheus does not scrape {static_target}: {targets:?} (dns port {dns_port:?})"
        );
    }
    // The Alertmanager Prometheus sends to is the compose service.
    assert!(
        targets.contains(&"alertmanager:9093".to_string()),
        "{targets:?}"
    );
    assert!(svcs.iter().any(|(n, _)| n == "alertmanager"));
}

/// The compose configuration names its integrations by token_env; both gateways receive each
/// variable, `.env.example` lists it, and the gateway starts while it is empty (a log line,
/// not a restart loop), naming the integration once it is set.
#[tokio::test]
async fn the_compose_gateway_starts_with_an_empty_token_and_names_it_once_set() {
    let cfg = read("config/compose/notion-gateway.toml");
    let vars: Vec<String> = cfg
        .lines()
        .filter_map(|l| l.trim().strip_prefix("token_env = "))
        .map(|v| v.trim_matches('"').to_owned())
        .collect();
    assert!(!vars.is_empty());
    let c = read("docker-compose.yml");
    let example = read(".env.example");
    for v in &vars {
        assert!(
            example.contains(&format!("\n{v}=")),
            ".env.example lacks {v}"
        );
        let passed = c.matches(&format!("{v}: \"${{{v}:-}}\"")).count();
        assert_eq!(passed, 2, "both gateways get {v}");
    }

    // The stack runs in keys mode; a key is what an operator would add (`keys new`).
    assert!(cfg.contains("[access]\nmode = \"keys\""));
    const KEY: &str = "ngw_0707070707070707070707070707070707070707070707070707070707070707";
    let digest: String = sha2::Sha256::digest(KEY.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let with_key = std::env::temp_dir().join(format!("ngw-compose-{}.toml", std::process::id()));
    std::fs::write(
        &with_key,
        format!(
            "{cfg}\n[[keys]]\nname = \"alice\"\nkey_sha256 = \"{digest}\"\nintegration = \"sync-job\"\n"
        ),
    )
    .unwrap();
    let notion = FakeNotion::start().await;
    let start = |token: &'static str| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(BIN)
            .env("NOTION_GATEWAY_CONFIG", &with_key)
            .env("NOTION_GATEWAY_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("NOTION_GATEWAY_UPSTREAM__URL", notion.url())
            .env("NOTION_GATEWAY_LOG__FORMAT", "json")
            .env("SYNC_JOB_NOTION_TOKEN", token)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        (port, KillOnDrop(child))
    };
    async fn wait_up(port: u16) {
        for _ in 0..200 {
            if raw_get(port, "/healthz").await.is_some() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the gateway did not start");
    }

    let (port, child) = start("");
    wait_up(port).await;
    // SIGTERM: the gateway stops and flushes its log.
    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = tokio::task::spawn_blocking(move || {
        let mut child = child;
        let mut s = String::new();
        use std::io::Read;
        child
            .0
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    })
    .await
    .unwrap();
    assert!(
        out.contains("integration `sync-job` left out: environment variable SYNC_JOB_NOTION_TOKEN (its token_env) is empty")
            && out.contains("\"level\":\"WARN\""),
        "{out}"
    );

    assert!(
        out.contains("key `alice` left out: its integration `sync-job` is left out"),
        "{out}"
    );

    let (port, _child) = start("ntn_COMPOSESECRET_token");
    wait_up(port).await;
    let send = |bearer: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(
            format!(
                "GET /v1/users/me HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    };
    // A Notion token is refused in keys mode, before it reaches Notion or costs any state.
    assert!(send("ntn_COMPOSESECRET_token")
        .await
        .starts_with("HTTP/1.0 401"));
    assert!(notion.received().is_empty());
    assert!(send(KEY).await.starts_with("HTTP/1.0 200"));
    assert_eq!(
        notion.received()[0].header("authorization"),
        Some("Bearer ntn_COMPOSESECRET_token")
    );
    let (_, status) = raw_get(port, "/status").await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["tokens"][0]["key"], "sync-job", "{v}");
    assert!(!status.contains("COMPOSESECRET") && !status.contains(KEY));
    let _ = std::fs::remove_file(&with_key);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
