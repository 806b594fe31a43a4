//! Client connection slots: at most `server.max_connections` data-plane connections, the
//! oldest idle one closed to admit a new client, and a small reserve so health probes are
//! answered whatever the data plane does.
//!
//! Every accepted connection holds a [`Conn`]. It is *idle* while no request is in progress on
//! it: before its first request head has arrived (a client that connects and sends nothing, or
//! sends a head slowly) and between keep-alive requests. It is *busy* from the moment hyper
//! hands a request to the service until the response body has been handed back.
//!
//! * A new connection takes a free slot of the `max_connections`; at the limit the oldest idle
//!   connection is closed to make room (counted in `notion_gateway_connections_evicted_total`),
//!   so idle or slow-header clients can hold the gateway for nobody. Idle is ordered by when
//!   a connection last became idle (an LRU), kept in a `BTreeMap`, so choosing and updating
//!   cost O(log n) under a lock held for that long only: twice per request (start, response
//!   body handed over), once per connection open and close.
//! * When all `max_connections` are busy, a new connection is admitted to a reserve of
//!   [`RESERVE`] slots. A reserve connection is served like any other for the gateway's own
//!   endpoints (`/healthz`, `/readyz`, and `/status`, `/metrics` on the main listener); a
//!   proxied request on it takes a data-plane slot if one is free or idle, and is otherwise
//!   answered 503 `service_unavailable` with `Retry-After: 1` and `Connection: close`. The
//!   reserve evicts its own oldest idle connection the same way.
//! * When the reserve is full of busy connections too, the accept loop waits (new clients
//!   wait in the kernel's listen backlog) until a connection closes or becomes idle.
//!
//! A connection chosen for closing that has never received a request is dropped at once (it
//! has nothing to flush); one that has served requests is asked to close by hyper's graceful
//! shutdown (which closes an idle keep-alive connection after flushing) and dropped after
//! [`CLOSE_GRACE`] if it has not; one that became busy in the same instant finishes its request
//! first. The accounting frees its slot when it is chosen, so for that moment one more socket
//! than the limit may be open.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use std::time::Duration;

use tokio::sync::Notify;

/// Connections beyond `server.max_connections` kept for health probes and the gateway's own
/// endpoints when every data-plane connection is busy.
pub const RESERVE: usize = 16;

/// How long a connection chosen for closing that has served requests gets to flush and close
/// by itself before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pool {
    Data,
    Reserve,
}

impl Pool {
    fn label(self) -> &'static str {
        match self {
            Pool::Data => "data",
            Pool::Reserve => "reserve",
        }
    }
}

/// The slots of one listener.
pub struct Registry {
    inner: Mutex<Inner>,
    /// A connection closed or became idle: the accept loop may be able to admit again.
    changed: Notify,
    /// Whether the accept loop waits on `changed` (so the request path notifies only then).
    waiting: AtomicBool,
    max: usize,
    reserve: usize,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// Every open connection, to tell them all when draining.
    all: HashMap<u64, Arc<Slot>>,
    /// Orders idleness: a connection's key in the idle maps is the value of this when it last
    /// became idle.
    seq: u64,
    /// Counted connections per pool (connections chosen for closing no longer count).
    data: usize,
    reserve: usize,
    idle_data: BTreeMap<u64, Arc<Slot>>,
    idle_reserve: BTreeMap<u64, Arc<Slot>>,
}

/// One connection's state. Changed only under the registry's lock (atomics so that it can be
/// read without it).
struct Slot {
    id: u64,
    /// `true` once it moved from the reserve into the data plane (or started there).
    data: AtomicBool,
    /// Requests in progress (0 or 1 with HTTP/1; a counter so an overlap cannot underflow).
    busy: AtomicU32,
    /// Key in its pool's idle map while idle, 0 otherwise.
    idle_key: AtomicU64,
    served_any: AtomicBool,
    /// Chosen for closing to admit another: no longer counted.
    evicted: AtomicBool,
    /// Should close (evicted, or draining); wakes the connection's task. An atomic waker, not a
    /// `Notify`: the task polls it at every wake-up, and this costs no lock.
    close: AtomicBool,
    close_waker: AtomicWaker,
}

impl Slot {
    fn signal_close(&self) {
        self.close.store(true, SeqCst);
        self.close_waker.wake();
    }
}

impl Slot {
    fn pool(&self) -> Pool {
        if self.data.load(Relaxed) {
            Pool::Data
        } else {
            Pool::Reserve
        }
    }
}

impl Inner {
    fn idle_map(&mut self, pool: Pool) -> &mut BTreeMap<u64, Arc<Slot>> {
        match pool {
            Pool::Data => &mut self.idle_data,
            Pool::Reserve => &mut self.idle_reserve,
        }
    }

    fn count(&mut self, pool: Pool) -> &mut usize {
        match pool {
            Pool::Data => &mut self.data,
            Pool::Reserve => &mut self.reserve,
        }
    }

    fn mark_idle(&mut self, slot: &Arc<Slot>) {
        if slot.evicted.load(Relaxed) {
            return;
        }
        self.seq += 1;
        slot.idle_key.store(self.seq, Relaxed);
        let seq = self.seq;
        self.idle_map(slot.pool()).insert(seq, slot.clone());
    }

    fn unmark_idle(&mut self, slot: &Slot) {
        let k = slot.idle_key.swap(0, Relaxed);
        if k != 0 {
            self.idle_map(slot.pool()).remove(&k);
        }
    }

    /// Closes the oldest idle connection of `pool`, if there is one; its slot is free at once.
    fn evict_oldest(&mut self, pool: Pool) -> bool {
        let Some((_, victim)) = self.idle_map(pool).pop_first() else {
            return false;
        };
        victim.idle_key.store(0, Relaxed);
        victim.evicted.store(true, Relaxed);
        victim.signal_close();
        *self.count(pool) -= 1;
        crate::metrics::connection_evicted(pool.label());
        true
    }

    fn add(&mut self, pool: Pool) -> Arc<Slot> {
        self.next_id += 1;
        let slot = Arc::new(Slot {
            id: self.next_id,
            data: AtomicBool::new(pool == Pool::Data),
            busy: AtomicU32::new(0),
            idle_key: AtomicU64::new(0),
            served_any: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            close: AtomicBool::new(false),
            close_waker: AtomicWaker::new(),
        });
        self.all.insert(slot.id, slot.clone());
        *self.count(pool) += 1;
        self.mark_idle(&slot);
        slot
    }
}

impl Registry {
    pub fn new(max: usize, reserve: usize) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            changed: Notify::new(),
            waiting: AtomicBool::new(false),
            max,
            reserve,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding it; a poisoned lock still holds consistent counts.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the accept loop if it waits for a slot.
    fn changed(&self) {
        if self.waiting.load(SeqCst) {
            self.changed.notify_waiters();
        }
    }

    /// A slot for a connection just accepted, closing the oldest idle connection if that is what
    /// it takes; `None` when every slot, reserve included, is busy.
    pub fn admit(self: &Arc<Self>) -> Option<Conn> {
        let mut s = self.lock();
        let pool = if s.data < self.max || s.evict_oldest(Pool::Data) {
            Pool::Data
        } else if s.reserve < self.reserve || s.evict_oldest(Pool::Reserve) {
            Pool::Reserve
        } else {
            return None;
        };
        let slot = s.add(pool);
        Some(Conn {
            registry: self.clone(),
            slot,
        })
    }

    /// [`Registry::admit`], waiting until a connection closes or becomes idle if it must.
    pub async fn admit_wait(self: &Arc<Self>) -> Conn {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // Set before looking, so a change after the look notifies (the lock orders them).
            self.waiting.store(true, SeqCst);
            if let Some(c) = self.admit() {
                self.waiting.store(false, SeqCst);
                return c;
            }
            changed.await;
        }
    }

    /// Asks every open connection to close (draining): at once when idle, after its request
    /// otherwise.
    pub fn close_all(&self) {
        for slot in self.lock().all.values() {
            slot.signal_close();
        }
    }

    /// Connections counted now: (data plane, reserve).
    pub fn counts(&self) -> (usize, usize) {
        let s = self.lock();
        (s.data, s.reserve)
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

/// One accepted connection's slot; dropping it frees the slot.
pub struct Conn {
    registry: Arc<Registry>,
    slot: Arc<Slot>,
}

impl Conn {
    /// A request starts: the connection is busy until the returned guard drops (it travels
    /// with the response body).
    pub fn begin(self: &Arc<Self>) -> Busy {
        let mut s = self.registry.lock();
        s.unmark_idle(&self.slot);
        self.slot.busy.fetch_add(1, Relaxed);
        self.slot.served_any.store(true, Relaxed);
        drop(s);
        Busy(Some(self.clone()))
    }

    /// Whether a proxied request may run on this connection: always on a data-plane
    /// connection; on a reserve one only if it can move into the data plane now (a free slot,
    /// or the oldest idle data-plane connection closed for it).
    pub fn may_proxy(&self) -> bool {
        // Only ever changes from reserve to data, under the lock.
        if self.slot.data.load(Relaxed) {
            return true;
        }
        let mut s = self.registry.lock();
        // A connection chosen for closing in the same instant serves this request and closes.
        if self.slot.data.load(Relaxed) || self.slot.evicted.load(Relaxed) {
            return true;
        }
        if !(s.data < self.registry.max || s.evict_oldest(Pool::Data)) {
            return false;
        }
        // Busy (this request), so in no idle map: only the counts move.
        s.reserve -= 1;
        s.data += 1;
        self.slot.data.store(true, Relaxed);
        true
    }

    /// Whether a request is in progress.
    pub fn is_busy(&self) -> bool {
        self.slot.busy.load(Relaxed) > 0
    }

    /// Whether the connection ever received a request (so it may have bytes to flush).
    pub fn served_any(&self) -> bool {
        self.slot.served_any.load(Relaxed)
    }

    /// Resolves when the connection should close: chosen to admit another, or draining.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.slot.close.load(SeqCst) {
                return Poll::Ready(());
            }
            self.slot.close_waker.register(cx.waker());
            if self.slot.close.load(SeqCst) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut s = self.registry.lock();
        s.unmark_idle(&self.slot);
        s.all.remove(&self.slot.id);
        if !self.slot.evicted.load(Relaxed) {
            *s.count(self.slot.pool()) -= 1;
        }
        drop(s);
        self.registry.changed();
    }
}

/// A request in progress on a connection; idle again when this drops.
pub struct Busy(Option<Arc<Conn>>);

impl Drop for Busy {
    fn drop(&mut self) {
        let Some(conn) = self.0.take() else {
            return;
        };
        let mut s = conn.registry.lock();
        let now_idle = conn.slot.busy.fetch_sub(1, Relaxed) == 1;
        if now_idle {
            s.mark_idle(&conn.slot);
        }
        drop(s);
        if now_idle {
            conn.registry.changed();
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its connection busy until hyper is done with it.
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        busy: Busy,
    }
}

impl<B> Tracked<B> {
    pub fn new(inner: B, busy: Busy) -> Self {
        Self { inner, busy }
    }
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_oldest_idle_connection_makes_room() {
        let r = Registry::new(2, 1);
        let a = Arc::new(r.admit().unwrap());
        let b = Arc::new(r.admit().unwrap());
        // `a` serves a request and becomes idle again after `b` (which never sent one).
        drop(a.begin());
        assert_eq!(r.counts(), (2, 0));
        let c = r.admit().unwrap();
        assert_eq!(r.counts(), (2, 0), "b was closed for c");
        // b was chosen: its notification is waiting.
        tokio::time::timeout(Duration::from_millis(10), b.closing())
            .await
            .expect("b evicted");
        assert!(
            tokio::time::timeout(Duration::from_millis(10), a.closing())
                .await
                .is_err(),
            "a stays"
        );
        drop(b);
        assert_eq!(
            r.counts(),
            (2, 0),
            "an evicted connection is not counted twice"
        );
        drop(c);
        assert_eq!(r.counts(), (1, 0));
    }

    #[tokio::test]
    async fn busy_connections_are_never_chosen_and_the_reserve_takes_over() {
        let r = Registry::new(1, 1);
        let a = Arc::new(r.admit().unwrap());
        let busy = a.begin();
        let probe = Arc::new(r.admit().unwrap());
        assert_eq!(r.counts(), (1, 1));
        assert!(!probe.may_proxy(), "no data slot while a is busy");
        // Reserve full of an idle connection: the next one replaces it.
        let probe2 = Arc::new(r.admit().unwrap());
        tokio::time::timeout(Duration::from_millis(10), probe.closing())
            .await
            .expect("idle reserve connection evicted");
        // Reserve full of a busy connection: nothing is admitted until something changes.
        let _probing = probe2.begin();
        assert!(r.admit().is_none());
        let waiting = tokio::spawn({
            let r = r.clone();
            async move { r.admit_wait().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(busy);
        let c = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("admitted once a became idle")
            .unwrap();
        tokio::time::timeout(Duration::from_millis(10), a.closing())
            .await
            .expect("a evicted for c");
        drop(c);
    }

    #[tokio::test]
    async fn a_reserve_connection_moves_into_a_free_data_slot() {
        let r = Registry::new(1, 1);
        let a = Arc::new(r.admit().unwrap());
        let busy = a.begin();
        let b = Arc::new(r.admit().unwrap());
        assert_eq!(r.counts(), (1, 1));
        drop(busy);
        // a is idle now: b's proxied request closes it and takes its slot.
        let _req = b.begin();
        assert!(b.may_proxy());
        assert_eq!(r.counts(), (1, 0));
        drop(a);
        assert_eq!(r.counts(), (1, 0));
        drop(_req);
        drop(b);
        assert_eq!(r.counts(), (0, 0));
    }
}
