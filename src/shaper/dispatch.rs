//! The dispatcher of budgets kept in this process: one task per group with waiting requests,
//! one timer. It sleeps until the earliest instant a budget allows a release (or until a new
//! lane joins), releases what is due in fair order, and ends when the group's queues are empty.
//! With Redis budgets, `redis::dispatch` runs instead.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::state::{GroupId, PaidBy, Release, State};
use super::Inner;

/// One group's dispatcher: sleep until the next release is due (or a new lane joins), release,
/// repeat; end when nothing waits.
pub(super) async fn run(inner: Arc<Inner>, gid: GroupId, notify: Arc<Notify>) {
    loop {
        let wake = inner.lock().release_due(&gid, Instant::now());
        let Some(at) = wake else { return };
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            () = notify.notified() => {}
        }
    }
}

impl State {
    /// Releases every request of group `gid` that is due at `now`. Returns when to look again,
    /// or `None` when the group has nothing waiting (the dispatcher then ends).
    pub(super) fn release_due(&mut self, gid: &GroupId, now: Instant) -> Option<Instant> {
        let group = self.groups.get_mut(gid)?;
        loop {
            // Drop lanes whose waiters all left.
            group
                .waiting
                .retain(|k| self.lanes.get(k).is_some_and(|l| !l.queue.is_empty()));
            if group.waiting.is_empty() {
                group.dispatcher = None;
                return None;
            }
            let workspace_ready = group.workspace.as_ref().map(|b| b.ready_at(now));
            // Background requests go only while no normal one waits in the group.
            let background = !group
                .waiting
                .iter()
                .filter_map(|k| self.lanes.get(k))
                .any(|l| l.queue.has_normal());
            let mut earliest: Option<Instant> = None;
            let mut chosen = None;
            for (i, k) in group.waiting.iter().enumerate() {
                let Some(lane) = self.lanes.get_mut(k) else {
                    continue;
                };
                if !lane.queue.can_pop(background) {
                    continue;
                }
                let ready = lane.budget.ready_at(now);
                if ready <= now {
                    chosen = Some(i);
                    break;
                }
                earliest = Some(earliest.map_or(ready, |e| e.min(ready)));
            }
            let wake = |lane_ready: Option<Instant>| {
                let t = lane_ready.unwrap_or(now);
                Some(workspace_ready.map_or(t, |s| s.max(t)))
            };
            if workspace_ready.is_some_and(|s| s > now) {
                return wake(Some(earliest.unwrap_or(now)));
            }
            let Some(i) = chosen else {
                return wake(earliest);
            };
            let Some(key) = group.waiting.remove(i) else {
                return wake(earliest);
            };
            let Some(lane) = self.lanes.get_mut(&key) else {
                continue;
            };
            loop {
                // Checked before every pop: after a refund the budget is ready again, after a
                // hand-over it is not. Recovery first: a step may change the rate (and grow the
                // burst, which starts spent), and a release must be one the budget admits.
                lane.budget.catch_up(now);
                if let Some(b) = group.workspace.as_mut() {
                    b.catch_up(now);
                }
                let ready = lane.budget.ready_at(now) <= now
                    && group
                        .workspace
                        .as_ref()
                        .is_none_or(|b| b.ready_at(now) <= now);
                let Some((_, w)) = ready.then(|| lane.queue.pop(background)).flatten() else {
                    break;
                };
                self.queued = self.queued.saturating_sub(1);
                if w.tx.is_closed() {
                    continue; // Its caller left: spends nothing.
                }
                // Cannot fail: both budgets were ready at `now` after catching up.
                let admitted = lane.budget.admit(now, true).is_ok()
                    & group
                        .workspace
                        .as_mut()
                        .is_none_or(|b| b.admit(now, true).is_ok());
                debug_assert!(admitted, "released a request its budget did not admit");
                lane.last_used = now;
                let release = Release {
                    at: now,
                    paid_by: PaidBy::Process,
                };
                if w.tx.send(release).is_ok() {
                    break;
                }
                lane.budget.refund(now);
                if let Some(b) = group.workspace.as_mut() {
                    b.refund(now);
                }
            }
            if !lane.queue.is_empty() {
                group.waiting.push_back(key);
            }
        }
    }
}
