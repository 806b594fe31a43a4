//! The configuration surface: what TOML files, `NOTION_GATEWAY_*` variables and flags can say.
//!
//! These types are only ever deserialized (and serialized back for `check-config`); nothing
//! outside `config` uses them. [`super::Config`] is the validated form the rest of the gateway
//! reads. Every key here is listed, commented, at its default in `config/notion-gateway.toml`;
//! a test keeps the two in step.

use std::collections::BTreeMap;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub upstream: RawUpstream,
    pub log: RawLog,
    pub limits: RawLimits,
    pub retry: RawRetry,
    pub errors: RawErrors,
    /// `[[integrations]]`: tokens with their own name, budget or workspace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub integrations: Vec<RawIntegration>,
    /// `[workspaces.<name>]`: budgets shared by every integration that names the workspace.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub workspaces: BTreeMap<String, RawWorkspace>,
    /// `[access]`: who may use the gateway.
    pub access: RawAccess,
    /// `[[keys]]`: gateway keys, each bound to an integration whose token the gateway holds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<RawKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAccess {
    /// `open`, `keys` or `configured`.
    pub mode: String,
}

impl Default for RawAccess {
    fn default() -> Self {
        Self {
            mode: "open".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub name: String,
    /// Hex SHA-256 of the key (`notion-gateway keys new` prints it).
    pub key_sha256: String,
    /// The `[[integrations]]` entry whose token and budgets the key uses.
    pub integration: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Requests per second at most for this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// `normal` or `background`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Longest a request of this key waits in the queue.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_wait: Option<Duration>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    pub max_body: ByteSize,
    pub max_header_bytes: ByteSize,
    pub worker_threads: usize,
    pub max_connections: usize,
    /// Serve `/metrics` and `/status` only on this address ("" = on `listen`).
    pub admin_listen: String,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8787".into(),
            request_timeout: Duration::from_secs(58),
            idle_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            max_body: ByteSize::mib(21),
            max_header_bytes: ByteSize::kib(64),
            worker_threads: 1,
            max_connections: 512,
            admin_listen: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    pub url: String,
    pub notion_version: String,
    /// `Notion-Version` added to `/admin/v1/*` requests that send none ("" = add none).
    pub admin_notion_version: String,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    /// Extra PEM bundle trusted on top of the built-in web PKI roots (corporate TLS inspection).
    pub ca_bundle: Option<String>,
    /// `http://[user:pass@]host:port` of an HTTP CONNECT proxy. Unset: `HTTPS_PROXY` /
    /// `https_proxy` (`HTTP_PROXY` for an http upstream), else `ALL_PROXY`, from the
    /// environment; `""`: no proxy.
    pub proxy: Option<String>,
    /// Hosts that bypass the proxy; replaces `NO_PROXY` / `no_proxy` when set.
    pub no_proxy: Option<String>,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            url: "https://api.notion.com".into(),
            notion_version: "2025-09-03".into(),
            admin_notion_version: "2026-06-01".into(),
            connect_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(65),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle: 64,
            ca_bundle: None,
            proxy: None,
            no_proxy: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    pub format: String,
    pub level: String,
    /// Also append the request events, as JSON lines, to this file ("" = off).
    pub file: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: "pretty".into(),
            level: "info".into(),
            file: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Notion's per-connection budget by workspace plan: "standard" or "business".
    pub plan: String,
    /// Requests per 60-second window; 0 = the plan's.
    pub per_minute: u32,
    /// Smoothing rate (requests per second); 0 = the window budget / 60.
    pub rate: f64,
    /// Smoothing burst; 0 = a sixth of the window budget.
    pub burst: u32,
    pub max_queue: usize,
    /// Tokens the shaper keeps state for at once (least recently used idle ones make room).
    pub max_tokens: usize,
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
    pub adaptive: bool,
    /// Times one request is sent again after Notion's 429/529 before the 429 goes to the caller.
    pub max_resends: u32,
    /// Learn each token's workspace from `GET /v1/users/me`.
    pub discover_workspaces: bool,
    /// `X-Gateway-Client` value -> weight, or `{ weight, from = [addresses or networks] }`.
    pub client_weights: BTreeMap<String, RawClientWeight>,
    /// Where budgets live: "local" (this process) or "redis" (shared by replicas).
    pub backend: String,
    /// `redis://[user:password@]host:port[/db]` for backend = "redis".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    /// Longest wait for one Redis call before the replica falls back to its local share.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// Share of each budget a replica uses on its own while Redis is unreachable.
    pub redis_local_share: f64,
    /// Prefix of every Redis key the gateway writes.
    pub redis_prefix: String,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            plan: "standard".into(),
            per_minute: 0,
            rate: 0.0,
            burst: 0,
            max_queue: 1000,
            max_tokens: 10_000,
            max_wait: Duration::from_secs(30),
            adaptive: true,
            max_resends: 5,
            discover_workspaces: true,
            client_weights: BTreeMap::new(),
            backend: "local".into(),
            redis_url: None,
            redis_timeout: Duration::from_millis(250),
            redis_local_share: 0.5,
            redis_prefix: "notion-gateway".into(),
        }
    }
}

/// A caller's weight: a number (for that `X-Gateway-Client` from any address), or bound to
/// the addresses it may come from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawClientWeight {
    Weight(u32),
    Bound { weight: u32, from: Vec<String> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIntegration {
    pub name: String,
    /// Hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_sha256: Option<String>,
    /// Or: the environment variable that holds the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
    /// Or: a file that holds the token (re-read on reload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkspace {
    /// Notion's id of the workspace (`bot.workspace_id` of `GET /v1/users/me`): tokens found
    /// to be in it join this entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The workspace's budget per 60-second window, if known (Notion does not publish it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_minute: Option<u32>,
    /// A smoothing rate and burst for the whole workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetry {
    pub max_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    pub budget_ratio: f64,
    pub budget_min_per_second: f64,
    pub replay_limit: ByteSize,
    /// `[[retry.routes]]`: per-route opt-ins.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RawRetryRoute>,
}

impl Default for RawRetry {
    fn default() -> Self {
        Self {
            max_attempts: 50,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(5),
            budget_ratio: 0.2,
            budget_min_per_second: 10.0,
            replay_limit: ByteSize::mib(1),
            routes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetryRoute {
    /// `"POST /v1/pages"`: a method and a template of the endpoint catalogue.
    pub route: String,
    /// Retry this non-idempotent route on 5xx, broken connections and timeouts too.
    #[serde(default)]
    pub retry_unsafe: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawErrors {
    /// Turn Notion's 4xx/5xx that are not its error JSON (CDN pages) into Notion-shaped errors.
    pub rewrite_edge_pages: bool,
    /// Refuse, before they spend budget, requests Notion certainly refuses.
    pub prevalidate: bool,
}

impl Default for RawErrors {
    fn default() -> Self {
        Self {
            rewrite_edge_pages: true,
            prevalidate: true,
        }
    }
}
