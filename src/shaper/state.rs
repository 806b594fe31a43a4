//! The shaper's state behind its one lock: lanes (one per token) and groups (the lanes that are
//! released together), how a lane is created for a new token, and the eviction of idle lanes.
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

/// Lanes idle this long (and with nothing to remember) are evicted; also how often the
/// eviction sweep runs.
pub(super) const EVICT_AFTER: Duration = Duration::from_secs(300);

#[derive(Default)]
pub(super) struct State {
    pub lanes: HashMap<u64, Lane>,
    pub groups: HashMap<GroupId, Group>,
    pub next_waiter: u64,
    next_sweep: Option<Instant>,
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
    pub queue: FairQueue<u64, Waiter>,
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
}

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

    /// Evicts lanes (and groups) that are idle and remember nothing; at most once per
    /// [`EVICT_AFTER`], so the cost is amortized over all requests.
    pub fn maybe_sweep(&mut self, now: Instant) {
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
                && l.budget.is_rested(now)
                && l.blocked_until.is_none_or(|t| t <= now)
                && l.endpoint_pauses.iter().all(|(_, t)| *t <= now))
        });
        let lanes = &self.lanes;
        self.groups.retain(|id, g| {
            let used = lanes.values().any(|l| &l.group == id);
            used || !g.waiting.is_empty() || g.workspace.as_ref().is_some_and(|b| !b.is_rested(now))
        });
    }
}

/// The lane of a token seen for the first time: its integration's name and budget if the
/// configuration knows its digest, else the defaults under its hash prefix; its group created
/// if it is the first of its workspace.
pub(super) fn new_lane(
    limits: &LimitsConfig,
    redis: Option<&Arc<RedisBudgets>>,
    credential: &[u8],
    key: u64,
    groups: &mut HashMap<GroupId, Group>,
    now: Instant,
) -> Lane {
    let digest: [u8; 32] = Sha256::digest(credential).into();
    let integration = limits
        .integrations
        .iter()
        .find(|i| i.token_sha256 == digest);
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
        .or_insert_with(|| new_group(limits, redis, &group, per_minute, now));
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
        queue: FairQueue::new(),
        last_used: now,
        endpoint_pauses: Vec::new(),
        blocked_until: None,
        discovery,
        pushbacks: Pushbacks::default(),
        plan,
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
        if waiting {
            group.waiting.push_back(lane_key);
        }
        waiting.then_some(to)
    }
}
