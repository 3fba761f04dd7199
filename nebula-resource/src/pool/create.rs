//! Creation: places reserved in `size` for creates (for waiters, `min_idle`, warm-up, probes),
//! the shared cap's places behind them, the create tasks, and delivery of what they made.

use std::cell::Cell;
use std::sync::Arc;

use tokio::time::Instant;

use super::{Pool, Slot, State, grant, jittered};
use crate::error::{Error, ErrorKind};
use crate::events::Event;
use crate::resource::Resource;

impl<R: Resource> Pool<R> {
    /// How many creates to start now: one per waiter not yet covered, plus `for_idle`, within
    /// `max_size` and `max_concurrent_creates`. Reserves their places in `size`.
    pub(super) fn plan_creates(&self, state: &mut State<R>, for_idle: usize) -> usize {
        if state.closed {
            return 0;
        }
        let wanted = (state.waiters.len() + for_idle).saturating_sub(state.creating);
        // Instances still being destroyed count: alive never exceeds `max_size`.
        let room = state.max_size.saturating_sub(state.size);
        let slots = self
            .life
            .settings
            .max_concurrent_creates
            .saturating_sub(state.creating);
        let mut n = wanted.min(room).min(slots);
        if n > 0 {
            // Only waiters queue the pool for the shared cap's places, not a `min_idle` refill.
            let for_waiters = state.waiters.len() > state.creating;
            n = self.reserve(state, n, for_waiters);
        }
        state.size += n;
        state.creating += n;
        n
    }

    /// Take `wanted` places: the ones the shared cap granted this pool first, then free places
    /// of the cap (all of them when there is none). With `queue`, a shortfall queues the pool
    /// for the next places freed (see [`SharedCap::take`](super::cap::SharedCap::take)).
    pub(super) fn reserve(&self, state: &mut State<R>, wanted: usize, queue: bool) -> usize {
        let Some(member) = &self.shared else {
            return wanted;
        };
        let from_grants = state.granted.min(wanted);
        state.granted -= from_grants;
        let rest = wanted - from_grants;
        if rest == 0 {
            return wanted;
        }
        let enqueue = (!state.starving).then_some(&member.me);
        let (taken, queued) = member.cap.take(rest, queue, enqueue);
        state.starving |= queued;
        from_grants + taken
    }

    /// What the shared cap weighs when it reclaims places: this pool's size, idle instances,
    /// and whether it starves.
    pub(super) fn cap_load(&self) -> (usize, usize, bool) {
        let state = self.lock();
        (state.size, state.idle.len(), state.starving)
    }

    /// One instance's place is free (its `size` already decremented under the lock): give it
    /// back to the shared cap. Returns the starving pool to [`grant`] it to once the lock is
    /// released.
    pub(super) fn free_place(&self) -> Option<Arc<Pool<R>>> {
        self.shared
            .as_ref()
            .and_then(|member| member.cap.give_back(1))
    }

    /// Places of the shared cap handed to this pool: start the creates its waiters need, and
    /// pass on what it does not use.
    pub(super) fn accept_places(self: Arc<Self>, n: usize) {
        let (creates, spare) = {
            let mut state = self.lock();
            state.starving = false;
            state.granted += n;
            let creates = self.plan_creates(&mut state, 0);
            let spare = std::mem::take(&mut state.granted);
            let next = match &self.shared {
                Some(member) if spare > 0 => member.cap.give_back(spare),
                _ => None,
            };
            (creates, next.map(|pool| (pool, spare)))
        };
        self.start_creates(creates);
        if let Some((next, spare)) = spare {
            next.accept_places(spare);
        }
    }

    /// Destroy the oldest idle instance, if any (the shared cap reclaims its place for a
    /// starving pool).
    pub(super) fn shed_idle(self: &Arc<Self>) {
        let slot = {
            let mut state = self.lock();
            if state.closed {
                return;
            }
            let Some(slot) = state.idle.pop_front() else {
                return;
            };
            state.releasing += 1;
            slot
        };
        self.destroy(slot.instance);
    }

    /// Start `n` creates for places [`plan_creates`](Self::plan_creates) reserved. Each task
    /// gets its [`Reservation`] before it is spawned, so a task dropped unpolled gives its place
    /// back.
    pub(super) fn start_creates(self: &Arc<Self>, n: usize) {
        for _ in 0..n {
            let reservation = Reservation {
                pool: Arc::clone(self),
                armed: true,
            };
            self.life.runtime.spawn(reservation.create_one());
        }
        if let Some(member) = &self.shared {
            member.cap.reclaim();
        }
    }

    /// Run `Resource::create` (with the retry policy) for a place already reserved in `size`.
    /// Gives up when the pool closes, even between two attempts.
    async fn run_create(self: &Arc<Self>) -> Result<(R::Instance, u32), Error> {
        let started = Instant::now();
        let created = self
            .life
            .create(|outcome, took| self.record(outcome, took))
            .await;
        if created.is_ok() {
            self.metrics.created(started.elapsed());
        }
        created
    }

    /// Put a new instance in the place reserved for it: to the first waiter, or idle. An
    /// instance nobody waits for and the pool must not keep (an older generation, above
    /// `max_size` after a shrink, a place the shared cap wants back, a closed pool) is destroyed.
    pub(super) fn deliver_new(self: &Arc<Self>, instance: R::Instance, generation: u32) {
        let now = Instant::now();
        let slot = Slot {
            instance,
            generation,
            expires_at: self
                .life
                .settings
                .max_lifetime
                .map(|lifetime| now + jittered(lifetime)),
            idle_since: now,
            validated: 0,
        };
        let mut state = self.lock();
        state.creating -= 1;
        state.created += 1;
        // Created with an older config or credentials: serve a waiter with it (it works, and is
        // destroyed when it comes back), but never keep it idle.
        let unwanted = state.waiters.is_empty() && self.unwanted(&state, &slot);
        if state.closed || unwanted {
            state.releasing += 1;
            let creates = self.plan_creates(&mut state, 0);
            drop(state);
            self.destroy(slot.instance);
            self.start_creates(creates);
            return;
        }
        let waker = state.hand_off(slot);
        let creates = self.plan_creates(&mut state, 0);
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        self.start_creates(creates);
        self.life
            .runtime
            .emit(Event::InstanceCreated(self.life.source.clone()));
    }

    /// Record a failed create and give the error to the first waiter; returns it when nobody
    /// was waiting.
    /// A create stopped by the pool closing is no failure: it is neither counted nor reported.
    fn create_failed(self: &Arc<Self>, err: Error) -> Option<Error> {
        let failed = err.kind() != ErrorKind::ShuttingDown;
        let message = err.to_string();
        if failed {
            tracing::warn!(resource = R::KEY, error = %err, "instance creation failed");
            self.life.runtime.emit(Event::CreateFailed {
                source: self.life.source.clone(),
                error: message.clone(),
            });
        }
        let mut state = self.lock();
        state.creating -= 1;
        state.size -= 1;
        if failed {
            state.create_errors += 1;
            state.last_create_error = Some(message);
        }
        let (waker, unclaimed) = if state.waiters.is_empty() {
            (None, Some(err))
        } else {
            (state.fail_first(err), None)
        };
        let freed = self.free_place();
        let creates = self.plan_creates(&mut state, 0);
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        grant(freed);
        self.start_creates(creates);
        self.notify_if_drained();
        unclaimed
    }

    /// Create `min_idle` instances one after another and wait for them, during `build()`.
    pub(crate) async fn warm_up(self: &Arc<Self>) -> Result<(), Error> {
        let min_idle = self.lock().min_idle;
        for _ in 0..min_idle {
            let reservation = {
                let mut state = self.lock();
                state.size += 1;
                state.creating += 1;
                Reservation {
                    pool: Arc::clone(self),
                    armed: true,
                }
            };
            match self.run_create().await {
                Ok((instance, generation)) => reservation.deliver(instance, generation),
                Err(err) => {
                    let last = err.to_string();
                    return Err(reservation
                        .fail(err)
                        .unwrap_or_else(|| self.error(Error::create(last))));
                }
            }
        }
        Ok(())
    }

    /// Reserve one place for a health probe's create, if there is room: the ticket that gives
    /// it back, or `None`.
    pub(super) fn reserve_probe(self: &Arc<Self>) -> Option<Reservation<R>> {
        let mut state = self.lock();
        if state.closed || state.size >= state.max_size || self.reserve(&mut state, 1, false) == 0 {
            return None;
        }
        state.size += 1;
        state.creating += 1;
        Some(Reservation {
            pool: Arc::clone(self),
            armed: true,
        })
    }
}

thread_local! {
    /// Set while a dropped [`Reservation`] starts the creates that replace it: a replacement
    /// dropped at once (its runtime is gone) must not start another, without end.
    static REPLANNING: Cell<bool> = const { Cell::new(false) };
}

/// A place reserved in `size` and `creating` for an instance being created, made before the task
/// that creates it is spawned. Delivered or failed, it is settled by the pool; dropped armed (the
/// task was dropped, even unpolled, by a dying runtime, or a build or health round was
/// cancelled) it gives the place back and starts a replacement create for the waiters, or, when
/// even that is dropped at once, fails the waiter it was for.
pub(super) struct Reservation<R: Resource> {
    pub(super) pool: Arc<Pool<R>>,
    armed: bool,
}

impl<R: Resource> Reservation<R> {
    /// The body of a create task.
    async fn create_one(self) {
        let pool = Arc::clone(&self.pool);
        match pool.run_create().await {
            Ok((instance, generation)) => self.deliver(instance, generation),
            Err(err) => drop(self.fail(err)),
        }
    }

    /// Put the instance made for this place in it.
    pub(super) fn deliver(mut self, instance: R::Instance, generation: u32) {
        self.armed = false;
        self.pool.deliver_new(instance, generation);
    }

    /// The create failed: free the place and tell the first waiter (the error comes back when
    /// nobody waits).
    pub(super) fn fail(mut self, err: Error) -> Option<Error> {
        self.armed = false;
        self.pool.create_failed(err)
    }

    /// The place holds an instance that is being destroyed (a failed probe): it moves from
    /// `creating` to `releasing`.
    pub(super) fn into_releasing(mut self) {
        self.armed = false;
        let mut state = self.pool.lock();
        state.creating -= 1;
        state.releasing += 1;
    }
}

impl<R: Resource> Drop for Reservation<R> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let nested = REPLANNING.with(|replanning| replanning.replace(true));
        let (creates, waker, freed) = {
            let mut state = self.pool.lock();
            state.creating -= 1;
            state.size -= 1;
            let freed = self.pool.free_place();
            if nested {
                // The replacement was dropped too: no create task can run. Fail the waiter
                // this place was for, rather than leave it waiting for nothing.
                let waker = if state.waiters.len() > state.creating {
                    state.fail_first(self.pool.error(Error::other(
                        ErrorKind::ShuttingDown,
                        "the create task was dropped before it finished: the manager's runtime is shutting down",
                    )))
                } else {
                    None
                };
                (0, waker, freed)
            } else {
                (self.pool.plan_creates(&mut state, 0), None, freed)
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        grant(freed);
        self.pool.start_creates(creates);
        if !nested {
            REPLANNING.with(|replanning| replanning.set(false));
        }
        self.pool.notify_if_drained();
    }
}
