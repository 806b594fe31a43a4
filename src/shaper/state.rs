//! The shaper's state behind its one lock: lanes (one per token) and groups (the lanes that are
//! released together), how a lane is created for a new token, and the eviction of idle lanes.
//!
//! Bounded like nginx's `limit_req_zone`: at most `limits.max_tokens` lanes, in
//! least-recently-used order. A new token takes the place of the least recently used lane
//! nobody waits in; when every lane has waiting requests the new token is refused (a 503 with
//! `Retry-After`). Idle lanes with nothing to remember leave from the old end a few per
//! request. Every operation costs the same whatever the number of lanes: no sweep, no scan.
//!
//! Nothing here sleeps or spawns: the dispatchers (`dispatch`, `redis::dispatch`) and
//! [`super::Shaper::acquire`] take the lock, call into this state with `now`, and act on what
//! it returns.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::budget::Budget;
use super::outcomes::Outcomes;
use super::queue::FairQueue;
use super::redis::{RedisBudgets, RemoteBudget};
use super::window::Window;
use super::Limit;
use crate::config::{LimitsConfig, WorkspaceBudget};
use crate::identity::TokenId;

/// Lanes idle this long (and with nothing to remember) are evicted.
pub(super) const EVICT_AFTER: Duration = Duration::from_secs(300);
/// Lanes looked at from the old end, per request, for idle ones to evict.
const EVICT_PER_CALL: usize = 2;
/// Lanes with waiting requests passed over when making room for a new token, before the
/// table counts as full.
const BUSY_SKIPS: usize = 16;

pub(super) struct State {
    pub lanes: Lanes,
    pub groups: HashMap<GroupId, Group>,
    /// The workspace groups among `groups`, for `/status` without walking every group.
    pub workspaces: std::collections::BTreeSet<Arc<str>>,
    /// The workspaces with their own metric label and `/status` row: the configured ones,
    /// and the first [`DISCOVERED_SHOWN`] discovered in this process (labels stay bounded
    /// however many workspaces valid tokens bring; a name stays here after its group is gone).
    pub shown_workspaces: std::collections::HashSet<Arc<str>>,
    /// Configured workspaces (always shown).
    configured_workspaces: usize,
    /// Workspace groups whose last lane left while their budget still remembered something:
    /// removed once rested, oldest first, a few per request (or at once beyond
    /// `limits.max_tokens` of them: memory stays bounded).
    orphans: VecDeque<Arc<str>>,
    pub next_waiter: u64,
    /// Requests waiting in every lane: what `/metrics` shows for the tokens without a
    /// configured name, without walking the lanes.
    pub queued: usize,
    /// The configured integrations new lanes are matched against: `limits.integrations`,
    /// replaced by a reload (a rotated `token_file` brings a new digest).
    pub integrations: Arc<[crate::config::Integration]>,
}

impl State {
    pub fn new(limits: &LimitsConfig) -> Self {
        Self {
            lanes: Lanes::new(limits.max_tokens),
            groups: HashMap::new(),
            workspaces: Default::default(),
            next_waiter: 0,
            queued: 0,
            integrations: limits.integrations.clone().into(),
            shown_workspaces: limits.workspaces.keys().cloned().collect(),
            configured_workspaces: limits.workspaces.len(),
            orphans: VecDeque::new(),
        }
    }

    /// Records a workspace group that now exists: shown while there is room.
    pub fn workspace_added(&mut self, name: &Arc<str>) {
        self.workspaces.insert(name.clone());
        if self.shown_workspaces.len() < self.configured_workspaces + DISCOVERED_SHOWN {
            self.shown_workspaces.insert(name.clone());
        }
    }
}

/// Discovered workspaces with their own metric label and `/status` row.
pub const DISCOVERED_SHOWN: usize = 50;
/// Orphaned workspace groups looked at per request.
const ORPHANS_PER_CALL: usize = 2;

/// The lanes, in least-recently-used order. Lookups by key do not change the order; a
/// request of a token does ([`Lanes::touch`]).
pub(super) struct Lanes {
    lru: lru::LruCache<u64, Lane>,
    max: usize,
    /// Lanes of configured integrations: kept in view for `/status` and `/metrics`.
    pub configured: Vec<u64>,
}

impl Lanes {
    fn new(max: usize) -> Self {
        Self {
            lru: lru::LruCache::unbounded(),
            max: max.max(1),
            configured: Vec::new(),
        }
    }

    pub fn get(&self, k: &u64) -> Option<&Lane> {
        self.lru.peek(k)
    }

    pub fn get_mut(&mut self, k: &u64) -> Option<&mut Lane> {
        self.lru.peek_mut(k)
    }

    pub fn contains(&self, k: &u64) -> bool {
        self.lru.contains(k)
    }

    /// Marks `k` as just used.
    pub fn touch(&mut self, k: &u64) {
        self.lru.promote(k);
    }

    pub fn len(&self) -> usize {
        self.lru.len()
    }

    /// Lanes, most recently used first.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &Lane)> {
        self.lru.iter()
    }

    pub fn insert(&mut self, k: u64, lane: Lane) {
        if lane.configured {
            self.configured.push(k);
        }
        self.lru.put(k, lane);
    }

    /// The lanes named after `names` (their integrations' tokens were rotated) become
    /// ordinary tokens: named `<name> (old token)`, with the `other` metric label, so the
    /// integration's name means its current token only.
    pub fn retire_names(&mut self, names: &[Arc<str>]) {
        let lru = &mut self.lru;
        self.configured.retain(|k| {
            let Some(lane) = lru.peek_mut(k) else {
                return false;
            };
            if !names.contains(&lane.label) {
                return true;
            }
            lane.label = Arc::from(format!("{} (old token)", lane.label));
            lane.configured = false;
            false
        });
    }

    fn remove_lru(&mut self) -> Option<(u64, Lane)> {
        let (k, lane) = self.lru.pop_lru()?;
        if lane.configured {
            self.configured.retain(|c| *c != k);
        }
        Some((k, lane))
    }
}

/// What a lane is released with: alone, or with every lane of its workspace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum GroupId {
    Solo(u64),
    Workspace(Arc<str>),
}

/// One token: its budget and its waiting requests.
pub(super) struct Lane {
    /// The configured integration name, or the token's hash prefix.
    pub label: Arc<str>,
    pub outcomes: Arc<Outcomes>,
    pub group: GroupId,
    pub budget: Budget,
    pub queue: LaneQueue,
    pub last_used: Instant,
    /// With Redis budgets: the budget's key in Redis and what this replica knows of it.
    pub remote: Option<RemoteBudget>,
    /// Endpoints of this token Notion paused (`public_api_endpoint_rate_limit`), and until
    /// when; at most one entry per route template of the catalogue.
    pub endpoint_pauses: Vec<(&'static str, Instant)>,
    /// Notion restricted this token (`public_api_request_blocked`): answered here until then.
    pub blocked_until: Option<Instant>,
    /// Whether this token's workspace is known, or being found out.
    pub discovery: Discovery,
    /// Notion's 429s and 529s for this token, by what they named.
    pub pushbacks: Pushbacks,
    /// The plan its window budget comes from (`custom` for an explicit `per_minute`).
    pub plan: &'static str,
    /// A configured integration (its name is its metric label; others share `other`).
    pub configured: bool,
}

impl Lane {
    /// Nothing waits and nothing is remembered: evicting the lane loses nothing.
    fn is_rested(&self, now: Instant) -> bool {
        self.queue.is_empty()
            && self.budget.is_rested(now)
            && self.blocked_until.is_none_or(|t| t <= now)
            && self.endpoint_pauses.iter().all(|(_, t)| *t <= now)
    }

    /// The label of this token's metric series: its integration's name, or `other`.
    pub fn metric_label(&self) -> Arc<str> {
        if self.configured {
            self.label.clone()
        } else {
            OTHER.with(Arc::clone)
        }
    }
}

thread_local! {
    /// One allocation of the `other` label per thread.
    static OTHER: Arc<str> = Arc::from(OTHER_LABEL);
}

/// The metric label of every token without a configured name.
pub const OTHER_LABEL: &str = "other";

/// Finding out a token's workspace (`GET /v1/users/me`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Discovery {
    /// Not wanted: the workspace is configured, or discovery is switched off.
    Off,
    /// Not known yet; not to be tried again before `not_before` after a failed attempt.
    Unknown {
        not_before: Option<Instant>,
    },
    /// A discovery call is on its way.
    Pending,
    Done,
}

/// Notion's pushbacks counted by [`Limit`].
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Pushbacks([u64; Limit::COUNT]);

impl Pushbacks {
    pub fn count(&mut self, limit: Limit) {
        self.0[limit.index()] += 1;
    }

    /// `(label, count)` for every limit counted at least once.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Limit::LABELS
            .iter()
            .zip(self.0)
            .filter(|(_, n)| *n > 0)
            .map(|(l, n)| (*l, n))
    }
}

/// Lanes released together, and the workspace budget they share.
pub(super) struct Group {
    /// The workspace's budget, for workspace groups.
    pub workspace: Option<Budget>,
    /// Its side in Redis (workspace groups with Redis budgets).
    pub remote: Option<RemoteBudget>,
    /// Lanes with waiting requests, in release order (round robin across lanes).
    pub waiting: VecDeque<u64>,
    /// The running dispatcher's wake-up, if one runs.
    pub dispatcher: Option<Arc<Notify>>,
    /// Notion's 429s for the workspace's limit.
    pub pushbacks: Pushbacks,
    /// Lanes in the group (a workspace's group outlives its last lane while it remembers).
    pub members: u32,
}

/// How a waiting request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// In the fair queue of its token.
    Normal,
    /// Only from budget no normal request of the same group (the token, or every token of its
    /// workspace) is waiting for: work that may wait while anyone else wants the budget.
    Background,
}

/// A lane's waiting requests: the fair queue, and background requests behind all of it.
#[derive(Default)]
pub(super) struct LaneQueue {
    normal: FairQueue<u64, Waiter>,
    background: FairQueue<u64, Waiter>,
}

impl LaneQueue {
    /// Every waiting request.
    pub fn len(&self) -> usize {
        self.normal.len() + self.background.len()
    }

    pub fn is_empty(&self) -> bool {
        self.normal.is_empty() && self.background.is_empty()
    }

    /// Whether a normal request waits.
    pub fn has_normal(&self) -> bool {
        !self.normal.is_empty()
    }

    /// Normal requests that go before a new one of `caller` (see [`FairQueue::ahead_of_new`]).
    pub fn ahead_of_new(&self, caller: &u64, weight: u32) -> usize {
        self.normal.ahead_of_new(caller, weight)
    }

    pub fn push(&mut self, caller: &u64, weight: u32, w: Waiter, priority: Priority, front: bool) {
        let q = match priority {
            Priority::Normal => &mut self.normal,
            Priority::Background => &mut self.background,
        };
        if front {
            q.push_front(caller, weight, w);
        } else {
            q.push_back(caller, weight, w);
        }
    }

    /// The next request to release: a normal one, else (`background`: nothing normal waits in
    /// the group) a background one.
    pub fn pop(&mut self, background: bool) -> Option<(u64, Waiter)> {
        self.normal
            .pop()
            .or_else(|| background.then(|| self.background.pop()).flatten())
    }

    /// Whether [`LaneQueue::pop`] with `background` would return something.
    pub fn can_pop(&self, background: bool) -> bool {
        !self.normal.is_empty() || (background && !self.background.is_empty())
    }

    pub fn remove_where(&mut self, caller: &u64, mut pred: impl FnMut(&Waiter) -> bool) -> usize {
        self.normal.remove_where(caller, &mut pred, drop)
            + self.background.remove_where(caller, pred, drop)
    }

    /// The background requests of `caller` become normal ones, first in line: what they wait
    /// for is needed now.
    pub fn expedite(&mut self, caller: &u64) {
        let mut moved = Vec::new();
        self.background
            .remove_where(caller, |_| true, |w| moved.push(w));
        for w in moved.into_iter().rev() {
            self.normal.push_front(caller, 1, w);
        }
    }
}

/// A waiting request.
pub(super) struct Waiter {
    pub id: u64,
    /// Receives the release.
    pub tx: oneshot::Sender<Release>,
}

/// A waiter's release: when, and which budget paid for it (what a refund must go back to).
#[derive(Debug, Clone, Copy)]
pub(super) struct Release {
    pub at: Instant,
    pub paid_by: PaidBy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PaidBy {
    /// The budgets kept in this process (`limits.backend = "local"`).
    Process,
    /// A slot reserved in Redis (the slot, on Redis's clock).
    Redis(u64),
    /// The replica's local share, while Redis is unreachable.
    LocalShare,
}

impl State {
    /// Requests of every lane waiting in group `gid` (what a workspace budget is shared by).
    pub fn group_waiting(&self, gid: &GroupId) -> usize {
        self.groups.get(gid).map_or(0, |g| {
            g.waiting
                .iter()
                .filter_map(|k| self.lanes.get(k))
                .map(|l| l.queue.len())
                .sum()
        })
    }

    /// Whether a normal request waits in group `gid` (background ones then wait).
    pub fn group_has_normal(&self, gid: &GroupId) -> bool {
        self.groups.get(gid).is_some_and(|g| {
            g.waiting
                .iter()
                .filter_map(|k| self.lanes.get(k))
                .any(|l| l.queue.has_normal())
        })
    }

    /// Evicts a few lanes from the old end that are idle for [`EVICT_AFTER`] and remember
    /// nothing (constant work per call, whatever the number of lanes).
    pub fn evict_idle(&mut self, now: Instant) {
        self.sweep_orphans(now);
        for _ in 0..EVICT_PER_CALL {
            let old = self.lanes.lru.peek_lru().is_some_and(|(_, l)| {
                now.saturating_duration_since(l.last_used) >= EVICT_AFTER && l.is_rested(now)
            });
            if !old {
                return;
            }
            self.evict_lru(now);
        }
    }

    /// Removes workspace groups without lanes once they remember nothing (the oldest few per
    /// call), and the oldest at once while there are more than `limits.max_tokens` of them.
    fn sweep_orphans(&mut self, now: Instant) {
        for _ in 0..ORPHANS_PER_CALL {
            let Some(name) = self.orphans.front().cloned() else {
                return;
            };
            let gid = GroupId::Workspace(name.clone());
            let remove = match self.groups.get(&gid) {
                // Gone already, or a token joined it again: nothing to sweep.
                None => {
                    self.orphans.pop_front();
                    continue;
                }
                Some(g) if g.members > 0 => {
                    self.orphans.pop_front();
                    continue;
                }
                Some(g) => {
                    g.waiting.is_empty()
                        && (g.workspace.as_ref().is_none_or(|b| b.is_rested(now))
                            || self.orphans.len() > self.lanes.max)
                }
            };
            if !remove {
                return;
            }
            self.orphans.pop_front();
            self.groups.remove(&gid);
            self.workspaces.remove(&name);
            // Its place among the shown workspaces is kept: a metric label, once used, has
            // series the exporter cannot remove, so the labels stay the first ones.
        }
    }

    /// Makes room for one more lane: evicts the least recently used lane nobody waits in,
    /// passing over at most [`BUSY_SKIPS`] busy ones (they become the most recent). `false`
    /// when every lane looked at has waiting requests: the table is full of busy tokens.
    pub fn make_room(&mut self, now: Instant) -> bool {
        if self.lanes.len() < self.lanes.max {
            return true;
        }
        for _ in 0..BUSY_SKIPS {
            let busy = match self.lanes.lru.peek_lru() {
                Some((_, l)) => !l.queue.is_empty(),
                None => return true,
            };
            if !busy {
                self.evict_lru(now);
                return true;
            }
            if let Some(k) = self.lanes.lru.peek_lru().map(|(k, _)| *k) {
                self.lanes.lru.promote(&k);
            }
        }
        false
    }

    /// Evicts the least recently used lane, and its group when nothing else is in it and it
    /// remembers nothing.
    fn evict_lru(&mut self, now: Instant) {
        let Some((key, lane)) = self.lanes.remove_lru() else {
            return;
        };
        crate::metrics::lane_evicted(lane.is_rested(now));
        let Some(group) = self.groups.get_mut(&lane.group) else {
            return;
        };
        group.waiting.retain(|k| *k != key);
        group.members = group.members.saturating_sub(1);
        let gone = match &lane.group {
            GroupId::Solo(_) => true,
            GroupId::Workspace(_) => {
                group.members == 0
                    && group.waiting.is_empty()
                    && group.workspace.as_ref().is_none_or(|b| b.is_rested(now))
            }
        };
        if gone {
            self.groups.remove(&lane.group);
            if let GroupId::Workspace(w) = &lane.group {
                self.workspaces.remove(w);
            }
        } else if let (GroupId::Workspace(w), 0) = (&lane.group, group.members) {
            self.orphans.push_back(w.clone());
        }
    }
}

/// The lane of a token seen for the first time: its integration's name and budget if the
/// configuration knows its digest, else the defaults under its hash prefix; its group created
/// if it is the first of its workspace.
pub(super) fn new_lane(
    limits: &LimitsConfig,
    integrations: &[crate::config::Integration],
    redis: Option<&Arc<RedisBudgets>>,
    credential: &[u8],
    key: u64,
    groups: &mut HashMap<GroupId, Group>,
    now: Instant,
) -> Lane {
    let digest: [u8; 32] = Sha256::digest(credential).into();
    let integration = integrations.iter().find(|i| i.token_sha256 == digest);
    let plan_of = |plan: crate::config::Plan, per_minute: u32| {
        if per_minute == plan.per_minute() {
            plan.name()
        } else {
            "custom"
        }
    };
    let (label, plan, per_minute, smoothing, group) = match integration {
        Some(i) => (
            i.name.clone(),
            plan_of(i.plan, i.per_minute),
            i.per_minute,
            i.smoothing,
            match &i.workspace {
                Some(w) => GroupId::Workspace(w.clone()),
                None => GroupId::Solo(key),
            },
        ),
        None => (
            Arc::from(TokenId::of(credential).as_str()),
            plan_of(limits.plan, limits.per_minute),
            limits.per_minute,
            limits.smoothing,
            GroupId::Solo(key),
        ),
    };
    let discovery = match group {
        GroupId::Solo(_) if limits.discover_workspaces => Discovery::Unknown { not_before: None },
        _ => Discovery::Off,
    };
    groups
        .entry(group.clone())
        .or_insert_with(|| new_group(limits, redis, &group, per_minute, now))
        .members += 1;
    let budget = match smoothing {
        Some(s) => Budget::new(s.rate, s.burst, limits.adaptive, now),
        None => Budget::unsmoothed(limits.adaptive, now),
    }
    .with_window(Window::new(per_minute, now));
    Lane {
        label,
        outcomes: Arc::default(),
        group,
        remote: redis.map(|r| {
            RemoteBudget::new(
                r.token_key(&digest),
                &budget,
                r.local_share(),
                r.epoch(),
                now,
            )
        }),
        budget,
        queue: LaneQueue::default(),
        last_used: now,
        endpoint_pauses: Vec::new(),
        blocked_until: None,
        discovery,
        pushbacks: Pushbacks::default(),
        plan,
        configured: integration.is_some(),
    }
}

/// A group for `gid`, whose first member has a window budget of `member_per_minute`. A
/// workspace's budget is the configured one, or — Notion does not publish it — a provisional
/// guess of two members' budgets that grows while it is used and is learned from Notion's
/// 429s ([`Window::provisional`]).
fn new_group(
    limits: &LimitsConfig,
    redis: Option<&Arc<RedisBudgets>>,
    gid: &GroupId,
    member_per_minute: u32,
    now: Instant,
) -> Group {
    let workspace = match gid {
        GroupId::Workspace(w) => Some(workspace_budget(
            limits.workspaces.get(w),
            member_per_minute,
            limits.adaptive,
            now,
        )),
        GroupId::Solo(_) => None,
    };
    let remote = match (gid, &workspace, redis) {
        (GroupId::Workspace(w), Some(b), Some(r)) => Some(RemoteBudget::new(
            r.workspace_key(w),
            b,
            r.local_share(),
            r.epoch(),
            now,
        )),
        _ => None,
    };
    Group {
        workspace,
        remote,
        waiting: VecDeque::new(),
        dispatcher: None,
        pushbacks: Pushbacks::default(),
        members: 0,
    }
}

fn workspace_budget(
    cfg: Option<&WorkspaceBudget>,
    member_per_minute: u32,
    adaptive: bool,
    now: Instant,
) -> Budget {
    let window = match cfg.and_then(|c| c.per_minute) {
        Some(n) => Window::new(n, now),
        None => Window::provisional(member_per_minute.saturating_mul(2), now),
    };
    let budget = match cfg.and_then(|c| Some((c.rate?, c.burst?))) {
        Some((rate, burst)) => Budget::new(rate, burst, adaptive, now),
        None => Budget::unsmoothed(adaptive, now),
    };
    budget.with_window(window)
}

impl State {
    /// The token of `lane_key` turned out to be in the workspace of Notion id `id`: its lane
    /// joins that workspace's group (the configured workspace of that id, if any), unless its
    /// workspace is configured. Returns the group when the lane brought waiting requests to it,
    /// so that the caller sees a dispatcher runs for them.
    pub fn join_workspace(
        &mut self,
        limits: &LimitsConfig,
        redis: Option<&Arc<RedisBudgets>>,
        lane_key: u64,
        id: &str,
        now: Instant,
    ) -> Option<GroupId> {
        let name = limits
            .workspaces
            .iter()
            .find(|(_, w)| w.id.as_deref() == Some(id))
            .map_or_else(|| Arc::from(id), |(n, _)| n.clone());
        let lane = self.lanes.get_mut(&lane_key)?;
        lane.discovery = Discovery::Done;
        if !matches!(lane.group, GroupId::Solo(_)) {
            return None;
        }
        self.workspaces.insert(name.clone());
        if self.shown_workspaces.len() < self.configured_workspaces + DISCOVERED_SHOWN {
            self.shown_workspaces.insert(name.clone());
        }
        let to = GroupId::Workspace(name);
        let from = std::mem::replace(&mut lane.group, to.clone());
        let waiting = !lane.queue.is_empty();
        let per_minute = lane
            .budget
            .window()
            .map_or(limits.per_minute, Window::configured);
        // The lone lane's group goes; its dispatcher, if one runs, finds no group and ends.
        self.groups.remove(&from);
        let group = self
            .groups
            .entry(to.clone())
            .or_insert_with(|| new_group(limits, redis, &to, per_minute, now));
        group.members += 1;
        // What the token sent lately was the workspace's too.
        if let (Some(ws), Some(own)) = (
            group.workspace.as_mut().and_then(Budget::window_mut),
            lane.budget.window(),
        ) {
            ws.absorb(own, now);
        }
        if waiting {
            group.waiting.push_back(lane_key);
        }
        waiting.then_some(to)
    }
}
