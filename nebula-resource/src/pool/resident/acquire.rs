//! The resident's acquire: the hot path through the calling thread's lane, admission while
//! the breaker is not closed or a quarantine is on, and the wait for a create.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::Resident;
use super::lanes::{Current, Lane, Shared, thread_number};
use crate::error::{Error, TimeoutPhase};
use crate::hooks;
use crate::resilience::breaker::{Call, Outcome};
use crate::resilience::emit_breaker;
use crate::resource::Resource;

impl<R: Resource> Resident<R> {
    /// Before an acquire while tripped: `Unavailable` when quarantined, `CircuitOpen` when the
    /// breaker is open; `Ok(true)` when this acquire is a half-open probe.
    pub(super) fn admit(&self) -> Result<bool, Error> {
        if let Some(reason) = self.quarantine.lock().clone() {
            return Err(self.error(Error::quarantined(&reason)));
        }
        let tried = self.breaker.lock().try_call(Instant::now());
        match tried {
            Err(retry_after) => {
                Err(self.error(Error::circuit_open(retry_after, "recent calls failed")))
            }
            Ok((call, transition)) => {
                if let Some(transition) = transition {
                    self.refresh_tripped();
                    emit_breaker(&self.life.runtime, &self.life.source, transition);
                }
                Ok(call == Call::Probe)
            }
        }
    }
    /// A handle to the resident instance; creates it if there is none.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        deadline: Option<Instant>,
    ) -> Result<Shared<R>, Error> {
        if !self.tripped.load(Ordering::Acquire) {
            return self.acquire_inner(deadline).await;
        }
        if !self.admit()? {
            return self.acquire_inner(deadline).await;
        }
        let mut probe = ResidentProbe {
            resident: self,
            started: Some(Instant::now()),
        };
        let acquired = self.acquire_inner(deadline).await;
        probe.settle(&acquired);
        acquired
    }
    pub(super) async fn acquire_inner(
        self: &Arc<Self>,
        deadline: Option<Instant>,
    ) -> Result<Shared<R>, Error> {
        // The hot path: a live instance to share through this thread's lane, and no clock read.
        if !self.life.runtime.is_shutting_down()
            && let Some(handle) = self.share_current()?
        {
            return Ok(handle);
        }
        let started = Instant::now();
        let timeout = started + self.life.settings.acquire_timeout;
        let deadline = deadline.map_or(timeout, |limit| limit.min(timeout));
        loop {
            if self.drain.closed.load(Ordering::Acquire) || self.life.runtime.is_shutting_down() {
                return Err(self.error(Error::shutting_down()));
            }
            if let Some(handle) = self.share_current()? {
                return Ok(handle);
            }
            match tokio::time::timeout_at(deadline, self.ensure_live()).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(err),
                Err(_) => return Err(self.timeout(started)),
            }
        }
    }
    pub(super) fn timeout(&self, started: Instant) -> Error {
        let last = {
            let mut counts = self.counts.lock();
            counts.timeouts += 1;
            counts.last_create_error.clone()
        };
        self.error(Error::timeout(
            TimeoutPhase::Permit,
            started.elapsed(),
            Some(self.stats()),
            last,
        ))
    }
    /// Share the current instance through the calling thread's lane (see [Lanes](self#lanes)),
    /// counting the handle in use; `None` if there is no live instance.
    ///
    /// # Errors
    ///
    /// `ShuttingDown` once the resident is closed: the count goes up before `closed` is read
    /// (both sequentially consistent), so either this acquire sees the close and backs out, or
    /// the shutdown sees the handle in use and waits for it.
    pub(super) fn share_current(&self) -> Result<Option<Shared<R>>, Error> {
        let lane = &self.lanes[thread_number() & (self.lanes.len() - 1)];
        {
            let cached = lane.cached.lock();
            if let Some(cached) = cached.as_ref()
                && cached.generation == self.live.load(Ordering::Acquire)
                && !self.is_broken(&cached.instance)
            {
                let instance = self.share(&cached.instance)?;
                return self.hand_out(lane, instance, cached.generation).map(Some);
            }
        }
        // No handle in the lane, or a stale or broken one: share two from the instance itself,
        // one for the caller and one for the lane.
        let Some([handle, refill]) = self.share_twice()? else {
            return Ok(None);
        };
        let generation = handle.generation;
        let replaced = {
            let mut cached = lane.cached.lock();
            // Checked under the lane's lock: a retirement after this check empties the lane
            // again, so no lane keeps a retired instance's handle.
            if generation == self.live.load(Ordering::Acquire) {
                cached.replace(refill)
            } else {
                Some(refill)
            }
        };
        drop(replaced);
        self.hand_out(lane, handle.instance, generation).map(Some)
    }
    /// Count a handle in use in `lane`, unless the resident is closed.
    pub(super) fn hand_out(
        &self,
        lane: &Arc<Lane<R>>,
        instance: R::Instance,
        generation: u64,
    ) -> Result<Shared<R>, Error> {
        lane.in_use.fetch_add(1, Ordering::SeqCst);
        if self.drain.closed.load(Ordering::SeqCst) {
            drop(instance);
            lane.release(generation, false);
            return Err(self.error(Error::shutting_down()));
        }
        Ok(Shared {
            instance,
            generation,
            lane: Arc::clone(lane),
        })
    }
    /// Two handles shared from the current instance, with its generation, retiring it first if
    /// it is broken; `None` if there is no live instance.
    pub(super) fn share_twice(&self) -> Result<Option<[Current<R>; 2]>, Error> {
        let mut current = self.current.lock();
        let Some(live) = current.as_ref() else {
            return Ok(None);
        };
        if self.is_broken(&live.instance) {
            self.live.store(0, Ordering::Release);
            if let Some(old) = current.take() {
                drop(current);
                self.retire(old.instance);
            }
            return Ok(None);
        }
        let generation = live.generation;
        let first = self.share(&live.instance)?;
        let second = self.share(&live.instance)?;
        Ok(Some([first, second].map(|instance| Current {
            instance,
            generation,
        })))
    }
    pub(super) fn is_broken(&self, instance: &R::Instance) -> bool {
        hooks::is_broken(&*self.life.resource, instance)
    }
    pub(super) fn share(&self, instance: &R::Instance) -> Result<R::Instance, Error> {
        hooks::share(&*self.life.resource, instance).map_err(|err| self.error(err))
    }
}

/// A half-open breaker's probe permit held by a resident acquire.
struct ResidentProbe<'a, R: Resource> {
    resident: &'a Arc<Resident<R>>,
    started: Option<Instant>,
}

impl<R: Resource> ResidentProbe<'_, R> {
    fn settle(&mut self, acquired: &Result<Shared<R>, Error>) {
        let Some(started) = self.started.take() else {
            return;
        };
        let outcome = match acquired {
            Ok(_) => Some(Outcome::Success),
            Err(err) => Outcome::of_failed_probe(err),
        };
        match outcome {
            Some(outcome) => self
                .resident
                .record(Call::Probe, outcome, started.elapsed()),
            None => self.resident.breaker.lock().release_probe(),
        }
    }
}

impl<R: Resource> Drop for ResidentProbe<'_, R> {
    fn drop(&mut self) {
        if self.started.take().is_some() {
            self.resident.breaker.lock().release_probe();
        }
    }
}
