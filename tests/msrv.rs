//! The declared MSRV (`rust-version` in Cargo.toml, and the README's "Rust toolchain (X or
//! newer)") is at least the highest `rust-version` any locked package declares, as
//! `cargo metadata --locked` reports them: a lock update that needs a newer compiler fails
//! here until the declaration (and the README) follow. The crate's own code is held to the
//! declaration by clippy's `incompatible_msrv` lint, which reads the same `rust-version`.

use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn version(v: &str) -> Vec<u32> {
    let mut parts: Vec<u32> = v.split('.').map(|p| p.parse().unwrap()).collect();
    parts.resize(3, 0);
    parts
}

#[test]
fn declared_rust_version_covers_every_locked_package() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--locked", "--format-version", "1"])
        .current_dir(ROOT)
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "notion-gateway")
        .unwrap();
    let declared = ours["rust_version"]
        .as_str()
        .expect("rust-version is declared");
    let (needed, by) = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] != "notion-gateway")
        .filter_map(|p| {
            let v = p["rust_version"].as_str()?;
            Some((
                version(v),
                format!(
                    "{} {} (rust-version {v})",
                    p["name"].as_str()?,
                    p["version"].as_str()?
                ),
            ))
        })
        .max()
        .unwrap();
    assert!(
        version(declared) >= needed,
        "Cargo.toml declares rust-version = \"{declared}\", but the lock needs {needed:?}: {by}; \
         raise rust-version and the README's toolchain line"
    );
    let short: Vec<String> = version(declared)
        .iter()
        .take(if declared.matches('.').count() >= 2 {
            3
        } else {
            2
        })
        .map(u32::to_string)
        .collect();
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let line = format!("Rust toolchain ({} or newer)", short.join("."));
    assert!(
        readme.contains(&line),
        "README.md should say \"{line}\" (Cargo.toml's rust-version)"
    );
}
