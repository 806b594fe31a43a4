//! The budget of one key (a token or a workspace): GCRA, as a pure function of time.
//!
//! GCRA (the generic cell rate algorithm, as in ATM networks and governor) keeps one instant per
//! key, the *theoretical arrival time* `tat`. With emission interval `T = 1 / rate` and burst
//! `b`, a request at `now` conforms when `tat - (b - 1)·T <= now`; admitting it moves `tat` to
//! `max(tat, now) + T`. So `b` requests may go at once after an idle period, then one every `T`.
//!
//! Guarantee (tested as a property below): in any window of length `W`, fewer than
//! `rate · W + burst` requests are admitted.
//!
//! Beyond plain GCRA, a key can be *paused* until an instant (Notion's 429/529 `Retry-After`),
//! and its rate can change while it runs (to adapt to what Notion says). Neither rewinds
//! what was already admitted.
//!
//! What it does not do: queueing, fairness, timers. The shaper asks [`Gcra::ready_at`] when to
//! wake up and calls [`Gcra::admit`] when it releases a request. Every method takes `now`, so
//! tests drive it with plain instants and no clock at all.

use std::time::Duration;

use tokio::time::Instant;

/// One key's budget.
#[derive(Debug, Clone)]
pub struct Gcra {
    /// `T`: time between two requests at the sustained rate.
    interval: Duration,
    /// `(burst - 1) · T`: how far ahead of `now` the theoretical arrival time may run.
    tolerance: Duration,
    /// Theoretical arrival time of the next request at the sustained rate.
    tat: Instant,
    /// Nothing is admitted before this instant (Notion said `Retry-After`).
    paused_until: Option<Instant>,
    /// Taken off the tolerance: see [`Gcra::with_slack`].
    slack: Duration,
    /// Requests that may go at once after a quiet spell.
    burst: u32,
}

impl Gcra {
    /// A budget of `rate` requests per second with bursts of `burst`, idle at `now`.
    ///
    /// `rate` must be positive and finite, `burst` at least 1 (the configuration validates both).
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        Self::with_slack(rate, burst, Duration::ZERO, now)
    }

    /// Like [`Gcra::new`], with `slack` taken off the burst tolerance. The upstream measures
    /// arrivals, not releases: when a request of a burst reaches it later than the one after
    /// it (a new connection, a busy event loop), a release on the exact GCRA schedule looks
    /// early to the upstream's own GCRA. The slack absorbs that much jitter, at the price of
    /// `slack` once per backlog.
    pub fn with_slack(rate: f64, burst: u32, slack: Duration, now: Instant) -> Self {
        let interval = interval_of(rate);
        Self {
            interval,
            tolerance: tolerance(interval, burst, slack),
            tat: now,
            paused_until: None,
            slack,
            burst,
        }
    }

    /// The earliest instant at which a request conforms.
    pub fn ready_at(&self) -> Instant {
        let by_rate = self.tat.checked_sub(self.tolerance).unwrap_or(self.tat);
        match self.paused_until {
            Some(p) if p > by_rate => p,
            _ => by_rate,
        }
    }

    /// Admits a request at `now` if it conforms; otherwise says when it would.
    pub fn admit(&mut self, now: Instant) -> Result<(), Instant> {
        let ready = self.ready_at();
        if ready > now {
            return Err(ready);
        }
        self.tat = self.tat.max(now) + self.interval;
        Ok(())
    }

    /// Gives back the budget of a request admitted at `now` that was never sent (its caller
    /// left between admission and hand-over). Exact: `max(tat, now)` is all that later
    /// decisions depend on, and that is what admitting at `now` had moved forward.
    pub fn refund(&mut self, now: Instant) {
        self.tat = self.tat.checked_sub(self.interval).unwrap_or(now).max(now);
    }

    /// Until when Notion asked for a pause, if that is still ahead of `now`.
    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.paused_until.filter(|p| *p > now)
    }

    /// Whether the key has no memory worth keeping at `now`: the full burst is available and
    /// no pause is pending. Such a key behaves exactly like a new one.
    pub fn is_rested(&self, now: Instant) -> bool {
        self.tat <= now && self.paused_until(now).is_none()
    }

    /// How long a request arriving at `now` behind `ahead` others, all released as early as the
    /// budget allows, waits before it is admitted. This is what `max_wait` is checked against
    /// and what a 429's `Retry-After` reports.
    pub fn predicted_wait(&self, now: Instant, ahead: usize) -> Duration {
        let first = self.ready_at().max(now);
        let ahead = u32::try_from(ahead).unwrap_or(u32::MAX);
        (first + self.interval.saturating_mul(ahead)).saturating_duration_since(now)
    }

    /// Admits nothing before `until`. A later pause extends an earlier one; an earlier one
    /// does not shorten it. The pause also spends the burst: after it, requests resume one
    /// interval apart, not all at once (the upstream just said the pace was too high).
    pub fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |p| p.max(until)));
        self.tat = self.tat.max(until + self.tolerance);
    }

    /// Changes the sustained rate and burst at `now`. The budget already spent ahead of `now`
    /// is rescaled to the new interval: the same number of requests stays spent, so a lower
    /// rate delays what follows and a higher one brings it forward. A larger burst is not
    /// granted at once but earned by idle time like any burst: the new places start spent, so
    /// a backlog released at the old pace never leaves in a clump when the burst grows.
    pub fn set_rate(&mut self, rate: f64, burst: u32, now: Instant) {
        let new = interval_of(rate);
        if self.tat > now {
            let ahead =
                (self.tat - now).as_secs_f64() * new.as_secs_f64() / self.interval.as_secs_f64();
            self.tat = now + Duration::from_secs_f64(ahead);
        }
        if burst > self.burst {
            self.tat = self.tat.max(now) + new * (burst - self.burst);
        }
        self.interval = new;
        self.burst = burst;
        self.tolerance = tolerance(new, burst, self.slack);
    }

    /// Spends whatever burst is available at `now`: from then on one request per interval,
    /// as after a pause.
    pub fn spend_burst(&mut self, now: Instant) {
        self.tat = self.tat.max(now + self.tolerance);
    }

    /// The emission interval `T`.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How far ahead of `now` the theoretical arrival time may run (`(b - 1)·T` less slack).
    pub fn tolerance(&self) -> Duration {
        self.tolerance
    }
}

fn tolerance(interval: Duration, burst: u32, slack: Duration) -> Duration {
    (interval * burst.saturating_sub(1)).saturating_sub(slack)
}

fn interval_of(rate: f64) -> Duration {
    if rate.is_finite() && rate > 0.0 {
        Duration::from_secs_f64(1.0 / rate)
    } else {
        // Validated away by the configuration; never divide by zero here anyway.
        Duration::from_secs(3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_after_idle_then_exact_pacing() {
        let t0 = Instant::now();
        let mut g = Gcra::new(3.0, 3, t0);
        for _ in 0..3 {
            assert!(g.admit(t0).is_ok());
        }
        let next = g.admit(t0).unwrap_err();
        assert_eq!(next.duration_since(t0).as_millis(), 333);
        // Under backlog each release is exactly one interval after the previous one.
        let mut at = next;
        for _ in 0..10 {
            assert!(g.admit(at).is_ok());
            let n = g.admit(at).unwrap_err();
            assert_eq!(n - at, g.interval());
            at = n;
        }
    }

    #[test]
    fn idle_time_refills_the_burst_but_no_more() {
        let t0 = Instant::now();
        let mut g = Gcra::new(3.0, 3, t0);
        for _ in 0..3 {
            g.admit(t0).unwrap();
        }
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(g.admit(later).is_ok());
        }
        assert!(
            g.admit(later).is_err(),
            "idle time does not bank more than the burst"
        );
    }

    #[test]
    fn predicted_wait_counts_the_requests_ahead() {
        let t0 = Instant::now();
        let mut g = Gcra::new(2.0, 1, t0);
        assert_eq!(g.predicted_wait(t0, 0), Duration::ZERO);
        g.admit(t0).unwrap();
        assert_eq!(g.predicted_wait(t0, 0), ms(500));
        assert_eq!(g.predicted_wait(t0, 3), ms(2000));
        assert_eq!(g.predicted_wait(t0 + ms(200), 0), ms(300));
    }

    #[test]
    fn pause_holds_everything_until_it_ends_and_only_extends() {
        let t0 = Instant::now();
        let mut g = Gcra::new(3.0, 3, t0);
        g.pause_until(t0 + Duration::from_secs(2));
        assert_eq!(g.admit(t0 + ms(1999)), Err(t0 + Duration::from_secs(2)));
        g.pause_until(t0 + Duration::from_secs(1));
        assert_eq!(
            g.ready_at(),
            t0 + Duration::from_secs(2),
            "a shorter pause does not shorten"
        );
        assert_eq!(
            g.predicted_wait(t0, 0),
            Duration::from_secs(2),
            "predictions include the pause"
        );
        assert!(g.admit(t0 + Duration::from_secs(2)).is_ok());
        assert_eq!(
            g.admit(t0 + Duration::from_secs(2)),
            Err(t0 + Duration::from_secs(2) + g.interval()),
            "the pause spent the burst: requests resume one interval apart"
        );
    }

    #[test]
    fn a_larger_burst_is_earned_by_idle_time_not_granted() {
        let t0 = Instant::now();
        let mut g = Gcra::new(2.0, 1, t0);
        g.admit(t0).unwrap();
        // Backlogged at 2/s (one every 500 ms); the burst grows from 1 to 3.
        g.set_rate(2.0, 3, t0 + ms(500));
        assert!(g.admit(t0 + ms(500)).is_ok());
        assert_eq!(
            g.admit(t0 + ms(500)),
            Err(t0 + ms(1000)),
            "no clump when the burst grows"
        );
        // Idle time earns it: after 3 intervals of quiet, 3 may go at once.
        let later = t0 + ms(3000);
        for _ in 0..3 {
            assert!(g.admit(later).is_ok());
        }
        assert!(g.admit(later).is_err());
    }

    #[test]
    fn a_rate_change_rescales_what_was_spent() {
        let t0 = Instant::now();
        let mut g = Gcra::new(3.0, 1, t0);
        g.admit(t0).unwrap();
        g.set_rate(1.0, 1, t0);
        let next = g.ready_at();
        assert_eq!(next - t0, Duration::from_secs(1), "a lower rate delays");
        g.admit(next).unwrap();
        assert_eq!(g.ready_at() - next, Duration::from_secs(1));
        g.set_rate(4.0, 1, next);
        assert_eq!(g.ready_at() - next, ms(250), "a higher rate brings forward");
    }

    /// For any arrival pattern, fewer than `rate · W + burst` requests are admitted in any
    /// window of length `W`. Arrival patterns come from a seeded generator: bursts, gaps and
    /// steady streams, at rates and bursts across the configurable range.
    #[test]
    fn property_no_window_exceeds_rate_times_window_plus_burst() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for case in 0..300 {
            let rate = [0.5, 1.0, 2.5, 3.0, 10.0, 50.0][rng.below(6) as usize];
            let burst = 1 + rng.below(10) as u32;
            let t0 = Instant::now();
            let mut g = Gcra::new(rate, burst, t0);
            let mut now = t0;
            let mut admitted = Vec::new();
            for _ in 0..400 {
                // Mostly short gaps (floods), sometimes long pauses (refills).
                let gap = match rng.below(10) {
                    0 => Duration::from_millis(rng.below(5000)),
                    1..=3 => Duration::ZERO,
                    _ => Duration::from_micros(rng.below(400_000)),
                };
                now += gap;
                if g.admit(now).is_ok() {
                    admitted.push(now);
                }
            }
            for window_ms in [1u64, 100, 333, 1000, 2500, 10_000] {
                let w = Duration::from_millis(window_ms);
                let bound = rate * w.as_secs_f64() + f64::from(burst);
                let mut start = 0;
                for end in 0..admitted.len() {
                    while admitted[end] - admitted[start] >= w {
                        start += 1;
                    }
                    let in_window = (end - start + 1) as f64;
                    assert!(
                        in_window < bound + 1e-9,
                        "case {case}: {in_window} admitted in {w:?} at rate {rate}, burst {burst}"
                    );
                }
            }
        }
    }

    struct XorShift(u64);
    impl XorShift {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }
}
