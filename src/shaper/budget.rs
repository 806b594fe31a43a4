//! One key's budget as Notion sees it: its 60-second [`Window`] (Notion's model since 2026),
//! a smoothing GCRA beside it, paused and slowed by what Notion answers. A pure function of
//! time, like the [`Gcra`] and the [`Window`] inside it. A request goes when both allow it.
//!
//! What Notion's 429s teach depends on what they name: a window limit (the connection's or the
//! workspace's, by `rate_limit_reason`) lowers the window's budget to what Notion admitted
//! ([`Window::learn`]); a 429 without a reason we know is handled as before the window model,
//! by slowing the GCRA down, as follows.
//!
//! The configured rate is a starting point; Notion's 429s are the truth (its budgets depend on
//! the plan and change). So:
//!
//! * **Pause.** Every 429/529 pauses the key until its `Retry-After` has passed.
//! * **Multiplicative decrease.** A 429 that *repeats* (another one within
//!   [`REPEAT_WINDOW`]) for a request released at the current rate halves the effective rate
//!   (never below [`MIN_SHARE`] of the configured one). 429s of requests that were already on
//!   their way at the old rate do not count again, so one burst of rejections halves once.
//! * **Recovery.** While the key is busy (a backlog is paced at the effective rate) and
//!   [`HOLD`] has passed without a 429, the rate grows back by a tenth of the configured
//!   rate per [`STEP`]. If a 429 interrupts that climb (a failed probe), the next climb stops
//!   just under the rate that failed (the *ceiling*) and rests there, 5 s after the first
//!   failed probe, twice as long after each further one (up to 10 minutes), before climbing
//!   on to the configured rate. A limit that was lowered only
//!   for a while (the `tighten` scenario) is climbed back within seconds; a plan that allows
//!   less than the configuration is probed ever more rarely, so its 429s die out instead of
//!   continuing as a steady stream.
//!
//! The burst shrinks and grows with the rate, in proportion.
//!
//! 529 (`service_overload`) pauses but does not lower the rate: it is Notion's load, not this
//! key's budget.

use std::time::Duration;

use tokio::time::Instant;

use super::limiter::Gcra;
use super::window::Window;

/// Jitter between the gateway's releases and Notion's arrivals absorbed without a 429 (see
/// [`Gcra::with_slack`]). Costs this much once per backlog. In gatebench `multi` (60 new
/// upstream connections at once) 0 ms let 18 of 300 requests arrive early at the fake's GCRA;
/// 30, 50 and 70 ms gave no 429 (README, Performance).
pub const JITTER_SLACK: Duration = Duration::from_millis(50);
/// The rate of a budget without smoothing: nothing a window allows comes near it.
pub const UNSMOOTHED_RATE: f64 = 1_000_000.0;
/// Two 429s this close together mean the rate, not a passing burst, is too high.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);
/// No increase until this long after the last 429.
pub const HOLD: Duration = Duration::from_secs(5);
/// Interval between two increases.
pub const STEP: Duration = Duration::from_secs(1);
/// The effective rate never drops below this share of the configured rate.
pub const MIN_SHARE: f64 = 1.0 / 16.0;
/// Factor of a decrease.
const DECREASE: f64 = 0.5;
/// Increase per step, as a share of the configured rate.
const FAST_STEP: f64 = 0.10;
/// Recovery rests this far below the rate that last failed.
const CEILING_MARGIN: f64 = 0.8;
/// A learned rate is kept this long after the last 429 while the key is idle; then the key
/// may be evicted and starts again from the configuration.
pub const FORGET_LEARNED: Duration = Duration::from_secs(3600);
/// Decreases further apart than this start the ceiling hold from scratch.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// The rate that last failed (times [`CEILING_MARGIN`]) and when recovery reached it.
#[derive(Debug, Clone, Copy)]
struct Ceiling {
    rate: f64,
    reached: Option<Instant>,
}

/// What Notion said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushback {
    /// 429 `rate_limited` naming this key's window limit: learn the window's budget.
    WindowLimited,
    /// 429 `rate_limited` with another reason, or none: slow the rate down.
    RateLimited,
    /// 529 `service_overload`.
    Overloaded,
    /// 429 for a limit this key does not model (a workspace's, before the workspace is known):
    /// pause, learn nothing.
    PauseOnly,
}

#[derive(Debug, Clone)]
pub struct Budget {
    gcra: Gcra,
    /// `false`: the GCRA is only there for pauses ([`Budget::unsmoothed`]).
    smoothed: bool,
    /// Notion's 60-second budget, when the key has one.
    window: Option<Window>,
    configured: f64,
    burst: u32,
    adaptive: bool,
    effective: f64,
    ceiling: Option<Ceiling>,
    /// Failed probes in a row, each within [`FORGET_AFTER`] of the previous decrease.
    recent_decreases: u32,
    /// The rate the last decrease set.
    after_decrease: f64,
    last_429: Option<Instant>,
    last_decrease: Option<Instant>,
    /// When the last increase step was taken (or the last decrease, which restarts steps).
    last_step: Instant,
    pub rate_limited: u64,
    pub overloaded: u64,
}

impl Budget {
    pub fn new(rate: f64, burst: u32, adaptive: bool, now: Instant) -> Self {
        Self {
            gcra: Gcra::with_slack(rate, burst, JITTER_SLACK, now),
            smoothed: true,
            window: None,
            configured: rate,
            burst,
            adaptive,
            effective: rate,
            ceiling: None,
            recent_decreases: 0,
            after_decrease: rate,
            last_429: None,
            last_decrease: None,
            last_step: now,
            rate_limited: 0,
            overloaded: 0,
        }
    }

    /// A budget with no smoothing rate of its own (a workspace's, where only the window counts):
    /// its GCRA admits up to [`UNSMOOTHED_RATE`] a second, far beyond any window, and is there
    /// for the pause.
    pub fn unsmoothed(adaptive: bool, now: Instant) -> Self {
        Self {
            smoothed: false,
            ..Self::new(UNSMOOTHED_RATE, UNSMOOTHED_RATE as u32, adaptive, now)
        }
    }

    /// Configured and effective smoothing rate (as of `now`: a learned rate an hour old is
    /// forgotten) and the burst, unless [`Budget::unsmoothed`].
    pub fn smoothing(&self, now: Instant) -> Option<(f64, f64, u32)> {
        let effective = if self.learned_rate_forgotten(now) {
            self.configured
        } else {
            self.effective
        };
        self.smoothed
            .then_some((self.configured, effective, self.burst))
    }

    /// A `share` of this budget (at least one request), idle at `now`: what a replica uses
    /// alone while the budgets shared through Redis are out of reach.
    pub fn share(&self, share: f64, now: Instant) -> Self {
        let part = |n: u32| ((f64::from(n) * share).floor() as u32).max(1);
        let mut b = match self.smoothing(now) {
            Some((rate, _, burst)) => Budget::new(rate * share, part(burst), self.adaptive, now),
            None => Budget::unsmoothed(self.adaptive, now),
        };
        if let Some(w) = &self.window {
            b.window = Some(Window::new(part(w.configured()), now));
        }
        b
    }

    /// Spends the burst at `now` (see [`Gcra::spend_burst`], [`Window::spend_burst`]).
    pub fn spend_burst(&mut self, now: Instant) {
        self.gcra.spend_burst(now);
        if let Some(w) = self.window.as_mut() {
            w.spend_burst(now);
        }
    }

    /// The window, for a budget kept in Redis to adopt what Redis holds.
    pub fn window_mut(&mut self) -> Option<&mut Window> {
        self.window.as_mut()
    }

    /// The same budget with a window beside its GCRA.
    pub fn with_window(mut self, window: Window) -> Self {
        self.window = Some(window);
        self
    }

    /// The window, when the key has one.
    pub fn window(&self) -> Option<&Window> {
        self.window.as_ref()
    }

    /// The earliest instant, at `now` or later, a request may go.
    pub fn ready_at(&self, now: Instant) -> Instant {
        let gcra = self.gcra.ready_at().max(now);
        match &self.window {
            Some(w) => gcra.max(w.ready_at(now)),
            None => gcra,
        }
    }

    /// Spends one request at `now` if the budget allows it. `backlogged`: the request waited
    /// for the budget. Recovery advances only while requests wait: a key that sends less than
    /// its rate learns nothing about Notion's limit, so quiet time does not raise it (TCP does
    /// not grow an application-limited window either).
    pub fn admit(&mut self, now: Instant, backlogged: bool) -> Result<(), Instant> {
        self.forget_learned_rate(now);
        if backlogged {
            self.recover(now);
        } else {
            self.last_step = self.last_step.max(now);
        }
        if let Some(w) = self.window.as_mut() {
            w.forget_if_due(now);
            let ready = w.ready_at(now);
            if ready > now {
                return Err(ready.max(self.gcra.ready_at()));
            }
        }
        self.gcra.admit(now)?;
        if let Some(w) = self.window.as_mut() {
            w.record(now);
        }
        Ok(())
    }

    /// Takes the recovery steps due by `now` for a key whose requests wait, so that
    /// [`Budget::ready_at`] answers for the rate [`Budget::admit`] will apply.
    pub fn catch_up(&mut self, now: Instant) {
        self.forget_learned_rate(now);
        self.recover(now);
        if let Some(w) = self.window.as_mut() {
            w.forget_if_due(now);
        }
    }

    /// Gives back a request admitted at `now` that was never sent.
    pub fn refund(&mut self, now: Instant) {
        self.gcra.refund(now);
        if let Some(w) = self.window.as_mut() {
            w.unrecord(now);
        }
    }

    /// How long a request behind `ahead` others waits (see [`Gcra::predicted_wait`] and
    /// [`Window::predicted_wait`]): the longer of the two.
    pub fn predicted_wait(&self, now: Instant, ahead: usize) -> Duration {
        let gcra = self.gcra.predicted_wait(now, ahead);
        match &self.window {
            Some(w) => gcra.max(w.predicted_wait(now, ahead)),
            None => gcra,
        }
    }

    /// Notion pushed back on a request released at `sent_at`: pause until `now + retry_after`,
    /// and lower the rate if this is a repeated 429.
    pub fn push_back(
        &mut self,
        kind: Pushback,
        sent_at: Instant,
        retry_after: Duration,
        now: Instant,
    ) {
        self.gcra.pause_until(now + retry_after);
        match kind {
            Pushback::Overloaded => {
                self.overloaded += 1;
                return;
            }
            Pushback::WindowLimited => {
                self.rate_limited += 1;
                if let Some(w) = self.window.as_mut() {
                    if self.adaptive {
                        w.learn(sent_at, retry_after, now);
                    }
                    return;
                }
                // No window to learn: like a 429 without a reason.
            }
            Pushback::PauseOnly => {
                self.rate_limited += 1;
                return;
            }
            // Without a smoothing rate there is no rate to lower: pause only.
            Pushback::RateLimited if !self.smoothed => {
                self.rate_limited += 1;
                return;
            }
            Pushback::RateLimited => self.rate_limited += 1,
        }
        let repeated = self
            .last_429
            .is_some_and(|t| now.saturating_duration_since(t) < REPEAT_WINDOW);
        let at_current_rate = self.last_decrease.is_none_or(|d| sent_at >= d);
        self.last_429 = Some(now);
        if self.adaptive && repeated && at_current_rate {
            let recent = self
                .last_decrease
                .is_some_and(|d| now.saturating_duration_since(d) < FORGET_AFTER);
            // A 429 after recovery had raised the rate again is a failed probe: remember the
            // rate that failed, and rest below it longer each time. A 429 before any recovery
            // (the first halvings) only halves: the limit may have dropped only for a while.
            if recent && self.effective > self.after_decrease {
                self.recent_decreases += 1;
                self.ceiling = Some(Ceiling {
                    rate: self.effective * CEILING_MARGIN,
                    reached: None,
                });
            } else if !recent {
                self.recent_decreases = 0;
                self.ceiling = None;
            }
            self.after_decrease = (self.effective * DECREASE).max(self.configured * MIN_SHARE);
            self.set_effective(
                (self.effective * DECREASE).max(self.configured * MIN_SHARE),
                now,
            );
            self.last_decrease = Some(now);
            self.last_step = now;
        }
    }

    /// A rate lowered by Notion's 429s is forgotten [`FORGET_LEARNED`] after the last one (an
    /// idle key learns nothing meanwhile, and a lowered rate shown for ever would be a lie).
    fn forget_learned_rate(&mut self, now: Instant) {
        if self.learned_rate_forgotten(now) && self.effective < self.configured {
            self.ceiling = None;
            self.recent_decreases = 0;
            self.last_step = now;
            self.set_effective(self.configured, now);
        }
    }

    fn learned_rate_forgotten(&self, now: Instant) -> bool {
        self.last_429
            .is_some_and(|t| now.saturating_duration_since(t) >= FORGET_LEARNED)
    }

    /// Takes the increase steps due by `now`.
    fn recover(&mut self, now: Instant) {
        if self.effective >= self.configured {
            return;
        }
        let mut t = self.last_step;
        // Bounded: every step either raises the rate by a tenth of the configuration or ends
        // a ceiling hold; 100 iterations cover any gap.
        for _ in 0..100 {
            let mut next = t + STEP;
            if let Some(l) = self.last_429 {
                next = next.max(l + HOLD);
            }
            if let Some(Ceiling {
                rate,
                reached: Some(r),
            }) = self.ceiling
            {
                if self.effective >= rate {
                    next = next.max(r + self.ceiling_hold());
                }
            }
            if next > now {
                break;
            }
            t = next;
            let step = FAST_STEP * self.configured;
            let rate = match &mut self.ceiling {
                Some(c) if self.effective < c.rate => {
                    let r = (self.effective + step).min(c.rate);
                    if r >= c.rate {
                        c.reached = Some(t);
                    }
                    r
                }
                // At the ceiling and its hold is over: probe upwards again.
                Some(_) => {
                    self.ceiling = None;
                    self.effective + step
                }
                None => self.effective + step,
            };
            self.effective = rate.min(self.configured);
            if self.effective >= self.configured {
                self.ceiling = None;
                break;
            }
        }
        self.last_step = t;
        self.set_effective(self.effective, now);
    }

    /// How long recovery rests at the ceiling: 5 s after the first failed probe, doubling with
    /// every further one within [`FORGET_AFTER`], at most 10 minutes. A limit that really is
    /// lower than the configuration is probed less and less often.
    fn ceiling_hold(&self) -> Duration {
        let doublings = self.recent_decreases.saturating_sub(1).min(7);
        (HOLD * 2u32.pow(doublings)).min(Duration::from_secs(600))
    }

    /// Sets the effective rate, and the burst in the same proportion (at least 1): a plan
    /// with a smaller budget than configured usually has a smaller burst too, and a learned
    /// rate with the full configured burst would still meet a 429 after every quiet spell.
    fn set_effective(&mut self, rate: f64, now: Instant) {
        self.effective = rate;
        let share = (rate / self.configured).min(1.0);
        let burst = ((f64::from(self.burst) * share).round() as u32).max(1);
        self.gcra.set_rate(rate, burst, now);
    }

    /// Interval and burst tolerance in whole microseconds, as the shared budget stores them.
    pub fn shared_spec(&self) -> (u64, u64) {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        (us(self.gcra.interval()).max(1), us(self.gcra.tolerance()))
    }

    /// Takes the effective rate another replica set for the shared key (given as its interval
    /// in microseconds). Not a 429 seen here: nothing is counted and no ceiling is set;
    /// recovery steps count from now.
    pub fn adopt_interval(&mut self, interval_us: u64, now: Instant) {
        if interval_us == self.shared_spec().0 {
            return;
        }
        let rate =
            (1e6 / interval_us.max(1) as f64).clamp(self.configured * MIN_SHARE, self.configured);
        self.last_step = now;
        self.set_effective(rate, now);
    }

    pub fn effective_rate(&self) -> f64 {
        self.effective
    }

    pub fn configured_rate(&self) -> f64 {
        self.configured
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    pub fn paused_until(&self, now: Instant) -> Option<Instant> {
        self.gcra.paused_until(now)
    }

    /// Nothing to remember: full burst, no pause, and the configured rate (or a learned one
    /// older than [`FORGET_LEARNED`]).
    pub fn is_rested(&self, now: Instant) -> bool {
        self.gcra.is_rested(now)
            && self.window.as_ref().is_none_or(|w| w.is_rested(now))
            && (self.effective >= self.configured
                || self
                    .last_429
                    .is_none_or(|t| now.saturating_duration_since(t) >= FORGET_LEARNED))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: f64) -> Duration {
        Duration::from_secs_f64(n)
    }

    #[test]
    fn a_single_429_pauses_without_slowing_down() {
        let t0 = Instant::now();
        let mut b = Budget::new(3.0, 3, true, t0);
        b.push_back(Pushback::RateLimited, t0, s(2.0), t0);
        assert_eq!(b.ready_at(t0), t0 + s(2.0));
        assert_eq!(b.effective_rate(), 3.0);
    }

    #[test]
    fn a_repeated_429_halves_the_rate_once_per_round() {
        let t0 = Instant::now();
        let mut b = Budget::new(3.0, 3, true, t0);
        b.push_back(Pushback::RateLimited, t0, s(1.0), t0);
        b.push_back(Pushback::RateLimited, t0 + s(1.0), s(1.0), t0 + s(1.5));
        assert_eq!(b.effective_rate(), 1.5);
        // Sent before that decrease: the same round of rejections, no second halving.
        b.push_back(Pushback::RateLimited, t0 + s(1.2), s(1.0), t0 + s(1.6));
        assert_eq!(b.effective_rate(), 1.5);
        // Sent after it: the lower rate is still too high.
        b.push_back(Pushback::RateLimited, t0 + s(3.0), s(1.0), t0 + s(3.1));
        assert_eq!(b.effective_rate(), 0.75);
        for i in 0..20 {
            let t = t0 + s(4.0 + f64::from(i));
            b.push_back(Pushback::RateLimited, t, s(1.0), t);
        }
        assert_eq!(b.effective_rate(), 3.0 * MIN_SHARE, "never below the floor");
    }

    #[test]
    fn overload_pauses_but_keeps_the_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new(3.0, 3, true, t0);
        for i in 0..5 {
            let t = t0 + s(f64::from(i));
            b.push_back(Pushback::Overloaded, t, s(1.0), t);
        }
        assert_eq!(b.effective_rate(), 3.0);
        assert_eq!(b.overloaded, 5);
    }

    #[test]
    fn not_adaptive_never_changes_the_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new(3.0, 3, false, t0);
        for i in 0..5 {
            let t = t0 + s(f64::from(i));
            b.push_back(Pushback::RateLimited, t, s(1.0), t);
        }
        assert_eq!(b.effective_rate(), 3.0);
    }

    /// Admits a backlog (one request at every instant the budget allows) until `until`.
    fn backlog(b: &mut Budget, from: Instant, until: Instant) {
        let mut now = from;
        while now <= until {
            match b.admit(now, true) {
                Ok(()) => {}
                Err(next) => now = next,
            }
        }
    }

    #[test]
    fn recovery_climbs_and_after_a_failed_probe_rests_below_the_rate_that_failed() {
        let t0 = Instant::now();
        let mut b = Budget::new(10.0, 1, true, t0);
        b.push_back(Pushback::RateLimited, t0, s(1.0), t0);
        b.push_back(Pushback::RateLimited, t0, s(1.0), t0 + s(0.5)); // 10 -> 5
        let last = t0 + s(0.5);
        backlog(&mut b, last, last + HOLD - s(0.01));
        assert_eq!(b.effective_rate(), 5.0, "nothing during the hold");
        backlog(
            &mut b,
            last + HOLD - s(0.01),
            last + HOLD + STEP * 2 + s(0.1),
        );
        assert!(
            (b.effective_rate() - 8.0).abs() < 1e-9,
            "{}",
            b.effective_rate()
        );

        // Notion says no at 8/s: a failed probe. 8 -> 4, and 6.4 is remembered.
        let t1 = last + HOLD + STEP * 2 + s(0.2);
        b.push_back(Pushback::RateLimited, t1, s(1.0), t1);
        assert_eq!(b.effective_rate(), 4.0);
        backlog(&mut b, t1, t1 + HOLD + STEP * 2 + s(0.1));
        assert!((b.effective_rate() - 6.4).abs() < 1e-9, "up to the ceiling");
        let reached = t1 + HOLD + STEP * 2;
        backlog(&mut b, reached + s(0.1), reached + HOLD - s(0.1));
        assert!((b.effective_rate() - 6.4).abs() < 1e-9, "rests there");
        backlog(&mut b, reached + HOLD - s(0.1), reached + HOLD + s(0.1));
        assert!((b.effective_rate() - 7.4).abs() < 1e-9, "then on");
        backlog(&mut b, reached + HOLD + s(0.1), reached + HOLD + s(5.0));
        assert_eq!(b.effective_rate(), 10.0, "never above the configuration");
    }

    #[test]
    fn an_idle_key_keeps_its_learned_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new(3.0, 3, true, t0);
        b.push_back(Pushback::RateLimited, t0, s(1.0), t0);
        b.push_back(Pushback::RateLimited, t0, s(1.0), t0);
        assert_eq!(b.effective_rate(), 1.5);
        // A request now and then, far below the rate: nothing learned, nothing raised.
        for i in 1..=20 {
            b.admit(t0 + s(30.0 * f64::from(i)), false).unwrap();
        }
        assert_eq!(b.effective_rate(), 1.5);
        assert!(!b.is_rested(t0 + s(601.0)));
        assert!(
            b.is_rested(t0 + FORGET_LEARNED + s(1.0)),
            "forgotten after an hour"
        );
    }

    /// A plan that allows 2/s while 3/s is configured: simulate Notion's GCRA against the
    /// budget and count the 429s per minute. They must die out, not continue as a steady
    /// stream.
    #[test]
    fn a_stricter_upstream_converges_to_zero_429s() {
        let t0 = Instant::now();
        let mut ours = Budget::new(3.0, 3, true, t0);
        let mut notion = Gcra::new(2.0, 3, t0);
        let mut per_minute = [0u32; 10];
        let mut now = t0;
        let end = t0 + s(600.0);
        while now < end {
            // A rate change at the new instant can move readiness once more.
            while let Err(next) = ours.admit(now, true) {
                now = next;
            }
            if let Err(next) = notion.admit(now) {
                let wait = (next - now).as_secs_f64().ceil();
                ours.push_back(Pushback::RateLimited, now, s(wait), now);
                per_minute[((now - t0).as_secs() / 60) as usize] += 1;
            }
        }
        // A few while learning, then only the rare probe of a hold that doubles each time:
        // [5, 2, 2, 1, 0, 0, 0, 0, 3, 0] at the time of writing.
        assert!(per_minute[..4].iter().sum::<u32>() <= 12, "{per_minute:?}");
        assert!(per_minute[4..].iter().sum::<u32>() <= 3, "{per_minute:?}");
        assert!(ours.effective_rate() > 1.5, "{}", ours.effective_rate());
    }
}
