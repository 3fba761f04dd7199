//! A programmable test resource: every hook's outcome is set by the test, and every instance
//! counts itself alive until it is dropped, so tests can assert that none is lost.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use nebula_resource::{Config, CreateContext, Error, Resource};
use parking_lot::Mutex;

/// What a hook does when called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Err,
    /// Succeeds after `SLOW`.
    Slow,
    /// Never completes.
    Never,
    Panic,
}

pub const SLOW: Duration = Duration::from_millis(50);

#[derive(Default)]
pub struct Probe {
    pub create: Mutex<Option<Outcome>>,
    pub check: Mutex<Option<Outcome>>,
    pub recycle: Mutex<Option<Outcome>>,
    pub destroy: Mutex<Option<Outcome>>,
    /// Instances that exist (created and not yet dropped).
    pub alive: AtomicUsize,
    pub max_alive: AtomicUsize,
    pub created: AtomicUsize,
    pub create_calls: AtomicUsize,
    pub check_calls: AtomicUsize,
    pub recycle_calls: AtomicUsize,
    pub destroy_calls: AtomicUsize,
    pub next_id: AtomicU64,
}

impl Probe {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn set(&self, hook: Hook, outcome: Outcome) {
        *self.slot(hook).lock() = Some(outcome);
    }

    fn slot(&self, hook: Hook) -> &Mutex<Option<Outcome>> {
        match hook {
            Hook::Create => &self.create,
            Hook::Check => &self.check,
            Hook::Recycle => &self.recycle,
            Hook::Destroy => &self.destroy,
        }
    }

    fn outcome(&self, hook: Hook) -> Outcome {
        self.slot(hook).lock().unwrap_or(Outcome::Ok)
    }

    pub fn alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Create,
    Check,
    Recycle,
    Destroy,
}

async fn run(outcome: Outcome, what: &str) -> Result<(), Error> {
    match outcome {
        Outcome::Ok => Ok(()),
        Outcome::Err => Err(Error::create(format!("{what} failed on purpose"))),
        Outcome::Slow => {
            tokio::time::sleep(SLOW).await;
            Ok(())
        }
        Outcome::Never => std::future::pending().await,
        Outcome::Panic => panic!("{what} panicked on purpose"),
    }
}

/// One instance. It counts itself in `alive` until dropped; `busy` catches double hand-out.
pub struct Conn {
    pub id: u64,
    pub broken: Arc<AtomicBool>,
    pub busy: AtomicBool,
    probe: Arc<Probe>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.probe.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
pub struct TestConfig {
    pub label: String,
}

impl Config for TestConfig {
    fn validate(&self) -> Result<(), Error> {
        if self.label.contains(' ') {
            return Err(Error::config("label", "must not contain spaces"));
        }
        Ok(())
    }
}

pub struct TestResource {
    pub probe: Arc<Probe>,
}

impl TestResource {
    pub fn new(probe: &Arc<Probe>) -> Self {
        Self {
            probe: Arc::clone(probe),
        }
    }
}

impl Resource for TestResource {
    type Config = TestConfig;
    type Instance = Conn;
    const KEY: &'static str = "test";

    async fn create(&self, _config: &TestConfig, _ctx: &CreateContext) -> Result<Conn, Error> {
        self.probe.create_calls.fetch_add(1, Ordering::SeqCst);
        run(self.probe.outcome(Hook::Create), "create").await?;
        let alive = self.probe.alive.fetch_add(1, Ordering::SeqCst) + 1;
        self.probe.max_alive.fetch_max(alive, Ordering::SeqCst);
        self.probe.created.fetch_add(1, Ordering::SeqCst);
        Ok(Conn {
            id: self.probe.next_id.fetch_add(1, Ordering::SeqCst),
            broken: Arc::new(AtomicBool::new(false)),
            busy: AtomicBool::new(false),
            probe: Arc::clone(&self.probe),
        })
    }

    async fn check(&self, _conn: &mut Conn) -> Result<(), Error> {
        self.probe.check_calls.fetch_add(1, Ordering::SeqCst);
        run(self.probe.outcome(Hook::Check), "check").await
    }

    fn is_broken(&self, conn: &Conn) -> bool {
        conn.broken.load(Ordering::SeqCst)
    }

    async fn recycle(&self, _conn: &mut Conn) -> Result<(), Error> {
        self.probe.recycle_calls.fetch_add(1, Ordering::SeqCst);
        run(self.probe.outcome(Hook::Recycle), "recycle").await
    }

    async fn destroy(&self, conn: Conn) {
        self.probe.destroy_calls.fetch_add(1, Ordering::SeqCst);
        let outcome = self.probe.outcome(Hook::Destroy);
        let _ = run(outcome, "destroy").await;
        drop(conn);
    }
}

/// Let spawned tasks and the release worker run (paused time auto-advances while idle).
pub async fn settle() {
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
}

/// A manager with one `TestResource` pool configured by `pool`, and none of the resilience
/// machinery (no create retry, no breaker, no health rounds): the pool's own mechanics alone.
pub async fn pool_manager(
    probe: &Arc<Probe>,
    pool: nebula_resource::PoolConfig,
) -> nebula_resource::ResourceManager {
    policy_manager(
        probe,
        nebula_resource::Policy::default()
            .pool(pool)
            .retry(nebula_resource::RetryPolicy::none())
            .breaker(nebula_resource::BreakerConfig::disabled())
            .health(nebula_resource::HealthConfig::disabled()),
    )
    .await
}

/// A manager with one `TestResource` registered with `policy`.
pub async fn policy_manager(
    probe: &Arc<Probe>,
    policy: nebula_resource::Policy,
) -> nebula_resource::ResourceManager {
    nebula_resource::ResourceManager::builder()
        .register_with(TestResource::new(probe), TestConfig::default(), policy)
        .build()
        .await
        .expect("build a test pool")
}

/// A stress test's seed (`STRESS_SEED`, random when unset, printed so that a failure can be run
/// again) and operation count (`STRESS_OPS`, `default_ops` when unset).
pub fn stress_settings(name: &str, default_ops: usize) -> (u64, usize) {
    let seed = std::env::var("STRESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("{name} seed {seed} (rerun with STRESS_SEED={seed})");
    let ops = std::env::var("STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_ops);
    (seed, ops)
}

/// Run an acquire the way the stress tests do: for `roll < 10` cancelled at its first await point
/// if it has to wait, for `roll < 15` cancelled after a random wait under 50 µs (drawn from `rng`
/// only then), otherwise to the end. `None` if it was cancelled.
pub async fn maybe_cancelled<F: std::future::Future>(
    roll: u32,
    rng: &mut impl rand::Rng,
    acquire: impl FnOnce() -> F,
) -> Option<F::Output> {
    if roll < 10 {
        tokio::select! {
            biased;
            acquired = acquire() => Some(acquired),
            () = tokio::task::yield_now() => None,
        }
    } else if roll < 15 {
        let wait = Duration::from_micros(rng.random_range(0..50));
        tokio::time::timeout(wait, acquire()).await.ok()
    } else {
        Some(acquire().await)
    }
}

/// Hold `conn` as its only user: assert that no other guard has it, yield once if `yield_now`
/// (other tasks run meanwhile), then mark it free again.
pub async fn hold_exclusively(conn: &Conn, yield_now: bool) {
    assert!(
        !conn.busy.swap(true, Ordering::SeqCst),
        "instance handed to two guards"
    );
    if yield_now {
        tokio::task::yield_now().await;
    }
    conn.busy.store(false, Ordering::SeqCst);
}
