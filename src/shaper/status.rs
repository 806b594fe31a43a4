//! `/status`'s view of the shaper: every key's queue, window, rates, pause and Notion's
//! pushbacks.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::budget::Budget;
use super::outcomes::UpstreamStatus;
use super::state::{Discovery, GroupId, Pushbacks, State};
use super::window::WINDOW;

/// Tokens without a configured name shown in `/status`, the most recently used first.
pub const OTHERS_SHOWN: usize = 20;

/// `/status`'s view of the shaper: every configured integration, every workspace, and the
/// [`OTHERS_SHOWN`] most recently used other tokens (the rest are counted, not listed: a
/// snapshot costs the same whatever the number of tokens).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    pub tokens: Vec<KeyStatus>,
    pub workspaces: Vec<KeyStatus>,
    /// Workspaces the shaper holds state for (listed or not).
    pub workspaces_total: usize,
    /// Tokens the shaper holds state for (`limits.max_tokens` at most).
    pub tokens_total: usize,
    /// Requests waiting for tokens without a configured name (listed or not).
    pub queued_other_tokens: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyStatus {
    /// Integration name, or the token's SHA-256 prefix; workspace name (or Notion id) for
    /// workspaces.
    pub key: String,
    /// Tokens: the workspace whose budget they share, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    /// Tokens: how the workspace is known (`configured`, `discovered`), or `unknown`,
    /// `discovering`, `off`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workspace_from: Option<&'static str>,
    /// Tokens: the plan of their window budget (`standard`, `business`, `custom`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<&'static str>,
    pub queued: usize,
    /// Notion's 60-second window as the gateway counts it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowStatus>,
    /// The configured smoothing rate (requests per second); for a workspace without one, the
    /// window's budget per second.
    pub rate: f64,
    /// What the key allows now: the smoothing rate as Notion's 429s left it, or the window's
    /// (learned) budget per second, whichever is lower.
    pub effective_rate: f64,
    pub burst: u32,
    /// Seconds until Notion's `Retry-After` has passed, when paused.
    pub paused_for_s: Option<f64>,
    pub notion_429: u64,
    pub notion_529: u64,
    /// Notion's 429s and 529s by what they named (documented `rate_limit_reason` values,
    /// `other`, `service_overload`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub notion_pushbacks: BTreeMap<&'static str, u64>,
    /// Tokens: seconds this token is still answered here after `public_api_request_blocked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_for_s: Option<f64>,
    /// Tokens: endpoints Notion paused for this token, and for how many more seconds.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub paused_endpoints: BTreeMap<&'static str, f64>,
    /// What Notion answered this token's attempts (tokens only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamStatus>,
    /// A configured integration (tokens).
    #[serde(skip)]
    pub configured: bool,
}

/// A key's window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WindowStatus {
    /// Releases counted in the last window (and its margin).
    pub used: u32,
    /// The budget in force.
    pub budget: u32,
    /// The configured budget (or first guess).
    pub configured: u32,
    /// Requests that may go at once on an idle key.
    pub burst: u32,
    /// Seconds until the oldest counted release stops being counted (`used` drops).
    pub resets_in_s: Option<f64>,
    /// A 429 taught a lower budget than configured (forgotten after an hour).
    pub learned: bool,
    /// Seconds until a learned budget is forgotten.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forgotten_in_s: Option<f64>,
    /// The budget is still a guess (a workspace's undisclosed limit).
    pub provisional: bool,
}

impl Snapshot {
    /// The gauges for `/metrics`: one series per configured integration and per workspace, and
    /// the queue depth of every other token together under `other` (labels stay bounded).
    pub fn gauges(self) -> impl Iterator<Item = crate::metrics::KeyGauges> {
        let other = crate::metrics::KeyGauges {
            integration: super::state::OTHER_LABEL.to_string(),
            queued: self.queued_other_tokens,
            effective_rate: 0.0,
            paused_s: 0.0,
            window: None,
        };
        self.tokens
            .into_iter()
            .filter(|k| k.configured)
            .chain(self.workspaces)
            .map(|k| crate::metrics::KeyGauges {
                integration: k.key,
                queued: k.queued,
                effective_rate: k.effective_rate,
                paused_s: k.paused_for_s.unwrap_or(0.0),
                window: k.window.map(|w| (w.used, w.budget)),
            })
            .chain(std::iter::once(other))
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl KeyStatus {
    fn of(b: &Budget, pushbacks: &Pushbacks, now: Instant) -> Self {
        let window = b.window().map(|w| WindowStatus {
            used: w.used(now),
            // A learned budget due to be forgotten is shown forgotten (it is, at the next use).
            budget: match w.learned_until() {
                Some(t) if t <= now => w.configured(),
                _ => w.budget(),
            },
            configured: w.configured(),
            burst: w.burst(),
            resets_in_s: w.frees_at(now).map(|t| round3((t - now).as_secs_f64())),
            learned: w.learned_until().is_some_and(|t| t > now),
            forgotten_in_s: w
                .learned_until()
                .filter(|t| *t > now)
                .map(|t| round3((t - now).as_secs_f64())),
            provisional: w.is_provisional(),
        });
        let per_second = window
            .as_ref()
            .map(|w| f64::from(w.budget) / WINDOW.as_secs_f64());
        let (rate, effective, burst) = match b.smoothing(now) {
            Some((rate, effective, burst)) => (
                rate,
                per_second.map_or(effective, |w| effective.min(w)),
                burst,
            ),
            None => {
                let w = per_second.unwrap_or(0.0);
                (w, w, window.as_ref().map_or(0, |w| w.burst))
            }
        };
        Self {
            key: String::new(),
            workspace: None,
            workspace_from: None,
            plan: None,
            queued: 0,
            window,
            rate: round3(rate),
            effective_rate: round3(effective),
            burst,
            paused_for_s: b.paused_until(now).map(|p| round3((p - now).as_secs_f64())),
            notion_429: b.rate_limited,
            notion_529: b.overloaded,
            notion_pushbacks: pushbacks.nonzero().collect(),
            blocked_for_s: None,
            paused_endpoints: BTreeMap::new(),
            upstream: None,
            configured: false,
        }
    }
}

impl KeyStatus {
    /// With Redis budgets the window is counted in Redis, for every replica: show what the
    /// last reservation said of it.
    fn counted_in(mut self, remote: Option<&super::redis::RemoteBudget>) -> Self {
        if let (Some(w), Some((used, budget))) =
            (self.window.as_mut(), remote.and_then(|r| r.window))
        {
            w.used = used;
            w.budget = budget;
            w.resets_in_s = None;
        }
        self
    }
}

impl State {
    /// The shaper's state at `now`: configured integrations, workspaces, and the most recently
    /// used other tokens (work bounded by the configuration, not the number of tokens).
    pub(super) fn snapshot(&self, now: Instant) -> Snapshot {
        let configured = self
            .lanes
            .configured
            .iter()
            .filter_map(|k| self.lanes.get(k));
        let others = self
            .lanes
            .iter()
            .map(|(_, l)| l)
            .filter(|l| !l.configured)
            .take(OTHERS_SHOWN);
        let mut tokens: Vec<KeyStatus> = configured
            .chain(others)
            .map(|l| KeyStatus {
                key: l.label.to_string(),
                workspace: match &l.group {
                    GroupId::Workspace(w) => Some(w.to_string()),
                    GroupId::Solo(_) => None,
                },
                workspace_from: Some(match (&l.group, l.discovery) {
                    (GroupId::Workspace(_), Discovery::Done) => "discovered",
                    (GroupId::Workspace(_), _) => "configured",
                    (GroupId::Solo(_), Discovery::Pending) => "discovering",
                    (GroupId::Solo(_), Discovery::Off) => "off",
                    (GroupId::Solo(_), _) => "unknown",
                }),
                plan: Some(l.plan),
                queued: l.queue.len(),
                blocked_for_s: l
                    .blocked_until
                    .filter(|t| *t > now)
                    .map(|t| round3((t - now).as_secs_f64())),
                paused_endpoints: l
                    .endpoint_pauses
                    .iter()
                    .filter(|(_, t)| *t > now)
                    .map(|(r, t)| (*r, round3((*t - now).as_secs_f64())))
                    .collect(),
                upstream: Some(l.outcomes.status(now)),
                configured: l.configured,
                ..KeyStatus::of(&l.budget, &l.pushbacks, now).counted_in(l.remote.as_ref())
            })
            .collect();
        tokens.sort_by(|a, b| (!a.configured, &a.key).cmp(&(!b.configured, &b.key)));
        // The shown workspaces only (configured, and the first discovered): a bounded list.
        let mut workspaces: Vec<KeyStatus> = self
            .shown_workspaces
            .iter()
            .filter_map(|name| {
                let g = self.groups.get(&GroupId::Workspace(name.clone()))?;
                let b = g.workspace.as_ref()?;
                let queued = g
                    .waiting
                    .iter()
                    .filter_map(|k| self.lanes.get(k))
                    .map(|l| l.queue.len())
                    .sum();
                Some(KeyStatus {
                    key: name.to_string(),
                    queued,
                    ..KeyStatus::of(b, &g.pushbacks, now).counted_in(g.remote.as_ref())
                })
            })
            .collect();
        workspaces.sort_by(|a, b| a.key.cmp(&b.key));
        let queued_configured: usize = self
            .lanes
            .configured
            .iter()
            .filter_map(|k| self.lanes.get(k))
            .map(|l| l.queue.len())
            .sum();
        Snapshot {
            tokens,
            workspaces,
            workspaces_total: self.workspaces.len(),
            tokens_total: self.lanes.len(),
            queued_other_tokens: self.queued.saturating_sub(queued_configured),
        }
    }
}
