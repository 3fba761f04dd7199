//! Health: the rounds the health scheduler runs (check idle instances, or probe by creating
//! one), quarantine and recovery from it, and the circuit breaker's record of calls.
//!
//! A round says what it learned, or that it learned nothing (a recovery probe with no place
//! free, every instance held by guards from before the quarantine): such a round is not
//! counted, so it neither resets nor advances the way back to Healthy.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Pool;
use super::acquire::Checking;
use crate::error::Error;
use crate::hooks;
use crate::resilience::breaker::{Call, Outcome};
use crate::resilience::{BreakerStatus, Round, emit_breaker, emit_verdict};
use crate::resource::Resource;

/// What a round learned: `None` if nothing.
type Learned = Option<Round>;

impl<R: Resource> Pool<R> {
    /// Record a call's outcome with the breaker (ignored unless it is closed) and publish the
    /// transition it caused.
    pub(super) fn record(&self, outcome: Outcome, duration: Duration) {
        let transition =
            self.lock()
                .breaker
                .record(Call::Normal, outcome, duration, Instant::now());
        if let Some(transition) = transition {
            emit_breaker(&self.life.runtime, &self.life.source, transition);
        }
    }

    /// The breaker's state and rates now.
    pub(crate) fn breaker_status(&self) -> BreakerStatus {
        self.lock().breaker.status(Instant::now())
    }

    /// One health round: check the idle instances one at a time (oldest first; a failure is
    /// destroyed), or, when none is idle and there is room, probe by creating one. While
    /// quarantined, the round is a recovery probe: check the instance the last probe made, or
    /// create one and check it.
    pub(crate) async fn health_round(self: &Arc<Self>) {
        let timeout = self.life.watch.config.timeout;
        let (quarantined, idle) = {
            let state = self.lock();
            if state.closed {
                return;
            }
            (state.quarantine.is_some(), state.idle.len())
        };
        let learned: Learned = match (quarantined, idle) {
            (false, 0) => Some(self.probe_by_create(timeout).await.unwrap_or(Ok(None))),
            (false, idle) => Some(self.check_idle_round(idle, timeout).await),
            (true, 0) => self.probe_by_create(timeout).await,
            (true, _) => Some(self.check_idle_round(1, timeout).await),
        };
        let Some(outcome) = learned else {
            tracing::debug!(resource = R::KEY, tenant = ?self.life.source.tenant, "no place free for a recovery probe; round skipped");
            return;
        };
        let verdict = self.life.watch.record(outcome);
        if let Some(reason) = &verdict.quarantine {
            self.quarantine(Arc::clone(reason));
        }
        if verdict.recovered {
            self.lock().quarantine = None;
        }
        emit_verdict(&self.life.runtime, &self.life.source, &verdict);
    }

    /// Check up to `n` idle instances, each out of the idle store only while it is checked. A
    /// pass renews what `validate_after_idle` measures, not what `idle_timeout` does: an
    /// instance nobody uses still retires. The first failure fails the round; with none, the
    /// first impairment an instance that passed reports is the round's.
    async fn check_idle_round(self: &Arc<Self>, n: usize, timeout: Duration) -> Round {
        let mut first_failure: Option<Arc<str>> = None;
        let mut impaired: Option<Arc<str>> = None;
        for _ in 0..n {
            let slot = {
                let mut state = self.lock();
                if state.closed {
                    break;
                }
                match state.idle.pop_front() {
                    Some(slot) => {
                        state.in_use += 1;
                        slot
                    }
                    None => break,
                }
            };
            let mut checking = Checking {
                pool: self,
                slot: Some(slot),
            };
            let started = Instant::now();
            let Some(slot) = checking.slot.as_mut() else {
                break;
            };
            match hooks::check(&*self.life.resource, &mut slot.instance, timeout).await {
                Ok(()) => {
                    self.record(Outcome::Success, started.elapsed());
                    if impaired.is_none() {
                        impaired = hooks::degraded(&*self.life.resource, &slot.instance);
                    }
                    if let Some(mut slot) = checking.slot.take() {
                        slot.validated_at(Instant::now());
                        self.return_checked(slot);
                    }
                }
                Err(err) => {
                    self.record(Outcome::Failure, started.elapsed());
                    let reason: Arc<str> = Arc::from(format!("check failed: {err}"));
                    tracing::debug!(resource = R::KEY, %reason, "idle instance failed its health check; destroyed");
                    // Dropping `checking` discards the instance.
                    drop(checking);
                    first_failure.get_or_insert(reason);
                }
            }
        }
        first_failure.map_or(Ok(impaired), Err)
    }

    /// Create one instance (one attempt, no retry) and check it; a good one joins the idle
    /// store (or serves a waiter). `None` when there is no room: every place is taken.
    async fn probe_by_create(self: &Arc<Self>, timeout: Duration) -> Learned {
        let reservation = self.reserve_probe()?;
        let started = Instant::now();
        let (mut instance, generation) = match self
            .life
            .attempt(
                timeout.min(self.life.settings.create_timeout),
                |outcome, took| {
                    self.record(outcome, took);
                },
            )
            .await
        {
            Ok(created) => created,
            Err(err) => {
                drop(reservation);
                return Some(Err(Arc::from(format!("probe create failed: {err}"))));
            }
        };
        match hooks::check(&*self.life.resource, &mut instance, timeout).await {
            Ok(()) => {
                self.record(Outcome::Success, started.elapsed());
                let impaired = hooks::degraded(&*self.life.resource, &instance);
                reservation.deliver(instance, generation);
                Some(Ok(impaired))
            }
            Err(err) => {
                self.record(Outcome::Failure, started.elapsed());
                reservation.into_releasing();
                self.destroy(instance);
                Some(Err(Arc::from(format!("probe check failed: {err}"))))
            }
        }
    }

    /// Take the pool out of service: every waiter and later acquire fails at once with
    /// `Unavailable`, and the idle instances (suspect) are destroyed; in-use ones are destroyed
    /// when they come back.
    fn quarantine(self: &Arc<Self>, reason: Arc<str>) {
        let mut wakers = Vec::new();
        let idle = {
            let mut state = self.lock();
            state.quarantine = Some(Arc::clone(&reason));
            while !state.waiters.is_empty() {
                let err = self.error(Error::quarantined(&reason));
                wakers.extend(state.fail_first(err));
            }
            let idle: Vec<_> = state.idle.drain(..).collect();
            state.releasing += idle.len();
            idle
        };
        for waker in wakers {
            waker.wake();
        }
        for slot in idle {
            self.destroy(slot.instance);
        }
    }
}
