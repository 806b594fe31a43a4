//! What Notion answered a token's recent attempts, for `/status`: counters and the last outcome,
//! updated without the shaper's lock (the proxy records through the [`super::Ticket`]).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use tokio::time::Instant;

/// Counters and the last outcome of one token's upstream attempts.
#[derive(Debug, Default)]
pub struct Outcomes {
    ok: AtomicU64,
    client_errors: AtomicU64,
    /// Notion's 429s and 529s, counted apart from other 4xx and 5xx answers.
    pushed_back: AtomicU64,
    server_errors: AtomicU64,
    transport_errors: AtomicU64,
    /// Index into [`OUTCOMES`] + 1 of the last attempt; 0: none yet.
    last: AtomicU8,
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
            "4xx" => &self.client_errors,
            "429" | "529" => &self.pushed_back,
            "5xx" => &self.server_errors,
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

    pub(super) fn status(&self, now: Instant) -> UpstreamStatus {
        let last = self.last.load(Ordering::Relaxed);
        let at = self.last_at.load(Ordering::Relaxed);
        let since = now.saturating_duration_since(Self::epoch()).as_millis() as u64 + 1;
        UpstreamStatus {
            ok: self.ok.load(Ordering::Relaxed),
            client_errors: self.client_errors.load(Ordering::Relaxed),
            pushed_back: self.pushed_back.load(Ordering::Relaxed),
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
    /// 4xx answers other than 429.
    pub client_errors: u64,
    /// Notion's 429 and 529 answers (their reasons are in the key's `notion_pushbacks`).
    pub pushed_back: u64,
    /// 5xx answers other than 529.
    pub server_errors: u64,
    pub transport_errors: u64,
    pub last: Option<&'static str>,
    pub last_s_ago: Option<f64>,
}
