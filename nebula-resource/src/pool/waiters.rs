//! The FIFO queue of acquires waiting for an instance: each waiter's cell (its waker, or what it
//! was served) and the order they are served in.
//!
//! A waiter that gives up (cancelled, or timed out on its own timer) leaves a tombstone in its
//! cell instead of being searched for in the order: O(1) under the pool's lock, as tokio's
//! semaphore unlinks a cancelled waiter from its intrusive list. Tombstones are skipped (and
//! freed) when the front of the queue is served, and swept out whenever they outnumber the live
//! waiters, so the queue's memory stays proportional to the waiters that are left.

use std::collections::VecDeque;
use std::task::Waker;

use slab::Slab;
use tokio::time::Instant;

use super::Slot;
use crate::error::Error;
use crate::resource::Resource;

/// One waiter's cell.
pub(super) enum Waiter<R: Resource> {
    Waiting {
        waker: Option<Waker>,
        /// When this acquire first began to wait (kept across a bad hand-off).
        since: Instant,
        deadline: Instant,
    },
    Served(Result<Slot<R>, Error>),
    /// Gave up while still queued; its key is freed when the queue passes it.
    Gone,
}

/// What a waiter that gives up finds in its cell.
pub(super) enum Left<R: Resource> {
    /// Still waiting: nothing was handed to it.
    Waiting { since: Instant },
    /// Served after all (an instance to pass on, or an error nobody will read).
    Served(Result<Slot<R>, Error>),
}

pub(super) struct Waiters<R: Resource> {
    cells: Slab<Waiter<R>>,
    /// Keys in serving order: live waiters and tombstones.
    order: VecDeque<usize>,
    /// Live waiters in `order`.
    waiting: usize,
}

impl<R: Resource> Waiters<R> {
    pub(super) fn new() -> Self {
        Self {
            cells: Slab::new(),
            order: VecDeque::new(),
            waiting: 0,
        }
    }

    /// How many acquires wait.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.waiting
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.waiting == 0
    }

    /// Queue a waiter, at the back (or at the front, after a bad hand-off); returns its key.
    #[inline]
    pub(super) fn push(&mut self, since: Instant, deadline: Instant, front: bool) -> usize {
        let key = self.cells.insert(Waiter::Waiting {
            waker: None,
            since,
            deadline,
        });
        if front {
            self.order.push_front(key);
        } else {
            self.order.push_back(key);
        }
        self.waiting += 1;
        key
    }

    /// Serve the first live waiter with `served`; returns its waker to call once the lock is
    /// released, or gives `served` back when nobody waits.
    #[inline]
    pub(super) fn serve_first(
        &mut self,
        served: Result<Slot<R>, Error>,
    ) -> Result<Option<Waker>, Result<Slot<R>, Error>> {
        while let Some(key) = self.order.pop_front() {
            let cell = &mut self.cells[key];
            if let Waiter::Waiting { waker, .. } = cell {
                let waker = waker.take();
                *cell = Waiter::Served(served);
                self.waiting -= 1;
                return Ok(waker);
            }
            debug_assert!(
                matches!(cell, Waiter::Gone),
                "a served waiter is out of the queue"
            );
            self.cells.remove(key);
        }
        Err(served)
    }

    /// Register `waker` for waiter `key` if it still waits; otherwise take what it was served.
    #[inline]
    pub(super) fn poll(&mut self, key: usize, waker: &Waker) -> Result<Instant, Left<R>> {
        match &mut self.cells[key] {
            Waiter::Waiting {
                waker: registered,
                since,
                ..
            } => {
                match registered {
                    Some(registered) if registered.will_wake(waker) => {}
                    _ => *registered = Some(waker.clone()),
                }
                Ok(*since)
            }
            Waiter::Served(_) => match self.cells.remove(key) {
                Waiter::Served(served) => Err(Left::Served(served)),
                _ => unreachable!("matched Served above"),
            },
            Waiter::Gone => unreachable!("a waiter polled after it gave up"),
        }
    }

    /// Waiter `key` gives up: a tombstone if it is still queued (O(1)), else what it was
    /// served.
    #[inline]
    pub(super) fn leave(&mut self, key: usize) -> Left<R> {
        match std::mem::replace(&mut self.cells[key], Waiter::Gone) {
            Waiter::Waiting { since, .. } => {
                self.waiting -= 1;
                if self.order.len() > 2 * self.waiting + 16 {
                    self.sweep_tombstones();
                }
                Left::Waiting { since }
            }
            Waiter::Served(served) => {
                self.cells.remove(key);
                Left::Served(served)
            }
            Waiter::Gone => unreachable!("a waiter gave up twice"),
        }
    }

    /// Fail every waiter whose deadline is at or before `now` with the error `timed_out` makes
    /// of how long it waited; returns how many, their wakers, and the next deadline of those
    /// left.
    pub(super) fn expire(
        &mut self,
        now: Instant,
        mut timed_out: impl FnMut(std::time::Duration) -> Error,
    ) -> (usize, Vec<Waker>, Option<Instant>) {
        let mut wakers = Vec::new();
        let mut next: Option<Instant> = None;
        let mut expired = 0;
        for &key in &self.order {
            let cell = &mut self.cells[key];
            let Waiter::Waiting {
                deadline, since, ..
            } = cell
            else {
                continue;
            };
            if *deadline > now {
                next = Some(next.map_or(*deadline, |n| n.min(*deadline)));
                continue;
            }
            let err = timed_out(now.saturating_duration_since(*since));
            if let Waiter::Waiting { waker, .. } = std::mem::replace(cell, Waiter::Served(Err(err)))
            {
                wakers.extend(waker);
            }
            expired += 1;
        }
        if expired > 0 {
            self.waiting -= expired;
            self.sweep_tombstones();
        }
        (expired, wakers, next)
    }

    /// Take every live waiter's waker (they poll again and arm timers of their own).
    pub(super) fn take_wakers(&mut self) -> Vec<Waker> {
        let cells = &mut self.cells;
        self.order
            .iter()
            .filter_map(|&key| match &mut cells[key] {
                Waiter::Waiting { waker, .. } => waker.take(),
                _ => None,
            })
            .collect()
    }

    /// Drop from the order every key that no longer waits, freeing the tombstones' cells.
    fn sweep_tombstones(&mut self) {
        let cells = &mut self.cells;
        self.order.retain(|&key| match cells[key] {
            Waiter::Waiting { .. } => true,
            Waiter::Gone => {
                cells.remove(key);
                false
            }
            Waiter::Served(_) => false,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::time::Duration;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::context::CreateContext;
    use crate::resource::Config;

    #[derive(Clone)]
    struct NoConfig;
    impl Config for NoConfig {}

    struct Unit;
    impl Resource for Unit {
        type Config = NoConfig;
        type Instance = ();
        const KEY: &'static str = "unit";
        async fn create(&self, _: &NoConfig, _: &CreateContext) -> Result<(), Error> {
            Ok(())
        }
    }

    fn served(waiters: &mut Waiters<Unit>) -> bool {
        waiters.serve_first(Err(Error::create("x"))).is_ok()
    }

    /// Random pushes (back and front), cancellations, hand-offs and expiries against a model
    /// (the live keys in serving order): the queue serves exactly the model's order, counts its
    /// live waiters exactly, and never holds more than twice their number plus a constant.
    #[test]
    fn the_queue_matches_a_fifo_model_under_random_cancellations() {
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut waiters = Waiters::<Unit>::new();
            let mut model: VecDeque<(usize, Instant)> = VecDeque::new();
            let start = Instant::now();
            for step in 0..500u64 {
                let now = start + Duration::from_millis(step);
                match rng.random_range(0..10) {
                    0..=3 => {
                        let deadline = now + Duration::from_millis(rng.random_range(1..50));
                        let front = rng.random_bool(0.2);
                        let key = waiters.push(now, deadline, front);
                        if front {
                            model.push_front((key, deadline));
                        } else {
                            model.push_back((key, deadline));
                        }
                    }
                    4..=6 if !model.is_empty() => {
                        let (key, _) = model.remove(rng.random_range(0..model.len())).unwrap();
                        assert!(matches!(waiters.leave(key), Left::Waiting { .. }));
                    }
                    7 | 8 => {
                        let expected = model.pop_front();
                        let first = waiters
                            .order
                            .iter()
                            .copied()
                            .find(|&k| matches!(waiters.cells[k], Waiter::Waiting { .. }));
                        assert_eq!(first, expected.map(|(k, _)| k), "seed {seed} step {step}");
                        assert_eq!(served(&mut waiters), expected.is_some());
                        if let Some((key, _)) = expected {
                            assert!(matches!(waiters.leave(key), Left::Served(Err(_))));
                        }
                    }
                    _ => {
                        let (count, _, next) = waiters.expire(now, |_| Error::create("timeout"));
                        let before = model.len();
                        let mut gone = Vec::new();
                        model.retain(|&(key, deadline)| {
                            let keep = deadline > now;
                            if !keep {
                                gone.push(key);
                            }
                            keep
                        });
                        assert_eq!(count, before - model.len(), "seed {seed} step {step}");
                        assert_eq!(next, model.iter().map(|&(_, d)| d).min());
                        for key in gone {
                            assert!(matches!(waiters.leave(key), Left::Served(Err(_))));
                        }
                    }
                }
                assert_eq!(waiters.len(), model.len(), "seed {seed} step {step}");
                assert!(waiters.order.len() <= 2 * model.len() + 17);
            }
        }
    }

    /// Cancelling the waiters at the back of a long queue costs no scan: 100,000 of them leave
    /// a queue whose order never grows past twice the waiters left, plus a constant.
    #[test]
    fn mass_cancellation_keeps_the_queue_small() {
        let mut waiters = Waiters::<Unit>::new();
        let now = Instant::now();
        let keys: Vec<usize> = (0..100_000)
            .map(|_| waiters.push(now, now + Duration::from_secs(1), false))
            .collect();
        for &key in keys.iter().rev().skip(1) {
            waiters.leave(key);
            assert!(waiters.order.len() <= 2 * waiters.len() + 17);
        }
        assert_eq!(waiters.len(), 1);
        assert!(served(&mut waiters));
        assert!(waiters.is_empty());
    }
}
