//! [`Retired`]: pools taken out of service (an evicted tenant, an ended scope) that still have
//! instances to destroy, and the lifetime counts of those already gone, so a registration's
//! `created`/`destroyed` totals keep counting its retired pools.

use std::sync::Arc;

use parking_lot::Mutex;

use super::{Pool, PoolStats};
use crate::resource::Resource;

/// Retired pools, each with a key (`K`: which tenant or scope it served).
pub(crate) struct Retired<R: Resource, K> {
    inner: Mutex<Inner<R, K>>,
}

struct Inner<R: Resource, K> {
    /// Closed pools with instances not yet destroyed.
    draining: Vec<(K, Arc<Pool<R>>)>,
    /// The final counts of the drained ones, summed.
    gone: PoolStats,
}

impl<R: Resource, K> Retired<R, K> {
    pub(crate) fn new() -> Self {
        Self {
            inner: Mutex::new(Inner {
                draining: Vec::new(),
                gone: PoolStats::default(),
            }),
        }
    }

    /// Keep closed `pools` until they are drained.
    pub(crate) fn add(&self, pools: impl IntoIterator<Item = (K, Arc<Pool<R>>)>) {
        let mut inner = self.inner.lock();
        inner.draining.extend(pools);
        inner.prune();
    }

    /// Forget the drained pools (their counts stay in the totals).
    pub(crate) fn prune(&self) {
        self.inner.lock().prune();
    }

    /// The pools still draining whose key satisfies `wanted`.
    pub(crate) fn draining(&self, wanted: impl Fn(&K) -> bool) -> Vec<Arc<Pool<R>>> {
        self.inner
            .lock()
            .draining
            .iter()
            .filter(|(key, _)| wanted(key))
            .map(|(_, pool)| Arc::clone(pool))
            .collect()
    }

    /// Add the counts of every retired pool, drained or not, to `total`.
    pub(crate) fn add_stats(&self, total: &mut PoolStats) {
        let (gone, draining) = {
            let inner = self.inner.lock();
            let draining: Vec<Arc<Pool<R>>> =
                inner.draining.iter().map(|(_, p)| Arc::clone(p)).collect();
            (inner.gone, draining)
        };
        total.add(&gone);
        for pool in draining {
            total.add(&pool.stats());
        }
    }
}

impl<R: Resource, K> Inner<R, K> {
    fn prune(&mut self) {
        let mut kept = Vec::with_capacity(self.draining.len());
        for (key, pool) in self.draining.drain(..) {
            let stats = pool.stats();
            if stats.size == 0 {
                self.gone.add(&stats);
            } else {
                kept.push((key, pool));
            }
        }
        self.draining = kept;
    }
}
