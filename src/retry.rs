//! Retry rules: which failed attempts may go again, how long to wait first, and the budget that
//! keeps an outage from multiplying traffic.
//!
//! Pure decisions, kept out of the pipeline ([`crate::proxy`] asks them): [`Failure`] is what an
//! attempt ended with, [`may_retry`] says whether a repeat is safe for the endpoint's
//! [`Safety`], [`Retries::backoff`] picks the wait, [`RetryBudget`] caps retries to a share of
//! recent requests. Notion's 429/529 are not here: they prove the request was not processed
//! and belong to the shaper.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::catalogue::Safety;
use crate::config::RetryConfig;

/// How one upstream attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// An answer with this status (500, 502, 503, 504, 409 are the retryable ones).
    Status(u16),
    /// The connection (TCP, the proxy tunnel) could not be made: no byte of the request left.
    Connect,
    /// The connection broke after the request may have been sent (reset, EOF).
    Broken,
    /// No answer within `upstream.attempt_timeout`.
    Timeout,
}

impl Failure {
    /// Label for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::Status(500) => "500",
            Failure::Status(502) => "502",
            Failure::Status(503) => "503",
            Failure::Status(504) => "504",
            Failure::Status(409) => "409",
            Failure::Status(_) => "status",
            Failure::Connect => "connect",
            Failure::Broken => "reset",
            Failure::Timeout => "timeout",
        }
    }
}

/// Whether an attempt that ended in `failure` may be sent again.
///
/// A refused connection proves Notion never saw the request: any class goes again. A 5xx, a 409
/// `conflict_error`, a broken connection or a timeout leaves open whether Notion acted, so only
/// reads and idempotent writes go again, unless the operator opted the route in (`unsafe_ok`).
pub fn may_retry(safety: Safety, unsafe_ok: bool, failure: Failure) -> bool {
    match failure {
        Failure::Connect => true,
        Failure::Status(500 | 502 | 503 | 504 | 409) | Failure::Broken | Failure::Timeout => {
            safety.repeatable() || unsafe_ok
        }
        Failure::Status(_) => false,
    }
}

/// The gateway's retry policy and its shared budget.
pub struct Retries {
    cfg: RetryConfig,
    budget: Mutex<RetryBudget>,
}

impl Retries {
    pub fn new(cfg: RetryConfig) -> Self {
        let budget = RetryBudget::new(cfg.budget_ratio, cfg.budget_min_per_second, Instant::now());
        Self {
            cfg,
            budget: Mutex::new(budget),
        }
    }

    pub fn config(&self) -> &RetryConfig {
        &self.cfg
    }

    /// Whether the operator opted `method template` into retries of unsafe writes.
    pub fn unsafe_ok(&self, method: &http::Method, template: &str) -> bool {
        self.cfg
            .unsafe_routes
            .iter()
            .any(|(m, t)| m == method && *t == template)
    }

    /// Counts a new request (not a retry) towards the budget.
    pub fn record_request(&self) {
        if let Ok(mut b) = self.budget.lock() {
            b.deposit(Instant::now());
        }
    }

    /// Takes one retry from the budget; `false` when recent retries already used their share.
    pub fn take_retry(&self) -> bool {
        self.budget
            .lock()
            .map(|mut b| b.withdraw(Instant::now()))
            .unwrap_or(false)
    }

    /// The wait before retry number `n` (1 for the first retry): full jitter, a uniform draw
    /// from zero to `backoff_base · 2^(n-1)`, capped at `backoff_cap`; at least the upstream's
    /// `Retry-After` when it sent one.
    pub fn backoff(&self, n: u32, retry_after: Option<Duration>) -> Duration {
        let ceiling = self
            .cfg
            .backoff_base
            .saturating_mul(1 << n.saturating_sub(1).min(20))
            .min(self.cfg.backoff_cap);
        let jitter = ceiling.mul_f64(fastrand::f64());
        retry_after.map_or(jitter, |r| r.max(jitter))
    }
}

/// Length of the budget's window, in one-second buckets.
const WINDOW_SECS: usize = 10;

/// Retries allowed over the last [`WINDOW_SECS`] seconds: `ratio` of the requests seen in that
/// window, plus `min_per_second` for every second of it (so a quiet gateway can still retry).
/// Linkerd's and Finagle's defaults: 20 %, 10 per second, 10 s.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    floor: f64,
    start: Instant,
    /// Per bucket: the second it counts (since `start`), requests, retries.
    buckets: [(u64, u32, u32); WINDOW_SECS],
}

impl RetryBudget {
    pub fn new(ratio: f64, min_per_second: f64, now: Instant) -> Self {
        Self {
            ratio,
            floor: min_per_second * WINDOW_SECS as f64,
            start: now,
            buckets: [(u64::MAX, 0, 0); WINDOW_SECS],
        }
    }

    fn bucket(&mut self, now: Instant) -> &mut (u64, u32, u32) {
        let sec = now.saturating_duration_since(self.start).as_secs();
        let b = &mut self.buckets[(sec % WINDOW_SECS as u64) as usize];
        if b.0 != sec {
            *b = (sec, 0, 0);
        }
        b
    }

    fn totals(&self, now: Instant) -> (u64, u64) {
        let sec = now.saturating_duration_since(self.start).as_secs();
        self.buckets
            .iter()
            .filter(|b| b.0 != u64::MAX && b.0 <= sec && sec - b.0 < WINDOW_SECS as u64)
            .fold((0, 0), |(q, r), b| (q + u64::from(b.1), r + u64::from(b.2)))
    }

    /// A request was received.
    pub fn deposit(&mut self, now: Instant) {
        let b = self.bucket(now);
        b.1 = b.1.saturating_add(1);
    }

    /// A retry is wanted: allowed (and counted) while retries in the window stay under the
    /// budget.
    pub fn withdraw(&mut self, now: Instant) -> bool {
        let (requests, retries) = self.totals(now);
        if retries as f64 >= self.floor + self.ratio * requests as f64 {
            return false;
        }
        let b = self.bucket(now);
        b.2 = b.2.saturating_add(1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RetryConfig {
        RetryConfig {
            max_attempts: 4,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(2),
            budget_ratio: 0.2,
            budget_min_per_second: 10.0,
            replay_limit: 1024 * 1024,
            unsafe_routes: Vec::new(),
        }
    }

    #[test]
    fn what_may_go_again() {
        use Failure::*;
        use Safety::*;
        for f in [
            Status(500),
            Status(502),
            Status(503),
            Status(504),
            Status(409),
            Broken,
            Timeout,
        ] {
            assert!(may_retry(ReadOnly, false, f), "{f:?}");
            assert!(may_retry(Idempotent, false, f), "{f:?}");
            assert!(!may_retry(NonIdempotent, false, f), "{f:?}");
            assert!(may_retry(NonIdempotent, true, f), "opted in: {f:?}");
        }
        for s in [ReadOnly, Idempotent, NonIdempotent] {
            assert!(may_retry(s, false, Connect), "nothing was sent: {s:?}");
            for code in [400, 401, 404, 501] {
                assert!(!may_retry(s, true, Status(code)), "{code}");
            }
        }
    }

    #[test]
    fn backoff_is_full_jitter_under_a_growing_ceiling() {
        let r = Retries::new(cfg());
        for n in 1..=8u32 {
            let ceiling = Duration::from_millis(100 * (1 << (n - 1))).min(Duration::from_secs(2));
            let draws: Vec<Duration> = (0..200).map(|_| r.backoff(n, None)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling), "retry {n}");
            // Spread over the whole range, not a fixed delay.
            assert!(draws.iter().any(|d| *d < ceiling / 4), "retry {n}");
            assert!(draws.iter().any(|d| *d > ceiling * 3 / 4), "retry {n}");
        }
        assert!(r.backoff(1, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_a_share_of_recent_requests_plus_a_floor() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(0.2, 1.0, t0); // floor: 10 retries per 10 s window
        for _ in 0..100 {
            b.deposit(t0);
        }
        let allowed = (0..100).take_while(|_| b.withdraw(t0)).count();
        assert_eq!(allowed, 10 + 20);
        // Still spent nine seconds later, within the window...
        assert!(!b.withdraw(t0 + Duration::from_secs(9)));
        // ...and available again once the window has passed over it.
        let later = t0 + Duration::from_secs(10);
        let again = (0..100).take_while(|_| b.withdraw(later)).count();
        assert_eq!(
            again, 10,
            "only the floor: the requests left the window too"
        );
    }
}
