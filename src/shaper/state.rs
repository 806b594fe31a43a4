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
use crate::config::LimitsConfig;
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
    /// A slot reserved in Redis.
    Redis,
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
                && l.budget.is_rested(now))
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
    groups.entry(group.clone()).or_insert_with(|| {
        let workspace = match &group {
            GroupId::Workspace(w) => limits
                .workspaces
                .get(w)
                .map(|ws| Budget::new(ws.rate, ws.burst, limits.adaptive, now)),
            GroupId::Solo(_) => None,
        };
        let remote = match (&group, &workspace, redis) {
            (GroupId::Workspace(w), Some(b), Some(r)) => Some(RemoteBudget::new(
                r.workspace_key(w),
                b,
                r.local_share(),
                now,
            )),
            _ => None,
        };
        Group {
            workspace,
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
        remote: redis
            .map(|r| RemoteBudget::new(r.token_key(&digest), &budget, r.local_share(), now)),
        budget,
        queue: FairQueue::new(),
        last_used: now,
    }
}
