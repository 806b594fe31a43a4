//! Shaping (docs/behaviour.md §2): every request waits for its token's (and workspace's)
//! budget, in a fair queue, instead of being sent into Notion's 429s.
//!
//! Vocabulary:
//!
//! * a **lane** is one token's budget ([`budget::Budget`]: Notion's 60-second
//!   [`window::Window`] and a smoothing GCRA) and its waiting requests ([`queue::FairQueue`],
//!   FIFO per caller, weighted round robin across callers);
//! * a **group** is the lanes that are released together: one lane on its own, or every lane
//!   of a workspace (configured, or discovered from `GET /v1/users/me`), which then also share
//!   the workspace's budget. A request goes when both its lane's and its workspace's budgets
//!   admit it.
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
//! Notion's pushback ([`Shaper::push_back`], by the [`Limit`] Notion named): the connection's
//! window or the workspace's is paused and learns its budget; an endpoint's own limit pauses
//! only that endpoint of the token; a blocked token is answered here until its `Retry-After`
//! has passed; a 429 with another reason pauses the token and slows it down ([`budget`]). The
//! rejected request then queues again at the very front ([`Shaper::acquire`] with
//! `first_in_line`).
//!
//! Everything takes `now` from tokio's clock, so tests run on a paused clock.
//!
//! Identity: a lane is found by a keyed hash (SipHash, random key per process) of the
//! credential, so the token itself is never stored; the SHA-256 of the credential is computed
//! once per new lane to match configured integrations and to name the lane (its first 12 hex
//! digits) where no name is configured. Idle lanes whose budgets have nothing to remember are
//! evicted.
//!
//! # Layout
//!
//! * [`limiter`]: GCRA, one key's smoothing rate as a pure function of time.
//! * [`window`]: Notion's 60-second window budget, a pure function of time.
//! * [`budget`]: a key's window and GCRA plus what Notion taught it.
//! * [`queue`]: the fair queue of one key's waiting requests.
//! * `state`: lanes and groups behind the shaper's lock; new lanes; workspaces joined; eviction.
//! * `dispatch`: the dispatcher of budgets kept in this process.
//! * [`redis`]: the Redis backend (budgets shared by replicas) and its dispatcher.
//! * `wait`: cancellation of a waiting request.
//! * [`outcomes`], [`status`]: what `/status` shows.

pub mod budget;
mod dispatch;
pub mod limiter;
pub mod outcomes;
pub mod queue;
pub mod redis;
mod state;
pub mod status;
mod wait;
pub mod window;

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::config::LimitsConfig;
use budget::Pushback;
use redis::RedisBudgets;
use state::{Discovery, Group, GroupId, Release, State, Waiter};

pub use state::Priority;
use wait::WaitGuard;

pub use outcomes::{Outcomes, UpstreamStatus, OUTCOMES};
pub use status::{KeyStatus, Snapshot};

/// Which of Notion's limits pushed back (`additional_data.rate_limit_reason` of a 429, or a 529;
/// <https://developers.notion.com/reference/request-limits>).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `public_api_request_rate_limit`: the connection's (token's) window.
    Connection,
    /// `public_api_space_request_rate_limit`: the workspace's limit, shared by its tokens.
    Workspace,
    /// `public_api_endpoint_rate_limit`: this endpoint's own limit, for this token.
    Endpoint,
    /// `public_api_request_blocked`: the token's access is restricted; retrying won't help.
    Blocked,
    /// Another reason, or none: handled as the connection's, by slowing the token down.
    Other,
    /// 529 `service_overload`: Notion's load; the token pauses.
    Overload,
}

impl Limit {
    const COUNT: usize = 6;
    /// Metric label values: bounded, whatever Notion sends.
    pub const LABELS: [&'static str; Self::COUNT] = [
        "public_api_request_rate_limit",
        "public_api_space_request_rate_limit",
        "public_api_endpoint_rate_limit",
        "public_api_request_blocked",
        "other",
        "service_overload",
    ];

    fn index(self) -> usize {
        match self {
            Limit::Connection => 0,
            Limit::Workspace => 1,
            Limit::Endpoint => 2,
            Limit::Blocked => 3,
            Limit::Other => 4,
            Limit::Overload => 5,
        }
    }

    /// The bounded label of this limit.
    pub fn label(self) -> &'static str {
        Self::LABELS[self.index()]
    }
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
    /// The endpoint's route template.
    route: &'static str,
    /// The lane's name: the configured integration name or the token's hash prefix.
    pub label: Arc<str>,
    /// Its metric label: the configured integration name, or `other` (bounded).
    pub metric_label: Arc<str>,
    /// When the budget admitted it.
    pub admitted_at: Instant,
    /// Time spent in the queue; `None` when admitted without queueing.
    pub waited: Option<Duration>,
    /// Where the attempt's outcome is recorded for `/status`.
    pub outcomes: Arc<Outcomes>,
    /// The token's workspace is not known yet: worth finding out (see [`Shaper::discovering`]).
    pub discover: bool,
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
    /// Notion restricted this token (`public_api_request_blocked`) until `retry_after` from now.
    Blocked { retry_after: Duration },
    /// The table of tokens (`limits.max_tokens`) is full of tokens with waiting requests: a
    /// new token cannot get a lane now.
    TokensFull { retry_after: Duration },
}

impl Refusal {
    pub fn retry_after(&self) -> Duration {
        match self {
            Refusal::QueueFull { retry_after, .. }
            | Refusal::WaitTooLong { retry_after }
            | Refusal::Expired { retry_after }
            | Refusal::Blocked { retry_after }
            | Refusal::TokensFull { retry_after } => *retry_after,
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
    redis: Option<Arc<RedisBudgets>>,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something ever did, the state is still
        // consistent enough to keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What [`Shaper::acquire`] found under the lock.
enum Entry {
    Admitted(Ticket),
    Refused(Refusal),
    /// The request's endpoint is paused for this token until then: wait outside the queue.
    EndpointPaused(Instant),
    Queued(Queued),
}

struct Queued {
    rx: oneshot::Receiver<Release>,
    id: u64,
    label: Arc<str>,
    metric_label: Arc<str>,
    outcomes: Arc<Outcomes>,
    discover: bool,
}

/// A request entering [`Shaper::acquire`].
struct Entering {
    caller: Caller,
    route: &'static str,
    deadline: Instant,
    first_in_line: bool,
    priority: Priority,
}

/// Longest pause `public_api_request_blocked` may impose without a `Retry-After`.
pub const BLOCKED_DEFAULT: Duration = Duration::from_secs(60);

impl Shaper {
    /// A shaper with budgets in this process only.
    pub fn new(limits: LimitsConfig) -> Self {
        Self::with_redis(limits, None)
    }

    /// A shaper whose budgets are shared with other replicas through Redis (queues stay
    /// local).
    pub fn with_redis(limits: LimitsConfig, redis: Option<Arc<RedisBudgets>>) -> Self {
        let state = Mutex::new(State::new(&limits));
        Self {
            inner: Arc::new(Inner {
                limits,
                hasher: RandomState::new(),
                state,
                redis,
            }),
        }
    }

    /// The Redis backend's state, when configured.
    pub fn redis_status(&self) -> Option<redis::RedisStatus> {
        self.inner.redis.as_ref().map(|s| s.status())
    }

    /// The caller behind a request: a caller configured in `[limits.client_weights]` by its
    /// `X-Gateway-Client` value (from an address it is allowed from), else its address. A name
    /// nobody configured does not make a caller of its own: a client inventing a new name per
    /// request stays one caller, and takes no more than its address's share.
    pub fn caller(&self, client_header: Option<&[u8]>, addr: std::net::IpAddr) -> Caller {
        let known = client_header
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| Some((n, self.inner.limits.client_weights.get(n)?)))
            .filter(|(_, w)| w.allows(addr));
        match known {
            Some((name, w)) => Caller {
                key: self.inner.hasher.hash_one((0u8, name.as_bytes())),
                weight: w.weight,
            },
            None => Caller {
                key: self.inner.hasher.hash_one((1u8, addr)),
                weight: 1,
            },
        }
    }

    /// A reload's rotated tokens: an integration of the running configuration whose token
    /// (`token_file`, `token_env`) changed is matched by its new digest from now on. Nothing
    /// else of a reloaded integration applies (its budget, plan and workspace are read at
    /// start-up). The lanes of its old token stay until idle, no longer under its name.
    /// Returns the names of the rotated integrations.
    pub fn rotate_tokens(&self, reloaded: &[crate::config::Integration]) -> Vec<Arc<str>> {
        let mut st = self.inner.lock();
        let mut rotated = Vec::new();
        let integrations: Vec<crate::config::Integration> = st
            .integrations
            .iter()
            .map(|i| {
                let mut i = i.clone();
                if let Some(new) = reloaded.iter().find(|n| n.name == i.name) {
                    if new.token_sha256 != i.token_sha256 {
                        i.token_sha256 = new.token_sha256;
                        i.token = new.token.clone();
                        rotated.push(i.name.clone());
                    }
                }
                i
            })
            .collect();
        st.integrations = integrations.into();
        if !rotated.is_empty() {
            st.lanes.retire_names(&rotated);
        }
        rotated
    }

    /// The caller of a gateway key's requests: the key's name, with its configured weight.
    pub fn key_caller(&self, name: &str, weight: u32) -> Caller {
        Caller {
            key: self.inner.hasher.hash_one((2u8, name.as_bytes())),
            weight,
        }
    }

    /// Waits until the budgets of `credential` admit one request from `caller` to the endpoint
    /// `route` (a catalogue template), or refuses at once when the wait would be too long.
    /// `first_in_line` puts the request ahead of every waiting one (Notion rejected it with a
    /// 429, so it already had its turn). A [`Priority::Background`] request is bounded by its
    /// deadline only: how long it waits depends on everyone else.
    pub async fn acquire(
        &self,
        credential: &[u8],
        caller: Caller,
        route: &'static str,
        deadline: Instant,
        first_in_line: bool,
        priority: Priority,
    ) -> Result<Ticket, Refusal> {
        let lane_key = self.inner.hasher.hash_one(credential);
        let entry = Entering {
            caller,
            route,
            deadline,
            first_in_line,
            priority,
        };
        let queued = loop {
            match self.enter(credential, lane_key, &entry) {
                Entry::Admitted(t) => return Ok(t),
                Entry::Refused(r) => return Err(r),
                // Checked against max_wait and the deadline already; nothing is held meanwhile.
                Entry::EndpointPaused(until) => tokio::time::sleep_until(until).await,
                Entry::Queued(q) => break q,
            }
        };
        let mut guard = WaitGuard {
            inner: &self.inner,
            lane: lane_key,
            caller: caller.key,
            id: queued.id,
            rx: Some(queued.rx),
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
            Some(Release {
                at: admitted_at, ..
            }) => {
                guard.rx = None; // Released: nothing to undo.
                Ok(Ticket {
                    lane: lane_key,
                    route,
                    label: queued.label,
                    metric_label: queued.metric_label,
                    admitted_at,
                    waited: Some(admitted_at.saturating_duration_since(waited_since)),
                    outcomes: queued.outcomes,
                    discover: queued.discover,
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

    /// The locked part of [`Shaper::acquire`]: the lane (created for a new token), then the
    /// fast path, an early refusal, or a place in the queue.
    fn enter(&self, credential: &[u8], lane_key: u64, e: &Entering) -> Entry {
        let Entering {
            caller,
            route,
            deadline,
            first_in_line,
            priority,
        } = *e;
        let background = priority == Priority::Background;
        let inner = &self.inner;
        let limits = &inner.limits;
        let now = Instant::now();
        let mut st = inner.lock();
        let st = &mut *st;
        st.evict_idle(now);
        if !st.lanes.contains(&lane_key) {
            if !st.make_room(now) {
                return Entry::Refused(Refusal::TokensFull {
                    retry_after: Duration::from_secs(1),
                });
            }
            let integrations = st.integrations.clone();
            let lane = state::new_lane(
                limits,
                &integrations,
                inner.redis.as_ref(),
                credential,
                lane_key,
                &mut st.groups,
                now,
            );
            if let GroupId::Workspace(w) = &lane.group {
                st.workspace_added(&w.clone());
            }
            st.lanes.insert(lane_key, lane);
        }
        st.lanes.touch(&lane_key);
        let Some(gid) = st.lanes.get(&lane_key).map(|l| l.group.clone()) else {
            return Entry::Refused(Refusal::TokensFull {
                retry_after: Duration::from_secs(1),
            });
        };
        // Requests of every token waiting for the same group (for a workspace budget).
        let group_waiting = st.group_waiting(&gid);
        let (Some(lane), Some(group)) = (st.lanes.get_mut(&lane_key), st.groups.get_mut(&gid))
        else {
            // Cannot happen: a lane's group lives as long as the lane.
            return Entry::Refused(Refusal::Expired {
                retry_after: Duration::from_secs(1),
            });
        };
        lane.last_used = now;
        if let Some(until) = lane.blocked_until.filter(|t| *t > now) {
            return Entry::Refused(Refusal::Blocked {
                retry_after: until - now,
            });
        }
        lane.endpoint_pauses.retain(|(_, t)| *t > now);
        if let Some(&(_, until)) = lane.endpoint_pauses.iter().find(|(r, _)| *r == route) {
            let wait = until - now;
            if (!first_in_line && wait > limits.max_wait) || until > deadline {
                return Entry::Refused(Refusal::WaitTooLong { retry_after: wait });
            }
            return Entry::EndpointPaused(until);
        }
        let discover = matches!(lane.discovery, Discovery::Unknown { not_before } if not_before.is_none_or(|t| t <= now));

        // Fast path: nobody waits in the group and both budgets allow it now. Redis budgets
        // are decided in Redis: a lone token may hold a slot Redis granted that nobody took
        // yet (`RemoteBudget::take_stock`), else the dispatcher asks.
        let admitted = group.waiting.is_empty()
            && match &inner.redis {
                None => {
                    let ready = lane.budget.ready_at(now) <= now
                        && group
                            .workspace
                            .as_ref()
                            .is_none_or(|b| b.ready_at(now) <= now);
                    if ready {
                        let _ = lane.budget.admit(now, false);
                        if let Some(b) = group.workspace.as_mut() {
                            let _ = b.admit(now, false);
                        }
                    }
                    ready
                }
                Some(_) => {
                    matches!(gid, GroupId::Solo(_))
                        && lane.budget.paused_until(now).is_none()
                        && lane.remote.as_mut().is_some_and(|r| r.take_stock(now))
                }
            };
        if admitted {
            return Entry::Admitted(Ticket {
                lane: lane_key,
                route,
                label: lane.label.clone(),
                metric_label: lane.metric_label(),
                admitted_at: now,
                waited: None,
                outcomes: lane.outcomes.clone(),
                discover,
            });
        }

        let ahead = if first_in_line {
            0
        } else {
            lane.queue.ahead_of_new(&caller.key, caller.weight)
        };
        let mut wait = lane.budget.predicted_wait(now, ahead);
        if let Some(ws) = group.workspace.as_ref() {
            wait = wait.max(ws.predicted_wait(now, group_waiting));
        }
        if let Some(s) = &inner.redis {
            let on = s.is_connected();
            if let Some(r) = &lane.remote {
                wait = wait.max(r.predicted_wait(&lane.budget, now, ahead, on));
            }
            if let (Some(r), Some(b)) = (&group.remote, &group.workspace) {
                wait = wait.max(r.predicted_wait(b, now, group_waiting, on));
            }
        }
        if !first_in_line && lane.queue.len() >= limits.max_queue {
            return Entry::Refused(Refusal::QueueFull {
                queued: lane.queue.len(),
                retry_after: wait,
            });
        }
        if !background && ((!first_in_line && wait > limits.max_wait) || now + wait > deadline) {
            return Entry::Refused(Refusal::WaitTooLong { retry_after: wait });
        }

        let (tx, rx) = oneshot::channel();
        st.queued += 1;
        st.next_waiter += 1;
        let id = st.next_waiter;
        let waiter = Waiter { id, tx };
        let was_idle = lane.queue.is_empty();
        lane.queue
            .push(&caller.key, caller.weight, waiter, priority, first_in_line);
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
        // A new lane in the rotation may be ready before the dispatcher's next wake-up.
        self.wake_dispatcher(group, &gid, was_idle || first_in_line);
        Entry::Queued(Queued {
            rx,
            id,
            label: lane.label.clone(),
            metric_label: lane.metric_label(),
            outcomes: lane.outcomes.clone(),
            discover,
        })
    }

    /// Makes sure group `gid`, which has waiting requests, has a dispatcher: starts one, or
    /// (`nudge`) wakes the running one to look again.
    fn wake_dispatcher(&self, group: &mut Group, gid: &GroupId, nudge: bool) {
        match &group.dispatcher {
            Some(notify) => {
                if nudge {
                    notify.notify_one();
                }
            }
            None => {
                let notify = Arc::new(Notify::new());
                group.dispatcher = Some(notify.clone());
                let inner = self.inner.clone();
                let gid = gid.clone();
                match self.inner.redis.clone() {
                    None => drop(tokio::spawn(dispatch::run(inner, gid, notify))),
                    Some(r) => drop(tokio::spawn(redis::run(inner, gid, notify, r))),
                }
            }
        }
    }

    /// Notion answered 429 or 529 to a request released with `ticket`, naming `limit`: pause
    /// what it names for `retry_after` and learn from it. Returns until when the request's
    /// key is paused (for `Blocked`: until when the token is answered here).
    pub fn push_back(&self, ticket: &Ticket, limit: Limit, retry_after: Duration) -> Instant {
        let now = Instant::now();
        let mut st = self.inner.lock();
        let st = &mut *st;
        let Some(lane) = st.lanes.get_mut(&ticket.lane) else {
            return now + retry_after;
        };
        lane.pushbacks.count(limit);
        if let Some(r) = lane.remote.as_mut() {
            r.drop_stock();
        }
        let group = st.groups.get_mut(&lane.group);
        let until = now + retry_after;
        // The budget paused, and how.
        let (kind, in_workspace) = match limit {
            Limit::Endpoint => {
                match lane
                    .endpoint_pauses
                    .iter_mut()
                    .find(|(r, _)| *r == ticket.route)
                {
                    Some((_, t)) => *t = (*t).max(until),
                    None => lane.endpoint_pauses.push((ticket.route, until)),
                }
                return until;
            }
            Limit::Blocked => {
                let until = now + retry_after.min(Duration::from_secs(3600));
                lane.blocked_until = Some(lane.blocked_until.map_or(until, |t| t.max(until)));
                return until;
            }
            Limit::Connection => (Pushback::WindowLimited, false),
            Limit::Other => (Pushback::RateLimited, false),
            Limit::Overload => (Pushback::Overloaded, false),
            // Only a lane in a workspace group knows its workspace's budget; one whose workspace
            // is not known yet just pauses (nothing of its own was over), and finding out which
            // workspace it is in is urgent now: its discovery goes first.
            Limit::Workspace => match group.as_ref().is_some_and(|g| g.workspace.is_some()) {
                true => (Pushback::WindowLimited, true),
                false => {
                    lane.queue.expedite(&self.discovery_caller().key);
                    (Pushback::PauseOnly, false)
                }
            },
        };
        let (budget, remote) = match (in_workspace, group) {
            (true, Some(g)) => {
                g.pushbacks.count(limit);
                match g.workspace.as_mut() {
                    Some(b) => (b, g.remote.as_mut()),
                    None => (&mut lane.budget, lane.remote.as_mut()),
                }
            }
            _ => (&mut lane.budget, lane.remote.as_mut()),
        };
        budget.push_back(kind, ticket.admitted_at, retry_after, now);
        let until = budget.paused_until(now).unwrap_or(now);
        if let (Some(s), Some(remote)) = (&self.inner.redis, remote) {
            // Every replica holds: the pause (and a rate this one lowered) goes to Redis, and a
            // window limit learns its budget there, from what every replica sent. The local
            // pause already holds this replica while the call is on its way; the budget Redis
            // settles on comes back with the next reservation.
            let spec = remote.spec(budget);
            let learn = kind == Pushback::WindowLimited && self.inner.limits.adaptive;
            let s = s.clone();
            tokio::spawn(async move {
                let _ = s.pause(&[spec], retry_after, learn).await;
            });
        }
        until
    }

    /// The caller that finding out a token's workspace queues as (in the background).
    pub fn discovery_caller(&self) -> Caller {
        Caller {
            // No X-Gateway-Client value can hash the same: header values hold no NUL byte.
            key: self
                .inner
                .hasher
                .hash_one((0u8, &b"\0notion-gateway discovery"[..])),
            weight: 1,
        }
    }

    /// Claims the discovery of `ticket`'s workspace: true once per token (again after a failed
    /// attempt, a minute later), when its workspace is not known. The caller then finds it out
    /// and reports with [`Shaper::discovered`].
    pub fn discovering(&self, ticket: &Ticket) -> bool {
        if !ticket.discover {
            return false;
        }
        let now = Instant::now();
        let mut st = self.inner.lock();
        match st.lanes.get_mut(&ticket.lane) {
            Some(lane) => match lane.discovery {
                Discovery::Unknown { not_before } if not_before.is_none_or(|t| t <= now) => {
                    lane.discovery = Discovery::Pending;
                    true
                }
                _ => false,
            },
            None => false,
        }
    }

    /// What discovery found for `ticket`'s token: its workspace's Notion id (the lane joins
    /// that workspace), or nothing (tried again a minute later).
    pub fn discovered(&self, ticket: &Ticket, workspace_id: Option<&str>) {
        let now = Instant::now();
        let inner = &self.inner;
        let mut st = inner.lock();
        let st = &mut *st;
        let Some(id) = workspace_id else {
            if let Some(lane) = st.lanes.get_mut(&ticket.lane) {
                if matches!(
                    lane.discovery,
                    Discovery::Pending | Discovery::Unknown { .. }
                ) {
                    lane.discovery = Discovery::Unknown {
                        not_before: Some(now + Duration::from_secs(60)),
                    };
                }
            }
            return;
        };
        let joined = st.join_workspace(&inner.limits, inner.redis.as_ref(), ticket.lane, id, now);
        if let Some(gid) = joined {
            if let Some(group) = st.groups.get_mut(&gid) {
                self.wake_dispatcher(group, &gid, true);
            }
        }
    }

    /// Every key's state, for `/status`.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.lock().snapshot(Instant::now())
    }
}
