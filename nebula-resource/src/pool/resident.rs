//! [`Topology::Resident`](crate::Topology::Resident): one long-lived instance, a handle made by
//! `Resource::share` for every acquirer. A broken or tainted instance is replaced by one
//! creation at a time, however many acquirers notice it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::context::CreateContext;
use crate::credentials::CredentialSource;
use crate::error::{Error, ErrorKind, TimeoutPhase};
use crate::events::{Event, Source};
use crate::policy::Policy;
use crate::pool::{PoolConfig, PoolStats, create_instance};
use crate::resilience::breaker::{Call, CircuitBreaker, Outcome};
use crate::resilience::retry::retry;
use crate::resilience::{
    BreakerStatus, RetryPolicy, Watch, emit_breaker, emit_transition, emit_verdict,
};
use crate::resource::Resource;
use crate::runtime::Runtime;

struct Current<R: Resource> {
    instance: R::Instance,
    generation: u64,
}

#[derive(Default)]
struct Counts {
    generation: u64,
    created: u64,
    destroyed: u64,
    create_errors: u64,
    timeouts: u64,
    creating: usize,
    last_create_error: Option<String>,
}

/// The shared part of a resident registration.
pub(crate) struct Resident<R: Resource> {
    pub(crate) resource: Arc<R>,
    config: ArcSwap<R::Config>,
    settings: PoolConfig,
    ctx: CreateContext,
    source: Source,
    current: Mutex<Option<Current<R>>>,
    counts: Mutex<Counts>,
    recreate: Arc<tokio::sync::Mutex<()>>,
    in_use: AtomicUsize,
    closed: AtomicBool,
    drained: Notify,
    runtime: Arc<Runtime>,
    /// Calls recorded: creates, probes, checks, and tainted handles (failures).
    breaker: Mutex<CircuitBreaker>,
    /// Why the resident is quarantined, if it is.
    quarantine: Mutex<Option<Arc<str>>>,
    /// Whether the breaker is not closed or a quarantine is on: the hot path reads only this.
    tripped: AtomicBool,
    retry: RetryPolicy,
    pub(crate) watch: Watch,
    credentials: CredentialSource,
}

impl<R: Resource> Resident<R> {
    pub(crate) fn new(
        resource: Arc<R>,
        config: R::Config,
        policy: &Policy,
        ctx: CreateContext,
        runtime: Arc<Runtime>,
    ) -> Self {
        let source = ctx.source();
        Self {
            resource,
            config: ArcSwap::from_pointee(config),
            settings: policy.pool.clone(),
            ctx,
            source,
            current: Mutex::new(None),
            counts: Mutex::new(Counts::default()),
            recreate: Arc::new(tokio::sync::Mutex::new(())),
            in_use: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            drained: Notify::new(),
            runtime,
            breaker: Mutex::new(CircuitBreaker::new(&policy.breaker)),
            quarantine: Mutex::new(None),
            tripped: AtomicBool::new(false),
            retry: policy.retry.clone(),
            watch: Watch::new(&policy.health, &policy.retry),
            credentials: CredentialSource::new(policy.credentials.clone()),
        }
    }

    /// Retire the current instance: the next acquire creates one with the new config or
    /// credentials. Handles already given out keep working until they are dropped.
    fn retire_current(&self) {
        let old = self.current.lock().take();
        if let Some(old) = old {
            self.retire(old.instance);
        }
    }

    /// Replace the config; the next acquire creates the instance anew.
    pub(crate) fn reconfigure(&self, config: R::Config) {
        self.config.store(Arc::new(config));
        self.retire_current();
        self.runtime.emit(Event::Reconfigured(self.source.clone()));
    }

    /// Fetch the credentials again; if they changed, the next acquire creates the instance anew.
    pub(crate) async fn rotate_credentials(&self) -> Result<bool, Error> {
        let changed = self
            .credentials
            .refresh(&self.ctx)
            .await
            .map_err(|err| self.error(err))?;
        if changed {
            self.retire_current();
            self.runtime
                .emit(Event::CredentialsRotated(self.source.clone()));
        }
        Ok(changed)
    }

    fn refresh_tripped(&self) {
        let tripped = !self.breaker.lock().is_closed() || self.quarantine.lock().is_some();
        self.tripped.store(tripped, Ordering::Release);
    }

    /// Record a call with the breaker and publish the transition it caused.
    fn record(&self, call: Call, outcome: Outcome, duration: Duration) {
        let transition = self
            .breaker
            .lock()
            .record(call, outcome, duration, Instant::now());
        if let Some(transition) = transition {
            self.refresh_tripped();
            emit_breaker(&self.runtime, &self.source, transition);
        }
    }

    pub(crate) fn set_dependency_health(&self, dependency: Option<&str>) {
        let transition = self.watch.set_dependency(dependency);
        emit_transition(&self.runtime, &self.source, transition);
    }

    pub(crate) fn breaker_status(&self) -> BreakerStatus {
        self.breaker.lock().status(Instant::now())
    }

    /// Before an acquire while tripped: `Unavailable` when quarantined, `CircuitOpen` when the
    /// breaker is open; `Ok(true)` when this acquire is a half-open probe.
    fn admit(&self) -> Result<bool, Error> {
        if let Some(reason) = self.quarantine.lock().clone() {
            return Err(self.error(Error::other(
                ErrorKind::Unavailable,
                format!("quarantined: {reason}"),
            )));
        }
        let tried = self.breaker.lock().try_call(Instant::now());
        match tried {
            Err(retry_after) => {
                Err(self.error(Error::circuit_open(retry_after, "recent calls failed")))
            }
            Ok((call, transition)) => {
                if let Some(transition) = transition {
                    self.refresh_tripped();
                    emit_breaker(&self.runtime, &self.source, transition);
                }
                Ok(call == Call::Probe)
            }
        }
    }

    fn error(&self, err: Error) -> Error {
        self.ctx.attribute(err)
    }

    /// A handle to the resident instance, and its generation; creates it if there is none.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        deadline: Option<Instant>,
    ) -> Result<(R::Instance, u64), Error> {
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

    async fn acquire_inner(
        self: &Arc<Self>,
        deadline: Option<Instant>,
    ) -> Result<(R::Instance, u64), Error> {
        // The hot path: a live instance to share, and no clock read. (`Instance` is only `Send`,
        // so sharing it stays under the short `current` lock.)
        if !self.closed.load(Ordering::Acquire)
            && !self.runtime.is_shutting_down()
            && let Some(handle) = self.share_current()?
        {
            return Ok(handle);
        }
        let started = Instant::now();
        let timeout = started + self.settings.acquire_timeout;
        let deadline = deadline.map_or(timeout, |limit| limit.min(timeout));
        loop {
            if self.closed.load(Ordering::Acquire) || self.runtime.is_shutting_down() {
                return Err(self.error(Error::shutting_down()));
            }
            if let Some(handle) = self.share_current()? {
                return Ok(handle);
            }
            let Ok(permit) =
                tokio::time::timeout_at(deadline, Arc::clone(&self.recreate).lock_owned()).await
            else {
                return Err(self.timeout(started));
            };
            if self.current.lock().is_some() {
                continue;
            }
            // The create runs in a task of its own and holds the permit, so an acquirer that
            // gives up neither abandons the connection nor lets a second create start.
            let this = Arc::clone(self);
            let task = tokio::spawn(async move {
                let created = this.create().await;
                drop(permit);
                created
            });
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(err))) => return Err(err),
                Ok(Err(join)) => {
                    return Err(self.error(Error::other(
                        ErrorKind::Create,
                        format!("create task failed: {join}"),
                    )));
                }
                Err(_) => return Err(self.timeout(started)),
            }
        }
    }

    fn timeout(&self, started: Instant) -> Error {
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

    /// Share the current instance, retiring it first if it is broken.
    fn share_current(&self) -> Result<Option<(R::Instance, u64)>, Error> {
        let mut current = self.current.lock();
        let Some(live) = current.as_ref() else {
            return Ok(None);
        };
        let broken =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.resource.is_broken(&live.instance)))
                .unwrap_or(true);
        if broken {
            if let Some(old) = current.take() {
                drop(current);
                self.retire(old.instance);
            }
            return Ok(None);
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.resource.share(&live.instance))) {
            Ok(Some(handle)) => {
                self.in_use.fetch_add(1, Ordering::AcqRel);
                Ok(Some((handle, live.generation)))
            }
            Ok(None) => Err(self.error(not_shareable::<R>())),
            Err(panic) => Err(self.error(Error::panicked(ErrorKind::Create, "share", &*panic))),
        }
    }

    async fn create(self: &Arc<Self>) -> Result<(), Error> {
        self.counts.lock().creating += 1;
        let created = retry(
            &self.retry,
            |_| async {
                let attempt = Instant::now();
                self.credentials
                    .ensure(&self.ctx)
                    .await
                    .map_err(|err| self.error(err))?;
                let created = create_instance(
                    &*self.resource,
                    &self.config.load_full(),
                    &self.ctx,
                    self.settings.create_timeout,
                )
                .await;
                let outcome = if created.is_ok() {
                    Outcome::Success
                } else {
                    Outcome::Failure
                };
                self.record(Call::Normal, outcome, attempt.elapsed());
                created
            },
            |attempt, err, delay| {
                tracing::debug!(resource = R::KEY, attempt, error = %err, ?delay, "create failed; retrying");
            },
        )
        .await;
        let mut counts = self.counts.lock();
        counts.creating -= 1;
        match created {
            Ok(instance) => {
                counts.created += 1;
                counts.generation += 1;
                let generation = counts.generation;
                drop(counts);
                if std::panic::catch_unwind(AssertUnwindSafe(|| self.resource.share(&instance)))
                    .ok()
                    .flatten()
                    .is_none()
                {
                    self.retire(instance);
                    return Err(self.error(not_shareable::<R>()));
                }
                let replaced = self.current.lock().replace(Current {
                    instance,
                    generation,
                });
                if let Some(old) = replaced {
                    self.retire(old.instance);
                }
                self.runtime
                    .emit(Event::InstanceCreated(self.source.clone()));
                Ok(())
            }
            Err(err) => {
                let err = self.error(err);
                counts.create_errors += 1;
                counts.last_create_error = Some(err.to_string());
                drop(counts);
                tracing::warn!(resource = R::KEY, error = %err, "resident instance creation failed");
                self.runtime.emit(Event::CreateFailed {
                    source: self.source.clone(),
                    error: err.to_string(),
                });
                Err(err)
            }
        }
    }

    /// Create the instance during `build()`.
    pub(crate) async fn init(self: &Arc<Self>) -> Result<(), Error> {
        self.create().await
    }

    /// A handle was released; a tainted one retires its generation.
    pub(crate) fn release(&self, generation: u64, tainted: bool) {
        if tainted {
            self.record(Call::Normal, Outcome::Failure, Duration::ZERO);
            let mut current = self.current.lock();
            if current.as_ref().is_some_and(|c| c.generation == generation)
                && let Some(old) = current.take()
            {
                drop(current);
                self.retire(old.instance);
            }
        }
        if self.in_use.fetch_sub(1, Ordering::AcqRel) == 1 && self.closed.load(Ordering::Acquire) {
            self.drained.notify_waiters();
        }
    }

    /// Destroy a retired instance on the release worker.
    fn retire(&self, instance: R::Instance) {
        let resource = Arc::clone(&self.resource);
        let limit = self.settings.recycle_timeout;
        self.counts.lock().destroyed += 1;
        self.runtime
            .emit(Event::InstanceDestroyed(self.source.clone()));
        self.runtime.release(Box::pin(async move {
            let destroy = AssertUnwindSafe(resource.destroy(instance)).catch_unwind();
            if tokio::time::timeout(limit, destroy).await.is_err() {
                tracing::warn!(resource = R::KEY, "destroy timed out; instance dropped");
            }
        }));
    }

    /// One health round: check a handle to the instance (a failure retires it, so the next
    /// acquire creates a new one); with no instance, or while quarantined, probe by creating one.
    pub(crate) async fn health_round(self: &Arc<Self>) {
        if self.closed.load(Ordering::Acquire) {
            return;
        }
        let timeout = self.watch.config.timeout;
        let quarantined = self.quarantine.lock().is_some();
        let started = Instant::now();
        let outcome: Result<(), Arc<str>> = async {
            let current = if quarantined {
                None
            } else {
                self.share_current()
                    .map_err(|err| Arc::from(err.to_string()))?
            };
            let (mut handle, generation) = match current {
                Some(current) => current,
                None => {
                    match tokio::time::timeout(timeout, self.create()).await {
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
                    self.share_current()
                        .map_err(|err| Arc::from(err.to_string()))?
                        .ok_or_else(|| Arc::from("the probe's instance was retired at once"))?
                }
            };
            let check = AssertUnwindSafe(self.resource.check(&mut handle)).catch_unwind();
            let checked = tokio::time::timeout(timeout, check).await;
            drop(handle);
            let failure: Option<Arc<str>> = match checked {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(err))) => Some(Arc::from(format!("check failed: {err}"))),
                Ok(Err(_)) => Some(Arc::from("check panicked")),
                Err(_) => Some(Arc::from(format!("check timed out after {timeout:?}"))),
            };
            // The handle came from `share_current`, which counted it in use.
            self.release(generation, failure.is_some());
            failure.map_or(Ok(()), Err)
        }
        .await;
        if outcome.is_ok() {
            self.record(Call::Normal, Outcome::Success, started.elapsed());
        }
        let verdict = self.watch.record(outcome);
        if let Some(reason) = &verdict.quarantine {
            *self.quarantine.lock() = Some(Arc::clone(reason));
            self.refresh_tripped();
        }
        if verdict.recovered {
            *self.quarantine.lock() = None;
            self.refresh_tripped();
        }
        emit_verdict(&self.runtime, &self.source, &verdict);
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let counts = self.counts.lock();
        let live = usize::from(self.current.lock().is_some());
        PoolStats {
            size: live + counts.creating,
            max_size: 1,
            idle: 0,
            in_use: self.in_use.load(Ordering::Acquire),
            waiters: 0,
            creating: counts.creating,
            releasing: 0,
            created: counts.created,
            destroyed: counts.destroyed,
            create_errors: counts.create_errors,
            timeouts: counts.timeouts,
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Wait for every handle to be released (or `deadline`), then destroy the instance.
    pub(crate) async fn drained(&self, deadline: Instant) -> Result<(), PoolStats> {
        loop {
            let notified = self.drained.notified();
            if self.in_use.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(self.stats());
            }
        }
        let retired = self.current.lock().take();
        if let Some(old) = retired {
            self.counts.lock().destroyed += 1;
            let destroy = AssertUnwindSafe(self.resource.destroy(old.instance)).catch_unwind();
            if tokio::time::timeout_at(deadline, destroy).await.is_err() {
                tracing::warn!(
                    resource = R::KEY,
                    "destroy did not finish before the shutdown deadline"
                );
            }
            self.runtime
                .emit(Event::InstanceDestroyed(self.source.clone()));
        }
        Ok(())
    }
}

/// A half-open breaker's probe permit held by a resident acquire.
struct ResidentProbe<'a, R: Resource> {
    resident: &'a Arc<Resident<R>>,
    started: Option<Instant>,
}

impl<R: Resource> ResidentProbe<'_, R> {
    fn settle(&mut self, acquired: &Result<(R::Instance, u64), Error>) {
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

pub(crate) fn not_shareable<R: Resource>() -> Error {
    Error::config(
        "topology",
        format!(
            "`{}` declares Topology::Resident but `Resource::share` returned None; implement it as `Some(instance.clone())`",
            R::KEY
        ),
    )
}
