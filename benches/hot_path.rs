//! Criterion benches of what every request pays for on the gateway's hot path:
//! the endpoint catalogue lookup, the shaper's admission and release, the budget (GCRA)
//! decision, the header rewrites in both directions, and the gateway-key lookup; and what a
//! reload with 1 000 keys costs.
//!
//! `cargo bench --bench hot_path` (figures and how they compare: README "Performance").

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderValue, Method};
use notion_gateway::catalogue;
use notion_gateway::config::{self, Overrides};
use notion_gateway::headers;
use notion_gateway::shaper::limiter::Gcra;
use notion_gateway::shaper::Shaper;

const PAGE: &str = "/v1/pages/59833787-2cf9-4fdf-8782-e53db20768a5";
const QUERY: &str =
    "/v1/data_sources/59833787a2cf94fdf8782e53db20768a5/query?filter_properties=title";
const CHILDREN: &str = "/v1/blocks/59833787-2cf9-4fdf-8782-e53db20768a5/children";

fn catalogue_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("catalogue");
    g.bench_function("GET page", |b| {
        b.iter(|| catalogue::classify(black_box(&Method::GET), black_box(PAGE)))
    });
    g.bench_function("POST data source query", |b| {
        b.iter(|| catalogue::classify(black_box(&Method::POST), black_box(QUERY)))
    });
    g.bench_function("PATCH block children", |b| {
        b.iter(|| catalogue::classify(black_box(&Method::PATCH), black_box(CHILDREN)))
    });
    g.bench_function("unknown path", |b| {
        b.iter(|| catalogue::classify(black_box(&Method::GET), black_box("/v1/not/a/route")))
    });
    g.finish();
}

fn shaper_admit_release(c: &mut Criterion) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    let _in_runtime = rt.enter();
    let mut limits = match config::load(&Overrides::default()) {
        Ok(loaded) => loaded.config.limits,
        Err(e) => panic!("embedded defaults: {e}"),
    };
    // A budget that always has room: this measures the bookkeeping, not the waiting.
    limits.per_minute = 100_000_000;
    let shaper = Shaper::new(limits);
    let caller = shaper.caller(Some(b"sync-job"), [127, 0, 0, 1].into());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);

    let mut g = c.benchmark_group("shaper");
    g.bench_function("admit and release, idle token", |b| {
        b.iter(|| {
            // The fast path admits inline: the future is ready at its first poll.
            let ticket = shaper
                .acquire(
                    black_box(b"secret_benchmark_token"),
                    caller,
                    "/v1/users/me",
                    deadline,
                    false,
                    notion_gateway::shaper::Priority::Normal,
                )
                .now_or_never();
            match ticket {
                Some(Ok(t)) => drop(black_box(t)),
                _ => panic!("an idle budget with room must admit at once"),
            }
        })
    });
    g.bench_function("admit and release, 100 known tokens", |b| {
        let tokens: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("secret_token_{i:03}").into_bytes())
            .collect();
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % tokens.len();
            let ticket = shaper
                .acquire(
                    black_box(&tokens[i]),
                    caller,
                    "/v1/users/me",
                    deadline,
                    false,
                    notion_gateway::shaper::Priority::Normal,
                )
                .now_or_never();
            match ticket {
                Some(Ok(t)) => drop(black_box(t)),
                _ => panic!("an idle budget with room must admit at once"),
            }
        })
    });
    g.bench_function("GCRA decision", |b| {
        let start = tokio::time::Instant::now();
        let mut gcra = Gcra::new(3.0, 3, start);
        let mut now = start;
        b.iter(|| {
            // Arrivals exactly one interval apart: every one admitted.
            now += Duration::from_millis(334);
            black_box(gcra.admit(black_box(now)))
        })
    });
    g.finish();
}

fn header_rewrite(c: &mut Criterion) {
    // What @notionhq/client sends, plus a proxy's Connection header to strip.
    let mut request = HeaderMap::new();
    for (k, v) in [
        ("host", "localhost:8787"),
        ("authorization", "Bearer secret_benchmark_token"),
        ("notion-version", "2022-06-28"),
        ("content-type", "application/json"),
        ("accept", "application/json"),
        ("user-agent", "notionhq-client/5.1.0"),
        ("content-length", "212"),
        ("x-gateway-client", "sync-job"),
    ] {
        request.insert(k, HeaderValue::from_static(v));
    }
    let mut with_hop = request.clone();
    with_hop.insert(
        "connection",
        HeaderValue::from_static("keep-alive, x-trace"),
    );
    with_hop.insert("x-trace", HeaderValue::from_static("1"));
    let mut response = HeaderMap::new();
    for (k, v) in [
        ("date", "Wed, 25 Nov 2026 02:00:00 GMT"),
        ("content-type", "application/json; charset=utf-8"),
        ("content-length", "1834"),
        (
            "x-notion-request-id",
            "6d5b8a4f-0c2e-4b0e-9a37-3f3f0c1e2d11",
        ),
        ("cache-control", "no-store"),
        ("connection", "keep-alive"),
    ] {
        response.insert(k, HeaderValue::from_static(v));
    }
    let host = HeaderValue::from_static("api.notion.com");
    let version = HeaderValue::from_static("2022-06-28");

    let mut g = c.benchmark_group("headers");
    g.bench_function("to upstream", |b| {
        b.iter_batched_ref(
            || request.clone(),
            |h| headers::to_upstream(h, &host, Some(&version)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("to upstream, with hop-by-hop", |b| {
        b.iter_batched_ref(
            || with_hop.clone(),
            |h| headers::to_upstream(h, &host, Some(&version)),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("to caller", |b| {
        b.iter_batched_ref(
            || response.clone(),
            headers::to_caller,
            BatchSize::SmallInput,
        )
    });
    g.bench_function("credential", |b| {
        b.iter(|| headers::credential(black_box(&request)).map(<[u8]>::len))
    });
    g.finish();
}

/// A configuration file with `n` gateway keys of one integration (its token in a file), and
/// the key of the last one.
fn keys_file(n: usize) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("ngw-bench-keys-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("{}: {e}", dir.display());
    }
    let token = dir.join("token");
    if let Err(e) = std::fs::write(&token, "ntn_bench_token") {
        panic!("{}: {e}", token.display());
    }
    let mut text = format!(
        "[access]\nmode = \"keys\"\n\n[[integrations]]\nname = \"team\"\ntoken_file = \"{}\"\n",
        token.display()
    );
    let mut last = String::new();
    for i in 0..n {
        last = format!("ngw_{i:064x}");
        text.push_str(&format!(
            "\n[[keys]]\nname = \"person-{i}\"\nkey_sha256 = \"{}\"\nintegration = \"team\"\n",
            notion_gateway::access::key_digest_hex(&last)
        ));
    }
    let file = dir.join("keys.toml");
    if let Err(e) = std::fs::write(&file, text) {
        panic!("{}: {e}", file.display());
    }
    (file, last)
}

fn load(file: &std::path::Path) -> config::Config {
    match config::load(&Overrides {
        config_file: Some(file.to_path_buf()),
        ..Overrides::default()
    }) {
        Ok(l) => l.config,
        Err(e) => panic!("{e}"),
    }
}

fn gateway_keys(c: &mut Criterion) {
    let (file, key) = keys_file(1000);
    let cfg = load(&file);
    let access = notion_gateway::access::Access::new(&cfg);
    let key = match HeaderValue::try_from(format!("Bearer {key}")) {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    };
    let token = HeaderValue::from_static("Bearer ntn_some_notion_token");
    let mut g = c.benchmark_group("access");
    g.bench_function("resolve a key among 1000", |b| {
        b.iter(|| access.resolve(black_box(&key)).map(|k| k.is_some()))
    });
    let open = notion_gateway::access::Access::new(&config::Config::default());
    g.bench_function("resolve a Notion token (open mode)", |b| {
        b.iter(|| open.resolve(black_box(&token)).map(|k| k.is_some()))
    });
    g.sample_size(10);
    g.bench_function("reload 1000 keys (read, validate, apply)", |b| {
        b.iter(|| access.apply(&load(&file)).keys)
    });
    g.finish();
}

criterion_group!(
    benches,
    catalogue_lookup,
    shaper_admit_release,
    header_rewrite,
    gateway_keys
);
criterion_main!(benches);
