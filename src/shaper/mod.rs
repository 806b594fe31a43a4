//! Shaping (PRODUCT.md P2): every request waits for its token's (and workspace's) budget, in a
//! fair queue, instead of being sent into Notion's 429s.
//!
//! Vocabulary:
//!
//! * a **lane** is one token's budget ([`budget::Budget`]) and its waiting requests
//!   ([`queue::FairQueue`], FIFO per caller, weighted round robin across callers);
//! * a **group** is the lanes that are released together: one lane on its own, or every lane
//!   of a configured workspace, which then also share the workspace's budget. A request goes
//!   when both its lane's and its workspace's budgets admit it.
//!
//! Each group with waiting requests has one **dispatcher** task with one timer: it sleeps until
//! the earliest instant a budget allows a release (or until a new lane joins), releases what is
//! due, in order, and exits when the group's queues are empty. No waiter polls. A request that
//! finds its group idle and its budgets ready is admitted at once, without a task hop.
//!
//! Bounded waiting: a request that would wait longer than `limits.max_wait` (predicted from the
//! queue ahead of it and the budget), or past its own deadline, or that finds `max_queue`
//! requests already waiting on its token, is refused at once with the predicted wait, which the
//! caller gets as `429` + `Retry-After`.
//!
//! Cancellation: a waiting request that is dropped (its caller went away, its deadline passed)
//! removes itself from the queue; one that is released at the same moment gives its budget back.
//! Either way it spends nothing.
//!
//! Notion's pushback: [`Shaper::push_back`] pauses the lane, or the workspace when Notion says
//! the workspace limit was hit, and adapts the lane's rate ([`budget`]). The rejected request
//! then queues again at the very front ([`Shaper::acquire`] with `first_in_line`).
//!
//! Everything takes `now` from tokio's clock, so tests run on a paused clock.
//!
//! Identity: a lane is found by a keyed hash (SipHash, random key per process) of the
//! credential, so the token itself is never stored; the SHA-256 of the credential is computed
//! once per new lane to match configured integrations and to name the lane (its first 12 hex
//! digits) where no name is configured. Idle lanes whose budgets have nothing to remember are
//! evicted.

pub mod budget;
pub mod queue;
pub mod shared;

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::config::LimitsConfig;
use crate::identity::TokenId;
use crate::limiter::Gcra;
use budget::{Budget, Pushback};
use queue::FairQueue;
use shared::{KeySpec, Reservation, Shared};

/// Lanes idle this long (and with nothing to remember) are evicted; also how often the
/// eviction sweep runs.
const EVICT_AFTER: Duration = Duration::from_secs(300);

/// Which of Notion's limits a pushback concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Token,
    Workspace,
}

/// A caller sharing a token with others: its identity (hashed) and its share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub key: u64,
    pub weight: u32,
}

/// A released request: what the proxy needs to report Notion's answer back.
#[derive(Debug, Clone)]
pub struct Ticket {
    lane: u64,
    /// The lane's name: the configured integration name or the token's hash prefix.
    pub label: Arc<str>,
    /// When the budget admitted it.
    pub admitted_at: Instant,
    /// Time spent in the queue; `None` when admitted without queueing.
    pub waited: Option<Duration>,
    /// Where the attempt's outcome is recorded for `/status`.
    pub outcomes: Arc<Outcomes>,
}

/// What Notion answered a token's recent attempts, for `/status`: counters and the last
/// outcome, updated without the shaper's lock.
#[derive(Debug, Default)]
pub struct Outcomes {
    ok: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
    /// Index into [`OUTCOMES`] + 1 of the last attempt; 0: none yet.
    last: std::sync::atomic::AtomicU8,
    /// When, in milliseconds since [`Outcomes::epoch`] + 1.
    last_at: AtomicU64,
}

/// The outcome labels of an upstream attempt (the metrics' `outcome` label).
pub const OUTCOMES: [&str; 9] = [
    "2xx", "4xx", "429", "529", "5xx", "connect", "reset", "timeout", "error",
];

impl Outcomes {
    fn epoch() -> Instant {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    /// Records one attempt's outcome (one of [`OUTCOMES`]).
    pub fn record(&self, outcome: &'static str) {
        let counter = match outcome {
            "2xx" => &self.ok,
            "4xx" | "429" => &self.client_errors,
            "529" | "5xx" => &self.server_errors,
            _ => &self.transport_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let i = OUTCOMES.iter().position(|o| *o == outcome).unwrap_or(8);
        self.last.store(i as u8 + 1, Ordering::Relaxed);
        let at = Instant::now()
            .saturating_duration_since(Self::epoch())
            .as_millis() as u64
            + 1;
        self.last_at.store(at, Ordering::Relaxed);
    }

    fn status(&self, now: Instant) -> UpstreamStatus {
        let last = self.last.load(Ordering::Relaxed);
        let at = self.last_at.load(Ordering::Relaxed);
        let since = now.saturating_duration_since(Self::epoch()).as_millis() as u64 + 1;
        UpstreamStatus {
            ok: self.ok.load(Ordering::Relaxed),
            client_errors: self.client_errors.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            transport_errors: self.transport_errors.load(Ordering::Relaxed),
            last: (last > 0).then(|| OUTCOMES[usize::from(last - 1).min(8)]),
            last_s_ago: (at > 0).then(|| since.saturating_sub(at) as f64 / 1000.0),
        }
    }
}

/// [`Outcomes`] as `/status` shows them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpstreamStatus {
    pub ok: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub transport_errors: u64,
    pub last: Option<&'static str>,
    pub last_s_ago: Option<f64>,
}

/// Why a request was not admitted. `retry_after` is the predicted wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `max_queue` requests are already waiting for this token.
    QueueFull {
        queued: usize,
        retry_after: Duration,
    },
    /// The predicted wait exceeds `max_wait` or the request's deadline.
    WaitTooLong { retry_after: Duration },
    /// The deadline passed while waiting (the budget slowed down or paused meanwhile).
    Expired { retry_after: Duration },
}

impl Refusal {
    pub fn retry_after(&self) -> Duration {
        match self {
            Refusal::QueueFull { retry_after, .. }
            | Refusal::WaitTooLong { retry_after }
            | Refusal::Expired { retry_after } => *retry_after,
        }
    }
}

/// The shaper of one gateway process. Cheap to clone.
#[derive(Clone)]
pub struct Shaper {
    inner: Arc<Inner>,
}

struct Inner {
    limits: LimitsConfig,
    hasher: RandomState,
    state: Mutex<State>,
    /// Budgets shared with other replicas (`limits.backend = "redis"`).
    shared: Option<Arc<Shared>>,
}

#[derive(Default)]
struct State {
    lanes: HashMap<u64, Lane>,
    groups: HashMap<GroupId, Group>,
    next_waiter: u64,
    next_sweep: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum GroupId {
    Solo(u64),
    Workspace(Arc<str>),
}

struct Lane {
    label: Arc<str>,
    outcomes: Arc<Outcomes>,
    group: GroupId,
    budget: Budget,
    queue: FairQueue<u64, Waiter>,
    last_used: Instant,
    /// With shared budgets: the budget's key in Redis and what this replica knows of it.
    remote: Option<Remote>,
}

/// A budget's shared side, as this replica last saw it.
struct Remote {
    key: Arc<str>,
    /// The effective rate as last written to or read from Redis: a difference means this
    /// replica changed it (a 429, a recovery step) and must write it.
    reported: f64,
    /// From the last reservation: when the next slot is free, how many wait elsewhere.
    next_free: Option<Instant>,
    others_waiting: u32,
    /// The local share used while Redis is unreachable.
    fallback: Gcra,
}

impl Remote {
    fn new(key: Arc<str>, budget: &Budget, share: f64, now: Instant) -> Self {
        let burst = ((f64::from(budget.burst()) * share).floor() as u32).max(1);
        Self {
            key,
            reported: budget.effective_rate(),
            next_free: None,
            others_waiting: 0,
            fallback: Gcra::new(budget.configured_rate() * share, burst, now),
        }
    }

    /// This key as a call sends it; marks the current rate as written.
    fn spec(&mut self, budget: &Budget) -> KeySpec {
        let changed = (budget.effective_rate() - self.reported).abs() > 1e-9;
        self.reported = budget.effective_rate();
        self.key_spec(budget, changed)
    }

    fn key_spec(&self, budget: &Budget, changed: bool) -> KeySpec {
        let (interval_us, tolerance_us) = budget.shared_spec();
        KeySpec {
            key: self.key.clone(),
            interval_us,
            tolerance_us,
            changed,
        }
    }

    /// Learns from a reservation answered at `at`: the rate in force and the next free slot.
    fn learn(&mut self, budget: &mut Budget, r: &Reservation, index: usize, at: Instant) {
        if let Some(&(interval_us, next_free)) = r.keys.get(index) {
            budget.adopt_interval(interval_us, at);
            self.reported = budget.effective_rate();
            self.next_free = Some(at + next_free);
        }
        self.others_waiting = r.others_waiting;
    }

    /// Predicted wait behind `ahead` local requests and those waiting on other replicas.
    fn predicted_wait(
        &self,
        budget: &Budget,
        now: Instant,
        ahead: usize,
        shared: bool,
    ) -> Duration {
        if !shared {
            return self.fallback.predicted_wait(now, ahead);
        }
        let first = self
            .next_free
            .unwrap_or(now)
            .max(budget.paused_until(now).unwrap_or(now))
            .max(now);
        let behind = u32::try_from(ahead)
            .unwrap_or(u32::MAX)
            .saturating_add(self.others_waiting);
        (first - now) + Duration::from_micros(budget.shared_spec().0).saturating_mul(behind)
    }
}

struct Group {
    /// The workspace budget, for workspace groups.
    shared: Option<Budget>,
    /// Its shared side (workspace groups with shared budgets).
    remote: Option<Remote>,
    /// Lanes with waiting requests, in release order (round robin across lanes).
    waiting: VecDeque<u64>,
    /// The running dispatcher's wake-up, if one runs.
    dispatcher: Option<Arc<Notify>>,
}

struct Waiter {
    id: u64,
    /// Receives the admission instant.
    tx: oneshot::Sender<Instant>,
}

impl Shaper {
    /// A shaper with budgets in this process only.
    pub fn new(limits: LimitsConfig) -> Self {
        Self::with_shared(limits, None)
    }

    /// A shaper whose budgets are shared with other replicas through `shared` (queues stay
    /// local).
    pub fn with_shared(limits: LimitsConfig, shared: Option<Arc<Shared>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                limits,
                hasher: RandomState::new(),
                state: Mutex::new(State::default()),
                shared,
            }),
        }
    }

    /// The shared budgets' state, when configured.
    pub fn shared_status(&self) -> Option<shared::SharedStatus> {
        self.inner.shared.as_ref().map(|s| s.status())
    }

    /// The caller behind a request: its `X-Gateway-Client` value, else its address.
    pub fn caller(&self, client_header: Option<&[u8]>, addr: std::net::IpAddr) -> Caller {
        match client_header {
            Some(name) => Caller {
                key: self.inner.hasher.hash_one((0u8, name)),
                weight: std::str::from_utf8(name)
                    .ok()
                    .and_then(|n| self.inner.limits.client_weights.get(n))
                    .copied()
                    .unwrap_or(1),
            },
            None => Caller {
                key: self.inner.hasher.hash_one((1u8, addr)),
                weight: 1,
            },
        }
    }

    /// Waits until the budgets of `credential` admit one request from `caller`, or refuses at
    /// once when the wait would be too long. `first_in_line` puts the request ahead of every
    /// waiting one (Notion rejected it with a 429, so it already had its turn).
    pub async fn acquire(
        &self,
        credential: &[u8],
        caller: Caller,
        deadline: Instant,
        first_in_line: bool,
    ) -> Result<Ticket, Refusal> {
        let lane_key = self.inner.hasher.hash_one(credential);
        let (rx, waiter_id, (label, outcomes)) = {
            let now = Instant::now();
            let mut st = self.inner.lock();
            let st = &mut *st;
            st.maybe_sweep(now);
            let inner = &self.inner;
            let gid = st
                .lanes
                .entry(lane_key)
                .or_insert_with(|| inner.new_lane(credential, lane_key, &mut st.groups, now))
                .group
                .clone();
            // Requests of every token waiting for the same group (for a workspace budget).
            let group_waiting: usize = st.groups.get(&gid).map_or(0, |g| {
                g.waiting
                    .iter()
                    .filter_map(|k| st.lanes.get(k))
                    .map(|l| l.queue.len())
                    .sum()
            });
            let (Some(lane), Some(group)) = (st.lanes.get_mut(&lane_key), st.groups.get_mut(&gid))
            else {
                // Cannot happen: a lane's group lives as long as the lane.
                return Err(Refusal::Expired {
                    retry_after: Duration::from_secs(1),
                });
            };
            lane.last_used = now;

            // Fast path: nobody waits in the group and both budgets allow it now. Shared
            // budgets are decided in Redis, by the dispatcher.
            if self.inner.shared.is_none()
                && group.waiting.is_empty()
                && lane.budget.ready_at() <= now
                && group.shared.as_ref().is_none_or(|b| b.ready_at() <= now)
            {
                let _ = lane.budget.admit(now, false);
                if let Some(b) = group.shared.as_mut() {
                    let _ = b.admit(now, false);
                }
                return Ok(Ticket {
                    lane: lane_key,
                    label: lane.label.clone(),
                    admitted_at: now,
                    waited: None,
                    outcomes: lane.outcomes.clone(),
                });
            }

            let limits = &self.inner.limits;
            let ahead = if first_in_line {
                0
            } else {
                lane.queue.ahead_of_new(&caller.key, caller.weight)
            };
            let mut wait = lane.budget.predicted_wait(now, ahead);
            if let Some(shared) = group.shared.as_ref() {
                wait = wait.max(shared.predicted_wait(now, group_waiting));
            }
            if let Some(s) = &self.inner.shared {
                let on = s.is_shared();
                if let Some(r) = &lane.remote {
                    wait = wait.max(r.predicted_wait(&lane.budget, now, ahead, on));
                }
                if let (Some(r), Some(b)) = (&group.remote, &group.shared) {
                    wait = wait.max(r.predicted_wait(b, now, group_waiting, on));
                }
            }
            if !first_in_line && lane.queue.len() >= limits.max_queue {
                return Err(Refusal::QueueFull {
                    queued: lane.queue.len(),
                    retry_after: wait,
                });
            }
            if (!first_in_line && wait > limits.max_wait) || now + wait > deadline {
                return Err(Refusal::WaitTooLong { retry_after: wait });
            }

            let (tx, rx) = oneshot::channel();
            st.next_waiter += 1;
            let id = st.next_waiter;
            let waiter = Waiter { id, tx };
            let was_idle = lane.queue.is_empty();
            if first_in_line {
                lane.queue.push_front(&caller.key, caller.weight, waiter);
            } else {
                lane.queue.push_back(&caller.key, caller.weight, waiter);
            }
            if was_idle {
                if first_in_line {
                    group.waiting.push_front(lane_key);
                } else {
                    group.waiting.push_back(lane_key);
                }
            } else if first_in_line {
                group.waiting.retain(|k| *k != lane_key);
                group.waiting.push_front(lane_key);
            }
            match &group.dispatcher {
                // A new lane in the rotation may be ready before the dispatcher's next wake-up.
                Some(notify) => {
                    if was_idle || first_in_line {
                        notify.notify_one();
                    }
                }
                None => {
                    let notify = Arc::new(Notify::new());
                    group.dispatcher = Some(notify.clone());
                    let inner = self.inner.clone();
                    let gid = lane.group.clone();
                    match self.inner.shared.clone() {
                        None => drop(tokio::spawn(dispatch(inner, gid, notify))),
                        Some(s) => drop(tokio::spawn(dispatch_shared(inner, gid, notify, s))),
                    }
                }
            }
            (rx, id, (lane.label.clone(), lane.outcomes.clone()))
        };

        let mut guard = WaitGuard {
            inner: &self.inner,
            lane: lane_key,
            caller: caller.key,
            id: waiter_id,
            rx: Some(rx),
        };
        let waited_since = Instant::now();
        // The dispatcher never drops a live waiter's sender, so anything but a release is the
        // deadline passing.
        let released = match guard.rx.as_mut() {
            Some(rx) => tokio::time::timeout_at(deadline, rx)
                .await
                .ok()
                .and_then(Result::ok),
            None => None,
        };
        match released {
            Some(admitted_at) => {
                guard.rx = None; // Released: nothing to undo.
                Ok(Ticket {
                    lane: lane_key,
                    label,
                    admitted_at,
                    waited: Some(admitted_at.saturating_duration_since(waited_since)),
                    outcomes,
                })
            }
            None => {
                drop(guard);
                let now = Instant::now();
                let st = self.inner.lock();
                let retry_after = st.lanes.get(&lane_key).map_or(Duration::from_secs(1), |l| {
                    l.budget.predicted_wait(now, l.queue.len())
                });
                Err(Refusal::Expired { retry_after })
            }
        }
    }

    /// Notion answered 429 or 529 to a request released with `ticket`: pause the lane (or its
    /// workspace, for `Scope::Workspace`) for `retry_after` and adapt its rate. Returns until
    /// when the key is paused.
    pub fn push_back(
        &self,
        ticket: &Ticket,
        scope: Scope,
        kind: Pushback,
        retry_after: Duration,
    ) -> Instant {
        let now = Instant::now();
        let mut st = self.inner.lock();
        let st = &mut *st;
        let Some(lane) = st.lanes.get_mut(&ticket.lane) else {
            return now + retry_after;
        };
        let shared = match (&lane.group, scope) {
            (GroupId::Workspace(_), Scope::Workspace) => st
                .groups
                .get_mut(&lane.group)
                .and_then(|g| g.shared.as_mut()),
            _ => None,
        };
        let budget = match shared {
            Some(b) => b,
            None => &mut lane.budget,
        };
        budget.push_back(kind, ticket.admitted_at, retry_after, now);
        let until = budget.paused_until(now).unwrap_or(now);
        if let Some(s) = &self.inner.shared {
            // Every replica holds: the pause (and a rate this one lowered) goes to Redis. The
            // local pause already holds this replica while the call is on its way.
            let remote = match (&lane.group, scope) {
                (GroupId::Workspace(_), Scope::Workspace) => st
                    .groups
                    .get_mut(&lane.group)
                    .and_then(|g| Some((g.remote.as_mut()?, g.shared.as_ref()?))),
                _ => lane.remote.as_mut().map(|r| (r, &lane.budget)),
            };
            if let Some((remote, budget)) = remote {
                let spec = remote.spec(budget);
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = s.pause(&[spec], retry_after).await;
                });
            }
        }
        until
    }

    /// Every key's state, for `/status`.
    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let mut st = self.inner.lock();
        let st = &mut *st;
        let mut tokens: Vec<KeyStatus> = st
            .lanes
            .values_mut()
            .map(|l| KeyStatus {
                key: l.label.to_string(),
                workspace: match &l.group {
                    GroupId::Workspace(w) => Some(w.to_string()),
                    GroupId::Solo(_) => None,
                },
                queued: l.queue.len(),
                upstream: Some(l.outcomes.status(now)),
                ..KeyStatus::of(&l.budget, now)
            })
            .collect();
        tokens.sort_by(|a, b| a.key.cmp(&b.key));
        let mut workspaces: Vec<KeyStatus> = st
            .groups
            .iter_mut()
            .filter_map(|(id, g)| match (id, g.shared.as_mut()) {
                (GroupId::Workspace(name), Some(b)) => Some(KeyStatus {
                    key: name.to_string(),
                    ..KeyStatus::of(b, now)
                }),
                _ => None,
            })
            .collect();
        for w in &mut workspaces {
            w.queued = tokens
                .iter()
                .filter(|t| t.workspace.as_deref() == Some(&w.key))
                .map(|t| t.queued)
                .sum();
        }
        workspaces.sort_by(|a, b| a.key.cmp(&b.key));
        Snapshot { tokens, workspaces }
    }
}

/// `/status`'s view of the shaper.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    pub tokens: Vec<KeyStatus>,
    pub workspaces: Vec<KeyStatus>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyStatus {
    /// Integration name, or the token's SHA-256 prefix; workspace name for workspaces.
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    pub queued: usize,
    pub rate: f64,
    pub effective_rate: f64,
    pub burst: u32,
    /// Seconds until Notion's `Retry-After` has passed, when paused.
    pub paused_for_s: Option<f64>,
    pub notion_429: u64,
    pub notion_529: u64,
    /// What Notion answered this token's attempts (tokens only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamStatus>,
}

impl KeyStatus {
    fn of(b: &Budget, now: Instant) -> Self {
        Self {
            key: String::new(),
            workspace: None,
            queued: 0,
            rate: b.configured_rate(),
            effective_rate: (b.effective_rate() * 1000.0).round() / 1000.0,
            burst: b.burst(),
            paused_for_s: b
                .paused_until(now)
                .map(|p| ((p - now).as_secs_f64() * 1000.0).round() / 1000.0),
            notion_429: b.rate_limited,
            notion_529: b.overloaded,
            upstream: None,
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something ever did, the state is still
        // consistent enough to keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_lane(
        &self,
        credential: &[u8],
        key: u64,
        groups: &mut HashMap<GroupId, Group>,
        now: Instant,
    ) -> Lane {
        let digest: [u8; 32] = Sha256::digest(credential).into();
        let limits = &self.limits;
        let integration = limits
            .integrations
            .iter()
            .find(|i| i.token_sha256 == digest);
        let (label, rate, burst, group) = match integration {
            Some(i) => (
                i.name.clone(),
                i.rate,
                i.burst,
                match &i.workspace {
                    Some(w) => GroupId::Workspace(w.clone()),
                    None => GroupId::Solo(key),
                },
            ),
            None => (
                Arc::from(TokenId::of(credential).as_str()),
                limits.rate,
                limits.burst,
                GroupId::Solo(key),
            ),
        };
        let sh = self.shared.as_ref();
        groups.entry(group.clone()).or_insert_with(|| {
            let shared = match &group {
                GroupId::Workspace(w) => limits
                    .workspaces
                    .get(w)
                    .map(|ws| Budget::new(ws.rate, ws.burst, limits.adaptive, now)),
                GroupId::Solo(_) => None,
            };
            let remote = match (&group, &shared, sh) {
                (GroupId::Workspace(w), Some(b), Some(s)) => {
                    Some(Remote::new(s.workspace_key(w), b, s.local_share(), now))
                }
                _ => None,
            };
            Group {
                shared,
                remote,
                waiting: VecDeque::new(),
                dispatcher: None,
            }
        });
        let budget = Budget::new(rate, burst, limits.adaptive, now);
        Lane {
            label,
            outcomes: Arc::default(),
            group,
            remote: sh.map(|s| Remote::new(s.token_key(&digest), &budget, s.local_share(), now)),
            budget,
            queue: FairQueue::new(),
            last_used: now,
        }
    }
}

impl State {
    /// Evicts lanes (and groups) that are idle and remember nothing; at most once per
    /// [`EVICT_AFTER`], so the cost is amortized over all requests.
    fn maybe_sweep(&mut self, now: Instant) {
        match self.next_sweep {
            Some(t) if now < t => return,
            None => {
                self.next_sweep = Some(now + EVICT_AFTER);
                return;
            }
            _ => {}
        }
        self.next_sweep = Some(now + EVICT_AFTER);
        self.lanes.retain(|_, l| {
            !(l.queue.is_empty()
                && now.saturating_duration_since(l.last_used) >= EVICT_AFTER
                && l.budget.is_rested(now))
        });
        let lanes = &self.lanes;
        self.groups.retain(|id, g| {
            let used = lanes.values().any(|l| &l.group == id);
            used || !g.waiting.is_empty() || g.shared.as_ref().is_some_and(|b| !b.is_rested(now))
        });
    }

    /// Releases every request of group `gid` that is due at `now`. Returns when to look again,
    /// or `None` when the group has nothing waiting (the dispatcher then ends).
    fn release_due(&mut self, gid: &GroupId, now: Instant) -> Option<Instant> {
        let group = self.groups.get_mut(gid)?;
        loop {
            // Drop lanes whose waiters all left.
            group
                .waiting
                .retain(|k| self.lanes.get(k).is_some_and(|l| !l.queue.is_empty()));
            if group.waiting.is_empty() {
                group.dispatcher = None;
                return None;
            }
            let shared_ready = group.shared.as_ref().map(Budget::ready_at);
            let mut earliest: Option<Instant> = None;
            let mut chosen = None;
            for (i, k) in group.waiting.iter().enumerate() {
                let Some(lane) = self.lanes.get_mut(k) else {
                    continue;
                };
                let ready = lane.budget.ready_at();
                if ready <= now {
                    chosen = Some(i);
                    break;
                }
                earliest = Some(earliest.map_or(ready, |e| e.min(ready)));
            }
            let wake = |lane_ready: Option<Instant>| {
                let t = lane_ready.unwrap_or(now);
                Some(shared_ready.map_or(t, |s| s.max(t)))
            };
            if shared_ready.is_some_and(|s| s > now) {
                return wake(Some(earliest.unwrap_or(now)));
            }
            let Some(i) = chosen else {
                return wake(earliest);
            };
            let Some(key) = group.waiting.remove(i) else {
                return wake(earliest);
            };
            let Some(lane) = self.lanes.get_mut(&key) else {
                continue;
            };
            loop {
                // Checked before every pop: after a refund the budget is ready again, after a
                // hand-over it is not. Recovery first: a step may change the rate (and grow the
                // burst, which starts spent), and a release must be one the budget admits.
                lane.budget.catch_up(now);
                if let Some(b) = group.shared.as_mut() {
                    b.catch_up(now);
                }
                let ready = lane.budget.ready_at() <= now
                    && group.shared.as_ref().is_none_or(|b| b.ready_at() <= now);
                let Some((_, w)) = ready.then(|| lane.queue.pop()).flatten() else {
                    break;
                };
                if w.tx.is_closed() {
                    continue; // Its caller left: spends nothing.
                }
                // Cannot fail: both budgets were ready at `now` after catching up.
                let admitted = lane.budget.admit(now, true).is_ok()
                    & group
                        .shared
                        .as_mut()
                        .is_none_or(|b| b.admit(now, true).is_ok());
                debug_assert!(admitted, "released a request its budget did not admit");
                lane.last_used = now;
                if w.tx.send(now).is_ok() {
                    break;
                }
                lane.budget.refund(now);
                if let Some(b) = group.shared.as_mut() {
                    b.refund(now);
                }
            }
            if !lane.queue.is_empty() {
                group.waiting.push_back(key);
            }
        }
    }
}

/// One group's dispatcher: sleep until the next release is due (or a new lane joins), release,
/// repeat; end when nothing waits.
async fn dispatch(inner: Arc<Inner>, gid: GroupId, notify: Arc<Notify>) {
    loop {
        let wake = inner.lock().release_due(&gid, Instant::now());
        let Some(at) = wake else { return };
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            () = notify.notified() => {}
        }
    }
}

/// What a shared-budget dispatcher does next.
enum Plan {
    /// Nothing waits: the dispatcher ends.
    Done,
    /// Nothing may go before then (a pause, or the local share while Redis is unreachable).
    Wait(Instant),
    /// Take a slot for the next request of `lane`.
    Reserve {
        lane: u64,
        keys: Vec<KeySpec>,
        waiting: usize,
    },
    /// Redis is unreachable: the local share admitted a request of `lane` now.
    Local { lane: u64 },
}

impl State {
    /// Chooses the lane whose request goes next in group `gid` (round robin) and what it
    /// needs, for budgets shared through Redis (`shared_on`: Redis answers).
    fn plan_shared(&mut self, gid: &GroupId, now: Instant, shared_on: bool) -> Plan {
        let Some(group) = self.groups.get_mut(gid) else {
            return Plan::Done;
        };
        let lanes = &mut self.lanes;
        group
            .waiting
            .retain(|k| lanes.get(k).is_some_and(|l| !l.queue.is_empty()));
        let waiting: usize = group
            .waiting
            .iter()
            .filter_map(|k| lanes.get(k))
            .map(|l| l.queue.len())
            .sum();
        let Some((lane_key, lane)) = group
            .waiting
            .front()
            .and_then(|&k| Some((k, lanes.get_mut(&k)?)))
        else {
            group.dispatcher = None;
            return Plan::Done;
        };
        // Recovery steps first, as the local dispatcher does: a step changes the rate sent.
        lane.budget.catch_up(now);
        if let Some(b) = group.shared.as_mut() {
            b.catch_up(now);
        }
        let paused = lane
            .budget
            .paused_until(now)
            .max(group.shared.as_ref().and_then(|b| b.paused_until(now)));
        if let Some(p) = paused {
            return Plan::Wait(p);
        }
        if !shared_on {
            let ready = lane
                .remote
                .as_ref()
                .map_or(now, |r| r.fallback.ready_at())
                .max(group.remote.as_ref().map_or(now, |r| r.fallback.ready_at()));
            if ready > now {
                return Plan::Wait(ready);
            }
            if let Some(r) = lane.remote.as_mut() {
                let _ = r.fallback.admit(now);
            }
            if let Some(r) = group.remote.as_mut() {
                let _ = r.fallback.admit(now);
            }
            return Plan::Local { lane: lane_key };
        }
        let mut keys = Vec::with_capacity(2);
        if let Some(r) = lane.remote.as_mut() {
            keys.push(r.spec(&lane.budget));
        }
        if let (Some(r), Some(b)) = (group.remote.as_mut(), group.shared.as_ref()) {
            keys.push(r.spec(b));
        }
        Plan::Reserve {
            lane: lane_key,
            keys,
            waiting: waiting.saturating_sub(1),
        }
    }

    /// Learns what Redis answered for a reservation of `lane` in `gid`.
    fn learn(&mut self, gid: &GroupId, lane_key: u64, r: &Reservation, at: Instant) {
        if let Some(lane) = self.lanes.get_mut(&lane_key) {
            if let Some(remote) = lane.remote.as_mut() {
                remote.learn(&mut lane.budget, r, 0, at);
            }
        }
        if let Some(g) = self.groups.get_mut(gid) {
            if let (Some(remote), Some(b)) = (g.remote.as_mut(), g.shared.as_mut()) {
                remote.learn(b, r, 1, at);
            }
        }
    }

    /// Hands the slot due at `now` to the next live waiter of `lane_key`; false when none is
    /// left (the slot is then given back).
    fn hand_over(&mut self, gid: &GroupId, lane_key: u64, now: Instant) -> bool {
        let Some(lane) = self.lanes.get_mut(&lane_key) else {
            return false;
        };
        let mut handed = false;
        while let Some((_, w)) = lane.queue.pop() {
            if w.tx.send(now).is_ok() {
                lane.last_used = now;
                handed = true;
                break;
            }
        }
        if let Some(g) = self.groups.get_mut(gid) {
            g.waiting.retain(|k| *k != lane_key);
            if !lane.queue.is_empty() {
                g.waiting.push_back(lane_key);
            }
        }
        handed
    }

    /// The shared keys a release of `lane_key` spent, to give a slot back.
    fn remote_keys(&self, lane_key: u64) -> Vec<KeySpec> {
        let Some(lane) = self.lanes.get(&lane_key) else {
            return Vec::new();
        };
        let mut keys: Vec<KeySpec> = lane
            .remote
            .iter()
            .map(|r| r.key_spec(&lane.budget, false))
            .collect();
        if let Some(g) = self.groups.get(&lane.group) {
            if let (Some(r), Some(b)) = (&g.remote, &g.shared) {
                keys.push(r.key_spec(b, false));
            }
        }
        keys
    }
}

/// One group's dispatcher when budgets are shared through Redis: reserve the next slot (one
/// Redis call), sleep until it (one timer), hand it to the next waiter in fair order; repeat
/// until nothing waits. While Redis is unreachable the local share decides instead.
async fn dispatch_shared(
    inner: Arc<Inner>,
    gid: GroupId,
    notify: Arc<Notify>,
    shared: Arc<Shared>,
) {
    loop {
        let now = Instant::now();
        let plan = inner.lock().plan_shared(&gid, now, shared.is_shared());
        let (lane, keys) = match plan {
            Plan::Done => return,
            Plan::Wait(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = notify.notified() => {}
                }
                continue;
            }
            Plan::Local { lane } => {
                inner.lock().hand_over(&gid, lane, now);
                continue;
            }
            Plan::Reserve {
                lane,
                keys,
                waiting,
            } => match shared.reserve(&keys, waiting).await {
                Ok(r) => {
                    let at = Instant::now();
                    inner.lock().learn(&gid, lane, &r, at);
                    // A timer rounds up to the next millisecond: only sleep for a slot ahead.
                    if !r.wait.is_zero() {
                        tokio::time::sleep_until(at + r.wait).await;
                    }
                    (lane, keys)
                }
                // Degraded now (logged by `Shared`): the next plan uses the local share.
                Err(_) => continue,
            },
        };
        let handed = inner.lock().hand_over(&gid, lane, Instant::now());
        if !handed {
            let _ = shared.refund(&keys).await;
        }
    }
}

/// Removes a waiting request from its queue when its future is dropped before release; gives
/// the budget back when it was released but never collected.
struct WaitGuard<'a> {
    inner: &'a Inner,
    lane: u64,
    caller: u64,
    id: u64,
    rx: Option<oneshot::Receiver<Instant>>,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let now = Instant::now();
        let mut st = self.inner.lock();
        let st = &mut *st;
        let Some(lane) = st.lanes.get_mut(&self.lane) else {
            return;
        };
        let id = self.id;
        if lane.queue.remove_where(&self.caller, |w| w.id == id) > 0 {
            return;
        }
        // Released just now, but nobody will send it: refund.
        if rx.try_recv().is_ok() {
            if let Some(s) = &self.inner.shared {
                let keys = st.remote_keys(self.lane);
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = s.refund(&keys).await;
                });
                return;
            }
            lane.budget.refund(now);
            if let Some(b) = st
                .groups
                .get_mut(&lane.group)
                .and_then(|g| g.shared.as_mut())
            {
                b.refund(now);
            }
        }
    }
}
