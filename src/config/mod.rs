//! Configuration: read from layered sources, then validated into the types the gateway uses.
//!
//! Precedence (docs/behaviour.md §6): embedded defaults < TOML file (`--config`) < `NOTION_GATEWAY_*`
//! environment variables (nested keys joined with `__`, e.g. `NOTION_GATEWAY_UPSTREAM__URL`) <
//! command-line flags. [`figment`] merges the layers and remembers where each value came from,
//! so every error names the key and its source.
//!
//! Two layers, as in river: [`surface`] is what serde reads (strings, human durations such as
//! `65s`, sizes such as `21MiB`); [`Config`] is validated and never deserialized: a parsed
//! `SocketAddr`, an upstream `Uri` without path, a resolved corporate proxy. Nothing else in the
//! crate reads raw configuration.

mod access;
mod surface;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider};
use http::{HeaderValue, Uri};
use hyper_util::client::proxy::matcher::Matcher;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use sha2::Digest as _;

pub use access::{valid_key_name, AccessConfig, AccessMode, HeldToken, KeyConfig, KeyPriority};
pub use surface::RawConfig;

/// Prefix of the environment variables that configure the gateway.
pub const ENV_PREFIX: &str = "NOTION_GATEWAY_";

/// Validated configuration. Build it with [`load`], or start from [`Config::default`] in tests.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    pub retry: RetryConfig,
    pub errors: ErrorsConfig,
    /// `[access]` and `[[keys]]`: the part a reload (SIGHUP) applies while running.
    pub access: AccessConfig,
}

/// `[errors]`: what the gateway does with answers the SDKs would not understand, and with
/// requests Notion would certainly refuse (docs/behaviour.md §4).
#[derive(Debug, Clone)]
pub struct ErrorsConfig {
    /// Notion's 4xx/5xx that are not its error JSON (CDN pages) become Notion-shaped errors.
    pub rewrite_edge_pages: bool,
    /// Oversized JSON bodies, `page_size` over 100, more than 100 `children`, invalid JSON:
    /// refused before they spend budget.
    pub prevalidate: bool,
}

/// `[retry]`: see [`crate::retry`].
#[derive(Debug, Clone)]
pub struct RetryConfig {
    /// Attempts per request for 5xx, broken connections and timeouts, the first included.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub budget_ratio: f64,
    pub budget_min_per_second: f64,
    /// Request bodies with a declared length up to this are kept for another attempt.
    pub replay_limit: u64,
    /// Non-idempotent routes the operator opted into retries: (method, catalogue template).
    pub unsafe_routes: Vec<(http::Method, &'static str)>,
}

/// Shaping (docs/behaviour.md §2): budgets, queue bounds, integrations and workspaces.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// The plan of a token without its own `[[integrations]]` entry.
    pub plan: Plan,
    /// Its budget per 60-second window (the plan's, unless set).
    pub per_minute: u32,
    /// A smoothing rate beside the window, when set.
    pub smoothing: Option<Smoothing>,
    /// Resends of one request after Notion's 429/529 before the 429 goes to the caller.
    pub max_resends: u32,
    /// Learn each token's workspace from `GET /v1/users/me`.
    pub discover_workspaces: bool,
    /// Requests that may wait per token; beyond it, an immediate 429.
    pub max_queue: usize,
    /// Tokens with state at once; the least recently used idle one makes room for a new one.
    pub max_tokens: usize,
    /// Longest predicted queue wait accepted; beyond it, an immediate 429.
    pub max_wait: Duration,
    /// Whether Notion's repeated 429s lower the effective rate.
    pub adaptive: bool,
    /// Callers known by their `X-Gateway-Client` header: weight, and the addresses the name is
    /// taken from (empty: any).
    pub client_weights: std::collections::HashMap<String, ClientWeight>,
    pub integrations: Vec<Integration>,
    pub workspaces: std::collections::HashMap<Arc<str>, WorkspaceBudget>,
    /// Budgets shared with other replicas through Redis (`backend = "redis"`); `None`: local.
    pub shared: Option<SharedBudgets>,
}

/// Where replicas keep their shared budgets (docs/behaviour.md §7).
#[derive(Debug, Clone)]
pub struct SharedBudgets {
    /// `redis://…` (may hold a password: print it through [`redact_userinfo`]).
    pub redis_url: String,
    pub timeout: Duration,
    /// Share of each budget used alone while Redis is unreachable, in (0, 1].
    pub local_share: f64,
    pub prefix: String,
}

/// A known caller (`[limits.client_weights]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientWeight {
    pub weight: u32,
    /// Peers the name is honoured from; empty: every peer.
    pub from: Vec<ipnet::IpNet>,
}

impl ClientWeight {
    /// Whether a request from `peer` may use this name.
    pub fn allows(&self, peer: std::net::IpAddr) -> bool {
        self.from.is_empty() || self.from.iter().any(|n| n.contains(&peer))
    }
}

/// Notion's per-connection budget by the workspace's plan (docs/behaviour.md §2): "Business
/// and Enterprise: 600 requests per minute; all other plans: 180 requests per minute"
/// (<https://developers.notion.com/reference/request-limits>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    Standard,
    Business,
}

impl Plan {
    /// Requests per 60-second window.
    pub fn per_minute(self) -> u32 {
        match self {
            Plan::Standard => 180,
            Plan::Business => 600,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Plan::Standard => "standard",
            Plan::Business => "business",
        }
    }
}

/// A smoothing rate (GCRA) beside a window budget: requests per second, and how many may go
/// at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Smoothing {
    pub rate: f64,
    pub burst: u32,
}

/// A token the configuration knows by name. The token itself is never kept, only its SHA-256.
#[derive(Debug, Clone)]
pub struct Integration {
    pub name: Arc<str>,
    pub token_sha256: [u8; 32],
    pub plan: Plan,
    pub per_minute: u32,
    pub smoothing: Option<Smoothing>,
    pub workspace: Option<Arc<str>>,
    /// The token itself, when the gateway holds it (`token_env`, `token_file`): what it sends
    /// for the integration's gateway keys.
    pub token: Option<HeldToken>,
}

/// A configured workspace: its Notion id (so discovered tokens join it) and what is known of
/// its budget. Notion does not publish workspace limits: without `per_minute` the gateway
/// learns it from Notion's 429s.
#[derive(Debug, Clone, Default)]
pub struct WorkspaceBudget {
    pub id: Option<Arc<str>>,
    pub per_minute: Option<u32>,
    /// A smoothing rate and burst for the whole workspace (both, or neither).
    pub rate: Option<f64>,
    pub burst: Option<u32>,
}

/// The client-facing side.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Whole-request deadline: queueing, every upstream attempt and the wait for response
    /// headers. Response bodies are bounded by `body_idle_timeout` instead, so long streams
    /// (server-sent events) are not cut.
    pub request_timeout: Duration,
    /// How long a client connection may go without delivering a complete request head. hyper
    /// starts this timer whenever a connection is ready for its next request, so it bounds both
    /// slow request headers and idle keep-alive connections.
    pub idle_timeout: Duration,
    /// A body that makes no progress for this long, in either direction, is abandoned: a
    /// client that stops uploading, an upstream that stops sending, a client that stops reading.
    pub body_idle_timeout: Duration,
    /// On SIGTERM/SIGINT, how long in-flight requests may take before they are answered 503.
    pub drain_timeout: Duration,
    pub max_body: u64,
    pub max_header_bytes: usize,
    /// Threads of the async runtime (the binary's; `run` uses whatever runtime it is called
    /// on). 1 by default: see `config/notion-gateway.toml` for the measurement behind it.
    pub worker_threads: usize,
    /// Client connections served at once; beyond it the accept loop waits, so new clients
    /// queue in the kernel's listen backlog instead of exhausting file descriptors.
    pub max_connections: usize,
    /// When set, `/metrics` and `/status` are served only here, not on `listen`.
    pub admin_listen: Option<SocketAddr>,
}

/// The Notion side.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Scheme and authority only (`https://api.notion.com`); request paths are appended.
    pub base: Uri,
    pub notion_version: HeaderValue,
    /// Added to `/admin/v1/*` requests without one (the Admin API has its own versions);
    /// `None`: none is added.
    pub admin_notion_version: Option<HeaderValue>,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    /// Certificates trusted in addition to the built-in web PKI roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// The HTTP CONNECT proxy the upstream is reached through, if any (already resolved against
    /// `NO_PROXY`).
    pub proxy: Option<ProxyConfig>,
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `http://host:port` of the proxy, without credentials.
    pub uri: Uri,
    /// `Proxy-Authorization` for the CONNECT request, from the proxy URL's userinfo.
    pub authorization: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    /// An `EnvFilter` directive such as `info` or `notion_gateway=debug`.
    pub level: String,
    /// Request events are also appended here as JSON lines.
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl Default for Config {
    /// The embedded defaults, validated, without consulting the environment.
    fn default() -> Self {
        let figment = Figment::from(Named::new(
            "default",
            Serialized::defaults(RawConfig::default()),
        ));
        validate(&RawConfig::default(), &figment, &no_env)
            .unwrap_or_else(|e| unreachable!("embedded defaults are valid: {e}"))
    }
}

/// Values given on the command line; each one overrides every other source.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub upstream: Option<String>,
    pub log_format: Option<String>,
}

/// The merged surface (for `check-config`) and its validated form.
#[derive(Debug)]
pub struct Loaded {
    pub raw: RawConfig,
    pub config: Config,
    /// Where the effective proxy came from, for `check-config`.
    pub proxy_origin: String,
    /// Problems that do not stop the gateway (an integration whose `token_env` is empty).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {path}: {detail}")]
    File { path: String, detail: String },
    #[error("{0}")]
    Surface(String),
    #[error("invalid value for `{key}` (from {origin}): {problem}")]
    Invalid {
        key: &'static str,
        origin: String,
        problem: String,
    },
}

/// Reads every source in precedence order and validates the result.
pub fn load(overrides: &Overrides) -> Result<Loaded, ConfigError> {
    let mut figment = Figment::from(Named::new(
        "the embedded defaults",
        Serialized::defaults(RawConfig::default()),
    ));
    if let Some(path) = &overrides.config_file {
        check_readable(path)?;
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(
        Env::prefixed(ENV_PREFIX)
            .split("__")
            // Read by the CLI itself, not configuration keys.
            .ignore(&["config", "token"]),
    );
    figment = figment.merge(Named::new("a command-line flag", flag_values(overrides)));

    let raw: RawConfig = figment.extract().map_err(surface_error)?;
    let config = validate(&raw, &figment, &process_env)?;
    let proxy_origin = match (&raw.upstream.proxy, &config.upstream.proxy) {
        (_, None) => "none".to_string(),
        (Some(_), Some(_)) => origin(&figment, "upstream.proxy"),
        (None, Some(_)) => "the HTTPS_PROXY/HTTP_PROXY/ALL_PROXY environment variables".to_string(),
    };
    let mut warnings: Vec<String> = raw
        .integrations
        .iter()
        .filter_map(|i| {
            let var = i.token_env.as_ref()?;
            process_env(var).filter(|t| t.trim().is_empty())?;
            Some(format!(
                "integration `{}` left out: environment variable {var} (its token_env) is empty",
                i.name
            ))
        })
        .collect();
    for k in &raw.keys {
        if !config.access.keys.iter().any(|c| *c.name == *k.name) {
            warnings.push(format!(
                "key `{}` left out: its integration `{}` is left out",
                k.name, k.integration
            ));
        }
    }
    if config.access.mode == AccessMode::Keys && config.access.keys.is_empty() {
        warnings.push(
            "access.mode = \"keys\" and no [[keys]]: every request is refused until keys are \
             added (notion-gateway keys new NAME --integration INTEGRATION) and the gateway \
             reloaded (SIGHUP)"
                .into(),
        );
    }
    Ok(Loaded {
        raw,
        config,
        proxy_origin,
        warnings,
    })
}

fn check_readable(path: &Path) -> Result<(), ConfigError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            detail: e.to_string(),
        })
}

fn flag_values(o: &Overrides) -> Serialized<serde_json::Value> {
    let mut root = serde_json::Map::new();
    let mut set = |section: &str, key: &str, value: &Option<String>| {
        if let Some(v) = value {
            let entry = root
                .entry(section.to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if let serde_json::Value::Object(map) = entry {
                map.insert(key.to_string(), serde_json::Value::String(v.clone()));
            }
        }
    };
    set("server", "listen", &o.listen);
    set("upstream", "url", &o.upstream);
    set("log", "format", &o.log_format);
    Serialized::defaults(serde_json::Value::Object(root))
}

/// Formats figment's errors (unknown keys, wrong types) with the key and its source.
fn surface_error(err: figment::Error) -> ConfigError {
    let lines: Vec<String> = err
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let from = e
                .metadata
                .as_ref()
                .map(|m| describe(m, &e.path))
                .unwrap_or_else(|| "an unknown source".into());
            // figment wraps its list of fields in a second pair of backticks
            // ("expected `one of `a`, `b``"); say it plainly.
            let kind = match &e.kind {
                figment::error::Kind::UnknownField(found, expected) => {
                    let known: Vec<String> = expected.iter().map(|k| format!("`{k}`")).collect();
                    format!("unknown key `{found}`; known keys: {}", known.join(", "))
                }
                other => other.to_string(),
            };
            if key.is_empty() {
                format!("{kind} (from {from})")
            } else {
                format!("`{key}`: {kind} (from {from})")
            }
        })
        .collect();
    ConfigError::Surface(format!("invalid configuration: {}", lines.join("; ")))
}

fn describe(md: &Metadata, path: &[String]) -> String {
    let mut out = md.name.to_string();
    if md.name.contains("environment") {
        // figment's own interpolation prints `SERVER.FOO`; name the real variable instead.
        let var = path.join("__").to_uppercase();
        out = format!("environment variable {ENV_PREFIX}{var}");
    }
    if let Some(source) = &md.source {
        out.push_str(&format!(" {source}"));
    }
    out
}

/// Where the effective value of `key` came from, e.g. "TOML file /etc/x.toml".
fn origin(figment: &Figment, key: &str) -> String {
    let path: Vec<String> = key.split('.').map(String::from).collect();
    figment
        .find_metadata(key)
        .map(|m| describe(m, &path))
        .unwrap_or_else(|| "the embedded defaults".into())
}

/// Looks up an environment variable. The process's for [`load`]; one that sees nothing for
/// [`Config::default`]; a map in tests.
type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// The first of `names` that is set (curl reads `HTTPS_PROXY` before `https_proxy`).
fn first_set(env: EnvLookup<'_>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| env(n))
}

fn validate(raw: &RawConfig, fig: &Figment, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    let bad = |key: &'static str, problem: String| ConfigError::Invalid {
        key,
        origin: origin(fig, key),
        problem,
    };
    let positive = |key: &'static str, d: Duration| {
        if d.is_zero() {
            Err(bad(key, "must be greater than zero".into()))
        } else {
            Ok(d)
        }
    };

    let s = &raw.server;
    let listen: SocketAddr = s.listen.parse().map_err(|e| {
        bad(
            "server.listen",
            format!("{e}; expected an address such as 127.0.0.1:8787"),
        )
    })?;
    let max_header_bytes = usize::try_from(s.max_header_bytes.as_u64())
        .ok()
        .filter(|n| (1024..=MAX_HEAD_BUFFER).contains(n))
        .ok_or_else(|| {
            bad(
                "server.max_header_bytes",
                format!("must be between 1KiB and {}KiB", MAX_HEAD_BUFFER / 1024),
            )
        })?;
    if s.max_body.as_u64() == 0 {
        return Err(bad("server.max_body", "must be greater than zero".into()));
    }
    let server = ServerConfig {
        listen,
        request_timeout: positive("server.request_timeout", s.request_timeout)?,
        idle_timeout: positive("server.idle_timeout", s.idle_timeout)?,
        body_idle_timeout: positive("server.body_idle_timeout", s.body_idle_timeout)?,
        drain_timeout: s.drain_timeout,
        max_body: s.max_body.as_u64(),
        max_header_bytes,
        max_connections: match s.max_connections {
            0 => return Err(bad("server.max_connections", "must be at least 1".into())),
            n => n,
        },
        worker_threads: match s.worker_threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        },
        admin_listen: match s.admin_listen.trim() {
            "" => None,
            a => Some(a.parse().map_err(|e| {
                bad(
                    "server.admin_listen",
                    format!("{e}; expected an address such as 127.0.0.1:9787"),
                )
            })?),
        },
    };

    let u = &raw.upstream;
    let base = parse_upstream(&u.url).map_err(|p| bad("upstream.url", p))?;
    let notion_version = HeaderValue::from_str(u.notion_version.trim())
        .ok()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            bad(
                "upstream.notion_version",
                "must be a non-empty header value such as 2025-09-03".into(),
            )
        })?;
    let admin_notion_version = match u.admin_notion_version.trim() {
        "" => None,
        v => Some(HeaderValue::from_str(v).map_err(|_| {
            bad(
                "upstream.admin_notion_version",
                "must be a header value such as 2026-06-01, or \"\" to add none".into(),
            )
        })?),
    };
    let extra_roots = match &u.ca_bundle {
        None => Vec::new(),
        Some(p) if p.is_empty() => Vec::new(),
        Some(path) => read_ca_bundle(path).map_err(|p| bad("upstream.ca_bundle", p))?,
    };
    let proxy = resolve_proxy(u, &base, env).map_err(|p| bad("upstream.proxy", p))?;
    let upstream = UpstreamConfig {
        base,
        notion_version,
        admin_notion_version,
        connect_timeout: positive("upstream.connect_timeout", u.connect_timeout)?,
        attempt_timeout: positive("upstream.attempt_timeout", u.attempt_timeout)?,
        pool_idle_timeout: positive("upstream.pool_idle_timeout", u.pool_idle_timeout)?,
        pool_max_idle: u.pool_max_idle,
        extra_roots,
        proxy,
    };

    let format = match raw.log.format.as_str() {
        "pretty" => LogFormat::Pretty,
        "json" => LogFormat::Json,
        other => {
            return Err(bad(
                "log.format",
                format!("`{other}` is not one of: pretty, json"),
            ))
        }
    };
    tracing_subscriber::EnvFilter::try_new(&raw.log.level)
        .map_err(|e| bad("log.level", format!("{e}; expected e.g. info or debug")))?;
    let log = LogConfig {
        format,
        level: raw.log.level.clone(),
        file: (!raw.log.file.trim().is_empty()).then(|| PathBuf::from(raw.log.file.trim())),
    };
    let limits = validate_limits(raw, &bad, env)?;
    if limits.max_wait >= server.request_timeout {
        return Err(bad(
            "limits.max_wait",
            format!(
                "must be shorter than server.request_timeout ({}), which bounds queueing too",
                humantime::format_duration(server.request_timeout)
            ),
        ));
    }
    let retry = validate_retry(&raw.retry, &bad)?;
    let errors = ErrorsConfig {
        rewrite_edge_pages: raw.errors.rewrite_edge_pages,
        prevalidate: raw.errors.prevalidate,
    };
    let access = access::validate(
        &raw.access,
        &raw.keys,
        &limits.integrations,
        &raw.integrations,
        server.request_timeout,
    )
    .map_err(|(key, problem)| bad(key, problem))?;
    Ok(Config {
        server,
        upstream,
        log,
        limits,
        retry,
        errors,
        access,
    })
}

fn validate_retry(
    r: &surface::RawRetry,
    bad: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<RetryConfig, ConfigError> {
    if !(1..=100).contains(&r.max_attempts) {
        return Err(bad(
            "retry.max_attempts",
            "must be from 1 (no retries) to 100; the deadline and the retry budget end retries first".into(),
        ));
    }
    if r.backoff_base.is_zero() || r.backoff_cap < r.backoff_base {
        return Err(bad(
            "retry.backoff_base",
            "must be above zero and at most retry.backoff_cap".into(),
        ));
    }
    if !(r.budget_ratio.is_finite() && (0.0..=10.0).contains(&r.budget_ratio)) {
        return Err(bad(
            "retry.budget_ratio",
            "must be a share of requests from 0 to 10 (0.2 = 20 %)".into(),
        ));
    }
    if !(r.budget_min_per_second.is_finite() && r.budget_min_per_second >= 0.0) {
        return Err(bad(
            "retry.budget_min_per_second",
            "must be 0 or more".into(),
        ));
    }
    if r.replay_limit.as_u64() > 64 * 1024 * 1024 {
        return Err(bad(
            "retry.replay_limit",
            "must be at most 64MiB: every waiting request may hold this much".into(),
        ));
    }
    let mut unsafe_routes = Vec::new();
    for route in &r.routes {
        let found = route.route.split_once(' ').and_then(|(m, t)| {
            crate::catalogue::entries().find(|(em, et)| *em == m.trim() && *et == t.trim())
        });
        let Some((m, t)) = found else {
            return Err(bad(
                "retry.routes",
                format!(
                    "`{}` is not a method and path template of the endpoint catalogue, such as \"POST /v1/pages\"",
                    route.route
                ),
            ));
        };
        if route.retry_unsafe {
            let method = http::Method::from_bytes(m.as_bytes())
                .map_err(|e| bad("retry.routes", e.to_string()))?;
            unsafe_routes.push((method, t));
        }
    }
    Ok(RetryConfig {
        max_attempts: r.max_attempts,
        backoff_base: r.backoff_base,
        backoff_cap: r.backoff_cap,
        budget_ratio: r.budget_ratio,
        budget_min_per_second: r.budget_min_per_second,
        replay_limit: r.replay_limit.as_u64(),
        unsafe_routes,
    })
}

fn validate_limits(
    raw: &RawConfig,
    bad: &dyn Fn(&'static str, String) -> ConfigError,
    env: EnvLookup<'_>,
) -> Result<LimitsConfig, ConfigError> {
    fn rate_ok(rate: f64) -> Result<(), String> {
        if !(rate.is_finite() && (0.0..=1_000_000.0).contains(&rate)) {
            return Err(format!(
                "rate {rate} must be a number of requests per second, 0 for the window budget / 60"
            ));
        }
        Ok(())
    }
    fn plan_of(name: &str) -> Result<Plan, String> {
        match name {
            "standard" => Ok(Plan::Standard),
            "business" => Ok(Plan::Business),
            other => Err(format!(
                "`{other}` is not a plan: \"standard\" (180 requests per minute) or \"business\" (600, Business and Enterprise)"
            )),
        }
    }
    /// What a key gets: its window budget (the plan's unless set), and a smoothing rate when
    /// one is set, with a sixth of the window as its burst unless that is set too (0 = unset).
    fn resolve(plan: Plan, per_minute: u32, rate: f64, burst: u32) -> (u32, Option<Smoothing>) {
        let per_minute = if per_minute == 0 {
            plan.per_minute()
        } else {
            per_minute
        };
        let burst = if burst > 0 {
            burst
        } else {
            (per_minute / 6).max(1)
        };
        (
            per_minute,
            (rate > 0.0).then_some(Smoothing { rate, burst }),
        )
    }
    const MAX_PER_MINUTE: u32 = 100_000_000;
    let l = &raw.limits;
    let plan = plan_of(&l.plan).map_err(|p| bad("limits.plan", p))?;
    if l.per_minute > MAX_PER_MINUTE {
        return Err(bad(
            "limits.per_minute",
            format!("must be at most {MAX_PER_MINUTE} (0: the plan's)"),
        ));
    }
    rate_ok(l.rate).map_err(|p| bad("limits.rate", p))?;
    if l.max_resends > 20 {
        return Err(bad("limits.max_resends", "must be at most 20".into()));
    }
    let (per_minute, smoothing) = resolve(plan, l.per_minute, l.rate, l.burst);
    if l.max_tokens == 0 || l.max_tokens > 10_000_000 {
        return Err(bad(
            "limits.max_tokens",
            "must be from 1 to 10000000 (each token's state takes about a kilobyte)".into(),
        ));
    }
    if l.max_queue == 0 {
        return Err(bad("limits.max_queue", "must be at least 1".into()));
    }
    let mut client_weights = std::collections::HashMap::new();
    for (name, w) in &l.client_weights {
        let (weight, from) = match w {
            surface::RawClientWeight::Weight(n) => (*n, Vec::new()),
            surface::RawClientWeight::Bound { weight, from } => {
                let mut nets = Vec::new();
                for f in from {
                    let net = f
                        .parse::<ipnet::IpNet>()
                        .or_else(|_| f.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            bad(
                                "limits.client_weights",
                                format!(
                                    "`{name}`: `{f}` is not an address or network (e.g. 10.0.0.7, 10.0.0.0/8)"
                                ),
                            )
                        })?;
                    nets.push(net);
                }
                (*weight, nets)
            }
        };
        client_weights.insert(name.clone(), ClientWeight { weight, from });
    }
    if let Some((name, _)) = client_weights.iter().find(|(_, w)| w.weight == 0) {
        return Err(bad(
            "limits.client_weights",
            format!("weight of `{name}` must be at least 1"),
        ));
    }
    let mut workspaces = std::collections::HashMap::new();
    for (name, w) in &raw.workspaces {
        let problem = |p: String| bad("workspaces", format!("`{name}`: {p}"));
        match (w.rate, w.burst) {
            (Some(r), Some(b)) if r > 0.0 && b > 0 => rate_ok(r).map_err(problem)?,
            (None, None) => {}
            _ => {
                return Err(problem(
                    "set both rate (above 0) and burst (at least 1), or neither".into(),
                ))
            }
        }
        if w.per_minute.is_some_and(|n| n == 0 || n > MAX_PER_MINUTE) {
            return Err(problem(format!(
                "per_minute must be from 1 to {MAX_PER_MINUTE}"
            )));
        }
        let id = w.id.as_deref().map(str::trim).filter(|i| !i.is_empty());
        if id
            .is_some_and(|i| i.len() > 64 || !i.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        {
            return Err(problem(
                "id must be the workspace's id as Notion gives it (bot.workspace_id of GET /v1/users/me)".into(),
            ));
        }
        workspaces.insert(
            Arc::from(name.as_str()),
            WorkspaceBudget {
                id: id.map(Arc::from),
                per_minute: w.per_minute,
                rate: w.rate,
                burst: w.burst,
            },
        );
    }
    let mut integrations: Vec<Integration> = Vec::new();
    for i in &raw.integrations {
        let problem = |p: String| bad("integrations", format!("`{}`: {p}", i.name));
        if i.name.trim().is_empty() {
            return Err(bad("integrations", "every integration needs a name".into()));
        }
        let held = match (&i.token_sha256, &i.token_env, &i.token_file) {
            (Some(hex), None, None) => Err(parse_sha256(hex).map_err(problem)?),
            (None, Some(var), None) => match env(var) {
                None => return Err(problem(format!("environment variable {var} is not set"))),
                // Set but empty (a `.env` left blank): the integration is left out, with a
                // warning from `load`, rather than refusing to start (docs/decisions.md).
                Some(t) if t.trim().is_empty() => continue,
                Some(t) => Ok(t),
            },
            (None, None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(t) if t.trim().is_empty() => {
                    return Err(problem(format!("token_file {path} is empty")))
                }
                Ok(t) => Ok(t),
                Err(e) => return Err(problem(format!("cannot read token_file {path}: {e}"))),
            },
            _ => {
                return Err(problem(
                    "set exactly one of token_sha256, token_env and token_file".into(),
                ))
            }
        };
        let (digest, token) = match held {
            Err(digest) => (digest, None),
            Ok(token) => {
                let token = HeldToken::new(&token).map_err(problem)?;
                let digest: [u8; 32] =
                    sha2::Sha256::digest(crate::headers::credential_of(token.header())).into();
                (digest, Some(token))
            }
        };
        let own_budget = i.plan.is_some() || i.per_minute.is_some();
        let i_plan = match &i.plan {
            Some(p) => plan_of(p).map_err(problem)?,
            None => plan,
        };
        if i.per_minute.is_some_and(|n| n > MAX_PER_MINUTE) {
            return Err(problem(format!(
                "per_minute must be at most {MAX_PER_MINUTE}"
            )));
        }
        let i_rate = i.rate.unwrap_or(if own_budget { 0.0 } else { l.rate });
        rate_ok(i_rate).map_err(problem)?;
        let i_burst = i.burst.unwrap_or(if own_budget { 0 } else { l.burst });
        let i_per_minute = i
            .per_minute
            .unwrap_or(if own_budget { 0 } else { l.per_minute });
        let (i_per_minute, i_smoothing) = resolve(i_plan, i_per_minute, i_rate, i_burst);
        let workspace = match &i.workspace {
            None => None,
            Some(w) => Some(
                workspaces
                    .get_key_value(w.as_str())
                    .map(|(k, _)| k.clone())
                    .ok_or_else(|| {
                        problem(format!("workspace `{w}` has no [workspaces.{w}] budget"))
                    })?,
            ),
        };
        if integrations
            .iter()
            .any(|o| o.token_sha256 == digest || *o.name == *i.name)
        {
            return Err(problem("same name or token as another integration".into()));
        }
        integrations.push(Integration {
            name: Arc::from(i.name.as_str()),
            token_sha256: digest,
            plan: i_plan,
            per_minute: i_per_minute,
            smoothing: i_smoothing,
            workspace,
            token,
        });
    }
    let shared = match l.backend.as_str() {
        "local" => None,
        "redis" => {
            let url = l
                .redis_url
                .clone()
                .filter(|u| !u.trim().is_empty())
                .ok_or_else(|| {
                    bad(
                        "limits.redis_url",
                        "backend = \"redis\" needs redis_url, e.g. redis://127.0.0.1:6379".into(),
                    )
                })?;
            if !(url.starts_with("redis://") || url.starts_with("redis+unix://")) {
                return Err(bad(
                    "limits.redis_url",
                    format!(
                        "`{}` must start with redis:// (TLS to Redis is not supported)",
                        redact_userinfo(&url)
                    ),
                ));
            }
            if l.redis_timeout.is_zero() || l.redis_timeout > Duration::from_secs(10) {
                return Err(bad(
                    "limits.redis_timeout",
                    "must be above 0 and at most 10s".into(),
                ));
            }
            if !(l.redis_local_share > 0.0 && l.redis_local_share <= 1.0) {
                return Err(bad(
                    "limits.redis_local_share",
                    format!("{} must be above 0 and at most 1", l.redis_local_share),
                ));
            }
            if l.redis_prefix.is_empty() || l.redis_prefix.chars().any(char::is_whitespace) {
                return Err(bad(
                    "limits.redis_prefix",
                    "must be non-empty, without spaces".into(),
                ));
            }
            Some(SharedBudgets {
                redis_url: url,
                timeout: l.redis_timeout,
                local_share: l.redis_local_share,
                prefix: l.redis_prefix.clone(),
            })
        }
        other => {
            return Err(bad(
                "limits.backend",
                format!("`{other}` must be \"local\" or \"redis\""),
            ))
        }
    };
    Ok(LimitsConfig {
        shared,
        plan,
        per_minute,
        smoothing,
        max_resends: l.max_resends,
        discover_workspaces: l.discover_workspaces,
        max_queue: l.max_queue,
        max_tokens: l.max_tokens,
        max_wait: l.max_wait,
        adaptive: l.adaptive,
        client_weights,
        integrations,
        workspaces,
    })
}

pub(super) fn parse_sha256(hex: &str) -> Result<[u8; 32], String> {
    let hex = hex.trim();
    let err =
        || "token_sha256 must be 64 hex digits (printf %s \"$TOKEN\" | sha256sum)".to_string();
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(err());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| err())?;
    }
    Ok(out)
}

/// hyper reads request heads into a buffer of this size; `server.max_header_bytes` is checked
/// by the gateway below it so that oversized heads still get a Notion-shaped 431.
pub(crate) const MAX_HEAD_BUFFER: usize = 512 * 1024;

fn parse_upstream(url: &str) -> Result<Uri, String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(format!("`{url}` must start with https:// or http://")),
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{url}` has no host"))?;
    if authority.as_str().contains('@') {
        return Err("credentials in the upstream URL are not supported".into());
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "`{url}` must be scheme and host only (e.g. https://api.notion.com); request paths are appended as received"
        ));
    }
    Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("https"))
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|e| e.to_string())
}

fn read_ca_bundle(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {path}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{path} is not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path} contains no PEM certificate"));
    }
    Ok(certs)
}

fn resolve_proxy(
    u: &surface::RawUpstream,
    base: &Uri,
    env: EnvLookup<'_>,
) -> Result<Option<ProxyConfig>, String> {
    let matcher = match u.proxy.as_deref() {
        Some("") => return Ok(None),
        Some(p) => {
            let uri: Uri = p.parse().map_err(|e| format!("not a URL: {e}"))?;
            if uri.scheme_str() != Some("http") || uri.authority().is_none() {
                return Err(
                    "must be http://[user:password@]host:port (an HTTP CONNECT proxy)".into(),
                );
            }
            Matcher::builder()
                .all(p.to_string())
                .no(u.no_proxy.clone().unwrap_or_default())
                .build()
        }
        // The variables curl reads, as hyper-util's `Matcher::from_env` does; read here so that
        // an explicit `no_proxy` can replace NO_PROXY without losing any of the others.
        None => {
            let mut b = Matcher::builder().no(u
                .no_proxy
                .clone()
                .or_else(|| first_set(env, &["NO_PROXY", "no_proxy"]))
                .unwrap_or_default());
            if let Some(v) = first_set(env, &["ALL_PROXY", "all_proxy"]) {
                b = b.all(v);
            }
            if let Some(v) = first_set(env, &["HTTPS_PROXY", "https_proxy"]) {
                b = b.https(v);
            }
            if let Some(v) = first_set(env, &["HTTP_PROXY", "http_proxy"]) {
                b = b.http(v);
            }
            b.build()
        }
    };
    Ok(matcher.intercept(base).map(|i| {
        let uri = strip_userinfo(i.uri());
        ProxyConfig {
            uri,
            authorization: i.basic_auth().cloned(),
        }
    }))
}

fn strip_userinfo(uri: &Uri) -> Uri {
    let Some(auth) = uri.authority() else {
        return uri.clone();
    };
    let host_port = auth.as_str().rsplit('@').next().unwrap_or(auth.as_str());
    Uri::builder()
        .scheme(uri.scheme_str().unwrap_or("http"))
        .authority(host_port)
        .path_and_query("/")
        .build()
        .unwrap_or_else(|_| uri.clone())
}

impl Loaded {
    /// The effective configuration as TOML, secrets redacted: what `check-config` prints.
    pub fn to_redacted_toml(&self) -> String {
        let mut raw = self.raw.clone();
        if let Some(p) = raw.upstream.proxy.as_mut() {
            *p = redact_userinfo(p);
        }
        if let Some(u) = raw.limits.redis_url.as_mut() {
            *u = redact_userinfo(u);
        }
        let body = toml::to_string_pretty(&raw)
            .unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"));
        let proxy = match &self.config.upstream.proxy {
            Some(p) => format!(
                "{} ({}; credentials {})",
                p.uri,
                self.proxy_origin,
                if p.authorization.is_some() {
                    "set, redacted"
                } else {
                    "none"
                }
            ),
            None => "none (direct connection)".into(),
        };
        format!(
            "# notion-gateway effective configuration (defaults < file < env < flags)\n\
             # upstream reached through proxy: {proxy}\n\
             # extra CA certificates: {}\n\n{body}",
            self.config.upstream.extra_roots.len()
        )
    }
}

/// `url` with its secrets replaced: the userinfo (`user:password@` becomes `***:***@`) and
/// the values of query parameters named like a password (`password`, `pass`, `passwd`, `pwd`,
/// `secret`, `token`; any case, percent-encoded names too, as the `redis` crate reads them:
/// `redis+unix:///run/redis.sock?pass=...`). The scheme, host, port, path and other parameters
/// stay, for troubleshooting. What `check-config`, `/status`, `doctor` and the logs print.
pub fn redact_userinfo(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let query_at = rest.find(['?', '#']).unwrap_or(rest.len());
    // The userinfo ends at the last `@` before the query; a password with an unencoded `?` or
    // `#` puts its `@` after that, so an `@` with no `/` before it counts too (over-redacting
    // a strange URL beats printing half a password).
    let at = rest[..query_at]
        .rfind('@')
        .or_else(|| rest.rfind('@').filter(|i| !rest[..*i].contains('/')));
    let (authority_start, tail) = match at {
        Some(i) => ("***:***@", &rest[i + 1..]),
        None => ("", rest),
    };
    let query_at = tail.find(['?', '#']).unwrap_or(tail.len());
    let (head, query) = tail.split_at(query_at);
    let scheme = scheme.map(|s| format!("{s}://")).unwrap_or_default();
    format!("{scheme}{authority_start}{head}{}", redact_query(query))
}

/// `?a=1&password=x#f` → `?a=1&password=***#f`.
fn redact_query(query: &str) -> String {
    const SECRET: [&str; 6] = ["password", "pass", "passwd", "pwd", "secret", "token"];
    let Some(q) = query.strip_prefix('?') else {
        return query.to_string();
    };
    let (params, fragment) = match q.find('#') {
        Some(i) => (&q[..i], &q[i..]),
        None => (q, ""),
    };
    let redacted: Vec<String> = params
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = percent_encoding::percent_decode_str(&name.replace('+', " "))
                .decode_utf8_lossy()
                .trim()
                .to_ascii_lowercase();
            if SECRET.contains(&decoded.as_str()) && !value.is_empty() {
                format!("{name}=***")
            } else {
                pair.to_string()
            }
        })
        .collect();
    format!("?{}{fragment}", redacted.join("&"))
}

/// A provider under a name of our choosing, so errors say "a command-line flag" rather than a
/// Rust type name.
struct Named<P> {
    name: &'static str,
    inner: P,
}

impl<P> Named<P> {
    fn new(name: &'static str, inner: P) -> Self {
        Self { name, inner }
    }
}

impl<P: Provider> Provider for Named<P> {
    fn metadata(&self) -> Metadata {
        Metadata::named(self.name)
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.inner.data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let fig = Figment::from(Named::new("test", Serialized::defaults(raw.clone())));
        validate(&raw, &fig, &no_env)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(c.server.listen, "127.0.0.1:8787".parse().unwrap());
        assert_eq!(c.upstream.base.to_string(), "https://api.notion.com/");
        assert_eq!(c.upstream.notion_version, "2025-09-03");
        assert_eq!(c.upstream.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.upstream.attempt_timeout, Duration::from_secs(65));
        assert_eq!(c.server.drain_timeout, Duration::from_secs(30));
        assert_eq!(c.server.max_body, 21 * 1024 * 1024);
        assert!(c.upstream.proxy.is_none());
    }

    #[test]
    fn upstream_with_a_path_is_refused() {
        let mut raw = RawConfig::default();
        raw.upstream.url = "https://api.notion.com/v1".into();
        let err = validate_raw(raw).unwrap_err().to_string();
        assert!(err.contains("`upstream.url`"), "{err}");
    }

    #[test]
    fn zero_timeout_is_refused_by_name() {
        let mut raw = RawConfig::default();
        raw.server.request_timeout = Duration::ZERO;
        let err = validate_raw(raw).unwrap_err().to_string();
        assert!(err.contains("server.request_timeout"), "{err}");
    }

    #[test]
    fn explicit_proxy_is_resolved_with_credentials_split_off() {
        let mut raw = RawConfig::default();
        raw.upstream.proxy = Some("http://user:pw@127.0.0.1:3128".into());
        let c = validate_raw(raw).unwrap();
        let p = c.upstream.proxy.unwrap();
        assert_eq!(p.uri.to_string(), "http://127.0.0.1:3128/");
        assert!(p.authorization.is_some());
    }

    #[test]
    fn no_proxy_bypasses_an_explicit_proxy() {
        let mut raw = RawConfig::default();
        raw.upstream.proxy = Some("http://127.0.0.1:3128".into());
        raw.upstream.no_proxy = Some("api.notion.com".into());
        assert!(validate_raw(raw).unwrap().upstream.proxy.is_none());
    }

    fn with_env(raw: RawConfig, vars: &[(&str, &str)]) -> Option<ProxyConfig> {
        let fig = Figment::from(Named::new("test", Serialized::defaults(raw.clone())));
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        validate(&raw, &fig, &env).unwrap().upstream.proxy
    }

    #[test]
    fn proxy_variables_from_the_environment() {
        let p = with_env(
            RawConfig::default(),
            &[("https_proxy", "http://127.0.0.1:3128")],
        );
        assert_eq!(p.unwrap().uri.to_string(), "http://127.0.0.1:3128/");
        let p = with_env(
            RawConfig::default(),
            &[("ALL_PROXY", "http://127.0.0.1:3129")],
        );
        assert_eq!(p.unwrap().uri.to_string(), "http://127.0.0.1:3129/");
        // HTTP_PROXY is for http:// upstreams only.
        assert!(with_env(
            RawConfig::default(),
            &[("HTTP_PROXY", "http://127.0.0.1:1")]
        )
        .is_none());
        let bypassed = [
            ("HTTPS_PROXY", "http://127.0.0.1:3128"),
            ("NO_PROXY", "api.notion.com"),
        ];
        assert!(with_env(RawConfig::default(), &bypassed).is_none());
    }

    #[test]
    fn configured_no_proxy_replaces_no_proxy_and_keeps_every_proxy_variable() {
        let mut raw = RawConfig::default();
        raw.upstream.no_proxy = Some("example.com".into());
        // NO_PROXY would bypass; the configured list replaces it, so the proxy applies.
        let vars = [
            ("ALL_PROXY", "http://127.0.0.1:3129"),
            ("NO_PROXY", "api.notion.com"),
        ];
        let p = with_env(raw.clone(), &vars);
        assert_eq!(p.unwrap().uri.to_string(), "http://127.0.0.1:3129/");
        raw.upstream.no_proxy = Some("api.notion.com".into());
        assert!(with_env(raw, &[("HTTPS_PROXY", "http://127.0.0.1:3128")]).is_none());
    }

    #[test]
    fn redaction_hides_proxy_credentials() {
        assert_eq!(
            redact_userinfo("http://user:secret@proxy:3128"),
            "http://***:***@proxy:3128"
        );
        assert_eq!(redact_userinfo("http://proxy:3128"), "http://proxy:3128");
    }

    #[test]
    fn the_admin_api_version_is_its_own_and_may_be_none() {
        let c = Config::default();
        assert_eq!(c.upstream.admin_notion_version.unwrap(), "2026-06-01");
        assert!(c.errors.rewrite_edge_pages && c.errors.prevalidate);
        let mut raw = RawConfig::default();
        raw.upstream.admin_notion_version = "".into();
        let cfg = validate_raw(raw.clone()).unwrap();
        assert!(cfg.upstream.admin_notion_version.is_none());
        raw.upstream.admin_notion_version = "bad\nvalue".into();
        let err = validate_raw(raw).unwrap_err().to_string();
        assert!(err.contains("upstream.admin_notion_version"), "{err}");
    }

    #[test]
    fn redaction_hides_passwords_in_query_parameters() {
        for (url, want) in [
            (
                "redis://:hunter2@127.0.0.1:6379/0?db=1",
                "redis://***:***@127.0.0.1:6379/0?db=1",
            ),
            (
                "redis://127.0.0.1/0?password=s3cret&db=1",
                "redis://127.0.0.1/0?password=***&db=1",
            ),
            (
                "redis+unix:///run/redis.sock?db=1&PASS=s3cret",
                "redis+unix:///run/redis.sock?db=1&PASS=***",
            ),
            (
                "redis://h/?Secret=a&p%61ss=b&pwd=c&x=d#frag",
                "redis://h/?Secret=***&p%61ss=***&pwd=***&x=d#frag",
            ),
            (
                "redis://u:p@h/?a=b@c&token=t",
                "redis://***:***@h/?a=b@c&token=***",
            ),
            // A password with an unencoded `?`: its `@` comes after the "query".
            ("redis://u:pa?ss@h:6379", "redis://***:***@h:6379"),
            ("redis://h:6379", "redis://h:6379"),
        ] {
            assert_eq!(redact_userinfo(url), want, "{url}");
        }
    }

    #[test]
    fn retry_settings_are_validated_and_routes_must_be_in_the_catalogue() {
        let mut raw = RawConfig::default();
        raw.retry.max_attempts = 0;
        let err = validate_raw(raw).unwrap_err().to_string();
        assert!(err.contains("retry.max_attempts"), "{err}");

        let mut raw = RawConfig::default();
        raw.retry.routes.push(surface::RawRetryRoute {
            route: "POST /v1/pagez".into(),
            retry_unsafe: true,
        });
        let err = validate_raw(raw).unwrap_err().to_string();
        assert!(
            err.contains("retry.routes") && err.contains("/v1/pagez"),
            "{err}"
        );

        let mut raw = RawConfig::default();
        raw.retry.routes.push(surface::RawRetryRoute {
            route: "POST /v1/comments".into(),
            retry_unsafe: true,
        });
        let cfg = validate_raw(raw).unwrap();
        assert_eq!(
            cfg.retry.unsafe_routes,
            vec![(http::Method::POST, "/v1/comments")]
        );
        assert_eq!(cfg.retry.max_attempts, 50);
        assert_eq!(cfg.retry.replay_limit, 1024 * 1024);
    }
}
