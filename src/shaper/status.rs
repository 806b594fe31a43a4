//! `/status`'s view of the shaper: every key's queue, window, rates, pause and Notion's
//! pushbacks.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::budget::Budget;
use super::outcomes::UpstreamStatus;
use super::state::{Discovery, GroupId, Pushbacks, State};
use super::window::WINDOW;

/// `/status`'s view of the shaper.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Snapshot {
    pub tokens: Vec<KeyStatus>,
    pub workspaces: Vec<KeyStatus>,
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
    /// The budget is still a guess (a workspace's undisclosed limit).
    pub provisional: bool,
}

impl Snapshot {
    /// Every key's gauges for `/metrics`.
    pub fn gauges(self) -> impl Iterator<Item = crate::metrics::KeyGauges> {
        self.tokens
            .into_iter()
            .chain(self.workspaces)
            .map(|k| crate::metrics::KeyGauges {
                integration: k.key,
                queued: k.queued,
                effective_rate: k.effective_rate,
                paused_s: k.paused_for_s.unwrap_or(0.0),
                window: k.window.map(|w| (w.used, w.budget)),
            })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl KeyStatus {
    fn of(b: &Budget, pushbacks: &Pushbacks, now: Instant) -> Self {
        let window = b.window().map(|w| WindowStatus {
            used: w.used(now),
            budget: w.budget(),
            configured: w.configured(),
            burst: w.burst(),
            resets_in_s: w.frees_at(now).map(|t| round3((t - now).as_secs_f64())),
            learned: w.is_learned(),
            provisional: w.is_provisional(),
        });
        let per_second = window
            .as_ref()
            .map(|w| f64::from(w.budget) / WINDOW.as_secs_f64());
        let (rate, effective, burst) = match b.smoothing() {
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
    /// Every key's state at `now`.
    pub(super) fn snapshot(&self, now: Instant) -> Snapshot {
        let mut tokens: Vec<KeyStatus> = self
            .lanes
            .values()
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
                ..KeyStatus::of(&l.budget, &l.pushbacks, now).counted_in(l.remote.as_ref())
            })
            .collect();
        tokens.sort_by(|a, b| a.key.cmp(&b.key));
        let mut workspaces: Vec<KeyStatus> = self
            .groups
            .iter()
            .filter_map(|(id, g)| match (id, g.workspace.as_ref()) {
                (GroupId::Workspace(name), Some(b)) => Some(KeyStatus {
                    key: name.to_string(),
                    ..KeyStatus::of(b, &g.pushbacks, now).counted_in(g.remote.as_ref())
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
