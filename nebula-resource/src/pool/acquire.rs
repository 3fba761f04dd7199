//! Acquire: the fast path from the idle store, the FIFO waiter queue with direct hand-off, the
//! sweeper that fails waiters at their deadline, and the check of an instance idle past
//! `validate_after_idle`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

use super::waiters::Left;
use super::{Checkout, Locked, Pool, QueueOrder, Slot, State};
use crate::error::{Error, ErrorKind, TimeoutPhase};
use crate::hooks;
use crate::resilience::breaker::{Call, Outcome};
use crate::resilience::emit_breaker;
use crate::resource::Resource;

/// A successful acquire: the instance and where it came from.
pub(crate) struct Acquired<R: Resource> {
    pub(crate) slot: Slot<R>,
    pub(crate) at: Instant,
    pub(crate) leak_key: Option<usize>,
}

impl<R: Resource> Pool<R> {
    /// Check out an instance, waiting no longer than `acquire_timeout` nor past `limit`.
    ///
    /// A quarantined pool fails at once with `Unavailable`; an open breaker with `CircuitOpen`.
    /// A half-open breaker lets `half_open_calls` acquires through as probes: their instance
    /// is checked before it is handed out, and their outcome closes or re-opens the breaker.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        limit: Option<Instant>,
    ) -> Result<Acquired<R>, Error> {
        // A half-open probe's permit: settled with this acquire's outcome, or given back if the
        // future is dropped first.
        let mut probe = ProbeTicket {
            pool: self,
            started: None,
        };
        // Computed only when something has to wait: the fast path reads the clock once.
        let mut deadline = None;
        // When this acquire first queued: its wait is measured (and reported) from there.
        let mut since: Option<Instant> = None;
        // Set after a bad hand-off (expired, broken, failed its check): this acquire queues at
        // the front again, ahead of everyone who came after it.
        let mut first_in_line = false;
        loop {
            if self.life.runtime.is_shutting_down() {
                return Err(self.error(Error::shutting_down()));
            }
            let taken = {
                let mut state = self.lock();
                if state.closed {
                    return Err(self.error(Error::shutting_down()));
                }
                if let Some(reason) = &state.quarantine {
                    return Err(self.error(Error::quarantined(reason)));
                }
                if !state.breaker.is_closed() && probe.started.is_none() {
                    let now = Instant::now();
                    match state.breaker.try_call(now) {
                        Err(retry_after) => {
                            drop(state);
                            return Err(
                                self.error(Error::circuit_open(retry_after, "recent calls failed"))
                            );
                        }
                        Ok((call, transition)) => {
                            if call == Call::Probe {
                                probe.started = Some(now);
                            }
                            if let Some(transition) = transition {
                                drop(state);
                                emit_breaker(&self.life.runtime, &self.life.source, transition);
                                continue;
                            }
                        }
                    }
                }
                let idle = if state.waiters.is_empty() {
                    match self.life.settings.order {
                        QueueOrder::Lifo => state.idle.pop_back(),
                        QueueOrder::Fifo => state.idle.pop_front(),
                    }
                } else {
                    None
                };
                match idle {
                    Some(slot) => {
                        state.in_use += 1;
                        Ok(slot)
                    }
                    None => {
                        let now = Instant::now();
                        let deadline = *deadline.get_or_insert_with(|| self.deadline(now, limit));
                        let since = *since.get_or_insert(now);
                        Err((
                            self.enqueue(state, since, deadline, first_in_line),
                            deadline,
                        ))
                    }
                }
            };
            let slot = match taken {
                Ok(slot) => slot,
                Err((key, deadline)) => match self.wait(key, deadline).await {
                    Ok(slot) => slot,
                    Err(err) => {
                        probe.failed(&err);
                        return Err(err);
                    }
                },
            };
            let now = Instant::now();
            if slot.expired(now) {
                self.discard(slot);
                first_in_line = true;
                continue;
            }
            if self.is_broken(&slot.instance) {
                // Found broken before use: the backend (or the resource) failed.
                self.record(Outcome::Failure, Duration::ZERO);
                self.discard(slot);
                first_in_line = true;
                continue;
            }
            // A probe always checks: its outcome has to say something about the backend.
            let due = probe.started.is_some()
                || self
                    .life
                    .settings
                    .validate_after_idle
                    .is_some_and(|after| slot.unchecked_for(after, now));
            // The check's future is only built when a check is due: the fast path stays sync.
            let checked = if due {
                let deadline = *deadline.get_or_insert_with(|| self.deadline(now, limit));
                match self.check_idle(slot, now, deadline).await {
                    Ok(checked) => checked,
                    Err(err) => {
                        probe.failed(&err);
                        return Err(err);
                    }
                }
            } else {
                Some(slot)
            };
            let Some(slot) = checked else {
                first_in_line = true;
                continue;
            };
            if let Some(since) = since {
                self.metrics.waited(now.saturating_duration_since(since));
            }
            let leak_key = self.leaks.as_ref().map(|leaks| {
                leaks.lock().insert(Checkout {
                    since: now,
                    reported: false,
                })
            });
            self.metrics.acquired();
            if probe.started.is_some() {
                probe.settle(Some(Outcome::Success));
            }
            return Ok(Acquired {
                slot,
                at: now,
                leak_key,
            });
        }
    }

    fn deadline(&self, now: Instant, limit: Option<Instant>) -> Instant {
        let timeout = now + self.life.settings.acquire_timeout;
        limit.map_or(timeout, |limit| limit.min(timeout))
    }

    /// Queue a waiter (at the back, or at the front after a bad hand-off), make sure a sweeper
    /// will fail it at `deadline`, and start the creates the queue needs. Returns its key.
    #[inline]
    fn enqueue(
        self: &Arc<Self>,
        mut state: Locked<'_, R>,
        since: Instant,
        deadline: Instant,
        front: bool,
    ) -> usize {
        let key = state.waiters.push(since, deadline, front);
        let sweeper = match state.sweeper {
            None => {
                state.sweeper = Some(deadline);
                Some(true)
            }
            Some(at) if deadline < at => {
                state.sweeper = Some(deadline);
                Some(false)
            }
            Some(_) => None,
        };
        let creates = self.plan_creates(&mut state, 0);
        drop(state);
        match sweeper {
            Some(true) => {
                let running = SweeperRunning {
                    pool: Arc::clone(self),
                    armed: true,
                };
                self.life.runtime.spawn(running.run());
            }
            Some(false) => self.sweep.notify_one(),
            None => {}
        }
        self.start_creates(creates);
        key
    }

    /// Wait in the queue until served: an instance, a create error, a timeout from the
    /// sweeper, or shutdown.
    fn wait(self: &Arc<Self>, key: usize, deadline: Instant) -> Waiting<'_, R> {
        Waiting {
            pool: self,
            key,
            deadline,
            own_timer: None,
            done: false,
        }
    }

    /// Fail every waiter whose deadline passed (with a timeout carrying the pool's counts at
    /// that moment); returns the wakers to call and the next deadline, if any waiter is left.
    fn expire_waiters(&self, state: &mut State<R>, now: Instant) -> (Vec<Waker>, Option<Instant>) {
        // Taken while the expired waiters are still queued: they are among the waiters the
        // error reports.
        let stats = state.stats();
        let State {
            waiters,
            last_create_error,
            timeouts,
            ..
        } = state;
        let (expired, wakers, next) = waiters.expire(now, |waited| {
            self.error(Error::timeout(
                TimeoutPhase::Permit,
                waited,
                Some(stats),
                last_create_error.clone(),
            ))
        });
        *timeouts += expired as u64;
        (wakers, next)
    }

    /// Check an instance idle longer than `validate_after_idle` before handing it out.
    /// `Ok(None)` means it failed and was discarded; the caller should try again.
    async fn check_idle(
        self: &Arc<Self>,
        slot: Slot<R>,
        now: Instant,
        deadline: Instant,
    ) -> Result<Option<Slot<R>>, Error> {
        // Held in a guard so that an acquire dropped mid-check discards the instance, whose state
        // is then unknown, instead of losing it.
        let mut checking = Checking {
            pool: self,
            slot: Some(slot),
        };
        let bound = deadline.min(now + self.life.settings.recycle_timeout);
        let checked = match checking.slot.as_mut() {
            Some(slot) => {
                let limit = bound.saturating_duration_since(now);
                hooks::check(&*self.life.resource, &mut slot.instance, limit).await
            }
            None => return Ok(None),
        };
        let outcome = if checked.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        self.record(outcome, now.elapsed());
        match checked {
            Ok(()) => Ok(checking.slot.take()),
            Err(err) if err.kind() == ErrorKind::Timeout && bound >= deadline => {
                drop(checking);
                Err(self.error(Error::timeout(
                    TimeoutPhase::Check,
                    now.elapsed(),
                    Some(self.stats()),
                    None,
                )))
            }
            Err(err) => {
                tracing::debug!(resource = R::KEY, error = %err, "idle instance failed its check; discarded");
                // Dropping `checking` discards the instance.
                Ok(None)
            }
        }
    }
}

/// A waiter's place in the queue; dropping it unserved (timeout, cancellation) removes it, and
/// passes on an instance that was handed to it in the meantime.
///
/// The sweeper fails it at its deadline; while no sweeper runs (its task was dropped by a dying
/// runtime), the waiter keeps a timer of its own, so no acquire outlives its `acquire_timeout`.
pub(crate) struct Waiting<'a, R: Resource> {
    pool: &'a Arc<Pool<R>>,
    key: usize,
    deadline: Instant,
    own_timer: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl<R: Resource> Future for Waiting<'_, R> {
    type Output = Result<Slot<R>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut state = this.pool.lock();
        let unswept = state.sweeper.is_none();
        if let Err(Left::Served(served)) = state.waiters.poll(this.key, cx.waker()) {
            drop(state);
            this.done = true;
            return Poll::Ready(served);
        }
        if !unswept {
            return Poll::Pending;
        }
        let deadline = this.deadline;
        let timer = this
            .own_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.done = true;
        let since = match state.waiters.leave(this.key) {
            Left::Waiting { since } => since,
            Left::Served(served) => return Poll::Ready(served),
        };
        state.timeouts += 1;
        let stats = state.stats();
        let last = state.last_create_error.clone();
        drop(state);
        Poll::Ready(Err(this.pool.error(Error::timeout(
            TimeoutPhase::Permit,
            Instant::now().saturating_duration_since(since),
            Some(stats),
            last,
        ))))
    }
}

impl<R: Resource> Drop for Waiting<'_, R> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let left = self.pool.lock().waiters.leave(self.key);
        if let Left::Served(Ok(slot)) = left {
            // Handed to us after we gave up: pass it on, as if released.
            self.pool.put_back(slot);
        }
    }
}

/// The sweeper's ticket, made before its task is spawned: however the task ends (done, or
/// dropped by a dying runtime, even before its first poll), the pool learns that no sweeper
/// runs, and the waiters left fall back on timers of their own.
struct SweeperRunning<R: Resource> {
    pool: Arc<Pool<R>>,
    armed: bool,
}

impl<R: Resource> SweeperRunning<R> {
    /// The sweeper: one task per pool, alive only while waiters exist. It fails each waiter at
    /// its deadline, so a waiting acquire needs no timer of its own.
    async fn run(mut self) {
        loop {
            let (wakers, next) = {
                let pool = &self.pool;
                let mut state = pool.lock();
                let (wakers, next) = pool.expire_waiters(&mut state, Instant::now());
                state.sweeper = next;
                (wakers, next)
            };
            for waker in wakers {
                waker.wake();
            }
            let Some(at) = next else {
                // `sweeper` was cleared under the lock above; a newer sweeper may already own it.
                self.armed = false;
                return;
            };
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = self.pool.sweep.notified() => {}
            }
        }
    }
}

impl<R: Resource> Drop for SweeperRunning<R> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let wakers: Vec<_> = {
            let mut state = self.pool.lock();
            state.sweeper = None;
            state.waiters.take_wakers()
        };
        // Each waiter polls again and arms its own timer.
        for waker in wakers {
            waker.wake();
        }
    }
}

/// A half-open breaker's probe permit held by an acquire: settled with the acquire's outcome,
/// or given back if the acquire is dropped first.
struct ProbeTicket<'a, R: Resource> {
    pool: &'a Arc<Pool<R>>,
    /// When the permit was taken; `None`: this acquire is not a probe.
    started: Option<Instant>,
}

impl<R: Resource> ProbeTicket<'_, R> {
    /// The acquire failed with `err` ([`Outcome::of_failed_probe`] says what that means).
    fn failed(&mut self, err: &Error) {
        if self.started.is_some() {
            self.settle(Outcome::of_failed_probe(err));
        }
    }

    /// Record the probe's outcome (`None`: give the permit back).
    fn settle(&mut self, outcome: Option<Outcome>) {
        let Some(started) = self.started.take() else {
            return;
        };
        let now = Instant::now();
        let transition = {
            let mut state = self.pool.lock();
            match outcome {
                Some(outcome) => state.breaker.record(
                    Call::Probe,
                    outcome,
                    now.saturating_duration_since(started),
                    now,
                ),
                None => {
                    state.breaker.release_probe();
                    None
                }
            }
        };
        if let Some(transition) = transition {
            emit_breaker(&self.pool.life.runtime, &self.pool.life.source, transition);
        }
    }
}

impl<R: Resource> Drop for ProbeTicket<'_, R> {
    fn drop(&mut self) {
        if self.started.take().is_some() {
            self.pool.lock().breaker.release_probe();
        }
    }
}

/// An instance under `check` during acquire or a health round; dropped without `take`, it is
/// discarded.
pub(super) struct Checking<'a, R: Resource> {
    pub(super) pool: &'a Arc<Pool<R>>,
    pub(super) slot: Option<Slot<R>>,
}

impl<R: Resource> Drop for Checking<'_, R> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.pool.discard(slot);
        }
    }
}
