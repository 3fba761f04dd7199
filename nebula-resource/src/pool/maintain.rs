//! Maintenance and the pool's size over its life: the background pass (idle timeout, lifetime,
//! `min_idle`, leaks, credentials near expiry), live resize, close and drain.

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Pool, PoolStats};
use crate::error::Error;
use crate::events::Event;
use crate::resource::Resource;

impl<R: Resource> Pool<R> {
    /// Background pass: retire expired and surplus idle instances, refill `min_idle`, report
    /// leaks, rotate credentials near expiry.
    pub(crate) fn maintain(self: &Arc<Self>) {
        let now = Instant::now();
        let mut retired = Vec::new();
        let creates = {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            let mut surplus = state.staying().saturating_sub(state.min_idle);
            let idle_timeout = self.life.settings.idle_timeout;
            let mut kept = VecDeque::with_capacity(state.idle.len());
            // Oldest first: the front of the idle store was returned earliest.
            while let Some(slot) = state.idle.pop_front() {
                let idle_too_long = idle_timeout
                    .is_some_and(|limit| now.saturating_duration_since(slot.idle_since) >= limit);
                if slot.expired(now) || (idle_too_long && surplus > 0) {
                    surplus = surplus.saturating_sub(1);
                    retired.push(slot);
                } else {
                    kept.push_back(slot);
                }
            }
            state.idle = kept;
            state.releasing += retired.len();
            // No warm-up while quarantined or while the breaker is not closed: recovery is the
            // health probes' job, one at a time.
            let missing = if state.quarantine.is_some() || !state.breaker.is_closed() {
                0
            } else {
                state
                    .min_idle
                    .saturating_sub(state.idle.len() + state.creating)
            };
            self.plan_creates(&mut state, missing)
        };
        for slot in retired {
            self.destroy(slot.instance);
        }
        self.start_creates(creates);
        self.report_leaks(now);
        self.refresh_if_expiring();
    }

    fn report_leaks(&self, now: Instant) {
        let (Some(leaks), Some(threshold)) = (&self.leaks, self.life.settings.leak_threshold)
        else {
            return;
        };
        let mut found = Vec::new();
        for (_, checkout) in leaks.lock().iter_mut() {
            let held = now.saturating_duration_since(checkout.since);
            if !checkout.reported && held >= threshold {
                checkout.reported = true;
                found.push(held);
            }
        }
        for held in found {
            tracing::warn!(resource = R::KEY, name = ?self.life.source.name, held = ?held, "guard held past leak_threshold; possible leak");
            self.life.runtime.emit(Event::LeakDetected {
                source: self.life.source.clone(),
                held,
            });
        }
    }

    /// Change `max_size` and `min_idle` live. Growing serves waiters at once; shrinking destroys
    /// surplus idle instances now, surplus in-use ones when their guards drop (no guard is
    /// taken away) and surplus new ones when their create ends. Maintenance refills a larger
    /// `min_idle`.
    ///
    /// # Errors
    ///
    /// [`ShuttingDown`](crate::ErrorKind::ShuttingDown) once the pool is closed.
    pub(crate) fn resize(self: &Arc<Self>, max_size: usize, min_idle: usize) -> Result<(), Error> {
        let (surplus, creates) = {
            let mut state = self.lock();
            if state.closed {
                return Err(self.error(Error::shutting_down()));
            }
            state.max_size = max_size;
            state.min_idle = min_idle;
            let mut surplus = Vec::new();
            while state.staying() > max_size {
                match state.idle.pop_front() {
                    Some(slot) => {
                        state.releasing += 1;
                        surplus.push(slot);
                    }
                    None => break,
                }
            }
            (surplus, self.plan_creates(&mut state, 0))
        };
        tracing::info!(resource = R::KEY, tenant = ?self.life.source.tenant, max_size, min_idle, retired = surplus.len(), "pool resized");
        for slot in surplus {
            self.destroy(slot.instance);
        }
        self.start_creates(creates);
        Ok(())
    }

    /// Stop serving: fail every waiter, destroy idle instances, stop creates between their
    /// attempts; in-use ones are destroyed when their guards drop.
    pub(crate) fn close(self: &Arc<Self>) {
        let mut wakers = Vec::new();
        let idle = {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            state.closed = true;
            while !state.waiters.is_empty() {
                if let Some(waker) = state.fail_first(self.error(Error::shutting_down())) {
                    wakers.push(waker);
                }
            }
            let idle: Vec<_> = state.idle.drain(..).collect();
            state.releasing += idle.len();
            idle
        };
        for waker in wakers {
            waker.wake();
        }
        self.sweep.notify_one();
        self.life.close();
        for slot in idle {
            self.destroy(slot.instance);
        }
        self.notify_if_drained();
    }

    /// Wait until every instance is destroyed, or `deadline`.
    pub(crate) async fn drained(&self, deadline: Instant) -> Result<(), PoolStats> {
        loop {
            let notified = self.drained.notified();
            let stats = self.stats();
            if stats.size == 0 {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(self.stats());
            }
        }
    }
}
