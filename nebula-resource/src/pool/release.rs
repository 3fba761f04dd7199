//! Release: guards coming back, `recycle` (in place when it completes at once, else on the
//! release worker), the hand-off of a returned instance to the first waiter, and `destroy`.
//!
//! Every job sent to the release worker owns a [`Settle`] ticket made before the job exists, so
//! a job dropped unpolled (the worker's runtime shut down) still settles the instance's count.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use super::{Counted, Locked, Pool, Slot, State, grant};
use crate::error::Error;
use crate::events::Event;
use crate::hooks;
use crate::resilience::breaker::Outcome;
use crate::resource::{Resource, reset_default_recycle_mark, take_default_recycle_mark};

impl<R: Resource> Pool<R> {
    /// Return an instance from a guard. Never blocks.
    pub(crate) fn release(
        self: Arc<Self>,
        mut slot: Slot<R>,
        acquired_at: Instant,
        leak_key: Option<usize>,
        tainted: bool,
    ) {
        // One clock read serves the hold time and the idle timestamps.
        let now = Instant::now();
        if let (Some(leaks), Some(key)) = (&self.leaks, leak_key) {
            let checkout = leaks.lock().remove(key);
            if checkout.reported {
                let held = now.saturating_duration_since(acquired_at);
                tracing::warn!(resource = R::KEY, held = ?held, "leaked guard returned");
            }
        }
        self.metrics.held(acquired_at, now);
        if tainted || self.is_broken(&slot.instance) {
            // The user (taint) or the resource (is_broken) says the instance failed in use.
            self.record(Outcome::Failure, Duration::ZERO);
            self.discard(slot);
            return;
        }
        if slot.expired(now) {
            self.discard(slot);
            return;
        }
        slot.idle_from(now);
        if self.default_recycle.load(Ordering::Relaxed) {
            self.put_back(slot);
            return;
        }
        // The ticket exists before the recycle future that owns it: dropped unpolled (the
        // worker's runtime is gone), the future drops the ticket, which settles the count.
        let ticket = Settle::new(Arc::clone(&self), Counted::InUse);
        let mut recycle = Box::pin(async move {
            let recycled = hooks::recycle(&*ticket.pool.life.resource, &mut slot.instance).await;
            (ticket, slot, recycled)
        });
        let mut cx = Context::from_waker(Waker::noop());
        reset_default_recycle_mark();
        let polled = recycle.as_mut().poll(&mut cx);
        if take_default_recycle_mark() {
            self.default_recycle.store(true, Ordering::Relaxed);
        }
        match polled {
            Poll::Ready((ticket, slot, recycled)) => ticket.recycled(slot, recycled),
            Poll::Pending => {
                let limit = self.life.settings.recycle_timeout;
                self.life.runtime.release(Box::pin(async move {
                    match tokio::time::timeout(limit, recycle).await {
                        Ok((ticket, slot, recycled)) => ticket.recycled(slot, recycled),
                        // The instance went down with the recycle future, and its ticket
                        // settled the count.
                        Err(_) => {
                            tracing::warn!(resource = R::KEY, timeout = ?limit, "recycle timed out; instance dropped");
                        }
                    }
                }));
            }
        }
    }

    /// An in-use instance goes back to the first waiter or to the idle store: a successful
    /// call for the breaker. One the pool must not keep (see [`return_checked`]), or returned
    /// while the pool is quarantined (suspect), is destroyed instead.
    ///
    /// [`return_checked`]: Self::return_checked
    #[inline]
    pub(super) fn put_back(self: &Arc<Self>, slot: Slot<R>) {
        let mut state = self.lock();
        state.breaker.record_success();
        let suspect = state.quarantine.is_some();
        self.keep(state, slot, suspect);
    }

    /// An instance that just passed a health check goes back: to the first waiter, or idle. One
    /// the pool must not keep (closed, an older generation, above `max_size` after a shrink, a
    /// place the shared cap wants back) is destroyed instead.
    pub(super) fn return_checked(self: &Arc<Self>, slot: Slot<R>) {
        let state = self.lock();
        self.keep(state, slot, false);
    }

    #[inline]
    fn keep(self: &Arc<Self>, mut state: Locked<'_, R>, slot: Slot<R>, suspect: bool) {
        state.in_use -= 1;
        if suspect || state.closed || self.unwanted(&state, &slot) {
            state.releasing += 1;
            drop(state);
            self.destroy(slot.instance);
            return;
        }
        let waker = state.hand_off(slot);
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether the pool must not keep `slot` (idle, or for a waiter): it is of an older
    /// generation, the pool is above `max_size` after a shrink, or the shared cap wants the
    /// place back.
    pub(super) fn unwanted(&self, state: &State<R>, slot: &Slot<R>) -> bool {
        slot.generation != self.life.generation()
            || state.staying() > state.max_size
            || self.shared.as_ref().is_some_and(|member| {
                member
                    .cap
                    .should_give_back(state.size, !state.waiters.is_empty())
            })
    }

    /// Take an in-use instance out of service and destroy it on the release worker.
    pub(super) fn discard(self: &Arc<Self>, slot: Slot<R>) {
        {
            let mut state = self.lock();
            state.in_use -= 1;
            state.releasing += 1;
        }
        self.destroy(slot.instance);
    }

    /// Destroy an instance already counted in `releasing`, on the release worker.
    pub(super) fn destroy(self: &Arc<Self>, instance: R::Instance) {
        let limit = self.life.settings.recycle_timeout;
        let ticket = Settle::new(Arc::clone(self), Counted::Releasing);
        self.life.runtime.release(Box::pin(async move {
            hooks::destroy(&*ticket.pool.life.resource, instance, limit).await;
            drop(ticket);
        }));
    }

    /// The instance left the pool for good (detached): free its place.
    pub(crate) fn forget(self: &Arc<Self>, leak_key: Option<usize>) {
        if let (Some(leaks), Some(key)) = (&self.leaks, leak_key) {
            leaks.lock().remove(key);
        }
        let (creates, freed) = {
            let mut state = self.lock();
            state.in_use -= 1;
            state.size -= 1;
            (self.plan_creates(&mut state, 0), self.free_place())
        };
        grant(freed);
        self.start_creates(creates);
        self.notify_if_drained();
    }
}

/// Settles the count of an instance whose life ends on the release worker: however the job
/// ends (done, timed out, panicked, dropped unpolled), `size` goes down exactly once. A recycle
/// that succeeds [hands the instance back](Settle::recycled) instead.
pub(super) struct Settle<R: Resource> {
    pub(super) pool: Arc<Pool<R>>,
    counted: Counted,
    armed: bool,
}

impl<R: Resource> Settle<R> {
    pub(super) fn new(pool: Arc<Pool<R>>, counted: Counted) -> Self {
        Self {
            pool,
            counted,
            armed: true,
        }
    }

    /// A recycle of the in-use instance in `slot` ended: back to the pool if it succeeded,
    /// destroyed if not.
    fn recycled(mut self, slot: Slot<R>, recycled: Result<(), Error>) {
        self.armed = false;
        match recycled {
            Ok(()) => self.pool.put_back(slot),
            Err(err) => {
                tracing::debug!(resource = R::KEY, error = %err, "recycle failed; instance discarded");
                self.pool.discard(slot);
            }
        }
    }
}

impl<R: Resource> Drop for Settle<R> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let pool = &self.pool;
        let (creates, freed) = {
            let mut state = pool.lock();
            match self.counted {
                Counted::InUse => state.in_use -= 1,
                Counted::Releasing => state.releasing -= 1,
            }
            state.size -= 1;
            state.destroyed += 1;
            (pool.plan_creates(&mut state, 0), pool.free_place())
        };
        grant(freed);
        pool.metrics.destroyed();
        pool.life
            .runtime
            .emit(Event::InstanceDestroyed(pool.life.source.clone()));
        pool.start_creates(creates);
        pool.notify_if_drained();
    }
}
