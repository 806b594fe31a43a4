//! The container image and the compose stack agree with the binary: the Dockerfile's port,
//! user, health check and paths; every variable they set is a real configuration key; every
//! file the stack mounts exists. (`.ci/run` also runs `docker-compose config -q`.)

mod support;

use std::path::Path;
use std::process::Command;

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
    let out = Command::new(BIN)
        .arg("check-config")
        .envs(env.iter().cloned())
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
