//! Cancellation: a waiting request that is dropped (its caller went away, its deadline passed)
//! leaves its queue; one that was released at the same moment gives its budget back. Either
//! way it spends nothing.

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::state::{PaidBy, Release};
use super::Inner;

/// Removes a waiting request from its queue when its future is dropped before release; gives
/// the budget back when it was released but never collected.
pub(super) struct WaitGuard<'a> {
    pub inner: &'a Inner,
    pub lane: u64,
    pub caller: u64,
    pub id: u64,
    pub rx: Option<oneshot::Receiver<Release>>,
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
        let removed = lane.queue.remove_where(&self.caller, |w| w.id == id);
        if removed > 0 {
            st.queued = st.queued.saturating_sub(removed);
            return;
        }
        // Released just now, but nobody will send it: refund whichever budget paid.
        let Ok(release) = rx.try_recv() else { return };
        match release.paid_by {
            PaidBy::Process => {
                lane.budget.refund(now);
                if let Some(b) = st
                    .groups
                    .get_mut(&lane.group)
                    .and_then(|g| g.workspace.as_mut())
                {
                    b.refund(now);
                }
            }
            PaidBy::LocalShare => st.refund_local_share(self.lane, now),
            PaidBy::Redis(slot) => {
                if let Some(s) = &self.inner.redis {
                    let keys = st.remote_keys(self.lane);
                    let s = s.clone();
                    tokio::spawn(async move {
                        let _ = s.refund(&keys, &[slot]).await;
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;
    use tokio::time::Instant;

    use super::WaitGuard;
    use crate::config::{Config, SharedBudgets};
    use crate::shaper::redis::RedisBudgets;
    use crate::shaper::state::{self, GroupId, PaidBy, Release, Waiter};
    use crate::shaper::Shaper;

    /// While Redis is unreachable the local share pays for a release; a waiter dropped right
    /// after its release gives the slot back to the local share, not to Redis.
    #[tokio::test(start_paused = true)]
    async fn a_dropped_release_paid_by_the_local_share_refunds_the_local_share() {
        let mut limits = Config::default().limits;
        limits.smoothing = Some(crate::config::Smoothing {
            rate: 1.0,
            burst: 1,
        });
        let redis = RedisBudgets::new(SharedBudgets {
            // Nothing listens there: the replica works on its local share.
            redis_url: "redis://127.0.0.1:1".into(),
            timeout: Duration::from_millis(50),
            local_share: 1.0,
            prefix: "test".into(),
        })
        .unwrap();
        let shaper = Shaper::with_redis(limits, Some(redis.clone()));
        let inner = &shaper.inner;
        let now = Instant::now();
        let (lane_key, rx) = {
            let mut st = inner.lock();
            let st = &mut *st;
            let lane = state::new_lane(
                &inner.limits,
                &[],
                Some(&redis),
                b"tok",
                7,
                &mut st.groups,
                now,
            );
            st.lanes.insert(7, lane);
            st.queued += 1;
            let (tx, rx) = oneshot::channel();
            let lane = st.lanes.get_mut(&7).unwrap();
            lane.queue.push(
                &1,
                1,
                Waiter { id: 1, tx },
                crate::shaper::Priority::Normal,
                false,
            );
            // What the Redis dispatcher does for a degraded replica: the local share admits,
            // the slot goes to the waiter.
            let remote = lane.remote.as_mut().unwrap();
            remote.fallback.admit(now, true).unwrap();
            let (_, w) = lane.queue.pop(false).unwrap();
            w.tx.send(Release {
                at: now,
                paid_by: PaidBy::LocalShare,
            })
            .unwrap();
            assert!(st.groups.contains_key(&GroupId::Solo(7)));
            (7, rx)
        };
        let spent = inner
            .lock()
            .lanes
            .get(&lane_key)
            .unwrap()
            .remote
            .as_ref()
            .unwrap()
            .fallback
            .ready_at(now);
        assert_eq!(spent, now + Duration::from_secs(1), "the local share paid");
        drop(WaitGuard {
            inner,
            lane: lane_key,
            caller: 1,
            id: 1,
            rx: Some(rx),
        });
        let after = inner
            .lock()
            .lanes
            .get(&lane_key)
            .unwrap()
            .remote
            .as_ref()
            .unwrap()
            .fallback
            .ready_at(now);
        assert_eq!(after, now, "the slot went back to the local share");
    }
}
