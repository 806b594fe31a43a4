//! Configuration parsing: TOML through the same layering and validation as `--config` (and
//! `check-config`'s redacted rendering of the result).
//!
//! Properties: no panic, whatever the file says; an accepted configuration renders. The input
//! is parsed as TOML first only to drop `upstream.ca_bundle` (a path the loader reads: a fuzzer
//! could name `/dev/zero`); everything else reaches the loader as the fuzzer wrote it.
#![no_main]

use std::io::Write;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use notion_gateway::config::{self, redact_userinfo, Overrides};

fn file() -> &'static std::path::Path {
    static PATH: OnceLock<std::path::PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("ngw-fuzz-config-{}.toml", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = redact_userinfo(text);
    if let Ok(mut v) = text.parse::<toml::Table>() {
        if let Some(toml::Value::Table(u)) = v.get_mut("upstream") {
            if u.remove("ca_bundle").is_some() {
                let Ok(t) = toml::to_string(&v) else {
                    return;
                };
                return load(&t);
            }
        }
    }
    load(text);
});

fn load(text: &str) {
    let Ok(mut f) = std::fs::File::create(file()) else {
        return;
    };
    if f.write_all(text.as_bytes()).is_err() {
        return;
    }
    drop(f);
    let overrides = Overrides {
        config_file: Some(file().to_path_buf()),
        listen: None,
        upstream: None,
        log_format: None,
    };
    if let Ok(loaded) = config::load(&overrides) {
        let _ = loaded.to_redacted_toml();
    }
}
