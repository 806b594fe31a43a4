//! A key's 60-second window budget, as Notion documents it (2026): "Each connection has a
//! fixed budget of requests per 60-second window, based on the workspace's plan [...] The
//! budget can be spent at any pace within the window — spread out evenly or in a single burst."
//! (<https://developers.notion.com/reference/request-limits>). A pure function of time.
//!
//! Notion's window grid is not ours to see: it may start at any instant. So the window here
//! slides: never more than `budget` releases in any span of [`SPAN`] (the 60 s window plus
//! [`MARGIN`] for the jitter between a release here and its arrival at Notion). That holds for
//! every alignment of Notion's fixed windows, so the gateway never causes a connection-limit
//! 429 by itself.
//!
//! Spending the budget "in a single burst" and keeping a steady flow for callers that come
//! later pull against each other: a flood that takes the whole budget at once leaves everyone
//! else a minute of nothing. The rule here, the **reserve rule**: a request may go now if what
//! is left of the window can still carry a *floor rate* until room comes back, where the floor
//! rate is what the budget allows once [`Window::burst`] (a sixth of the budget) is set aside:
//! `(budget − burst) / SPAN`. So
//!
//! * on an idle key, `burst` requests go at once (30 of a standard plan's 180, 100 of a business
//!   plan's 600): a short batch finishes in about one round trip;
//! * under a flood, requests after the burst leave at the floor rate or faster (2.45/s on a
//!   standard plan), never stall for the rest of the minute, and in steady state the key uses
//!   `budget` per `SPAN` (98 % of Notion's budget);
//! * an interactive caller sharing the key waits at most about one floor interval (0.41 s on a
//!   standard plan) for its turn in the fair queue.
//!
//! Releases are counted in [`BUCKET`]-wide buckets (kept sparse: a key that sent one request
//! keeps one bucket). A bucket is counted until [`SPAN`] after its end, which errs on the side
//! of fewer releases.
//!
//! What Notion teaches: a 429 for this key's limit says when Notion's window resets
//! (`Retry-After`) and so which of our releases it counted; fewer than our budget means the
//! real budget is smaller (a plan with less than configured, other clients of the token, an
//! undisclosed workspace limit). [`Window::learn`] lowers the budget to that count (never below
//! a sixteenth of the configured budget); it is forgotten after [`FORGET_LEARNED`] without
//! another such 429. A window whose budget is not
//! known yet (a workspace's: Notion does not publish it) starts *provisional*: a guess that
//! doubles whenever half of it is in use, until a 429 says what the real budget is.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Notion's window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Allowance for the jitter between a release here and its arrival at Notion: releases may
/// reach Notion up to this much more spread out or bunched than they left without more than a
/// budget arriving in one of Notion's windows.
pub const MARGIN: Duration = Duration::from_secs(1);
/// Never more than the budget in any span of this length.
pub const SPAN: Duration = Duration::from_secs(61);
/// Width of a counting bucket. A bucket is counted until `SPAN` after its end, so a release
/// is counted for at least `SPAN` (at most `SPAN + BUCKET`).
pub const BUCKET: Duration = Duration::from_millis(250);
/// A learned budget is forgotten this long after the last 429 that lowered it.
pub const FORGET_LEARNED: Duration = Duration::from_secs(3600);

const BUCKET_US: u64 = BUCKET.as_micros() as u64;
const SPAN_US: u64 = SPAN.as_micros() as u64;
/// How long a bucket is counted, from its start.
const LIVE_US: u64 = SPAN_US + BUCKET_US;

/// Budgets per window of Notion's plans.
pub const STANDARD: u32 = 180;
pub const BUSINESS: u32 = 600;

/// One key's window budget.
#[derive(Debug, Clone)]
pub struct Window {
    /// The budget in force (the configured one, or less after a 429 taught otherwise).
    budget: u32,
    configured: u32,
    /// Still a guess (a workspace's undisclosed limit, before its first 429).
    provisional: bool,
    /// `configured` is a guess: forgetting a learned budget makes the window provisional again.
    guessed: bool,
    /// When a 429 last lowered the budget.
    learned_at: Option<Instant>,
    /// Start of bucket 0.
    epoch: Instant,
    /// Non-empty buckets, oldest first: (bucket number since `epoch`, releases).
    buckets: VecDeque<(u32, u32)>,
    /// Sum of the counts in `buckets` (some of which may have expired: an upper bound).
    total: u32,
}

impl Window {
    /// A window of `budget` releases, idle at `now`.
    pub fn new(budget: u32, now: Instant) -> Self {
        Self {
            budget: budget.max(1),
            configured: budget.max(1),
            provisional: false,
            guessed: false,
            learned_at: None,
            epoch: now,
            buckets: VecDeque::new(),
            total: 0,
        }
    }

    /// A window whose budget is unknown: `guess` until Notion says otherwise.
    pub fn provisional(guess: u32, now: Instant) -> Self {
        Self {
            provisional: true,
            guessed: true,
            ..Self::new(guess, now)
        }
    }

    /// The budget in force.
    pub fn budget(&self) -> u32 {
        self.budget
    }

    /// The configured budget (or the first guess), before anything was learned.
    pub fn configured(&self) -> u32 {
        self.configured
    }

    /// Whether the budget is still a guess.
    pub fn is_provisional(&self) -> bool {
        self.provisional
    }

    /// Whether a 429 lowered the budget below the configured (or guessed) one.
    pub fn is_learned(&self) -> bool {
        self.learned_at.is_some()
    }

    /// When a learned budget is forgotten ([`FORGET_LEARNED`] after the 429 that taught it).
    pub fn learned_until(&self) -> Option<Instant> {
        self.learned_at.map(|t| t + FORGET_LEARNED)
    }

    /// Requests that may go at once on an idle key: a sixth of the budget, at least one.
    pub fn burst(&self) -> u32 {
        (self.budget / 6).max(1)
    }

    /// Releases counted at `now`.
    pub fn used(&self, now: Instant) -> u32 {
        let now_us = self.us(now);
        self.live(now_us).map(|(_, c)| c).sum()
    }

    /// When the oldest counted release stops being counted, if any is.
    pub fn frees_at(&self, now: Instant) -> Option<Instant> {
        let now_us = self.us(now);
        self.live(now_us)
            .next()
            .map(|(start, _)| self.instant(start + LIVE_US))
    }

    /// The earliest instant, at `now` or later, at which the reserve rule lets one more request
    /// go (see the module documentation), if nothing else is released before.
    pub fn ready_at(&self, now: Instant) -> Instant {
        // Nothing counted near the budget: the common case costs no walk over the buckets.
        if self.total < self.burst() {
            return now;
        }
        let now_us = self.us(now);
        let n = i64::from(self.used(now));
        let budget = i64::from(self.budget);
        let floor_us = self.floor_interval_us();
        let mut ready = now_us as i64;
        let mut older = 0i64;
        for (start, count) in self.live(now_us) {
            let expiry = (start + LIVE_US) as i64;
            // Just before this bucket stops being counted, the releases of this and every later
            // bucket, plus this one, plus a floor-rate stream from the release on, must fit.
            let room = budget - n - 1 + older;
            let t = match floor_us {
                Some(f) => expiry - room * f as i64,
                // A budget of one: only the hard bound (room < 0: wait for the expiry).
                None if room < 0 => expiry,
                None => i64::MIN,
            };
            ready = ready.max(t);
            older += i64::from(count);
        }
        self.instant(ready.max(0) as u64)
    }

    /// How long a request behind `ahead` others waits, if all go as early as the window allows
    /// and nothing else arrives: requests the reserve rule lets go at once, then one per floor
    /// interval.
    pub fn predicted_wait(&self, now: Instant, ahead: usize) -> Duration {
        let first = self.ready_at(now).saturating_duration_since(now);
        if ahead == 0 {
            return first;
        }
        let free = self.free_now(now) as usize;
        if ahead < free {
            return first;
        }
        let floor = self.floor_interval_us().map_or(SPAN, Duration::from_micros);
        first.max(floor.saturating_mul(u32::try_from(ahead + 1 - free).unwrap_or(u32::MAX)))
    }

    /// How many requests the reserve rule lets go at `now`, one after the other.
    fn free_now(&self, now: Instant) -> u32 {
        let now_us = self.us(now);
        let n = i64::from(self.used(now));
        let budget = i64::from(self.budget);
        let Some(f) = self.floor_interval_us().map(|f| f as i64) else {
            return u32::try_from((budget - n).max(0)).unwrap_or(0);
        };
        // The (i+1)-th release at `now` may go if, for every bucket (the one `now` falls in
        // included), i <= budget - n - 1 + older - ceil((expiry - now) / f).
        let limit = |older: i64, expiry_us: u64| {
            let ahead = (expiry_us - now_us) as i64;
            budget - n - 1 + older - (ahead + f - 1) / f
        };
        let current = now_us / BUCKET_US * BUCKET_US;
        let mut max_i = budget - n - 1;
        let mut older = 0i64;
        let mut current_seen = false;
        for (start, count) in self.live(now_us) {
            max_i = max_i.min(limit(older, start + LIVE_US));
            current_seen |= start == current;
            older += i64::from(count);
        }
        if !current_seen {
            max_i = max_i.min(limit(older, current + LIVE_US));
        }
        u32::try_from((max_i + 1).max(0)).unwrap_or(0)
    }

    /// Counts one release at `now`.
    pub fn record(&mut self, now: Instant) {
        self.record_at(now, now);
    }

    /// Counts one release in the slot `at`, decided at `now` (a slot reserved ahead, as the
    /// Redis backend does): counts that stop being counted by `now` are dropped, not those that
    /// stop by `at`, which still count for decisions between the two.
    pub fn record_at(&mut self, at: Instant, now: Instant) {
        self.prune(self.us(now));
        let b = (self.us(at) / BUCKET_US) as u32;
        // Usually the newest bucket; a slot reserved ahead may come before a later one.
        match self.buckets.iter().rposition(|(i, _)| *i <= b) {
            Some(pos) if self.buckets[pos].0 == b => self.buckets[pos].1 += 1,
            Some(pos) => self.buckets.insert(pos + 1, (b, 1)),
            None => self.buckets.push_front((b, 1)),
        }
        self.total += 1;
        // A guess that is half used is too small to tell: double it (slow start).
        if self.provisional && self.total * 2 >= self.budget && self.used(at) * 2 >= self.budget {
            self.budget = self.budget.saturating_mul(2);
        }
    }

    /// Counts what `other` counts too (a token joining its workspace: its recent releases were
    /// the workspace's as well).
    pub fn absorb(&mut self, other: &Window, now: Instant) {
        for &(b, count) in &other.buckets {
            let at = other.epoch + BUCKET * b;
            if at + Duration::from_micros(LIVE_US) <= now {
                continue;
            }
            // The workspace's window is usually younger than the token's (it begins when the
            // workspace is discovered): reach back so that the token's releases keep their time.
            self.reach_back(at);
            for _ in 0..count {
                self.record_at(at, now);
            }
        }
    }

    /// Moves bucket 0 back by whole buckets until it begins no later than `t` (the buckets'
    /// times stay the same).
    fn reach_back(&mut self, t: Instant) {
        let gap = self.epoch.saturating_duration_since(t).as_micros();
        if gap == 0 {
            return;
        }
        let Ok(k) = u32::try_from(gap.div_ceil(u128::from(BUCKET_US))) else {
            return;
        };
        if let Some(epoch) = self.epoch.checked_sub(BUCKET * k) {
            self.epoch = epoch;
            for bucket in &mut self.buckets {
                bucket.0 += k;
            }
        }
    }

    /// Counts a whole burst as sent at `now` (less what is counted already): a share of a budget
    /// that starts without knowing what was sent on the other side starts spent.
    pub fn spend_burst(&mut self, now: Instant) {
        for _ in self.used(now)..self.burst() {
            self.record(now);
        }
    }

    /// Whether the configured budget is a guess (a workspace's undisclosed limit).
    pub fn is_guess(&self) -> bool {
        self.guessed
    }

    /// Takes the budget another replica (or a 429 there) put in force. Below the configured
    /// one it counts as learned, so it is forgotten an hour later here too.
    pub fn adopt(&mut self, budget: u32, now: Instant) {
        let budget = budget.max(1);
        if budget == self.budget {
            return;
        }
        self.budget = budget;
        if budget < self.configured {
            self.provisional = false;
            self.learned_at.get_or_insert(now);
        }
    }

    /// Takes back a release counted at `now` that was never sent.
    pub fn unrecord(&mut self, now: Instant) {
        let b = (self.us(now) / BUCKET_US) as u32;
        if let Some(pos) = self.buckets.iter().rposition(|(i, _)| *i == b) {
            let c = &mut self.buckets[pos].1;
            *c -= 1;
            if *c == 0 {
                self.buckets.remove(pos);
            }
            self.total -= 1;
        }
    }

    /// Notion answered 429 for this key's limit at `now`, with `retry_after` until its window
    /// resets, to a request released at `sent_at`. Lowers the budget to what Notion's window
    /// admitted of ours, unless this 429 belongs to a round already learned from (released
    /// before the last lowering).
    pub fn learn(&mut self, sent_at: Instant, retry_after: Duration, now: Instant) {
        // Released no later than the last lowering: the same round of rejections.
        if self.learned_at.is_some_and(|t| sent_at <= t) {
            return;
        }
        // Notion's window ends at now + retry_after and is WINDOW long; Retry-After is whole
        // seconds, rounded up, so it may have begun up to a second earlier. A Retry-After of a
        // window or more is not explained by one window: count the last window then.
        let back = if retry_after < WINDOW {
            WINDOW - retry_after + Duration::from_secs(1)
        } else {
            WINDOW
        };
        let begun = now.checked_sub(back).unwrap_or(self.epoch);
        let begun_us = self.us(begun);
        // Buckets that end inside Notion's window: a bucket straddling its start counts whole
        // (too many by at most a bucket's releases; the next window's 429, if any, lowers the
        // budget further, where too few would hold it low for an hour). The rejected request
        // was ours too: it is taken off below.
        let counted: u32 = self
            .buckets
            .iter()
            .filter(|(b, _)| (u64::from(*b) + 1) * BUCKET_US > begun_us)
            .map(|(_, c)| c)
            .sum();
        let admitted = counted.saturating_sub(1);
        // A 429 although we were within the budget (other clients of the token, jitter beyond
        // the margin): give up a little more, so the next window does not end the same way.
        // Few of ours admitted means others spent most of that window (other clients of the
        // token or workspace): not proof that the budget is that small, so halve instead, and
        // let further 429s go on lowering it.
        let admitted = if admitted >= self.budget / 4 {
            admitted
        } else {
            self.budget / 2
        };
        let step = (self.budget / 50).max(1);
        self.budget = admitted
            .min(self.budget.saturating_sub(step))
            .max(self.floor());
        self.provisional = false;
        self.learned_at = Some(now);
    }

    /// The least a 429 can teach: a sixteenth of the configured budget (or guess), at least 1.
    /// A 429 after very few of our requests says that others spent the budget in that window,
    /// not that ours is that small for an hour.
    fn floor(&self) -> u32 {
        (self.configured / 16).max(1)
    }

    /// Forgets a learned budget [`FORGET_LEARNED`] after the 429 that taught it.
    pub fn forget_if_due(&mut self, now: Instant) {
        if self
            .learned_at
            .is_some_and(|t| now.saturating_duration_since(t) >= FORGET_LEARNED)
        {
            self.learned_at = None;
            self.budget = self.configured;
            self.provisional = self.guessed;
        }
    }

    /// Nothing counted and nothing learned: the window behaves like a new one.
    pub fn is_rested(&self, now: Instant) -> bool {
        self.used(now) == 0 && self.learned_at.is_none()
    }

    /// The interval of the floor rate (a whole span when the budget has no reserve).
    pub fn floor_interval(&self) -> Duration {
        self.floor_interval_us().map_or(SPAN, Duration::from_micros)
    }

    /// `(SPAN) / (budget - burst)` in microseconds, rounded up: the interval of the floor rate.
    fn floor_interval_us(&self) -> Option<u64> {
        let reserve = u64::from(self.budget - self.burst());
        (reserve > 0).then(|| LIVE_US.div_ceil(reserve))
    }

    fn live(&self, now_us: u64) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.buckets
            .iter()
            .map(|&(b, c)| (u64::from(b) * BUCKET_US, c))
            .filter(move |(start, _)| start + LIVE_US > now_us)
    }

    fn prune(&mut self, now_us: u64) {
        while let Some(&(b, c)) = self.buckets.front() {
            if u64::from(b) * BUCKET_US + LIVE_US > now_us {
                break;
            }
            self.buckets.pop_front();
            self.total -= c;
        }
    }

    fn us(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    fn instant(&self, us: u64) -> Instant {
        self.epoch + Duration::from_micros(us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    /// Releases one request at every instant the window allows, from `from` until `until`.
    fn flood(w: &mut Window, from: Instant, until: Instant) -> Vec<Instant> {
        let mut out = Vec::new();
        let mut now = from;
        while now < until {
            let at = w.ready_at(now);
            assert!(at >= now);
            now = at;
            if now >= until {
                break;
            }
            w.record(now);
            out.push(now);
        }
        out
    }

    fn max_in_any(span: Duration, releases: &[Instant]) -> usize {
        let mut best = 0;
        let mut start = 0;
        for end in 0..releases.len() {
            while releases[end] - releases[start] >= span {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    #[test]
    fn an_idle_key_sends_its_burst_at_once() {
        let t0 = Instant::now();
        let mut w = Window::new(STANDARD, t0);
        assert_eq!(w.burst(), 30);
        assert_eq!(w.predicted_wait(t0, 29), Duration::ZERO);
        for _ in 0..30 {
            assert_eq!(w.ready_at(t0), t0);
            w.record(t0);
        }
        let next = w.ready_at(t0);
        assert!(next > t0, "the 31st waits");
        assert!(
            next - t0 < s(0.5),
            "for about one floor interval: {:?}",
            next - t0
        );
        assert_eq!(Window::new(BUSINESS, t0).burst(), 100);
    }

    /// A flood from idle, ten minutes long: never more than the budget in any span, no stall
    /// after the burst, and 97 % or more of the budget used.
    #[test]
    fn a_flood_flows_steadily_within_the_budget() {
        for budget in [STANDARD, BUSINESS, 12, 2, 1] {
            let t0 = Instant::now();
            let mut w = Window::new(budget, t0);
            let rel = flood(&mut w, t0, t0 + s(600.0));
            assert!(
                max_in_any(SPAN, &rel) <= budget as usize,
                "budget {budget}: {} in a span",
                max_in_any(SPAN, &rel)
            );
            let floor = SPAN.as_secs_f64() / f64::from((budget - w.burst()).max(1));
            let worst_gap = rel
                .windows(2)
                .map(|p| (p[1] - p[0]).as_secs_f64())
                .fold(0.0, f64::max);
            if budget >= 12 {
                assert!(
                    worst_gap <= floor + BUCKET.as_secs_f64() + 1e-6,
                    "budget {budget}: a gap of {worst_gap} s (floor interval {floor})"
                );
            }
            // In steady state a release waits until the window holds at most budget - 2, so
            // that a floor-rate release still fits after it: (budget - 1) per SPAN.
            let ideal = f64::from(budget) * 600.0 / 60.0;
            let share = f64::from(budget.max(2) - 1) / f64::from(budget.max(2));
            assert!(
                rel.len() as f64 >= 0.97 * share * ideal,
                "budget {budget}: {} of {ideal}",
                rel.len()
            );
        }
    }

    /// However Notion's 60-second grid is aligned, and with releases arriving up to a second
    /// late, no window of Notion's sees more than the budget.
    #[test]
    fn no_alignment_of_notions_grid_sees_more_than_the_budget() {
        let t0 = Instant::now();
        let mut w = Window::new(STANDARD, t0);
        // A burst, a pause, a flood, a gap, a flood: the pattern that overflows a fixed grid.
        let mut rel = flood(&mut w, t0, t0 + s(5.0));
        rel.extend(flood(&mut w, t0 + s(40.0), t0 + s(130.0)));
        rel.extend(flood(&mut w, t0 + s(200.0), t0 + s(400.0)));
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let offset = (seed % 60_000) as f64 / 1000.0;
            // Each release arrives up to MARGIN late.
            let arrivals: Vec<f64> = rel
                .iter()
                .enumerate()
                .map(|(i, t)| (*t - t0).as_secs_f64() + ((i * 7919) % 1000) as f64 / 1000.0)
                .collect();
            let mut counts = std::collections::HashMap::new();
            for a in arrivals {
                *counts
                    .entry(((a + offset) / 60.0).floor() as i64)
                    .or_insert(0u32) += 1;
            }
            let worst = counts.values().max().copied().unwrap_or(0);
            assert!(
                worst <= STANDARD,
                "{worst} in one window at offset {offset}"
            );
        }
    }

    #[test]
    fn predictions_count_the_burst_then_the_floor_rate() {
        let t0 = Instant::now();
        let w = Window::new(STANDARD, t0);
        assert_eq!(w.predicted_wait(t0, 0), Duration::ZERO);
        assert_eq!(w.predicted_wait(t0, 20), Duration::ZERO);
        let floor = SPAN.as_secs_f64() / 150.0;
        let p = w.predicted_wait(t0, 60).as_secs_f64();
        assert!((p - 31.0 * floor).abs() < 0.1, "{p}");
        // And the prediction is not early: flood and see when the 61st goes.
        let mut w = w;
        let rel = flood(&mut w, t0, t0 + s(60.0));
        assert!(
            (rel[60] - t0).as_secs_f64() <= p + 1e-3,
            "{:?} > {p}",
            rel[60] - t0
        );
    }

    #[test]
    fn unrecord_gives_the_release_back() {
        let t0 = Instant::now();
        let mut w = Window::new(6, t0);
        w.record(t0);
        assert_eq!(
            w.ready_at(t0) - t0,
            Duration::from_micros(LIVE_US.div_ceil(5))
        );
        w.unrecord(t0);
        assert_eq!(w.ready_at(t0), t0);
        assert_eq!(w.used(t0), 0);
        assert!(w.is_rested(t0));
    }

    /// A key configured for the business plan whose workspace is on another plan: Notion's
    /// fixed windows admit 180. The first window ends in a 429 and the lowered budget holds
    /// the next windows without one.
    #[test]
    fn a_smaller_real_budget_is_learned_from_one_429() {
        let t0 = Instant::now();
        let mut w = Window::new(BUSINESS, t0);
        let mut now = t0;
        let mut in_window = 0u32;
        let mut grid = t0;
        let mut rejected = Vec::new();
        while now < t0 + s(600.0) {
            now = w.ready_at(now);
            if now - grid >= WINDOW {
                grid += WINDOW * ((now - grid).as_secs() / 60) as u32;
                in_window = 0;
            }
            w.record(now);
            if in_window >= STANDARD {
                // Notion's answer: 429, Retry-After until its window resets (whole seconds).
                let reset = grid + WINDOW - now;
                let retry_after = Duration::from_secs(reset.as_secs_f64().ceil() as u64);
                w.learn(now, retry_after, now);
                rejected.push((now - t0).as_secs());
                now += retry_after;
            } else {
                in_window += 1;
            }
        }
        assert!(rejected.len() <= 2, "429s at {rejected:?}");
        assert!(
            w.budget() <= STANDARD && w.budget() >= STANDARD * 9 / 10,
            "{}",
            w.budget()
        );
        w.forget_if_due(t0 + FORGET_LEARNED + s(601.0));
        assert_eq!(w.budget(), BUSINESS, "forgotten after an hour");
    }

    /// A token's releases before its workspace was known count in the workspace's window
    /// when it joins, at their own time: they free up when they would have in the token's.
    #[test]
    fn a_joining_token_brings_its_releases_at_their_time() {
        let t0 = Instant::now();
        let mut token = Window::new(STANDARD, t0);
        for _ in 0..25 {
            token.record(t0 + s(0.01));
        }
        token.record(t0 + s(0.3));
        let joined = t0 + s(0.5);
        let mut ws = Window::provisional(360, joined);
        ws.record(joined);
        ws.absorb(&token, joined);
        assert_eq!(ws.used(joined), 27);
        // The burst's bucket stops counting a span after it began, not after the join.
        let later = t0 + SPAN + BUCKET + s(0.01);
        assert_eq!(ws.used(later), 2);
        assert_eq!(token.used(later), 1);
    }

    #[test]
    fn a_provisional_budget_doubles_while_half_of_it_is_used() {
        let t0 = Instant::now();
        let mut w = Window::provisional(40, t0);
        let rel = flood(&mut w, t0, t0 + s(120.0));
        assert!(w.is_provisional());
        assert!(w.budget() >= 160, "{}", w.budget());
        assert!(rel.len() > 80);
        w.learn(rel[rel.len() - 1], Duration::from_secs(30), t0 + s(120.0));
        assert!(!w.is_provisional());
        assert!(w.budget() < rel.len() as u32);
        w.forget_if_due(t0 + FORGET_LEARNED + s(121.0));
        assert!(w.is_provisional() && w.budget() == 40);
    }
}
