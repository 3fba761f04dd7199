//! [`SharedCap`]: one limit on the instances of every tenant pool of a registration (a database's
//! `max_connections`), shared fairly between the tenants.
//!
//! Each pool still has its own `max_size`; the cap bounds their sum. A pool takes a place from
//! the cap for every instance it creates and gives it back when the instance's life ends.
//!
//! Fair sharing: when a pool with waiters finds the cap full, it joins a FIFO queue of starving
//! pools. A place given back goes to the first pool in that queue, not to whoever asks next, so
//! a busy tenant cannot starve a quiet one. To free places, the pools above their fair share
//! (`limit / pools holding or wanting instances`) shed idle instances at once, and destroy
//! instances coming back from use instead of keeping them, while any pool starves.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::Pool;
use crate::resource::Resource;

/// The cap shared by the pools of one registration.
pub(crate) struct SharedCap<R: Resource> {
    limit: usize,
    places: Mutex<Places<R>>,
    /// Some pool is in the starving queue: releases above the fair share are destroyed.
    contended: AtomicBool,
    /// `limit` divided by the pools holding or wanting instances (rounded up), as of the last
    /// [`reclaim`](Self::reclaim).
    fair_share: AtomicUsize,
    /// Places asked for by waiters that found the cap full since the last
    /// [`reclaim`](Self::reclaim): how many idle instances it may shed. Reclaiming only on demand
    /// keeps its scan of the members from running on every create and destroy.
    wanted: AtomicUsize,
}

struct Places<R: Resource> {
    /// Places taken: instances alive or being created in any member pool, plus places handed
    /// to a starving pool and not yet used.
    used: usize,
    /// Pools with waiters that found the cap full, in the order they asked.
    starving: VecDeque<Weak<Pool<R>>>,
    /// Every pool sharing the cap (evicted ones drop out when they are gone).
    members: Vec<Weak<Pool<R>>>,
}

/// A pool's link to the cap it shares.
pub(crate) struct Member<R: Resource> {
    pub(crate) cap: Arc<SharedCap<R>>,
    /// The pool itself, to queue it as starving.
    pub(crate) me: Weak<Pool<R>>,
}

impl<R: Resource> SharedCap<R> {
    /// A cap of `limit` instances (at least 1).
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            limit,
            places: Mutex::new(Places {
                used: 0,
                starving: VecDeque::new(),
                members: Vec::new(),
            }),
            contended: AtomicBool::new(false),
            fair_share: AtomicUsize::new(limit),
            wanted: AtomicUsize::new(0),
        }
    }

    /// The limit.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Add a new pool to the members.
    pub(crate) fn join(&self, pool: &Arc<Pool<R>>) {
        let mut places = self.places.lock();
        places.members.retain(|m| m.strong_count() > 0);
        places.members.push(Arc::downgrade(pool));
    }

    /// Whether a pool of `size` instances, with or without waiters of its own, should give
    /// back an instance coming back from use instead of keeping it: while another pool starves,
    /// an instance that would only sit idle, or one above the fair share, goes to that pool.
    pub(crate) fn should_give_back(&self, size: usize, has_waiters: bool) -> bool {
        self.contended.load(Ordering::Relaxed)
            && (!has_waiters || size > self.fair_share.load(Ordering::Relaxed))
    }

    /// Take up to `wanted` places. When `queue` and the cap cannot cover `wanted`, the shortfall
    /// is counted as wanted and `starving` (the asking pool, if it is not queued already) joins
    /// the starving queue. Returns the places taken, and whether the pool was queued.
    pub(super) fn take(
        &self,
        wanted: usize,
        queue: bool,
        starving: Option<&Weak<Pool<R>>>,
    ) -> (usize, bool) {
        let mut places = self.places.lock();
        let taken = wanted.min(self.limit.saturating_sub(places.used));
        places.used += taken;
        let mut queued = false;
        if taken < wanted && queue {
            self.wanted.fetch_add(wanted - taken, Ordering::Relaxed);
            if let Some(pool) = starving {
                places.starving.push_back(pool.clone());
                self.contended.store(true, Ordering::Relaxed);
                queued = true;
            }
        }
        (taken, queued)
    }

    /// Give back `n` places. The first starving pool still alive gets them (it is returned, to
    /// be handed them with `Pool::accept_places` once the caller's lock is released); otherwise
    /// they are free again.
    #[must_use = "a returned pool must be granted the places"]
    pub(super) fn give_back(&self, n: usize) -> Option<Arc<Pool<R>>> {
        if n == 0 {
            return None;
        }
        let mut places = self.places.lock();
        while let Some(first) = places.starving.pop_front() {
            if let Some(pool) = first.upgrade() {
                if places.starving.is_empty() {
                    self.uncontended();
                }
                return Some(pool);
            }
        }
        self.uncontended();
        places.used -= n;
        None
    }

    /// Nobody starves any more: stop giving instances back, and forget old demand.
    fn uncontended(&self) {
        self.contended.store(false, Ordering::Relaxed);
        self.wanted.store(0, Ordering::Relaxed);
    }

    /// While some pool starves: refresh the fair share, and have the biggest pools with idle
    /// instances shed one each for every place asked for since the last call (their places then
    /// go to the first starving pools). An idle instance means its pool has no waiter: it
    /// serves nobody while another tenant waits.
    pub(super) fn reclaim(&self) {
        if !self.contended.load(Ordering::Relaxed) {
            return;
        }
        let mut wanted = self.wanted.swap(0, Ordering::Relaxed);
        if wanted == 0 {
            return;
        }
        let members: Vec<Arc<Pool<R>>> = {
            let mut places = self.places.lock();
            places.members.retain(|m| m.strong_count() > 0);
            places.members.iter().filter_map(Weak::upgrade).collect()
        };
        let mut loads: Vec<(usize, usize, bool)> =
            members.iter().map(|pool| pool.cap_load()).collect();
        let active = loads
            .iter()
            .filter(|(size, _, starving)| *size > 0 || *starving)
            .count()
            .max(1);
        let fair = self.limit.div_ceil(active).max(1);
        self.fair_share.store(fair, Ordering::Relaxed);
        while wanted > 0 {
            let Some(i) = loads
                .iter()
                .enumerate()
                .filter(|(_, (_, idle, _))| *idle > 0)
                .max_by_key(|(_, (size, _, _))| *size)
                .map(|(i, _)| i)
            else {
                break;
            };
            members[i].shed_idle();
            loads[i].0 -= 1;
            loads[i].1 -= 1;
            wanted -= 1;
        }
    }
}
