//! The requests waiting for one key, served fairly between the callers that share it.
//!
//! Within a caller, arrival order is kept (FIFO). Across callers, weighted round robin: the
//! caller at the head of the rotation gets up to `weight` releases in a row, then goes to the
//! back. So a job that floods a token with 500 requests and an interactive caller that sends one
//! alternate. The interactive request waits for about one release, not for the whole backlog.
//!
//! A pure data structure: no clock, no locks, no I/O. The shaper owns one per key, decides
//! *when* to release with the key's budget (`limiter::Gcra`), and asks this queue *what* to
//! release.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

/// Waiting items of type `T`, grouped by caller `C`.
#[derive(Debug)]
pub struct FairQueue<C, T> {
    callers: HashMap<C, Caller<T>>,
    /// Callers with waiting items, in rotation order; the front one is served next.
    rotation: VecDeque<C>,
    len: usize,
}

#[derive(Debug)]
struct Caller<T> {
    items: VecDeque<T>,
    weight: u32,
    /// Releases left in the current turn at the head of the rotation.
    turn_left: u32,
}

impl<C: Clone + Eq + Hash, T> Default for FairQueue<C, T> {
    fn default() -> Self {
        Self {
            callers: HashMap::new(),
            rotation: VecDeque::new(),
            len: 0,
        }
    }
}

impl<C: Clone + Eq + Hash, T> FairQueue<C, T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Items waiting, all callers together.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `item` at the back of `caller`'s line. `weight` (at least 1) is the caller's share.
    pub fn push_back(&mut self, caller: &C, weight: u32, item: T) {
        self.entry(caller, weight).items.push_back(item);
        self.len += 1;
    }

    /// Puts `item` back at the very front: the next [`pop`](Self::pop) returns it. For a
    /// request that was released and must go again (Notion answered 429: not processed).
    pub fn push_front(&mut self, caller: &C, weight: u32, item: T) {
        let c = self.entry(caller, weight);
        c.items.push_front(item);
        c.turn_left = c.turn_left.max(1);
        self.len += 1;
        if let Some(pos) = self.rotation.iter().position(|x| x == caller) {
            self.rotation.remove(pos);
        }
        self.rotation.push_front(caller.clone());
    }

    /// The next item to release, and its caller.
    pub fn pop(&mut self) -> Option<(C, T)> {
        let caller = self.rotation.front()?.clone();
        let c = self.callers.get_mut(&caller)?;
        let item = c.items.pop_front()?;
        self.len -= 1;
        c.turn_left = c.turn_left.saturating_sub(1);
        if c.items.is_empty() {
            self.callers.remove(&caller);
            self.rotation.pop_front();
        } else if c.turn_left == 0 {
            c.turn_left = c.weight;
            self.rotation.rotate_left(1);
        }
        Some((caller, item))
    }

    /// Removes the items of `caller` that match `pred` (a caller that went away), in order,
    /// handing each to `taken`. Returns how many were removed.
    pub fn remove_where(
        &mut self,
        caller: &C,
        mut pred: impl FnMut(&T) -> bool,
        mut taken: impl FnMut(T),
    ) -> usize {
        let Some(c) = self.callers.get_mut(caller) else {
            return 0;
        };
        let before = c.items.len();
        let mut kept = VecDeque::with_capacity(c.items.len());
        for t in c.items.drain(..) {
            if pred(&t) {
                taken(t);
            } else {
                kept.push_back(t);
            }
        }
        c.items = kept;
        let removed = before - c.items.len();
        self.len -= removed;
        if c.items.is_empty() {
            self.callers.remove(caller);
            self.rotation.retain(|x| x != caller);
        }
        removed
    }

    /// How many items would be released before a new item that `caller` (with `weight`) pushes
    /// now, if nothing else arrived. This is what `max_wait` predictions multiply by the key's
    /// interval.
    pub fn ahead_of_new(&self, caller: &C, weight: u32) -> usize {
        let weight = weight.max(1) as usize;
        let own = self.callers.get(caller).map_or(0, |c| c.items.len());
        // The new item is the caller's (own + 1)-th; it needs this many turns of the rotation.
        let turns = (own + 1).div_ceil(weight);
        let others: usize = self
            .callers
            .iter()
            .filter(|(c, _)| *c != caller)
            .map(|(_, q)| q.items.len().min(turns * q.weight.max(1) as usize))
            .sum();
        own + others
    }

    fn entry(&mut self, caller: &C, weight: u32) -> &mut Caller<T> {
        let weight = weight.max(1);
        if !self.callers.contains_key(caller) {
            self.rotation.push_back(caller.clone());
        }
        self.callers.entry(caller.clone()).or_insert(Caller {
            items: VecDeque::new(),
            weight,
            turn_left: weight,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(q: &mut FairQueue<&'static str, u32>) -> Vec<(&'static str, u32)> {
        std::iter::from_fn(|| q.pop()).collect()
    }

    #[test]
    fn one_caller_is_fifo() {
        let mut q = FairQueue::new();
        for i in 0..5 {
            q.push_back(&"job", 1, i);
        }
        assert_eq!(
            drain(&mut q).iter().map(|x| x.1).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn an_interactive_caller_does_not_wait_behind_a_flood() {
        let mut q = FairQueue::new();
        for i in 0..500 {
            q.push_back(&"sync-job", 1, i);
        }
        q.pop(); // the flood is already being served
        assert_eq!(
            q.ahead_of_new(&"interactive", 1),
            1,
            "one flood request, then its turn"
        );
        q.push_back(&"interactive", 1, 1000);
        let order: Vec<_> = drain(&mut q).into_iter().take(3).collect();
        assert_eq!(
            order,
            [("sync-job", 1), ("interactive", 1000), ("sync-job", 2)]
        );
    }

    #[test]
    fn weights_give_proportional_shares_and_order_within_each_caller() {
        let mut q = FairQueue::new();
        for i in 0..6 {
            q.push_back(&"heavy", 3, i);
            q.push_back(&"light", 1, 100 + i);
        }
        let order = drain(&mut q);
        let names: Vec<_> = order.iter().map(|x| x.0).take(8).collect();
        assert_eq!(
            names,
            ["heavy", "heavy", "heavy", "light", "heavy", "heavy", "heavy", "light"]
        );
        for who in ["heavy", "light"] {
            let mine: Vec<_> = order.iter().filter(|x| x.0 == who).map(|x| x.1).collect();
            let mut sorted = mine.clone();
            sorted.sort();
            assert_eq!(mine, sorted, "{who} kept its arrival order");
        }
    }

    #[test]
    fn push_front_is_served_next() {
        let mut q = FairQueue::new();
        q.push_back(&"a", 1, 1);
        q.push_back(&"b", 1, 2);
        let (c, item) = q.pop().unwrap();
        q.push_front(&c, 1, item); // Notion said 429: same request, first in line
        assert_eq!(q.pop(), Some(("a", 1)));
        assert_eq!(q.pop(), Some(("b", 2)));
    }

    #[test]
    fn removed_items_leave_at_once() {
        let mut q = FairQueue::new();
        q.push_back(&"a", 1, 1);
        q.push_back(&"a", 1, 2);
        q.push_back(&"b", 1, 3);
        assert_eq!(q.remove_where(&"a", |x| *x == 1, drop), 1);
        assert_eq!(q.len(), 2);
        let mut taken = Vec::new();
        assert_eq!(q.remove_where(&"a", |_| true, |x| taken.push(x)), 1);
        assert_eq!(taken, [2]);
        assert_eq!(drain(&mut q), [("b", 3)]);
        assert_eq!(q.remove_where(&"nobody", |_| true, drop), 0);
    }

    /// `ahead_of_new` is exact when nothing else arrives: push the item, drain, and count.
    #[test]
    fn prediction_matches_the_actual_release_order() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let names = ["a", "b", "c", "d"];
        for _ in 0..500 {
            let mut q: FairQueue<&str, u32> = FairQueue::new();
            let weights: Vec<u32> = names.iter().map(|_| 1 + next(3) as u32).collect();
            for i in 0..next(40) {
                let k = next(4) as usize;
                q.push_back(&names[k], weights[k], i as u32);
            }
            let k = next(4) as usize;
            let predicted = q.ahead_of_new(&names[k], weights[k]);
            // Only exact from a fresh turn: a caller in the middle of its turn gets less.
            q.push_back(&names[k], weights[k], u32::MAX);
            let position = drain(&mut q).iter().position(|x| x.1 == u32::MAX).unwrap();
            assert!(
                position <= predicted,
                "released after {position} others, predicted {predicted}"
            );
        }
    }
}
