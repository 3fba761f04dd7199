//! The pool: idle store, FIFO waiters with direct hand-off, creation in tasks of its own,
//! release through the manager's worker, health rounds and the maintenance pass.
//!
//! One file per concern: `acquire` (the waiter queue and its sweeper), `create` (places
//! reserved for creates, and the create tasks), `release` (guards coming back, recycle and
//! destroy), `health` (health rounds, quarantine and the breaker), `generation`
//! (reconfiguration and credential rotation) and `maintain` (idle timeout, lifetime, `min_idle`,
//! resize, close). What a pool shares with a `resident` (config and generation, credentials,
//! the create attempt and its retries, the health watch, close) is written once, in
//! `lifecycle`. This file holds the pool's state and its invariant.
//!
//! # Invariants
//!
//! - `size == idle + in_use + creating + releasing`, asserted in debug builds each time the
//!   pool's lock is released. `size` counts every instance that exists or is being created,
//!   those being destroyed included, and a create starts only while `size < max_size`: alive
//!   instances never exceed `max_size`. After a shrink, `size` may exceed the new maximum until
//!   the surplus in-use instances come back; `size - releasing` is what is compared with it when
//!   deciding whether to keep an instance.
//! - An instance is owned by exactly one of: the idle store, one waiter's hand-off cell, one
//!   guard (or an acquire or health round checking it), one create task, one release job.
//! - Waiters are served strictly in arrival order. A newcomer takes an idle instance only when
//!   nobody waits; a released instance goes straight to the first waiter; a waiter handed an
//!   instance that turns out bad goes back to the front of the queue.
//! - Every place (`creating`, `releasing`, an in-use instance being recycled, a running sweeper)
//!   is owned by a ticket made *before* the task or job that settles it is submitted, so a job
//!   dropped unpolled (a dead worker, a runtime shut down) still settles it exactly once.

mod acquire;
pub(crate) mod cap;
mod create;
mod generation;
mod health;
pub(crate) mod lifecycle;
mod maintain;
mod release;
pub(crate) mod resident;
pub(crate) mod retired;
mod waiters;

use std::collections::VecDeque;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::Waker;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use slab::Slab;
use tokio::sync::Notify;
use tokio::time::Instant;

pub(crate) use self::acquire::Acquired;
use self::cap::{Member, SharedCap};
use self::lifecycle::Lifecycle;
use self::waiters::Waiters;
use crate::context::CreateContext;
use crate::error::Error;
pub use crate::limits::{MAX_DURATION, MAX_POOL_SIZE};
use crate::policy::Policy;
pub use crate::policy::{PoolConfig, QueueOrder};
use crate::resilience::breaker::CircuitBreaker;
use crate::resource::Resource;
use crate::runtime::Runtime;
pub use crate::stats::PoolStats;
use crate::telemetry::PoolMetrics;

/// One instance and the times the pool keeps for it.
pub(crate) struct Slot<R: Resource> {
    pub(crate) instance: R::Instance,
    expires_at: Option<Instant>,
    /// When it last went idle (released, or created): what `idle_timeout` measures.
    idle_since: Instant,
    /// How long after `idle_since` it was last known good (a health check passed), in
    /// milliseconds: with `idle_since`, what `validate_after_idle` measures. Kept as an offset
    /// so the slot stays 48 bytes beside a `u64` instance: a second `Instant` made every
    /// hand-off between tasks measurably slower (the pool-overhead bench, 64 and 256 tasks).
    validated: u32,
    /// The config and credentials generation it was created with.
    generation: u32,
}

impl<R: Resource> Slot<R> {
    fn expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Whether it was last known good more than `after` before `now`.
    fn unchecked_for(&self, after: Duration, now: Instant) -> bool {
        let since_good = match self.validated {
            0 => Some(after),
            ms => after.checked_add(Duration::from_millis(u64::from(ms))),
        };
        // (`idle_since + d < now` costs a quarter of `now - idle_since > d`.)
        since_good
            .and_then(|d| self.idle_since.checked_add(d))
            .is_some_and(|due_at| due_at < now)
    }

    /// It passed a health check at `now`.
    fn validated_at(&mut self, now: Instant) {
        let ms = now.saturating_duration_since(self.idle_since).as_millis();
        self.validated = u32::try_from(ms).unwrap_or(u32::MAX);
    }

    /// It went idle at `now` (returned, or created).
    fn idle_from(&mut self, now: Instant) {
        self.idle_since = now;
        self.validated = 0;
    }
}

pub(crate) struct State<R: Resource> {
    idle: VecDeque<Slot<R>>,
    waiters: Waiters<R>,
    size: usize,
    in_use: usize,
    creating: usize,
    releasing: usize,
    closed: bool,
    /// While waiters exist, one sweeper task fails those past their deadline; this is the time
    /// it will next look. `None`: no sweeper is running (a waiter then keeps its own timer).
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
        if self.waiters.is_empty() {
            self.idle.push_back(slot);
            return None;
        }
        match self.waiters.serve_first(Ok(slot)) {
            Ok(waker) => {
                self.in_use += 1;
                waker
            }
            Err(Ok(slot)) => {
                self.idle.push_back(slot);
                None
            }
            Err(Err(_)) => unreachable!("handed an instance, given back an error"),
        }
    }

    /// Fail the first waiter with `error`.
    fn fail_first(&mut self, error: Error) -> Option<Waker> {
        self.waiters.serve_first(Err(error)).ok().flatten()
    }

    /// Instances that will still exist once the release worker is done: what `max_size`
    /// bounds.
    fn staying(&self) -> usize {
        self.size - self.releasing
    }

    /// Whether anything is in use, waited for or being created: a pool that is busy is never
    /// evicted or ended for being idle.
    fn busy(&self) -> bool {
        self.in_use > 0 || !self.waiters.is_empty() || self.creating > 0
    }

    fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.size,
            max_size: self.max_size,
            idle: self.idle.len(),
            in_use: self.in_use,
            waiters: self.waiters.len(),
            creating: self.creating,
            releasing: self.releasing,
            created: self.created,
            destroyed: self.destroyed,
            create_errors: self.create_errors,
            timeouts: self.timeouts,
        }
    }
}

/// The pool's state, locked. In debug builds, releasing the lock asserts the accounting
/// identity, so any transition that lets the counts drift fails the test that made it.
pub(crate) struct Locked<'a, R: Resource>(MutexGuard<'a, State<R>>);

impl<R: Resource> Deref for Locked<'_, R> {
    type Target = State<R>;

    fn deref(&self) -> &State<R> {
        &self.0
    }
}

impl<R: Resource> DerefMut for Locked<'_, R> {
    fn deref_mut(&mut self) -> &mut State<R> {
        &mut self.0
    }
}

#[cfg(debug_assertions)]
impl<R: Resource> Drop for Locked<'_, R> {
    fn drop(&mut self) {
        let s = &*self.0;
        if std::thread::panicking() {
            return;
        }
        assert_eq!(
            s.size,
            s.idle.len() + s.in_use + s.creating + s.releasing,
            "pool `{}`: size != idle + in_use + creating + releasing ({:?})",
            R::KEY,
            s.stats(),
        );
        assert!(
            s.idle.len() <= s.max_size,
            "pool `{}`: more idle instances than max_size ({:?})",
            R::KEY,
            s.stats(),
        );
    }
}

/// Which count an instance leaving through a [`release::Settle`] ticket is still held in.
#[derive(Clone, Copy)]
enum Counted {
    InUse,
    Releasing,
}

/// The pool's lock and state on cache lines of their own. Every acquire and release writes
/// them; without the padding, the read-mostly fields laid out beside them (the settings, the
/// runtime, the flags a release reads) shared their lines, and every other thread reloaded
/// those after each write. Measured with the pool-overhead bench, 64 tasks holding across a
/// yield on 2 cores: the state unpadded cost 15-25 % more per acquire and release.
#[repr(align(128))]
struct OwnLines<T>(T);

/// The shared part of one pool; guards and tasks hold it by `Arc`.
pub(crate) struct Pool<R: Resource> {
    /// What a pool shares with a resident: config, generation, credentials, creation, health.
    pub(crate) life: Lifecycle<R>,
    state: OwnLines<Mutex<State<R>>>,
    drained: Notify,
    /// Wakes the sweeper early: a waiter with an earlier deadline arrived, or the pool closed.
    sweep: Notify,
    metrics: PoolMetrics,
    leaks: Option<Mutex<Slab<Checkout>>>,
    /// Learned on the first release: the resource keeps the default `recycle`, so releases
    /// skip it (and the allocation its future would need).
    default_recycle: AtomicBool,
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
        let settings = &policy.pool;
        let metrics = PoolMetrics::new(R::KEY, ctx.name(), ctx.tenant().map(|t| t.as_str()));
        let leaks = settings.leak_threshold.map(|_| Mutex::new(Slab::new()));
        let pool = Arc::new_cyclic(|me| Self {
            state: OwnLines(Mutex::new(State {
                idle: VecDeque::with_capacity(settings.max_size.min(1024)),
                waiters: Waiters::new(),
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
                max_size: settings.max_size,
                min_idle: settings.min_idle,
                granted: 0,
                starving: false,
            })),
            drained: Notify::new(),
            sweep: Notify::new(),
            metrics,
            leaks,
            default_recycle: AtomicBool::new(false),
            shared: cap.map(|cap| Member {
                cap: Arc::clone(cap),
                me: me.clone(),
            }),
            last_used: AtomicU64::new(0),
            life: Lifecycle::new(resource, config, policy, ctx, runtime),
        });
        if let Some(cap) = cap {
            cap.join(&pool);
        }
        pool
    }

    /// Lock the pool's state (see [`Locked`]).
    fn lock(&self) -> Locked<'_, R> {
        Locked(self.state.0.lock())
    }

    fn error(&self, err: Error) -> Error {
        self.life.error(err)
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

    /// Whether the pool has been unused for `limit` milliseconds at `now` (both since its
    /// registration's epoch): untouched for that long, and nothing in use, waited for or being
    /// created.
    pub(crate) fn idle_for(&self, now: u64, limit: u64) -> bool {
        now.saturating_sub(self.last_used()) >= limit && !self.lock().busy()
    }

    /// The pool's counts now.
    pub(crate) fn stats(&self) -> PoolStats {
        self.lock().stats()
    }

    fn is_broken(&self, instance: &R::Instance) -> bool {
        crate::hooks::is_broken(&*self.life.resource, instance)
    }

    fn notify_if_drained(&self) {
        let state = self.lock();
        if state.closed && state.size == 0 {
            drop(state);
            self.drained.notify_waiters();
        }
    }
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

/// `lifetime` less a random 0–2.5 %, so instances created together do not expire together.
fn jittered(lifetime: Duration) -> Duration {
    let max_jitter = lifetime / 40;
    if max_jitter.is_zero() {
        return lifetime;
    }
    let jitter = rand::random_range(0..=max_jitter.as_nanos() as u64);
    lifetime - Duration::from_nanos(jitter)
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

    /// An idle instance lives inline in the idle deque as a `Slot`: the framework adds three
    /// timestamps, a validation offset and a generation, nothing on the heap. Budget: 256 bytes.
    #[test]
    fn framework_overhead_per_idle_instance_is_within_budget() {
        let overhead = std::mem::size_of::<Slot<Conn>>() - std::mem::size_of::<[u8; 40]>();
        assert!(overhead <= 256, "{overhead} bytes");
        assert!(
            overhead <= 40,
            "two timestamps, a validation offset and a generation, got {overhead} bytes"
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
