//! `/status`'s view of the shaper: every key's queue, rates, pause and Notion's pushbacks.

use tokio::time::Instant;

use super::budget::Budget;
use super::outcomes::UpstreamStatus;
use super::state::{GroupId, State};

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
            })
    }
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
                queued: l.queue.len(),
                upstream: Some(l.outcomes.status(now)),
                ..KeyStatus::of(&l.budget, now)
            })
            .collect();
        tokens.sort_by(|a, b| a.key.cmp(&b.key));
        let mut workspaces: Vec<KeyStatus> = self
            .groups
            .iter()
            .filter_map(|(id, g)| match (id, g.workspace.as_ref()) {
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
