//! The Redis backend: budgets shared by replicas (docs/behaviour.md §7, `limits.backend = "redis"`).
//!
//! Queues stay local: each replica's dispatcher still releases its own waiting requests in
//! its own fair order. Only the budget (GCRA state, pause, effective rate) lives in Redis,
//! changed atomically by one Lua script per decision ([`gcra.lua`](gcra.lua)) on Redis's
//! clock, so replica clocks do not matter.
//!
//! A dispatcher *reserves* the next slot: the script answers how far ahead it is, the
//! dispatcher sleeps exactly that long (one timer, no polling) and hands the slot to whichever
//! of its waiters is next by then. A slot nobody takes is refunded.
//!
//! Redis trouble: a call that fails or takes longer than `limits.redis_timeout` switches the
//! replica to *degraded*: its dispatchers use a local share (`limits.redis_local_share`) of
//! each budget, no request waits for Redis, and a probe (one `PING` per second) switches back
//! when Redis answers. Each transition is logged once and shown in `/readyz`, `/status` and
//! the `notion_gateway_shared_budgets` gauge.

mod dispatch;

pub(super) use dispatch::{run, RemoteBudget};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use crate::config::{redact_userinfo, SharedBudgets};
use crate::metrics;

const SCRIPT: &str = include_str!("gcra.lua");
/// Keys expire after this long without a write: the learned rate is forgotten after an hour of
/// quiet, as in the local backend ([`super::budget::FORGET_LEARNED`]).
const KEY_TTL: Duration = Duration::from_secs(3600);
use crate::shaper::window::FORGET_LEARNED;
/// How often a degraded replica asks Redis whether it is back.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// One budget key as a call sends it.
#[derive(Debug, Clone)]
pub struct KeySpec {
    pub key: Arc<str>,
    pub interval_us: u64,
    pub tolerance_us: u64,
    /// This replica changed the rate since its last call: store it for every replica.
    pub changed: bool,
    /// The key's window budget as configured (0: no window), and whether it is a guess.
    pub window: u32,
    pub provisional: bool,
}

impl KeySpec {
    fn args(&self, inv: &mut redis::ScriptInvocation<'_>) {
        inv.key(&*self.key)
            .arg(self.interval_us)
            .arg(self.tolerance_us)
            .arg(if self.changed { "1" } else { "0" })
            .arg(self.window)
            .arg(if self.provisional { "1" } else { "0" })
            .arg(FORGET_LEARNED.as_micros() as u64);
    }
}

/// Slots taken in the shared budgets by one call.
#[derive(Debug, Clone)]
pub struct Reservation {
    /// Requests waiting on the other replicas (for `max_wait` predictions).
    pub others_waiting: u32,
    /// The slots, earliest first (at least one): how far ahead of the call each is, and the
    /// slot on Redis's clock (what a refund gives back).
    pub slots: Vec<(Duration, u64)>,
    /// Per key, in the order sent: what Redis holds of it.
    pub keys: Vec<RemoteKey>,
}

/// What Redis holds of one key, as a reservation left it.
#[derive(Debug, Clone, Copy)]
pub struct RemoteKey {
    /// The interval in force (another replica's rate, maybe).
    pub interval_us: u64,
    /// How far ahead the next free slot is.
    pub next_free: Duration,
    /// The window budget in force (configured, learned, or a growing guess) and how many
    /// releases of every replica it counts now.
    pub window_budget: u32,
    pub window_used: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisCallError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("redis answered something the script does not return")]
    Malformed,
}

pub struct RedisBudgets {
    cfg: SharedBudgets,
    conn: ConnectionManager,
    script: redis::Script,
    /// Names this replica's queue-depth report in Redis.
    replica: String,
    degraded: AtomicBool,
    /// Counts switches between Redis and the local share: a key that last saw another value
    /// starts its next share as spent ([`RedisBudgets::epoch`]).
    transitions: std::sync::atomic::AtomicU64,
    state: Mutex<Health>,
}

#[derive(Debug, Default)]
struct Health {
    since: Option<Instant>,
    last_error: Option<String>,
    probing: bool,
}

/// `/status` and `/readyz` view.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RedisStatus {
    /// `shared` or `local_share`.
    pub mode: &'static str,
    pub redis: String,
    pub local_share: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded_for_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl RedisBudgets {
    /// Connects lazily: a Redis that is down at start-up makes the replica start degraded, not
    /// fail (one `PING` at once finds out). Errs only on a malformed URL. Needs a tokio runtime.
    pub fn new(cfg: SharedBudgets) -> Result<Arc<Self>, RedisCallError> {
        let client = redis::Client::open(cfg.redis_url.as_str())?;
        let conn = ConnectionManager::new_lazy_with_config(
            client,
            ConnectionManagerConfig::new()
                .set_connection_timeout(Some(cfg.timeout))
                .set_response_timeout(Some(cfg.timeout))
                .set_number_of_retries(1),
        )?;
        let shared = Arc::new(Self {
            cfg,
            conn,
            script: redis::Script::new(SCRIPT),
            replica: format!("{:016x}", fastrand::u64(..)),
            degraded: AtomicBool::new(false),
            transitions: std::sync::atomic::AtomicU64::new(0),
            state: Mutex::default(),
        });
        metrics::shared_budgets(true);
        // Learn at start-up whether Redis is there, rather than at the first request.
        let first = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = first.ping().await {
                first.degrade(&e);
            }
        });
        Ok(shared)
    }

    /// Whether budgets are shared now (else this replica uses its local share).
    pub fn is_connected(&self) -> bool {
        !self.degraded.load(Ordering::Relaxed)
    }

    /// Changes at every switch between Redis and the local share. Whatever a replica sends on
    /// one side is not counted on the other, so after a switch each key starts as if its burst
    /// were spent: the local share at once, Redis at the key's first reservation (no burst on
    /// top of what the other side just sent, at the fail-over or the return).
    pub fn epoch(&self) -> u64 {
        self.transitions.load(Ordering::Relaxed)
    }

    pub fn local_share(&self) -> f64 {
        self.cfg.local_share
    }

    /// The key of a token's budget, from the SHA-256 of the token (never the token).
    pub fn token_key(&self, sha256: &[u8; 32]) -> Arc<str> {
        let hex: String = sha256[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("{}:token:{hex}", self.cfg.prefix).into()
    }

    pub fn workspace_key(&self, name: &str) -> Arc<str> {
        format!("{}:workspace:{name}", self.cfg.prefix).into()
    }

    pub fn status(&self) -> RedisStatus {
        let h = self.lock();
        let shared = self.is_connected();
        RedisStatus {
            mode: if shared { "shared" } else { "local_share" },
            redis: redact_userinfo(&self.cfg.redis_url),
            local_share: self.cfg.local_share,
            degraded_for_s: (!shared)
                .then(|| h.since.map(|s| s.elapsed().as_secs()))
                .flatten(),
            last_error: (!shared).then(|| h.last_error.clone()).flatten(),
        }
    }

    /// Takes the earliest slot every key allows, and after it up to `want - 1` more while they
    /// lie within `horizon` of the call (one round trip for a burst of requests; a tight
    /// budget's slots are still taken one by one). `waiting`: requests waiting on this replica
    /// that no slot is on its way for (the slots taken serve as many of them). `resume`: this
    /// replica worked on its local share since its last reservation of these keys: Redis
    /// starts them as if their burst were spent.
    pub async fn reserve(
        self: &Arc<Self>,
        keys: &[KeySpec],
        want: usize,
        horizon: Duration,
        waiting: usize,
        resume: bool,
    ) -> Result<Reservation, RedisCallError> {
        let mut inv = self.script.prepare_invoke();
        inv.arg("reserve")
            .arg("")
            .arg(KEY_TTL.as_millis() as u64)
            .arg(&self.replica)
            .arg(waiting as u64)
            .arg(if resume { "1" } else { "0" })
            .arg(want.max(1) as u64)
            .arg(horizon.as_micros() as u64);
        for k in keys {
            k.args(&mut inv);
        }
        let reply: Vec<i64> = self
            .call("reserve", inv.invoke_async(&mut self.conn.clone()))
            .await?;
        parse_reservation(&reply, keys.len(), want.max(1))
    }

    /// Notion pushed back: pause the keys for `retry_after` on every replica; `learn`: the 429
    /// named these keys' window limit, which learns its budget from the releases Redis
    /// counted. Returns each key's window budget in force afterwards.
    pub async fn pause(
        self: &Arc<Self>,
        keys: &[KeySpec],
        retry_after: Duration,
        learn: bool,
    ) -> Result<Vec<u32>, RedisCallError> {
        let mut inv = self.script.prepare_invoke();
        inv.arg("pause")
            .arg("")
            .arg(KEY_TTL.as_millis() as u64)
            .arg(retry_after.as_micros() as u64)
            .arg(if learn { "1" } else { "0" });
        for k in keys {
            k.args(&mut inv);
        }
        let reply: Vec<i64> = self
            .call("pause", inv.invoke_async(&mut self.conn.clone()))
            .await?;
        if reply.len() != 1 + keys.len() {
            return Err(RedisCallError::Malformed);
        }
        Ok(reply[1..]
            .iter()
            .map(|b| u32::try_from(*b).unwrap_or(u32::MAX))
            .collect())
    }

    /// Gives back reserved `slots` nobody took.
    pub async fn refund(
        self: &Arc<Self>,
        keys: &[KeySpec],
        slots: &[u64],
    ) -> Result<(), RedisCallError> {
        let mut inv = self.script.prepare_invoke();
        inv.arg("refund")
            .arg("")
            .arg(KEY_TTL.as_millis() as u64)
            .arg(slots.len() as u64);
        for s in slots {
            inv.arg(*s);
        }
        for k in keys {
            inv.key(&*k.key).arg(k.interval_us);
        }
        let _: Vec<i64> = self
            .call("refund", inv.invoke_async(&mut self.conn.clone()))
            .await?;
        Ok(())
    }

    /// Runs one call under the timeout; a failure degrades the replica.
    async fn call<T>(
        self: &Arc<Self>,
        op: &'static str,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisCallError> {
        let result = self.timed(op, fut).await;
        if let Err(e) = &result {
            self.degrade(e);
        }
        result
    }

    /// Runs one call under `limits.redis_timeout`, timed in the metrics.
    async fn timed<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisCallError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(self.cfg.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(RedisCallError::Redis(e)),
            Err(_) => Err(RedisCallError::Timeout(self.cfg.timeout)),
        };
        metrics::redis_call(op, started.elapsed(), result.is_ok());
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Switches to the local share (logged once per transition) and starts the probe.
    fn degrade(self: &Arc<Self>, e: &RedisCallError) {
        let mut h = self.lock();
        h.last_error = Some(e.to_string());
        if !self.degraded.swap(true, Ordering::Relaxed) {
            self.transitions.fetch_add(1, Ordering::Relaxed);
            h.since = Some(Instant::now());
            metrics::shared_budgets(false);
            tracing::warn!(
                redis = %redact_userinfo(&self.cfg.redis_url),
                error = %e,
                local_share = self.cfg.local_share,
                "shared budgets unavailable: working alone on the local share until Redis answers"
            );
        }
        if !h.probing {
            h.probing = true;
            tokio::spawn(probe(Arc::downgrade(self)));
        }
    }

    /// One `PING` under the timeout.
    pub async fn ping(&self) -> Result<(), RedisCallError> {
        let mut conn = self.conn.clone();
        self.timed("probe", redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(drop)
    }

    /// Loads the script (what `doctor` checks) and returns its SHA-1.
    pub async fn load_script(&self) -> Result<String, RedisCallError> {
        let mut conn = self.conn.clone();
        self.timed("load", self.script.load_async(&mut conn)).await
    }
}

/// While degraded: one `PING` per [`PROBE_EVERY`]; the first answer restores shared mode.
async fn probe(shared: std::sync::Weak<RedisBudgets>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let Some(s) = shared.upgrade() else { return };
        match s.ping().await {
            Ok(()) => {
                let mut h = s.lock();
                h.probing = false;
                let down_for = h.since.take().map(|t| t.elapsed());
                s.degraded.store(false, Ordering::Relaxed);
                s.transitions.fetch_add(1, Ordering::Relaxed);
                metrics::shared_budgets(true);
                tracing::info!(
                    redis = %redact_userinfo(&s.cfg.redis_url),
                    degraded_for_ms = down_for.map_or(0, |d| d.as_millis() as u64),
                    "shared budgets restored: Redis answers again"
                );
                return;
            }
            Err(e) => s.lock().last_error = Some(e.to_string()),
        }
    }
}

fn parse_reservation(
    reply: &[i64],
    keys: usize,
    want: usize,
) -> Result<Reservation, RedisCallError> {
    let head = 4 + 4 * keys;
    if reply.len() < head || reply.len() > head + want - 1 || reply[0] != 1 {
        return Err(RedisCallError::Malformed);
    }
    let micros = |v: i64| Duration::from_micros(v.max(0) as u64);
    let count = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
    let (wait, first) = (micros(reply[1]), reply[3].max(0) as u64);
    let mut slots = Vec::with_capacity(1 + reply.len() - head);
    slots.push((wait, first));
    // The later slots, on Redis's clock: as far ahead of the call as of the first, plus the wait.
    for &s in &reply[head..] {
        let s = s.max(0) as u64;
        slots.push((wait + Duration::from_micros(s.saturating_sub(first)), s));
    }
    Ok(Reservation {
        others_waiting: count(reply[2]),
        slots,
        keys: reply[4..head]
            .chunks(4)
            .map(|c| RemoteKey {
                interval_us: c[0].max(1) as u64,
                next_free: micros(c[1]),
                window_budget: count(c[2]),
                window_used: count(c[3]),
            })
            .collect(),
    })
}

/// The script itself, for tests that compare its decisions with [`crate::limiter::Gcra`].
pub fn script_source() -> &'static str {
    SCRIPT
}
