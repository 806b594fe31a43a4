//! The dispatcher of budgets kept in Redis: plan under the shaper's lock, reserve a slot in
//! Redis (one call), sleep until it (one timer), hand it to the lane's next live waiter in fair
//! order, or give it back. While Redis is unreachable, the local share decides instead.
//!
//! A lone token's dispatcher asks for as many slots as it has requests waiting (at most
//! [`BATCH`] per call, and only those within [`HORIZON`] of the call: a tight budget's are
//! taken one at a time) and keeps up to [`PIPELINE`] such calls in flight (the connection
//! manager pipelines them on one connection), so its releases are neither one round trip
//! apart nor one script run apart. Every slot is still Redis's decision; one nobody takes is
//! given back. A workspace's dispatcher reserves one slot at a time: its next slot may be for
//! another lane, chosen when the previous one was handed over.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{KeySpec, RedisBudgets, Reservation};
use crate::shaper::budget::Budget;
use crate::shaper::state::{GroupId, PaidBy, Release, State};
use crate::shaper::Inner;

/// A budget's side in Redis, as this replica last saw it.
pub(in crate::shaper) struct RemoteBudget {
    key: Arc<str>,
    /// The effective rate as last written to or read from Redis: a difference means this
    /// replica changed it (a 429, a recovery step) and must write it.
    reported: f64,
    /// From the last reservation: when the next slot is free, how many wait elsewhere, and
    /// the window as every replica spends it (budget in force, releases counted).
    next_free: Option<Instant>,
    others_waiting: u32,
    pub window: Option<(u32, u32)>,
    /// The local share used while Redis is unreachable.
    pub fallback: Budget,
    /// [`RedisBudgets::epoch`] as this key last saw it: a change means a switch happened since.
    epoch: u64,
    /// A lone token's slots that came due with nobody waiting, oldest first (when each was
    /// due here, and the slot on Redis's clock): a request arriving within [`LEASE`] of one
    /// takes it without a call (`take_stock`); the dispatcher gives back the others.
    stock: VecDeque<(Instant, u64)>,
    /// Kept slots that expired, to give back with the next refund.
    expired: Vec<u64>,
    /// A finished dispatcher stays to give back the kept slots as they expire (one at a time).
    reaping: bool,
    /// When this replica last asked Redis for slots of this key.
    last_call: Option<Instant>,
}

impl RemoteBudget {
    pub fn new(key: Arc<str>, budget: &Budget, share: f64, epoch: u64, now: Instant) -> Self {
        Self {
            key,
            reported: budget.effective_rate(),
            next_free: None,
            others_waiting: 0,
            window: None,
            fallback: budget.share(share, now),
            epoch,
            stock: VecDeque::new(),
            expired: Vec::new(),
            reaping: false,
            last_call: None,
        }
    }

    /// Takes a kept slot for a request arriving at `now`, if one is due and was due less than
    /// [`LEASE`] ago (those kept longer wait for the dispatcher to give them back).
    pub fn take_stock(&mut self, now: Instant) -> bool {
        self.pop_stock(now).is_some()
    }

    fn pop_stock(&mut self, now: Instant) -> Option<(Instant, u64)> {
        self.set_aside_expired(now);
        match self.stock.front() {
            Some(&(due, _)) if due <= now => self.stock.pop_front(),
            _ => None,
        }
    }

    /// Moves the kept slots due [`LEASE`] or longer ago (the first ones: the stock is in due
    /// order) to those to give back.
    fn set_aside_expired(&mut self, now: Instant) {
        while let Some(&(due, slot)) = self.stock.front() {
            if now < due + LEASE {
                break;
            }
            self.stock.pop_front();
            self.expired.push(slot);
        }
    }

    /// Forgets the kept slots (Notion pushed back: what was granted before must not go now).
    pub fn drop_stock(&mut self) {
        self.stock.clear();
    }

    /// Takes out the kept slots due [`LEASE`] or longer ago, to give back; and when the next
    /// one is.
    fn expired_stock(&mut self, now: Instant) -> (Vec<u64>, Option<Instant>) {
        self.set_aside_expired(now);
        (
            std::mem::take(&mut self.expired),
            self.stock.front().map(|&(due, _)| due + LEASE),
        )
    }

    /// This key as a call sends it; marks the current rate as written.
    pub fn spec(&mut self, budget: &Budget) -> KeySpec {
        let changed = (budget.effective_rate() - self.reported).abs() > 1e-9;
        self.reported = budget.effective_rate();
        self.key_spec(budget, changed)
    }

    fn key_spec(&self, budget: &Budget, changed: bool) -> KeySpec {
        let (interval_us, tolerance_us) = budget.shared_spec();
        KeySpec {
            key: self.key.clone(),
            interval_us,
            tolerance_us,
            changed,
            window: budget.window().map_or(0, |w| w.configured()),
            provisional: budget.window().is_some_and(|w| w.is_guess()),
        }
    }

    /// Notes a switch between Redis and the local share seen at `now`: the side this key
    /// starts on has no record of what the other one sent. Returns whether one happened.
    fn switched(&mut self, epoch: u64, connected: bool, now: Instant) -> bool {
        if self.epoch == epoch {
            return false;
        }
        self.epoch = epoch;
        if !connected {
            self.fallback.spend_burst(now);
        }
        true
    }

    /// Learns from a reservation answered at `at`: the rate and window in force and the next
    /// free slot.
    fn learn(&mut self, budget: &mut Budget, r: &Reservation, index: usize, at: Instant) {
        if let Some(k) = r.keys.get(index) {
            budget.adopt_interval(k.interval_us, at);
            if let Some(w) = budget.window_mut() {
                w.adopt(k.window_budget, at);
            }
            self.reported = budget.effective_rate();
            self.next_free = Some(at + k.next_free);
            self.window = budget.window().map(|_| (k.window_used, k.window_budget));
        }
        self.others_waiting = r.others_waiting;
    }

    /// Predicted wait behind `ahead` local requests and those waiting on other replicas;
    /// `connected`: Redis answers (else the local share decides).
    pub fn predicted_wait(
        &self,
        budget: &Budget,
        now: Instant,
        ahead: usize,
        connected: bool,
    ) -> Duration {
        if !connected {
            return self.fallback.predicted_wait(now, ahead);
        }
        let first = self
            .next_free
            .unwrap_or(now)
            .max(budget.paused_until(now).unwrap_or(now))
            .max(now);
        let behind = u32::try_from(ahead)
            .unwrap_or(u32::MAX)
            .saturating_add(self.others_waiting);
        // One slot per interval of the GCRA, or of the window's floor rate, whichever is slower.
        let interval = Duration::from_micros(budget.shared_spec().0).max(
            budget
                .window()
                .map_or(Duration::ZERO, |w| w.floor_interval()),
        );
        (first - now) + interval.saturating_mul(behind)
    }
}

/// Most reservation calls of one lone token's dispatcher in flight at once.
const PIPELINE: usize = 8;
/// Most slots one call takes.
const BATCH: usize = 64;
/// A call takes a slot after its first only if it lies this close to the call: slots that
/// follow each other within one timer tick or so, not a queue's worth of a slow budget.
const HORIZON: Duration = Duration::from_millis(20);
/// How long a lone token keeps a granted slot nobody waited for, for the next request.
const LEASE: Duration = Duration::from_millis(20);

/// What a Redis-budget dispatcher does next.
enum Plan {
    /// Nothing waits: the dispatcher ends.
    Done,
    /// Reservations in flight cover what waits (or may not be joined by another): wait for
    /// one of them.
    Enough,
    /// Nothing may go before then (a pause, or the local share while Redis is unreachable).
    Wait(Instant),
    /// Take slots for the next requests of `lane`.
    Reserve(Call),
    /// Redis is unreachable: the local share admitted a request of `lane` now.
    Local { lane: u64 },
}

/// One reservation call: slots for the next `want` requests of `lane`.
struct Call {
    lane: u64,
    keys: Vec<KeySpec>,
    want: usize,
    /// Requests waiting on this replica that no slot is on its way for.
    waiting: usize,
    /// The first reservation after a switch from the local share.
    resume: bool,
    /// A lone token's call: slots due with nobody waiting are kept for the next requests.
    keep: bool,
}

/// What the dispatcher has on its way: calls in flight and the slots they asked for or hold,
/// not handed over yet (shared with the calls, which hand their slots over themselves).
struct InFlight {
    calls: usize,
    slots: usize,
}

impl State {
    /// Chooses the lane whose request goes next in group `gid` (round robin) and what it
    /// needs (`connected`: Redis answers).
    fn plan(
        &mut self,
        gid: &GroupId,
        now: Instant,
        connected: bool,
        epoch: u64,
        in_flight: InFlight,
    ) -> Plan {
        self.serve_stock(gid, now);
        let Some(group) = self.groups.get_mut(gid) else {
            return if in_flight.calls > 0 {
                Plan::Enough
            } else {
                Plan::Done
            };
        };
        let lanes = &mut self.lanes;
        let solo = matches!(gid, GroupId::Solo(_));
        if in_flight.calls > 0 {
            // Another call beside those in flight: only for a lone token, only for requests no
            // slot is on its way for, and only while Redis answers.
            let waiting: usize = match gid {
                GroupId::Solo(k) => lanes.get(k).map_or(0, |l| l.queue.len()),
                GroupId::Workspace(_) => 0,
            };
            if !connected || in_flight.calls >= PIPELINE || waiting <= in_flight.slots {
                return Plan::Enough;
            }
        }
        group
            .waiting
            .retain(|k| lanes.get(k).is_some_and(|l| !l.queue.is_empty()));
        let waiting: usize = group
            .waiting
            .iter()
            .filter_map(|k| lanes.get(k))
            .map(|l| l.queue.len())
            .sum();
        if group.waiting.is_empty() {
            group.dispatcher = None;
            return Plan::Done;
        }
        // Background requests go only while no normal one waits in the group.
        let background = !group
            .waiting
            .iter()
            .filter_map(|k| lanes.get(k))
            .any(|l| l.queue.has_normal());
        let Some((lane_key, lane)) = group
            .waiting
            .iter()
            .copied()
            .find(|k| lanes.get(k).is_some_and(|l| l.queue.can_pop(background)))
            .and_then(|k| Some((k, lanes.get_mut(&k)?)))
        else {
            group.dispatcher = None;
            return Plan::Done;
        };
        // Recovery steps first, as the local dispatcher does: a step changes the rate sent.
        lane.budget.catch_up(now);
        if let Some(b) = group.workspace.as_mut() {
            b.catch_up(now);
        }
        let paused = lane
            .budget
            .paused_until(now)
            .max(group.workspace.as_ref().and_then(|b| b.paused_until(now)));
        if let Some(p) = paused {
            return if in_flight.calls > 0 {
                Plan::Enough
            } else {
                Plan::Wait(p)
            };
        }
        let mut resume = false;
        for r in lane.remote.iter_mut().chain(group.remote.as_mut()) {
            resume |= r.switched(epoch, connected, now);
        }
        if !connected {
            let ready = lane
                .remote
                .as_ref()
                .map_or(now, |r| r.fallback.ready_at(now))
                .max(
                    group
                        .remote
                        .as_ref()
                        .map_or(now, |r| r.fallback.ready_at(now)),
                );
            if ready > now {
                return Plan::Wait(ready);
            }
            if let Some(r) = lane.remote.as_mut() {
                let _ = r.fallback.admit(now, true);
            }
            if let Some(r) = group.remote.as_mut() {
                let _ = r.fallback.admit(now, true);
            }
            return Plan::Local { lane: lane_key };
        }
        let mut keys = Vec::with_capacity(2);
        if let Some(r) = lane.remote.as_mut() {
            keys.push(r.spec(&lane.budget));
        }
        if let (Some(r), Some(b)) = (group.remote.as_mut(), group.workspace.as_ref()) {
            keys.push(r.spec(b));
        }
        // A lone token in a stream of requests (its last call less than [`LEASE`] ago) asks
        // for twice the requests no slot is on its way for: the others are kept for those
        // that follow, so a stream costs a call per batch, not per request; an occasional
        // request takes one slot, not one and a refund. A workspace's next slot may be another
        // lane's: one at a time.
        let need = waiting.saturating_sub(in_flight.slots);
        let streaming = lane
            .remote
            .as_mut()
            .is_some_and(|r| r.last_call.replace(now).is_some_and(|t| now < t + LEASE));
        let want = match (solo, streaming) {
            (true, true) => (2 * need).clamp(1, BATCH),
            (true, false) => need.clamp(1, BATCH),
            (false, _) => 1,
        };
        Plan::Reserve(Call {
            lane: lane_key,
            keys,
            want,
            waiting: need,
            resume,
            keep: solo,
        })
    }

    /// Learns what Redis answered for a reservation of `lane` in `gid`.
    fn learn(&mut self, gid: &GroupId, lane_key: u64, r: &Reservation, at: Instant) {
        if let Some(lane) = self.lanes.get_mut(&lane_key) {
            if let Some(remote) = lane.remote.as_mut() {
                remote.learn(&mut lane.budget, r, 0, at);
            }
        }
        if let Some(g) = self.groups.get_mut(gid) {
            if let (Some(remote), Some(b)) = (g.remote.as_mut(), g.workspace.as_mut()) {
                remote.learn(b, r, 1, at);
            }
        }
    }

    /// Keeps slot `slot` of lone token `lane_key`, due at `due`, that nobody waited for; false
    /// when the lane is gone (the slot is then given back).
    fn keep_slot(&mut self, lane_key: u64, due: Instant, slot: u64) -> bool {
        match self
            .lanes
            .get_mut(&lane_key)
            .and_then(|l| l.remote.as_mut())
        {
            Some(r) => {
                // In due order: a call's future slots are kept at once, others after a sleep.
                let at = r.stock.partition_point(|&(d, _)| d <= due);
                r.stock.insert(at, (due, slot));
                true
            }
            None => false,
        }
    }

    /// Keeps a slot ahead of lone token `lane_key` if no request of it waits.
    fn keep_if_idle(&mut self, lane_key: u64, due: Instant, slot: u64) -> bool {
        self.lanes
            .get(&lane_key)
            .is_some_and(|l| l.queue.is_empty())
            && self.keep_slot(lane_key, due, slot)
    }

    /// Hands lone token `gid`'s kept slots to requests that queued behind others meanwhile.
    fn serve_stock(&mut self, gid: &GroupId, now: Instant) {
        let GroupId::Solo(k) = *gid else {
            return;
        };
        loop {
            let Some(lane) = self.lanes.get_mut(&k) else {
                return;
            };
            if lane.queue.is_empty() || lane.budget.paused_until(now).is_some() {
                return;
            }
            let Some((due, slot)) = lane.remote.as_mut().and_then(|r| r.pop_stock(now)) else {
                return;
            };
            if !self.hand_over(gid, k, now, PaidBy::Redis(slot)) {
                if let Some(r) = self.lanes.get_mut(&k).and_then(|l| l.remote.as_mut()) {
                    r.stock.push_front((due, slot));
                }
                return;
            }
        }
    }

    /// Takes out lone token `gid`'s kept slots that expired by `now`, with the keys to give
    /// them back to, and when the next one expires. `start`: a dispatcher means to stay and
    /// reap; `None` when another one already does.
    fn reap_stock(
        &mut self,
        gid: &GroupId,
        now: Instant,
        start: bool,
    ) -> Option<(Vec<KeySpec>, Vec<u64>, Option<Instant>)> {
        let GroupId::Solo(k) = *gid else {
            return None;
        };
        let keys = self.remote_keys(k);
        let r = self.lanes.get_mut(&k)?.remote.as_mut()?;
        if start {
            if r.reaping || (r.stock.is_empty() && r.expired.is_empty()) {
                return None;
            }
            r.reaping = true;
        }
        let (gone, next) = r.expired_stock(now);
        if next.is_none() {
            r.reaping = false;
        }
        Some((keys, gone, next))
    }

    /// Lone token `gid`'s kept slots that expired by `now`, with the keys to give them back to.
    fn expired_stock(&mut self, gid: &GroupId, now: Instant) -> Option<(Vec<KeySpec>, Vec<u64>)> {
        let GroupId::Solo(k) = *gid else {
            return None;
        };
        let keys = self.remote_keys(k);
        let (gone, _) = self.lanes.get_mut(&k)?.remote.as_mut()?.expired_stock(now);
        (!gone.is_empty()).then_some((keys, gone))
    }

    /// Hands the slot due at `now` to the next live waiter of `lane_key`; false when none is
    /// left (the slot is then given back).
    fn hand_over(&mut self, gid: &GroupId, lane_key: u64, now: Instant, paid_by: PaidBy) -> bool {
        let mut handed = false;
        let background = !self.group_has_normal(gid);
        let Some(lane) = self.lanes.get_mut(&lane_key) else {
            return false;
        };
        while let Some((_, w)) = lane.queue.pop(background) {
            self.queued = self.queued.saturating_sub(1);
            if w.tx.send(Release { at: now, paid_by }).is_ok() {
                lane.last_used = now;
                handed = true;
                break;
            }
        }
        if let Some(g) = self.groups.get_mut(gid) {
            g.waiting.retain(|k| *k != lane_key);
            if !lane.queue.is_empty() {
                g.waiting.push_back(lane_key);
            }
        }
        handed
    }

    /// Gives back a slot the local share admitted at `now` for `lane_key` that nobody took.
    pub(in crate::shaper) fn refund_local_share(&mut self, lane_key: u64, now: Instant) {
        let Some(lane) = self.lanes.get_mut(&lane_key) else {
            return;
        };
        if let Some(r) = lane.remote.as_mut() {
            r.fallback.refund(now);
        }
        if let Some(r) = self
            .groups
            .get_mut(&lane.group)
            .and_then(|g| g.remote.as_mut())
        {
            r.fallback.refund(now);
        }
    }

    /// The Redis keys a release of `lane_key` spent, to give a slot back.
    pub(in crate::shaper) fn remote_keys(&self, lane_key: u64) -> Vec<KeySpec> {
        let Some(lane) = self.lanes.get(&lane_key) else {
            return Vec::new();
        };
        let mut keys: Vec<KeySpec> = lane
            .remote
            .iter()
            .map(|r| r.key_spec(&lane.budget, false))
            .collect();
        if let Some(g) = self.groups.get(&lane.group) {
            if let (Some(r), Some(b)) = (&g.remote, &g.workspace) {
                keys.push(r.key_spec(b, false));
            }
        }
        keys
    }
}

/// One group's dispatcher when budgets live in Redis: reserve the next slots (one Redis call),
/// sleep until each (one timer), hand it to the next waiter in fair order; repeat until
/// nothing waits. While Redis is unreachable the local share decides instead.
pub(in crate::shaper) async fn run(
    inner: Arc<Inner>,
    gid: GroupId,
    notify: Arc<Notify>,
    redis: Arc<RedisBudgets>,
) {
    let mut in_flight = FuturesUnordered::new();
    // Slots asked for or held by the calls in flight, not handed over yet.
    let slots = Arc::new(AtomicUsize::new(0));
    loop {
        // Plan until the calls in flight cover what may be reserved.
        loop {
            let now = Instant::now();
            let on_the_way = InFlight {
                calls: in_flight.len(),
                slots: slots.load(Ordering::Relaxed),
            };
            let plan =
                inner
                    .lock()
                    .plan(&gid, now, redis.is_connected(), redis.epoch(), on_the_way);
            match plan {
                Plan::Enough => break,
                Plan::Done => {
                    if in_flight.is_empty() {
                        return reap(&inner, &gid, &redis).await;
                    }
                    break;
                }
                Plan::Wait(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = notify.notified() => {}
                    }
                }
                Plan::Local { lane } => {
                    let mut st = inner.lock();
                    if !st.hand_over(&gid, lane, now, PaidBy::LocalShare) {
                        st.refund_local_share(lane, now);
                    }
                }
                Plan::Reserve(call) => {
                    slots.fetch_add(call.want, Ordering::Relaxed);
                    in_flight.push(reserve(
                        inner.clone(),
                        gid.clone(),
                        redis.clone(),
                        slots.clone(),
                        call,
                    ));
                }
            }
        }
        // A call has handed over its slots (or failed: degraded now, logged by
        // `RedisBudgets`, and the next plan uses the local share).
        let _ = in_flight.next().await;
        // Kept slots that expired while this dispatcher works go back now, not when it ends.
        let expired = inner.lock().expired_stock(&gid, Instant::now());
        if let Some((keys, gone)) = expired {
            let redis = redis.clone();
            tokio::spawn(async move {
                let _ = redis.refund(&keys, &gone).await;
            });
        }
    }
}

/// One reservation call for `lane`: the Redis call, what it taught, and for each slot the
/// sleep until it and the hand-over (a lone token keeps one nobody waits for; others are given
/// back in one refund at the end). `slots`
/// counts down each slot asked for as it is handed over, given back, or not granted.
async fn reserve(
    inner: Arc<Inner>,
    gid: GroupId,
    redis: Arc<RedisBudgets>,
    slots: Arc<AtomicUsize>,
    call: Call,
) {
    let done = |n: usize| slots.fetch_sub(n, Ordering::Relaxed);
    let answer = redis
        .reserve(&call.keys, call.want, HORIZON, call.waiting, call.resume)
        .await;
    let Ok(r) = answer else {
        done(call.want);
        return;
    };
    let at = Instant::now();
    inner.lock().learn(&gid, call.lane, &r, at);
    done(call.want.saturating_sub(r.slots.len()));
    let mut back = Vec::new();
    for (wait, slot) in r.slots {
        let due = at + wait;
        // A timer rounds up to the next millisecond: only sleep for a slot ahead, and not for
        // one a lone token keeps because nobody waits for it (a request that comes takes it
        // once due, without the timer's delay).
        if !wait.is_zero() {
            if call.keep && inner.lock().keep_if_idle(call.lane, due, slot) {
                done(1);
                continue;
            }
            tokio::time::sleep_until(due).await;
        }
        let now = Instant::now();
        let mut st = inner.lock();
        let taken = st.hand_over(&gid, call.lane, now, PaidBy::Redis(slot))
            || (call.keep && st.keep_slot(call.lane, due, slot));
        drop(st);
        done(1);
        if !taken {
            back.push(slot);
        }
    }
    if !back.is_empty() {
        let _ = redis.refund(&call.keys, &back).await;
    }
}

/// A finished lone token's dispatcher: gives back its kept slots as they expire, unless another
/// one already does.
async fn reap(inner: &Inner, gid: &GroupId, redis: &Arc<RedisBudgets>) {
    let mut start = true;
    loop {
        let reaped = inner.lock().reap_stock(gid, Instant::now(), start);
        let Some((keys, gone, next)) = reaped else {
            return;
        };
        start = false;
        if !gone.is_empty() {
            let _ = redis.refund(&keys, &gone).await;
        }
        match next {
            Some(t) => tokio::time::sleep_until(t).await,
            None => return,
        }
    }
}
