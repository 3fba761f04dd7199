//! The pool: idle store, FIFO waiters with direct hand-off, creation in tasks of its own,
//! release through the manager's worker, and the maintenance pass.
//!
//! # Invariants
//!
//! - `size` counts every instance that exists or is being created: idle, in use, being created,
//!   being recycled or destroyed. `size <= max_size` at every moment.
//! - An instance is owned by exactly one of: the idle store, one waiter's hand-off cell, one
//!   guard (or an acquire validating it), one create task, one release job.
//! - Waiters are served strictly in arrival order. A newcomer takes an idle instance only when
//!   nobody waits; a released instance goes straight to the first waiter.
//! - Every path that ends an instance's life — destroy finished, timed out, panicked, or the job
//!   dropped by a dying runtime — goes through a drop ticket that settles `size` once.

pub(crate) mod cap;
pub(crate) mod config;
pub(crate) mod resident;
pub(crate) mod retired;
mod stats;
pub(crate) mod worker;

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use parking_lot::Mutex;
use slab::Slab;
use tokio::sync::Notify;
use tokio::time::Instant;

use self::cap::{Member, SharedCap};
pub use self::config::{MAX_DURATION, MAX_POOL_SIZE, PoolConfig, QueueOrder};
pub use self::stats::PoolStats;
use crate::context::CreateContext;
use crate::credentials::CredentialSource;
use crate::error::{Error, ErrorKind, TimeoutPhase};
use crate::events::{Event, Source};
use crate::policy::Policy;
use crate::resilience::breaker::{Call, CircuitBreaker, Outcome};
use crate::resilience::retry::retry;
use crate::resilience::{
    BreakerStatus, RetryPolicy, Watch, emit_breaker, emit_transition, emit_verdict,
};
use crate::resource::{Resource, reset_default_recycle_mark, take_default_recycle_mark};
use crate::runtime::Runtime;
use crate::telemetry::PoolMetrics;

/// One instance and the times the pool keeps for it.
pub(crate) struct Slot<R: Resource> {
    pub(crate) instance: R::Instance,
    expires_at: Option<Instant>,
    idle_since: Instant,
    /// The config and credentials generation it was created with.
    generation: u64,
}

impl<R: Resource> Slot<R> {
    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

enum Waiter<R: Resource> {
    Waiting {
        waker: Option<Waker>,
        since: Instant,
        deadline: Instant,
    },
    Served(Result<Slot<R>, Error>),
}

struct State<R: Resource> {
    idle: VecDeque<Slot<R>>,
    waiters: Slab<Waiter<R>>,
    queue: VecDeque<usize>,
    size: usize,
    in_use: usize,
    creating: usize,
    releasing: usize,
    closed: bool,
    /// While waiters exist, one sweeper task fails those past their deadline; this is the time
    /// it will next look. `None`: no sweeper is running.
    sweeper: Option<Instant>,
    created: u64,
    destroyed: u64,
    create_errors: u64,
    timeouts: u64,
    last_create_error: Option<String>,
    /// Kept under the pool's lock: the hot path's check is one field read, and recording a
    /// release costs a few instructions under a lock it already holds.
    breaker: CircuitBreaker,
    /// Set while quarantined (health rounds failed `failure_threshold` times): why.
    quarantine: Option<Arc<str>>,
    /// Bumped by a reconfiguration or a credential rotation. Only current-generation instances
    /// are kept idle; older ones are destroyed when they come back.
    generation: u64,
    /// `PoolConfig::max_size`, changed live by [`Pool::resize`]. After a shrink `size` may
    /// exceed it until the surplus in-use instances come back (they are destroyed then).
    max_size: usize,
    /// `PoolConfig::min_idle`, changed live by [`Pool::resize`].
    min_idle: usize,
    /// Places granted by the registration's shared cap and not yet used by a create.
    granted: usize,
    /// This pool is in the shared cap's queue of pools waiting for a place.
    starving: bool,
}

impl<R: Resource> State<R> {
    /// Give `slot` to the first waiter (returning the waker to call once the lock is released),
    /// or put it in the idle store.
    fn hand_off(&mut self, slot: Slot<R>) -> Option<Waker> {
        match self.queue.pop_front() {
            Some(key) => {
                self.in_use += 1;
                self.serve(key, Ok(slot))
            }
            None => {
                self.idle.push_back(slot);
                None
            }
        }
    }

    /// Fail the first waiter with `error`.
    fn fail_first(&mut self, error: Error) -> Option<Waker> {
        let key = self.queue.pop_front()?;
        self.serve(key, Err(error))
    }

    /// Put `served` in waiter `key`'s cell (already out of the queue); returns the waker to call
    /// once the lock is released.
    fn serve(&mut self, key: usize, served: Result<Slot<R>, Error>) -> Option<Waker> {
        match std::mem::replace(&mut self.waiters[key], Waiter::Served(served)) {
            Waiter::Waiting { waker, .. } => waker,
            Waiter::Served(_) => None,
        }
    }

    fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.size,
            max_size: self.max_size,
            idle: self.idle.len(),
            in_use: self.in_use,
            waiters: self.queue.len(),
            creating: self.creating,
            releasing: self.releasing,
            created: self.created,
            destroyed: self.destroyed,
            create_errors: self.create_errors,
            timeouts: self.timeouts,
        }
    }
}

/// Which count an instance leaving through a [`Settle`] ticket is still held in.
#[derive(Clone, Copy)]
enum Counted {
    InUse,
    Releasing,
}

/// The shared part of one pool; guards and tasks hold it by `Arc`.
pub(crate) struct Pool<R: Resource> {
    pub(crate) resource: Arc<R>,
    config: ArcSwap<R::Config>,
    pub(crate) settings: PoolConfig,
    ctx: CreateContext,
    source: Source,
    state: Mutex<State<R>>,
    drained: Notify,
    /// Wakes the sweeper early: a waiter with an earlier deadline arrived, or the pool closed.
    sweep: Notify,
    runtime: Arc<Runtime>,
    metrics: PoolMetrics,
    leaks: Option<Mutex<Slab<Checkout>>>,
    /// Learned on the first release: the resource keeps the default `recycle`, so releases
    /// skip it (and the allocation its future would need).
    default_recycle: AtomicBool,
    retry: RetryPolicy,
    pub(crate) watch: Watch,
    credentials: CredentialSource,
    /// A rotation for near expiry is under way.
    rotating: AtomicBool,
    /// The cap this pool shares with the other tenant pools of its registration, if any.
    shared: Option<Member<R>>,
    /// For a tenant or scope pool: when it was last acquired from, in milliseconds since its
    /// registration's epoch (for idle eviction).
    last_used: AtomicU64,
}

struct Checkout {
    since: Instant,
    reported: bool,
}

/// A successful acquire: the instance and where it came from.
pub(crate) struct Acquired<R: Resource> {
    pub(crate) slot: Slot<R>,
    pub(crate) at: Instant,
    pub(crate) leak_key: Option<usize>,
}

impl<R: Resource> Pool<R> {
    /// A pool; with `cap`, one of the pools sharing it (it joins the cap's members).
    pub(crate) fn new(
        resource: Arc<R>,
        config: R::Config,
        policy: &Policy,
        ctx: CreateContext,
        runtime: Arc<Runtime>,
        cap: Option<&Arc<SharedCap<R>>>,
    ) -> Arc<Self> {
        let settings = policy.pool.clone();
        let source = ctx.source();
        let metrics = PoolMetrics::new(R::KEY, ctx.name(), ctx.tenant().map(|t| t.as_str()));
        let leaks = settings.leak_threshold.map(|_| Mutex::new(Slab::new()));
        let pool = Arc::new_cyclic(|me| Self {
            resource,
            config: ArcSwap::from_pointee(config),
            state: Mutex::new(State {
                idle: VecDeque::with_capacity(settings.max_size.min(1024)),
                waiters: Slab::new(),
                queue: VecDeque::new(),
                size: 0,
                in_use: 0,
                creating: 0,
                releasing: 0,
                closed: false,
                sweeper: None,
                created: 0,
                destroyed: 0,
                create_errors: 0,
                timeouts: 0,
                last_create_error: None,
                breaker: CircuitBreaker::new(&policy.breaker),
                quarantine: None,
                generation: 0,
                max_size: settings.max_size,
                min_idle: settings.min_idle,
                granted: 0,
                starving: false,
            }),
            settings,
            ctx,
            source,
            drained: Notify::new(),
            sweep: Notify::new(),
            runtime,
            metrics,
            leaks,
            default_recycle: AtomicBool::new(false),
            retry: policy.retry.clone(),
            watch: Watch::new(&policy.health, &policy.retry),
            credentials: CredentialSource::new(policy.credentials.clone()),
            rotating: AtomicBool::new(false),
            shared: cap.map(|cap| Member {
                cap: Arc::clone(cap),
                me: me.clone(),
            }),
            last_used: AtomicU64::new(0),
        });
        if let Some(cap) = cap {
            cap.join(&pool);
        }
        pool
    }

    fn error(&self, err: Error) -> Error {
        self.ctx.attribute(err)
    }

    /// Mark the pool used at `millis` (since its registration's epoch). One store per
    /// millisecond at most: no cache-line ping-pong between the tasks of a busy pool.
    pub(crate) fn touch(&self, millis: u64) {
        if self.last_used.load(Ordering::Relaxed) != millis {
            self.last_used.store(millis, Ordering::Relaxed);
        }
    }

    /// When the pool was last [touched](Self::touch).
    pub(crate) fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// The pool's counts now.
    pub(crate) fn stats(&self) -> PoolStats {
        self.state.lock().stats()
    }

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
        loop {
            if self.runtime.is_shutting_down() {
                return Err(self.error(Error::shutting_down()));
            }
            let taken = {
                let mut state = self.state.lock();
                if state.closed {
                    return Err(self.error(Error::shutting_down()));
                }
                if let Some(reason) = &state.quarantine {
                    return Err(self.error(Error::other(
                        ErrorKind::Unavailable,
                        format!("quarantined: {reason}"),
                    )));
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
                                emit_breaker(&self.runtime, &self.source, transition);
                                continue;
                            }
                        }
                    }
                }
                let idle = if state.queue.is_empty() {
                    match self.settings.order {
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
                        let key = state.waiters.insert(Waiter::Waiting {
                            waker: None,
                            since: now,
                            deadline,
                        });
                        state.queue.push_back(key);
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
                                let pool = Arc::clone(self);
                                self.runtime
                                    .spawn(async move { pool.sweep_expired().await });
                            }
                            Some(false) => self.sweep.notify_one(),
                            None => {}
                        }
                        self.start_creates(creates);
                        Err((key, now))
                    }
                }
            };
            let (slot, waited_since) = match taken {
                Ok(slot) => (slot, None),
                Err((key, since)) => match self.wait(key).await {
                    Ok(slot) => (slot, Some(since)),
                    Err(err) => {
                        probe.failed(&err);
                        return Err(err);
                    }
                },
            };
            let now = Instant::now();
            if let Some(since) = waited_since {
                self.metrics.waited(now.saturating_duration_since(since));
            }
            if slot.expired(now) || self.is_broken(&slot.instance) {
                self.discard(slot);
                continue;
            }
            // A probe always checks: its outcome has to say something about the backend.
            // (`idle_since + after < now` costs a quarter of `now - idle_since > after`.)
            let due = probe.started.is_some()
                || self.settings.validate_after_idle.is_some_and(|after| {
                    slot.idle_since
                        .checked_add(after)
                        .is_some_and(|due_at| due_at < now)
                });
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
            if let Some(slot) = checked {
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
    }

    fn deadline(&self, now: Instant, limit: Option<Instant>) -> Instant {
        let timeout = now + self.settings.acquire_timeout;
        limit.map_or(timeout, |limit| limit.min(timeout))
    }

    /// Wait in the queue until served: an instance, a create error, a timeout from the
    /// sweeper, or shutdown.
    fn wait(self: &Arc<Self>, key: usize) -> Waiting<'_, R> {
        Waiting {
            pool: self,
            key,
            done: false,
        }
    }

    /// The sweeper: one task per pool, alive only while waiters exist. It fails each waiter at
    /// its deadline with a timeout that carries the pool's counts at that moment, so a waiting
    /// acquire needs no timer of its own.
    async fn sweep_expired(self: Arc<Self>) {
        let mut running = SweeperRunning {
            pool: &self,
            armed: true,
        };
        loop {
            let mut wakers = Vec::new();
            let next = {
                let mut state = self.state.lock();
                let now = Instant::now();
                let mut expired = Vec::new();
                let mut next: Option<Instant> = None;
                for &key in &state.queue {
                    if let Waiter::Waiting {
                        deadline, since, ..
                    } = &state.waiters[key]
                    {
                        if *deadline <= now {
                            expired.push((key, *since));
                        } else {
                            next = Some(next.map_or(*deadline, |n| n.min(*deadline)));
                        }
                    }
                }
                if !expired.is_empty() {
                    state.timeouts += expired.len() as u64;
                    // Taken while the expired waiters are still queued: they are among the
                    // waiters the error reports.
                    let stats = state.stats();
                    let last = state.last_create_error.clone();
                    state
                        .queue
                        .retain(|key| !expired.iter().any(|(k, _)| k == key));
                    for (key, since) in expired {
                        let err = self.error(Error::timeout(
                            TimeoutPhase::Permit,
                            now.saturating_duration_since(since),
                            Some(stats),
                            last.clone(),
                        ));
                        wakers.extend(state.serve(key, Err(err)));
                    }
                }
                state.sweeper = next;
                next
            };
            for waker in wakers {
                waker.wake();
            }
            let Some(at) = next else {
                // `sweeper` was cleared under the lock above; a newer sweeper may already own it.
                running.armed = false;
                return;
            };
            tokio::select! {
                () = tokio::time::sleep_until(at) => {}
                () = self.sweep.notified() => {}
            }
        }
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
        let bound = deadline.min(now + self.settings.recycle_timeout);
        let check = {
            let Some(slot) = checking.slot.as_mut() else {
                return Ok(None);
            };
            let check = AssertUnwindSafe(self.resource.check(&mut slot.instance)).catch_unwind();
            tokio::time::timeout_at(bound, check).await
        };
        let outcome = if matches!(check, Ok(Ok(Ok(())))) {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        self.record(outcome, now.elapsed());
        match check {
            Ok(Ok(Ok(()))) => Ok(checking.slot.take()),
            Ok(Ok(Err(err))) => {
                tracing::debug!(resource = R::KEY, error = %err, "idle instance failed its check; discarded");
                Ok(None)
            }
            Ok(Err(panic)) => {
                let err = Error::panicked(ErrorKind::Check, "check", &*panic);
                tracing::warn!(resource = R::KEY, error = %err, "check panicked; instance discarded");
                Ok(None)
            }
            Err(_) if bound < deadline => {
                tracing::debug!(resource = R::KEY, "check timed out; instance discarded");
                Ok(None)
            }
            Err(_) => {
                drop(checking);
                Err(self.error(Error::timeout(
                    TimeoutPhase::Check,
                    now.elapsed(),
                    Some(self.stats()),
                    None,
                )))
            }
        }
    }

    /// Record a call's outcome with the breaker (ignored unless it is closed) and publish the
    /// transition it caused.
    fn record(&self, outcome: Outcome, duration: Duration) {
        let transition =
            self.state
                .lock()
                .breaker
                .record(Call::Normal, outcome, duration, Instant::now());
        if let Some(transition) = transition {
            emit_breaker(&self.runtime, &self.source, transition);
        }
    }

    pub(crate) fn set_dependency_health(&self, dependency: Option<&str>) {
        let transition = self.watch.set_dependency(dependency);
        emit_transition(&self.runtime, &self.source, transition);
    }

    async fn ensure_credentials(&self) -> Result<(), Error> {
        self.credentials
            .ensure(&self.ctx)
            .await
            .map_err(|err| self.error(err))
    }

    /// Fetch the credentials again; if they changed, start a new generation. Returns whether
    /// they changed.
    pub(crate) async fn rotate_credentials(self: &Arc<Self>) -> Result<bool, Error> {
        let changed = self
            .credentials
            .refresh(&self.ctx)
            .await
            .map_err(|err| self.error(err))?;
        if changed {
            self.new_generation("credentials rotated");
            self.runtime
                .emit(Event::CredentialsRotated(self.source.clone()));
        }
        Ok(changed)
    }

    /// [`rotate_credentials`](Self::rotate_credentials) of each of `pools` (the tenant or
    /// scope pools of one registration), one after another; how many rotated.
    pub(crate) async fn rotate_all(
        pools: impl IntoIterator<Item = Arc<Self>>,
    ) -> Result<usize, Error> {
        let mut rotated = 0;
        for pool in pools {
            rotated += usize::from(pool.rotate_credentials().await?);
        }
        Ok(rotated)
    }

    /// Replace the config: a new generation starts.
    pub(crate) fn reconfigure(self: &Arc<Self>, config: R::Config) {
        self.config.store(Arc::new(config));
        self.new_generation("reconfigured");
        self.runtime.emit(Event::Reconfigured(self.source.clone()));
    }

    /// From now on only instances of the new generation are kept: idle ones are destroyed at
    /// once, in-use ones when they come back. Waiters are served by new creates as places free
    /// up, and maintenance refills `min_idle`.
    fn new_generation(self: &Arc<Self>, why: &str) {
        let idle: Vec<Slot<R>> = {
            let mut state = self.state.lock();
            state.generation += 1;
            let idle: Vec<Slot<R>> = state.idle.drain(..).collect();
            state.releasing += idle.len();
            idle
        };
        tracing::info!(resource = R::KEY, tenant = ?self.source.tenant, why, retired = idle.len(), "new generation");
        for slot in idle {
            self.destroy(slot.instance);
        }
    }

    /// Near expiry: rotate in the background (once at a time).
    fn refresh_if_expiring(self: &Arc<Self>) {
        if !CredentialSource::expiring(&self.ctx) || self.rotating.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = Arc::clone(self);
        self.runtime.spawn(async move {
            if let Err(err) = pool.rotate_credentials().await {
                tracing::warn!(resource = R::KEY, error = %err, "refreshing expiring credentials failed");
            }
            pool.rotating.store(false, Ordering::Release);
        });
    }

    /// The breaker's state and rates now.
    pub(crate) fn breaker_status(&self) -> BreakerStatus {
        self.state.lock().breaker.status(Instant::now())
    }

    /// One health round: check the idle instances one at a time (oldest first; a failure is
    /// destroyed), or, when none is idle and there is room, probe by creating one. While
    /// quarantined, the round is a recovery probe: create one instance and check it.
    pub(crate) async fn health_round(self: &Arc<Self>) {
        let timeout = self.watch.config.timeout;
        let (quarantined, idle) = {
            let state = self.state.lock();
            if state.closed {
                return;
            }
            (state.quarantine.is_some(), state.idle.len())
        };
        let outcome = if quarantined || idle == 0 {
            self.probe_by_create(timeout, quarantined).await
        } else {
            self.check_idle_round(idle, timeout).await
        };
        let verdict = self.watch.record(outcome);
        if let Some(reason) = &verdict.quarantine {
            self.quarantine(Arc::clone(reason));
        }
        if verdict.recovered {
            self.state.lock().quarantine = None;
        }
        emit_verdict(&self.runtime, &self.source, &verdict);
    }

    /// Check up to `n` idle instances, each out of the idle store only while it is checked.
    async fn check_idle_round(
        self: &Arc<Self>,
        n: usize,
        timeout: Duration,
    ) -> Result<(), Arc<str>> {
        let mut first_failure: Option<Arc<str>> = None;
        for _ in 0..n {
            let slot = {
                let mut state = self.state.lock();
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
            let checked = match checking.slot.as_mut() {
                Some(slot) => {
                    let check =
                        AssertUnwindSafe(self.resource.check(&mut slot.instance)).catch_unwind();
                    tokio::time::timeout(timeout, check).await
                }
                None => break,
            };
            let failure: Option<Arc<str>> = match checked {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(err))) => Some(Arc::from(format!("check failed: {err}"))),
                Ok(Err(_)) => Some(Arc::from("check panicked")),
                Err(_) => Some(Arc::from(format!("check timed out after {timeout:?}"))),
            };
            match failure {
                None => {
                    self.record(Outcome::Success, started.elapsed());
                    if let Some(mut slot) = checking.slot.take() {
                        let now = Instant::now();
                        slot.idle_since = now;
                        self.put_back(slot);
                    }
                }
                Some(reason) => {
                    self.record(Outcome::Failure, started.elapsed());
                    tracing::debug!(resource = R::KEY, %reason, "idle instance failed its health check; destroyed");
                    // Dropping `checking` discards the instance.
                    drop(checking);
                    first_failure.get_or_insert(reason);
                }
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    /// Create one instance (one attempt, no retry) and check it; a good one joins the idle
    /// store. With no room (every place in use) the pool is evidently serving: a success,
    /// unless `required` (a recovery probe), where the probe waits for the next round.
    async fn probe_by_create(
        self: &Arc<Self>,
        timeout: Duration,
        required: bool,
    ) -> Result<(), Arc<str>> {
        let reserved = {
            let mut state = self.state.lock();
            if state.closed
                || state.size >= state.max_size
                || self.reserve(&mut state, 1, false) == 0
            {
                false
            } else {
                state.size += 1;
                state.creating += 1;
                true
            }
        };
        if !reserved {
            return if required {
                Err(Arc::from("no room for a recovery probe"))
            } else {
                Ok(())
            };
        }
        let mut reservation = Reservation {
            pool: self,
            armed: true,
        };
        let started = Instant::now();
        let generation = self.state.lock().generation;
        let created = match self.ensure_credentials().await {
            Ok(()) => {
                create_instance(
                    &*self.resource,
                    &self.config.load_full(),
                    &self.ctx,
                    timeout.min(self.settings.create_timeout),
                )
                .await
            }
            Err(err) => Err(err),
        };
        let mut instance = match created {
            Ok(instance) => instance,
            Err(err) => {
                self.record(Outcome::Failure, started.elapsed());
                let reason: Arc<str> = Arc::from(format!("probe create failed: {err}"));
                drop(reservation);
                return Err(reason);
            }
        };
        let check = AssertUnwindSafe(self.resource.check(&mut instance)).catch_unwind();
        let checked = tokio::time::timeout(timeout, check).await;
        reservation.armed = false;
        match checked {
            Ok(Ok(Ok(()))) => {
                self.record(Outcome::Success, started.elapsed());
                self.deliver_new(instance, generation);
                Ok(())
            }
            failed => {
                self.record(Outcome::Failure, started.elapsed());
                let reason: Arc<str> = match failed {
                    Ok(Ok(Err(err))) => Arc::from(format!("probe check failed: {err}")),
                    Ok(Err(_)) => Arc::from("probe check panicked"),
                    _ => Arc::from(format!("probe check timed out after {timeout:?}")),
                };
                {
                    let mut state = self.state.lock();
                    state.creating -= 1;
                    state.releasing += 1;
                }
                self.destroy(instance);
                Err(reason)
            }
        }
    }

    /// Take the pool out of service: every waiter and later acquire fails at once with
    /// `Unavailable`, and the idle instances (suspect) are destroyed.
    fn quarantine(self: &Arc<Self>, reason: Arc<str>) {
        let mut wakers = Vec::new();
        let idle = {
            let mut state = self.state.lock();
            state.quarantine = Some(Arc::clone(&reason));
            while !state.queue.is_empty() {
                let err = self.error(Error::other(
                    ErrorKind::Unavailable,
                    format!("quarantined: {reason}"),
                ));
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

    fn is_broken(&self, instance: &R::Instance) -> bool {
        is_broken(&*self.resource, instance)
    }

    /// Return an instance from a guard. Never blocks.
    pub(crate) fn release(
        self: Arc<Self>,
        mut slot: Slot<R>,
        acquired_at: Instant,
        leak_key: Option<usize>,
        tainted: bool,
    ) {
        // One clock read serves the hold time and the idle timestamp.
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
        slot.idle_since = now;
        if self.default_recycle.load(Ordering::Relaxed) {
            self.put_back(slot);
            return;
        }
        let pool = Arc::clone(&self);
        let mut recycle = Box::pin(async move {
            let recycled = AssertUnwindSafe(pool.resource.recycle(&mut slot.instance))
                .catch_unwind()
                .await;
            (slot, recycled)
        });
        let mut cx = Context::from_waker(Waker::noop());
        reset_default_recycle_mark();
        let polled = recycle.as_mut().poll(&mut cx);
        if take_default_recycle_mark() {
            self.default_recycle.store(true, Ordering::Relaxed);
        }
        match polled {
            Poll::Ready((slot, recycled)) => self.after_recycle(slot, recycled),
            Poll::Pending => {
                let limit = self.settings.recycle_timeout;
                let runtime = Arc::clone(&self.runtime);
                let pool = self;
                runtime.release(Box::pin(async move {
                    match tokio::time::timeout(limit, recycle).await {
                        Ok((slot, recycled)) => pool.after_recycle(slot, recycled),
                        Err(_) => {
                            tracing::warn!(resource = R::KEY, timeout = ?limit, "recycle timed out; instance dropped");
                            // The instance went down with the recycle future; settle its count.
                            drop(Settle {
                                pool,
                                counted: Counted::InUse,
                            });
                        }
                    }
                }));
            }
        }
    }

    fn after_recycle(
        self: &Arc<Self>,
        slot: Slot<R>,
        recycled: std::thread::Result<Result<(), Error>>,
    ) {
        match recycled {
            Ok(Ok(())) => self.put_back(slot),
            Ok(Err(err)) => {
                tracing::debug!(resource = R::KEY, error = %err, "recycle failed; instance discarded");
                self.discard(slot);
            }
            Err(panic) => {
                let err = Error::panicked(ErrorKind::Recycle, "recycle", &*panic);
                tracing::warn!(resource = R::KEY, error = %err, "recycle panicked; instance discarded");
                self.discard(slot);
            }
        }
    }

    /// An in-use instance goes back to the first waiter or to the idle store: a successful
    /// call for the breaker.
    fn put_back(self: &Arc<Self>, slot: Slot<R>) {
        let mut state = self.state.lock();
        state.in_use -= 1;
        state.breaker.record_success();
        if state.closed
            || slot.generation != state.generation
            || state.size > state.max_size
            || self.shared.as_ref().is_some_and(|member| {
                member
                    .cap
                    .should_give_back(state.size, !state.queue.is_empty())
            })
        {
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

    /// Take an in-use instance out of service and destroy it on the release worker.
    fn discard(self: &Arc<Self>, slot: Slot<R>) {
        {
            let mut state = self.state.lock();
            state.in_use -= 1;
            state.releasing += 1;
        }
        self.destroy(slot.instance);
    }

    /// Destroy an instance already counted in `releasing`.
    fn destroy(self: &Arc<Self>, instance: R::Instance) {
        let limit = self.settings.recycle_timeout;
        let pool = Arc::clone(self);
        self.runtime.release(Box::pin(async move {
            let settle = Settle {
                pool,
                counted: Counted::Releasing,
            };
            let destroy = AssertUnwindSafe(settle.pool.resource.destroy(instance)).catch_unwind();
            match tokio::time::timeout(limit, destroy).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => tracing::warn!(resource = R::KEY, "destroy panicked"),
                Err(_) => tracing::warn!(resource = R::KEY, timeout = ?limit, "destroy timed out; instance dropped"),
            }
            drop(settle);
        }));
    }

    /// The instance left the pool for good (detached): free its place.
    pub(crate) fn forget(self: &Arc<Self>, leak_key: Option<usize>) {
        if let (Some(leaks), Some(key)) = (&self.leaks, leak_key) {
            leaks.lock().remove(key);
        }
        let (creates, freed) = {
            let mut state = self.state.lock();
            state.in_use -= 1;
            state.size -= 1;
            (self.plan_creates(&mut state, 0), self.free_place())
        };
        grant(freed);
        self.start_creates(creates);
        self.notify_if_drained();
    }

    /// How many creates to start now: one per waiter not yet covered, plus `for_idle`, within
    /// `max_size` and `max_concurrent_creates`. Reserves their places in `size`.
    fn plan_creates(&self, state: &mut State<R>, for_idle: usize) -> usize {
        if state.closed {
            return 0;
        }
        let wanted = (state.queue.len() + for_idle).saturating_sub(state.creating);
        let room = state.max_size.saturating_sub(state.size);
        let slots = self
            .settings
            .max_concurrent_creates
            .saturating_sub(state.creating);
        let mut n = wanted.min(room).min(slots);
        if n > 0 {
            // Only waiters queue the pool for the shared cap's places, not a `min_idle` refill.
            let for_waiters = state.queue.len() > state.creating;
            n = self.reserve(state, n, for_waiters);
        }
        state.size += n;
        state.creating += n;
        n
    }

    /// Take `wanted` places from the shared cap (all of them when there is none); see
    /// [`SharedCap::reserve`].
    fn reserve(&self, state: &mut State<R>, wanted: usize, queue: bool) -> usize {
        match &self.shared {
            None => wanted,
            Some(member) => SharedCap::reserve(member, state, wanted, queue),
        }
    }

    /// One instance's place is free (its `size` already decremented under the lock): give it
    /// back to the shared cap. Returns the starving pool to [`grant`] it to once the lock is
    /// released.
    fn free_place(&self) -> Option<Arc<Pool<R>>> {
        self.shared
            .as_ref()
            .and_then(|member| member.cap.give_back(1))
    }

    /// Places of the shared cap handed to this pool: start the creates its waiters need, and
    /// pass on what it does not use.
    fn accept_places(self: Arc<Self>, n: usize) {
        let (creates, spare) = {
            let mut state = self.state.lock();
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
    fn shed_idle(self: &Arc<Self>) {
        let slot = {
            let mut state = self.state.lock();
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

    fn start_creates(self: &Arc<Self>, n: usize) {
        for _ in 0..n {
            let pool = Arc::clone(self);
            self.runtime.spawn(async move { pool.create_one().await });
        }
        if let Some(member) = &self.shared {
            member.cap.reclaim();
        }
    }

    /// Change `max_size` and `min_idle` live. Growing serves waiters at once; shrinking destroys
    /// surplus idle instances now and surplus in-use ones when their guards drop (no guard is
    /// taken away). Maintenance refills a larger `min_idle`.
    pub(crate) fn resize(self: &Arc<Self>, max_size: usize, min_idle: usize) {
        let (surplus, creates) = {
            let mut state = self.state.lock();
            state.max_size = max_size;
            state.min_idle = min_idle;
            let mut surplus = Vec::new();
            while state.size - surplus.len() > max_size {
                match state.idle.pop_front() {
                    Some(slot) => surplus.push(slot),
                    None => break,
                }
            }
            state.releasing += surplus.len();
            (surplus, self.plan_creates(&mut state, 0))
        };
        tracing::info!(resource = R::KEY, tenant = ?self.source.tenant, max_size, min_idle, retired = surplus.len(), "pool resized");
        for slot in surplus {
            self.destroy(slot.instance);
        }
        self.start_creates(creates);
    }

    /// Run `Resource::create` for a place already reserved in `size`, with its timeout and
    /// panic guard. If this future is dropped before it finishes, the place is given back.
    async fn run_create(self: &Arc<Self>) -> Result<(R::Instance, u64), Error> {
        let mut reservation = Reservation {
            pool: self,
            armed: true,
        };
        let started = Instant::now();
        let created = retry(
            &self.retry,
            |_| async {
                let attempt = Instant::now();
                self.ensure_credentials().await?;
                let generation = self.state.lock().generation;
                let config = self.config.load_full();
                let created = create_instance(
                    &*self.resource,
                    &config,
                    &self.ctx,
                    self.settings.create_timeout,
                )
                .await
                .map(|instance| (instance, generation));
                let outcome = if created.is_ok() {
                    Outcome::Success
                } else {
                    Outcome::Failure
                };
                self.record(outcome, attempt.elapsed());
                created
            },
            |attempt, err, delay| {
                tracing::debug!(resource = R::KEY, attempt, error = %err, ?delay, "create failed; retrying");
            },
        )
        .await;
        reservation.armed = false;
        if created.is_ok() {
            self.metrics.created(started.elapsed());
        }
        created.map_err(|err| self.error(err))
    }

    /// The body of a create task: create, then deliver the instance or the error.
    async fn create_one(self: Arc<Self>) {
        match self.run_create().await {
            Ok((instance, generation)) => self.deliver_new(instance, generation),
            Err(err) => {
                self.create_failed(err);
            }
        }
    }

    fn deliver_new(self: &Arc<Self>, instance: R::Instance, generation: u64) {
        let now = Instant::now();
        let slot = Slot {
            instance,
            generation,
            expires_at: self
                .settings
                .max_lifetime
                .map(|lifetime| now + jittered(lifetime)),
            idle_since: now,
        };
        let mut state = self.state.lock();
        state.creating -= 1;
        state.created += 1;
        // Created with an older config or credentials: serve a waiter with it (it works, and is
        // destroyed when it comes back), but never keep it idle. Nor keep it idle while another
        // pool starves for the shared cap's places.
        let unwanted = state.queue.is_empty()
            && (slot.generation != state.generation
                || self
                    .shared
                    .as_ref()
                    .is_some_and(|member| member.cap.should_give_back(state.size, false)));
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
        self.runtime
            .emit(Event::InstanceCreated(self.source.clone()));
    }

    /// Record a failed create and give the error to the first waiter; returns it when nobody
    /// was waiting.
    fn create_failed(self: &Arc<Self>, err: Error) -> Option<Error> {
        tracing::warn!(resource = R::KEY, error = %err, "instance creation failed");
        let message = err.to_string();
        self.runtime.emit(Event::CreateFailed {
            source: self.source.clone(),
            error: message.clone(),
        });
        let mut state = self.state.lock();
        state.creating -= 1;
        state.size -= 1;
        state.create_errors += 1;
        state.last_create_error = Some(message);
        let (waker, unclaimed) = if state.queue.is_empty() {
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
        let min_idle = self.state.lock().min_idle;
        for _ in 0..min_idle {
            {
                let mut state = self.state.lock();
                state.size += 1;
                state.creating += 1;
            }
            match self.run_create().await {
                Ok((instance, generation)) => self.deliver_new(instance, generation),
                Err(err) => {
                    let last = err.to_string();
                    return Err(self
                        .create_failed(err)
                        .unwrap_or_else(|| self.error(Error::create(last))));
                }
            }
        }
        Ok(())
    }

    /// Background pass: retire expired and surplus idle instances, refill `min_idle`, report
    /// leaks.
    pub(crate) fn maintain(self: &Arc<Self>) {
        let now = Instant::now();
        let mut retired = Vec::new();
        let creates = {
            let mut state = self.state.lock();
            if state.closed {
                return;
            }
            let mut surplus = state.size.saturating_sub(state.min_idle);
            let idle_timeout = self.settings.idle_timeout;
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
        let (Some(leaks), Some(threshold)) = (&self.leaks, self.settings.leak_threshold) else {
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
            tracing::warn!(resource = R::KEY, name = ?self.source.name, held = ?held, "guard held past leak_threshold; possible leak");
            self.runtime.emit(Event::LeakDetected {
                source: self.source.clone(),
                held,
            });
        }
    }

    /// Stop serving: fail every waiter, destroy idle instances; in-use ones are destroyed when
    /// their guards drop.
    pub(crate) fn close(self: &Arc<Self>) {
        let mut wakers = Vec::new();
        let idle = {
            let mut state = self.state.lock();
            if state.closed {
                return;
            }
            state.closed = true;
            while !state.queue.is_empty() {
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

    fn notify_if_drained(&self) {
        let state = self.state.lock();
        if state.closed && state.size == 0 {
            drop(state);
            self.drained.notify_waiters();
        }
    }
}

/// `Resource::is_broken`; a panic in it counts as broken.
pub(crate) fn is_broken<R: Resource>(resource: &R, instance: &R::Instance) -> bool {
    std::panic::catch_unwind(AssertUnwindSafe(|| resource.is_broken(instance))).unwrap_or(true)
}

/// Whole milliseconds from `epoch` to `at` (0 if `at` is earlier): cheaper than
/// `Duration::as_millis`, which divides a `u128`.
pub(crate) fn millis_since(epoch: Instant, at: Instant) -> u64 {
    let elapsed = at.saturating_duration_since(epoch);
    elapsed
        .as_secs()
        .saturating_mul(1000)
        .saturating_add(u64::from(elapsed.subsec_millis()))
}

/// Hand a freed place of a shared cap to the starving pool it went to (call with no lock held).
fn grant<R: Resource>(to: Option<Arc<Pool<R>>>) {
    if let Some(pool) = to {
        pool.accept_places(1);
    }
}

/// Run `Resource::create` bounded by `timeout`, a panic caught as a create error.
pub(crate) async fn create_instance<R: Resource>(
    resource: &R,
    config: &R::Config,
    ctx: &CreateContext,
    timeout: Duration,
) -> Result<R::Instance, Error> {
    let create = AssertUnwindSafe(resource.create(config, ctx)).catch_unwind();
    match tokio::time::timeout(timeout, create).await {
        Ok(Ok(created)) => created,
        Ok(Err(panic)) => Err(Error::panicked(ErrorKind::Create, "create", &*panic)),
        Err(_) => Err(Error::timeout(TimeoutPhase::Create, timeout, None, None)),
    }
}

/// `lifetime` less a random 0–2.5 %, so instances created together do not expire together.
fn jittered(lifetime: Duration) -> Duration {
    let max_jitter = lifetime / 40;
    if max_jitter.is_zero() {
        return lifetime;
    }
    let jitter = rand::random_range(0..=max_jitter.as_nanos() as u64);
    lifetime - Duration::from_nanos(jitter)
}

/// A waiter's place in the queue; dropping it unserved (timeout, cancellation) removes it, and
/// passes on an instance that was handed to it in the meantime.
struct Waiting<'a, R: Resource> {
    pool: &'a Arc<Pool<R>>,
    key: usize,
    done: bool,
}

impl<R: Resource> Future for Waiting<'_, R> {
    type Output = Result<Slot<R>, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let key = self.key;
        let mut state = self.pool.state.lock();
        match &mut state.waiters[key] {
            Waiter::Waiting { waker, .. } => {
                match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Waiter::Served(_) => {
                let Waiter::Served(served) = state.waiters.remove(key) else {
                    unreachable!("matched Served above");
                };
                drop(state);
                self.done = true;
                Poll::Ready(served)
            }
        }
    }
}

impl<R: Resource> Drop for Waiting<'_, R> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.pool.state.lock();
        match state.waiters.remove(self.key) {
            Waiter::Waiting { .. } => {
                if let Some(at) = state.queue.iter().position(|&k| k == self.key) {
                    state.queue.remove(at);
                }
            }
            Waiter::Served(Ok(slot)) => {
                // Handed to us after we gave up: pass it on, as if released.
                drop(state);
                self.pool.put_back(slot);
            }
            Waiter::Served(Err(_)) => {}
        }
    }
}

/// Marks the sweeper gone however its task ends (done, or dropped by a dying runtime), so the
/// next waiter starts a new one.
struct SweeperRunning<'a, R: Resource> {
    pool: &'a Arc<Pool<R>>,
    armed: bool,
}

impl<R: Resource> Drop for SweeperRunning<'_, R> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.state.lock().sweeper = None;
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
            let mut state = self.pool.state.lock();
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
            emit_breaker(&self.pool.runtime, &self.pool.source, transition);
        }
    }
}

impl<R: Resource> Drop for ProbeTicket<'_, R> {
    fn drop(&mut self) {
        if self.started.take().is_some() {
            self.pool.state.lock().breaker.release_probe();
        }
    }
}

/// An instance under `check` during acquire; dropped without `take`, it is discarded.
struct Checking<'a, R: Resource> {
    pool: &'a Arc<Pool<R>>,
    slot: Option<Slot<R>>,
}

impl<R: Resource> Drop for Checking<'_, R> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.pool.discard(slot);
        }
    }
}

/// A reserved place for an instance being created; dropped armed (the create task was dropped
/// by a dying runtime, or the build future was cancelled), it gives the place back.
struct Reservation<'a, R: Resource> {
    pool: &'a Arc<Pool<R>>,
    armed: bool,
}

impl<R: Resource> Drop for Reservation<'_, R> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.pool.state.lock();
            state.creating -= 1;
            state.size -= 1;
            let freed = self.pool.free_place();
            drop(state);
            grant(freed);
            self.pool.notify_if_drained();
        }
    }
}

/// Settles the count of an instance whose life ended on the release worker: however the job
/// ends (done, timed out, panicked, dropped), `size` goes down exactly once.
struct Settle<R: Resource> {
    pool: Arc<Pool<R>>,
    counted: Counted,
}

impl<R: Resource> Drop for Settle<R> {
    fn drop(&mut self) {
        let (creates, freed) = {
            let mut state = self.pool.state.lock();
            match self.counted {
                Counted::InUse => state.in_use -= 1,
                Counted::Releasing => state.releasing -= 1,
            }
            state.size -= 1;
            state.destroyed += 1;
            (
                self.pool.plan_creates(&mut state, 0),
                self.pool.free_place(),
            )
        };
        grant(freed);
        self.pool.metrics.destroyed();
        self.pool
            .runtime
            .emit(Event::InstanceDestroyed(self.pool.source.clone()));
        self.pool.start_creates(creates);
        self.pool.notify_if_drained();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Config;

    #[derive(Clone)]
    struct NoConfig;
    impl Config for NoConfig {}

    struct Conn;
    impl Resource for Conn {
        type Config = NoConfig;
        type Instance = [u8; 40];
        const KEY: &'static str = "conn";
        async fn create(&self, _: &NoConfig, _: &CreateContext) -> Result<[u8; 40], Error> {
            Ok([0; 40])
        }
    }

    /// An idle instance lives inline in the idle deque as a `Slot`: the framework adds its two
    /// timestamps and nothing on the heap. Budget: 256 bytes.
    #[test]
    fn framework_overhead_per_idle_instance_is_within_budget() {
        let overhead = std::mem::size_of::<Slot<Conn>>() - std::mem::size_of::<[u8; 40]>();
        assert!(overhead <= 256, "{overhead} bytes");
        assert!(
            overhead <= 40,
            "two timestamps and padding, got {overhead} bytes"
        );
    }

    #[test]
    fn lifetime_jitter_stays_within_two_and_a_half_percent() {
        let lifetime = Duration::from_secs(1000);
        for _ in 0..1000 {
            let jittered = jittered(lifetime);
            assert!(
                jittered <= lifetime && jittered >= lifetime - lifetime / 40,
                "{jittered:?}"
            );
        }
        assert_eq!(jittered(Duration::from_nanos(10)), Duration::from_nanos(10));
    }
}
