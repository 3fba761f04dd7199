//! The resident's health: its rounds (check a handle, or probe by creating), quarantine and
//! recovery, and the circuit breaker's record of calls.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::Resident;
use super::lanes::{Lane, Shared};
use crate::hooks;
use crate::resilience::breaker::{Call, Outcome};
use crate::resilience::{BreakerStatus, Round, emit_breaker, emit_verdict};
use crate::resource::Resource;

impl<R: Resource> Resident<R> {
    /// Publish whether the breaker is not closed or a quarantine is on. Read and stored under
    /// the breaker's lock, so two callers cannot store their readings out of order (a stale
    /// `false` over an open breaker would let the hot path bypass it).
    pub(super) fn refresh_tripped(&self) {
        let breaker = self.breaker.lock();
        let tripped = !breaker.is_closed() || self.quarantine.lock().is_some();
        self.tripped.store(tripped, Ordering::Release);
    }
    /// Record a call with the breaker and publish the transition it caused.
    pub(super) fn record(&self, call: Call, outcome: Outcome, duration: Duration) {
        let transition = self
            .breaker
            .lock()
            .record(call, outcome, duration, Instant::now());
        if let Some(transition) = transition {
            self.refresh_tripped();
            emit_breaker(&self.life.runtime, &self.life.source, transition);
        }
    }
    pub(crate) fn breaker_status(&self) -> BreakerStatus {
        self.breaker.lock().status(Instant::now())
    }
    /// One health round: check a handle to the instance (a failure retires it, so the next
    /// acquire creates a new one); with no instance (none yet, or retired by a quarantine),
    /// probe by creating one. The probe's create is the acquires' create: one at a time, in a
    /// task of its own, so a probe that times out leaves it running and counted.
    pub(crate) async fn health_round(self: &Arc<Self>) {
        if self.drain.closed.load(Ordering::Acquire) {
            return;
        }
        let timeout = self.life.watch.config.timeout;
        let started = Instant::now();
        let outcome: Round = async {
            if self.current.lock().is_none() {
                match tokio::time::timeout(timeout, self.ensure_live()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(err)) => {
                        return Err(Arc::from(format!("probe create failed: {err}")));
                    }
                    Err(_) => {
                        return Err(Arc::from(format!(
                            "probe create timed out after {timeout:?}"
                        )));
                    }
                }
            }
            let Shared {
                instance,
                generation,
                lane,
            } = self
                .share_current()
                .map_err(|err| Arc::from(err.to_string()))?
                .ok_or_else(|| Arc::from("the probe's instance was retired at once"))?;
            // Released however the round ends, even dropped mid-check by the scheduler
            // stopping at shutdown; tainted if the check failed.
            let mut checking = Checking {
                instance: Some(instance),
                generation,
                lane,
                failed: false,
            };
            let checked = match checking.instance.as_mut() {
                Some(instance) => hooks::check(&*self.life.resource, instance, timeout)
                    .await
                    .map(|()| hooks::degraded(&*self.life.resource, instance)),
                None => Ok(None),
            };
            checking.failed = checked.is_err();
            drop(checking);
            checked.map_err(|err| Arc::from(format!("check failed: {err}")))
        }
        .await;
        if outcome.is_ok() {
            self.record(Call::Normal, Outcome::Success, started.elapsed());
        }
        let verdict = self.life.watch.record(outcome);
        if let Some(reason) = &verdict.quarantine {
            *self.quarantine.lock() = Some(Arc::clone(reason));
            self.refresh_tripped();
            // Suspect: the recovery probes start from a new instance.
            self.retire_current();
        }
        if verdict.recovered {
            *self.quarantine.lock() = None;
            self.refresh_tripped();
        }
        emit_verdict(&self.life.runtime, &self.life.source, &verdict);
    }
}

/// A handle a health round checks. `share_current` counted it in use; dropping this releases
/// it, tainting it if its check failed.
struct Checking<R: Resource> {
    instance: Option<R::Instance>,
    generation: u64,
    lane: Arc<Lane<R>>,
    failed: bool,
}

impl<R: Resource> Drop for Checking<R> {
    fn drop(&mut self) {
        drop(self.instance.take());
        self.lane.release(self.generation, self.failed);
    }
}
