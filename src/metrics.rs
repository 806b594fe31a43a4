//! Metric names, the calls that record them, and the Prometheus exporter, in one place.
//!
//! Recorded through the `metrics` facade into one process-wide `metrics-exporter-prometheus`
//! recorder, rendered by `GET /metrics`. Labels are bounded: route templates of the endpoint
//! catalogue (never an id), integration names or token hash prefixes (never a token), status
//! codes, and reasons from fixed lists (Notion's `rate_limit_reason` is mapped onto the
//! documented values, `other` for anything else: [`crate::shaper::Limit::LABELS`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Counter, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by `route`, `method` and `status`.
pub const REQUESTS: &str = "notion_gateway_requests_total";
/// Declared request body sizes, by `result` (`ok`: status below 400, `error`): errors
/// against request size.
pub const REQUEST_SIZE: &str = "notion_gateway_request_size_bytes";
/// Time from the request's head to the response's head, by `route`.
pub const REQUEST_DURATION: &str = "notion_gateway_request_duration_seconds";
/// Requests being handled now.
pub const IN_FLIGHT: &str = "notion_gateway_in_flight_requests";
/// Upstream attempts, by `route` and `outcome` (`2xx`, `4xx`, `429`, `529`, `5xx`, `connect`,
/// `reset`, `timeout`, `error`).
pub const UPSTREAM_ATTEMPTS: &str = "notion_gateway_upstream_attempts_total";
/// One upstream attempt, up to the response head, by `route`.
pub const UPSTREAM_ATTEMPT_DURATION: &str = "notion_gateway_upstream_attempt_duration_seconds";
/// Retries sent, by `route` and `reason` (what the failed attempt ended with).
pub const RETRIES: &str = "notion_gateway_retries_total";
/// Failed attempts that were not retried although their class allows it, by `route` and `why`
/// (`attempts`, `deadline`, `budget`).
pub const RETRIES_DENIED: &str = "notion_gateway_retries_denied_total";
/// Time a request waited for its budget (every attempt), by `integration`.
pub const QUEUE_WAIT: &str = "notion_gateway_queue_wait_seconds";
/// Requests waiting for their budget, by `integration` (set when `/metrics` is read).
pub const QUEUE_DEPTH: &str = "notion_gateway_queue_depth";
/// The rate the shaper currently allows, by `integration` (set when `/metrics` is read).
pub const EFFECTIVE_RATE: &str = "notion_gateway_effective_rate";
/// Requests counted in the key's 60-second window, by `integration` (set when `/metrics` is
/// read).
pub const WINDOW_USED: &str = "notion_gateway_window_used";
/// The key's window budget in force (configured, learned or provisional), by `integration`.
pub const WINDOW_BUDGET: &str = "notion_gateway_window_budget";
/// Seconds until Notion's pause of the key ends, by `integration` (0 when not paused).
pub const PAUSED: &str = "notion_gateway_paused_seconds";
/// Notion's 429 and 529, by `integration`, `status` and `reason` (`rate_limit_reason`).
pub const NOTION_PUSHBACKS: &str = "notion_gateway_notion_pushbacks_total";
/// Requests the gateway answered by itself, by `reason` (`queue_full`, `wait_too_long`,
/// `body_too_large`, `unauthorized`, ...).
pub const REJECTIONS: &str = "notion_gateway_rejections_total";
/// Requests of each gateway key, by `key` (its configured name) and `status`.
pub const KEY_REQUESTS: &str = "notion_gateway_key_requests_total";
/// Time a gateway key's requests spent queued (its own rate and the budgets), by `key`.
pub const KEY_QUEUE_WAIT: &str = "notion_gateway_key_queue_wait_seconds";
/// Configuration reloads (SIGHUP), by `result` (`ok`, `error`).
pub const CONFIG_RELOADS: &str = "notion_gateway_config_reloads_total";
/// With `limits.backend = "redis"`: 1 while budgets are shared through Redis, 0 while this
/// replica works alone on its local share because Redis is unreachable.
pub const SHARED_BUDGETS: &str = "notion_gateway_shared_budgets";
/// Redis calls that failed or timed out, by `op` (`reserve`, `pause`, `refund`, `probe`,
/// `load`).
pub const REDIS_ERRORS: &str = "notion_gateway_redis_errors_total";
/// One Redis call of the shared budgets, by `op`.
pub const REDIS_CALL_DURATION: &str = "notion_gateway_redis_call_duration_seconds";
/// Always 1, with the gateway's `version`.
pub const BUILD_INFO: &str = "notion_gateway_build_info";

/// Every metric the gateway exports.
pub const ALL: &[&str] = &[
    REQUESTS,
    REQUEST_SIZE,
    REQUEST_DURATION,
    IN_FLIGHT,
    UPSTREAM_ATTEMPTS,
    UPSTREAM_ATTEMPT_DURATION,
    RETRIES,
    RETRIES_DENIED,
    QUEUE_WAIT,
    QUEUE_DEPTH,
    EFFECTIVE_RATE,
    WINDOW_USED,
    WINDOW_BUDGET,
    PAUSED,
    NOTION_PUSHBACKS,
    REJECTIONS,
    SHARED_BUDGETS,
    REDIS_ERRORS,
    REDIS_CALL_DURATION,
    BUILD_INFO,
    CONNECTIONS_EVICTED,
    LANES_EVICTED,
    KEY_REQUESTS,
    KEY_QUEUE_WAIT,
    CONFIG_RELOADS,
];

/// Request, queue-wait buckets: milliseconds of a fast path up to a minute of queueing.
const WAIT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0,
];
/// Request bodies: JSON calls of a few KB up to Notion's 20 MB file parts.
const SIZE_BUCKETS: &[f64] = &[
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 5242880.0, 20971520.0,
];
/// Redis calls: a loopback round trip is ~0.1 ms; `limits.redis_timeout` is 250 ms.
const REDIS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Upstream attempts run up to `upstream.attempt_timeout` (65 s).
const ATTEMPT_BUCKETS: &[f64] = &[
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 65.0,
];

/// The gateway's recorder once [`install`] has run: `Some` when it is the global one.
static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process-wide recorder on first use and returns its handle; `None` if another
/// recorder was installed first (a library user's own).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(WAIT_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(UPSTREAM_ATTEMPT_DURATION.into()),
                        ATTEMPT_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(REQUEST_SIZE.into()), SIZE_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(REDIS_CALL_DURATION.into()),
                        REDIS_BUCKETS,
                    )
                })
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            zero_alert_counters();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            Some(handle)
        })
        .clone()
}

fn describe() {
    describe_counter!(
        REQUESTS,
        "Requests answered, by route template, method and status."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from the request head to the response head, queueing and retries included."
    );
    describe_gauge!(IN_FLIGHT, "Requests being handled now.");
    describe_counter!(
        UPSTREAM_ATTEMPTS,
        "Attempts sent to Notion, by route template and outcome."
    );
    describe_histogram!(
        UPSTREAM_ATTEMPT_DURATION,
        Unit::Seconds,
        "One attempt to Notion, up to its response head."
    );
    describe_counter!(
        RETRIES,
        "Retries sent, by route template and what the failed attempt ended with."
    );
    describe_counter!(
        RETRIES_DENIED,
        "Retryable failures not retried: attempts, deadline or retry budget exhausted."
    );
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time a request waited for its token's (and workspace's) budget."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "Requests waiting for the budget, per integration."
    );
    describe_gauge!(
        EFFECTIVE_RATE,
        "Requests per second the shaper allows now (below the configured rate after Notion's 429s)."
    );
    describe_gauge!(
        WINDOW_USED,
        "Requests counted in the key's 60-second window (Notion's per-connection model)."
    );
    describe_gauge!(
        WINDOW_BUDGET,
        "The key's window budget in force: configured, learned from Notion's 429s, or a workspace's guess."
    );
    describe_gauge!(
        PAUSED,
        Unit::Seconds,
        "Seconds until Notion's Retry-After pause ends."
    );
    describe_counter!(
        NOTION_PUSHBACKS,
        "Notion's 429 and 529 answers, by integration, status and rate_limit_reason."
    );
    describe_counter!(
        REJECTIONS,
        "Requests the gateway answered by itself, by reason (nothing or little sent to Notion)."
    );
    describe_gauge!(
        SHARED_BUDGETS,
        "1 while budgets are shared through Redis, 0 while this replica uses its local share."
    );
    describe_counter!(
        REDIS_ERRORS,
        "Redis calls of the shared budgets that failed or timed out, by op."
    );
    describe_histogram!(
        REDIS_CALL_DURATION,
        Unit::Seconds,
        "One Redis call of the shared budgets, by op."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version label names the build.");
    describe_counter!(
        KEY_REQUESTS,
        "Requests of each gateway key, by key name and status."
    );
    describe_histogram!(
        KEY_QUEUE_WAIT,
        Unit::Seconds,
        "Time a gateway key's requests spent queued (its own rate and the budgets), by key."
    );
    describe_counter!(
        CONFIG_RELOADS,
        "Configuration reloads (SIGHUP), by result (ok, error)."
    );
}

/// One budget key's gauges, as the shaper reports them when `/metrics` is read.
#[derive(Debug, Clone)]
pub struct KeyGauges {
    /// The `integration` label: a configured name, a workspace, or a token's hash prefix.
    pub integration: String,
    pub queued: usize,
    pub effective_rate: f64,
    pub paused_s: f64,
    /// Releases counted in the window, and its budget.
    pub window: Option<(u32, u32)>,
}

/// The Prometheus text for `GET /metrics`: the shaper's gauges are set from `keys` first.
pub fn render(handle: &PrometheusHandle, keys: impl IntoIterator<Item = KeyGauges>) -> String {
    for k in keys {
        metrics::gauge!(QUEUE_DEPTH, "integration" => k.integration.clone()).set(k.queued as f64);
        metrics::gauge!(EFFECTIVE_RATE, "integration" => k.integration.clone())
            .set(k.effective_rate);
        if let Some((used, budget)) = k.window {
            metrics::gauge!(WINDOW_USED, "integration" => k.integration.clone())
                .set(f64::from(used));
            metrics::gauge!(WINDOW_BUDGET, "integration" => k.integration.clone())
                .set(f64::from(budget));
        }
        metrics::gauge!(PAUSED, "integration" => k.integration).set(k.paused_s);
    }
    metrics::gauge!(IN_FLIGHT).set(IN_FLIGHT_NOW.load(std::sync::atomic::Ordering::Relaxed) as f64);
    handle.run_upkeep();
    handle.render()
}

pub fn request(
    route: &'static str,
    method: &http::Method,
    status: u16,
    took: Duration,
    body_bytes: Option<u64>,
) {
    let method = method_label(method);
    let cached = with_handles(|h| {
        if let Some(n) = body_bytes {
            h.request_size[usize::from(status >= 400)]
                .get_or_insert_with(|| request_size_handle(status))
                .record(n as f64);
        }
        h.requests
            .entry((static_key(route), static_key(method), status))
            .or_insert_with(|| requests_handle(route, method, status))
            .increment(1);
        h.request_duration
            .entry(static_key(route))
            .or_insert_with(|| request_duration_handle(route))
            .record(took.as_secs_f64());
    });
    if !cached {
        if let Some(n) = body_bytes {
            request_size_handle(status).record(n as f64);
        }
        requests_handle(route, method, status).increment(1);
        request_duration_handle(route).record(took.as_secs_f64());
    }
}

fn request_size_handle(status: u16) -> Histogram {
    let result = if status < 400 { "ok" } else { "error" };
    metrics::histogram!(REQUEST_SIZE, "result" => result)
}

fn requests_handle(route: &'static str, method: &'static str, status: u16) -> Counter {
    metrics::counter!(REQUESTS, "route" => route, "method" => method, "status" => status_label(status))
}

fn request_duration_handle(route: &'static str) -> Histogram {
    metrics::histogram!(REQUEST_DURATION, "route" => route)
}

/// Requests in flight: a plain atomic on the request path, copied into the gauge when
/// `/metrics` is read.
static IN_FLIGHT_NOW: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// Counts a request in flight until the guard drops.
pub struct InFlight;

impl InFlight {
    pub fn start() -> Self {
        IN_FLIGHT_NOW.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT_NOW.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub fn upstream_attempt(route: &'static str, outcome: &'static str, took: Duration) {
    let cached = with_handles(|h| {
        h.attempts
            .entry((static_key(route), static_key(outcome)))
            .or_insert_with(|| attempts_handle(route, outcome))
            .increment(1);
        h.attempt_duration
            .entry(static_key(route))
            .or_insert_with(|| attempt_duration_handle(route))
            .record(took.as_secs_f64());
    });
    if !cached {
        attempts_handle(route, outcome).increment(1);
        attempt_duration_handle(route).record(took.as_secs_f64());
    }
}

fn attempts_handle(route: &'static str, outcome: &'static str) -> Counter {
    metrics::counter!(UPSTREAM_ATTEMPTS, "route" => route, "outcome" => outcome)
}

fn attempt_duration_handle(route: &'static str) -> Histogram {
    metrics::histogram!(UPSTREAM_ATTEMPT_DURATION, "route" => route)
}

pub fn retry(route: &'static str, reason: &'static str) {
    metrics::counter!(RETRIES, "route" => route, "reason" => reason).increment(1);
}

pub fn retry_denied(route: &'static str, why: &'static str) {
    metrics::counter!(RETRIES_DENIED, "route" => route, "why" => why).increment(1);
}

pub fn queue_wait(integration: &std::sync::Arc<str>, waited: Duration) {
    let cached = with_handles(|h| {
        if let Some(hist) = h.queue_wait.get(&**integration) {
            hist.record(waited.as_secs_f64());
            return;
        }
        if h.queue_wait.len() >= MAX_CACHED_INTEGRATIONS {
            h.queue_wait.clear();
        }
        let hist = queue_wait_handle(integration);
        hist.record(waited.as_secs_f64());
        h.queue_wait.insert(integration.clone(), hist);
    });
    if !cached {
        queue_wait_handle(integration).record(waited.as_secs_f64());
    }
}

fn queue_wait_handle(integration: &std::sync::Arc<str>) -> Histogram {
    metrics::histogram!(QUEUE_WAIT, "integration" => integration.clone())
}

/// Notion's 429 or 529 for `integration`; `reason` is one of a fixed set of labels (the
/// documented `rate_limit_reason` values, `other`, `service_overload`).
pub fn notion_pushback(integration: &std::sync::Arc<str>, status: u16, reason: &'static str) {
    metrics::counter!(
        NOTION_PUSHBACKS,
        "integration" => integration.clone(),
        "status" => status_label(status),
        "reason" => reason
    )
    .increment(1);
}

pub fn redis_call(op: &'static str, took: Duration, ok: bool) {
    metrics::histogram!(REDIS_CALL_DURATION, "op" => op).record(took.as_secs_f64());
    if !ok {
        metrics::counter!(REDIS_ERRORS, "op" => op).increment(1);
    }
}

pub fn shared_budgets(shared: bool) {
    metrics::gauge!(SHARED_BUDGETS).set(if shared { 1.0 } else { 0.0 });
}

/// Outcomes of an upstream attempt (`outcome` label of `notion_gateway_upstream_attempts_total`).
pub const ATTEMPT_OUTCOMES: &[&str] = &[
    "2xx", "4xx", "429", "529", "5xx", "connect", "reset", "timeout", "error",
];
/// Rejection reasons the alert rules name (config/prometheus/alerts.yml).
pub const ALERTED_REJECTIONS: &[&str] = &["queue_full", "max_wait", "queue_expired"];

/// The counters the alert rules read exist at zero from start-up ("avoid missing metrics"):
/// `NotionUpstreamFailing` compares the 2xx/4xx attempts with `== 0`, which an absent series never
/// satisfies, so a gateway started while Notion is down would not alert. The attempts are
/// recorded under the `unknown` route (no real route is invented).
fn zero_alert_counters() {
    for outcome in ATTEMPT_OUTCOMES {
        metrics::counter!(UPSTREAM_ATTEMPTS, "route" => crate::catalogue::UNKNOWN, "outcome" => *outcome)
            .absolute(0);
    }
    for reason in ALERTED_REJECTIONS {
        metrics::counter!(REJECTIONS, "reason" => *reason).absolute(0);
    }
    for result in ["ok", "error"] {
        metrics::counter!(CONFIG_RELOADS, "result" => result).absolute(0);
    }
}

/// One request of a gateway key (`key`: its configured name, a bounded label).
pub fn key_request(key: &std::sync::Arc<str>, status: u16, queued: Duration) {
    metrics::counter!(KEY_REQUESTS, "key" => key.to_string(), "status" => status_label(status))
        .increment(1);
    metrics::histogram!(KEY_QUEUE_WAIT, "key" => key.to_string()).record(queued.as_secs_f64());
}

/// A configuration reload and how it ended.
pub fn config_reload(ok: bool) {
    metrics::counter!(CONFIG_RELOADS, "result" => if ok { "ok" } else { "error" }).increment(1);
}

pub fn rejection(reason: &'static str) {
    metrics::counter!(REJECTIONS, "reason" => reason).increment(1);
}

/// The `outcome` label of an upstream answer's status.
pub fn status_outcome(status: u16) -> &'static str {
    match status {
        429 => "429",
        529 => "529",
        500..=599 => "5xx",
        400..=499 => "4xx",
        _ => "2xx",
    }
}

/// Status codes as labels without allocating for the common ones.
fn status_label(status: u16) -> std::borrow::Cow<'static, str> {
    const KNOWN: &[(u16, &str)] = &[
        (200, "200"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (408, "408"),
        (409, "409"),
        (413, "413"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
        (529, "529"),
    ];
    match KNOWN.iter().find(|(s, _)| *s == status) {
        Some((_, l)) => std::borrow::Cow::Borrowed(l),
        None => std::borrow::Cow::Owned(status.to_string()),
    }
}

fn method_label(m: &http::Method) -> &'static str {
    match *m {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::PUT => "PUT",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Idle client connections closed to admit a new one at `server.max_connections`, by `pool`
/// (`data`, or `reserve`: the few kept for health probes).
pub const CONNECTIONS_EVICTED: &str = "notion_gateway_connections_evicted_total";

pub fn connection_evicted(pool: &'static str) {
    // Described here rather than at start-up: rare, and this is the only place it is recorded.
    metrics::describe_counter!(
        CONNECTIONS_EVICTED,
        "Idle client connections closed to admit a new one at server.max_connections, by pool."
    );
    metrics::counter!(CONNECTIONS_EVICTED, "pool" => pool).increment(1);
}

/// Lanes (per-token state) evicted to make room or because they were idle, by `state`
/// (`rested`: nothing remembered; `learned`: a pause or a learned budget was dropped).
pub const LANES_EVICTED: &str = "notion_gateway_lanes_evicted_total";

pub fn lane_evicted(rested: bool) {
    let state = if rested { "rested" } else { "learned" };
    metrics::counter!(LANES_EVICTED, "state" => state).increment(1);
}

// ---- Cached handles of the per-request series ----------------------------------------------
//
// `metrics::counter!(NAME, "route" => route, ...)` builds a `Key` (a `Vec` of labels, hashed),
// looks it up in the recorder's sharded registry under a read lock and clones the handle, on
// every call. The per-request series have label sets taken from small fixed sets (route
// templates, methods, status codes, attempt outcomes, integration labels), so each thread
// keeps the handles it has used in a small map: a hit is one hash of a pointer or a short
// string and the record itself. A handle is the registry's own (the same atomic the exporter
// renders), so names, labels and values are exactly those of the macros. Used only while this
// module's recorder is the global one: before `install` (or when another recorder was
// installed first) every call goes through the macros as before.

/// A hasher for the caches' small keys (pointers, short strings): FxHash's multiply-rotate.
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }
    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A `&'static str` label by address and length: equal keys are the same string. Two copies of
/// one string at different addresses get two entries holding the same registry handle.
type StaticKey = (usize, usize);

fn static_key(s: &'static str) -> StaticKey {
    (s.as_ptr() as usize, s.len())
}

/// More integration labels than this (configured integrations, workspaces and `other`; a
/// reload may rename them) and a thread's map starts again.
const MAX_CACHED_INTEGRATIONS: usize = 1024;

#[derive(Default)]
struct Handles {
    /// `REQUESTS` by route, method (its label) and status.
    requests: FxMap<(StaticKey, StaticKey, u16), Counter>,
    /// `REQUEST_DURATION` by route.
    request_duration: FxMap<StaticKey, Histogram>,
    /// `REQUEST_SIZE` for `ok` and `error`.
    request_size: [Option<Histogram>; 2],
    /// `UPSTREAM_ATTEMPTS` by route and outcome.
    attempts: FxMap<(StaticKey, StaticKey), Counter>,
    /// `UPSTREAM_ATTEMPT_DURATION` by route.
    attempt_duration: FxMap<StaticKey, Histogram>,
    /// `QUEUE_WAIT` by integration label.
    queue_wait: FxMap<std::sync::Arc<str>, Histogram>,
}

thread_local! {
    static HANDLES: RefCell<Handles> = RefCell::new(Handles::default());
}

/// Runs `f` on this thread's cached handles when the gateway's recorder is the global one;
/// `false` (nothing done) otherwise, or if the cache is not available (re-entered, or the
/// thread is exiting): the caller then records through the macros.
fn with_handles(f: impl FnOnce(&mut Handles)) -> bool {
    if !matches!(HANDLE.get(), Some(Some(_))) {
        return false;
    }
    HANDLES
        .try_with(|h| match h.try_borrow_mut() {
            Ok(mut h) => {
                f(&mut h);
                true
            }
            Err(_) => false,
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_cannot_carry_ids_or_tokens() {
        // Route labels are catalogue templates: a path full of ids maps to its template.
        let e = crate::catalogue::classify(
            &http::Method::GET,
            "/v1/pages/59833787-2cf9-4fdf-8782-e53db20768a5/properties/title",
        );
        assert_eq!(e.template, "/v1/pages/{id}/properties/{property_id}");
        assert_eq!(
            method_label(&http::Method::from_bytes(b"BREW").unwrap()),
            "other"
        );
    }
}
