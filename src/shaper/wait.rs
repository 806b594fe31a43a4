//! Cancellation: a waiting request that is dropped (its caller went away, its deadline passed)
//! leaves its queue; one that was released at the same moment gives its budget back. Either
//! way it spends nothing.

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Inner;

/// Removes a waiting request from its queue when its future is dropped before release; gives
/// the budget back when it was released but never collected.
pub(super) struct WaitGuard<'a> {
    pub inner: &'a Inner,
    pub lane: u64,
    pub caller: u64,
    pub id: u64,
    pub rx: Option<oneshot::Receiver<Instant>>,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        let now = Instant::now();
        let mut st = self.inner.lock();
        let st = &mut *st;
        let Some(lane) = st.lanes.get_mut(&self.lane) else {
            return;
        };
        let id = self.id;
        if lane.queue.remove_where(&self.caller, |w| w.id == id) > 0 {
            return;
        }
        // Released just now, but nobody will send it: refund.
        if rx.try_recv().is_ok() {
            if let Some(s) = &self.inner.redis {
                let keys = st.remote_keys(self.lane);
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = s.refund(&keys).await;
                });
                return;
            }
            lane.budget.refund(now);
            if let Some(b) = st
                .groups
                .get_mut(&lane.group)
                .and_then(|g| g.workspace.as_mut())
            {
                b.refund(now);
            }
        }
    }
}
