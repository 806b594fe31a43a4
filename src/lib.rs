//! notion-gateway: a rate-limiting reverse proxy for the Notion API.
//!
//! Callers change only their client's base URL; the gateway forwards `/v1/*` to Notion
//! unchanged and streaming, with sane timeouts and Notion-shaped errors of its own. The
//! contract is `docs/behaviour.md` (§0–§8); `ARCHITECTURE.md` has the bird's-eye view.
//!
//! # Layout
//!
//! * [`config`]: layered configuration (defaults < file < env < flags), validated into [`Config`].
//! * [`server`]: [`run`] — accept loop, connection timeouts, graceful drain.
//! * [`connections`]: connection slots: the oldest idle one makes room, a reserve for probes.
//! * [`access`]: gateway keys and the access mode (who may use the gateway).
//! * [`app`]: the HTTP surface: routes, and the guard that keeps it from being an open proxy.
//! * [`gateway`]: the state every connection and request shares ([`gateway::Gateway`]).
//! * [`request_id`]: `x-request-id` values the gateway makes.
//! * [`proxy`]: the request pipeline, caller → Notion → caller.
//! * [`path`]: the path guard: dot segments and hidden separators are never forwarded.
//! * [`catalogue`]: every Notion endpoint, its route label and what a repeat of it would do.
//! * [`rate_limit`]: what Notion's 429/529 say (`Retry-After`, `rate_limit_reason`).
//! * [`retry`]: which failed attempts go again, backoff, the retry budget.
//! * [`upstream`]: the only code that talks to Notion (pool, TLS, corporate proxy).
//! * [`headers`]: hop-by-hop rules, `Host`, `Notion-Version`.
//! * [`body`]: streaming bodies with stall timeouts and size limits.
//! * [`error`]: every answer the gateway gives by itself, in Notion's JSON shape.
//! * [`identity`]: tokens reduced to short hashes.
//! * [`shaper`]: per-token and per-workspace budgets (GCRA in [`shaper::limiter`]), fair
//!   queues, Notion's 429/529; budgets in this process or in Redis.
//! * [`admin`]: `/healthz`, `/readyz`, `/status`.
//! * [`telemetry`]: logging and the per-request event.
//! * [`metrics`]: metric names and the calls that record them.
//! * [`cli`]: the command line of the `notion-gateway` binary.
//! * [`doctor`]: `notion-gateway doctor`, the checklist for failing Notion calls.
//! * [`report`]: `notion-gateway report`, the error analysis of a request log.
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod app;
pub mod body;
pub mod catalogue;
pub mod cli;
pub mod config;
pub mod connections;
pub mod doctor;
pub mod error;
pub mod gateway;
pub mod headers;
pub mod identity;
pub mod metrics;
pub mod path;
pub mod proxy;
pub mod rate_limit;
pub mod report;
pub mod request_id;
pub mod retry;
pub mod server;
pub mod shaper;
pub mod telemetry;
pub mod upstream;

pub use config::Config;
pub use server::run;
