//! A programmable test resource: every hook's outcome is set by the test, and every instance
//! counts itself alive until it is dropped, so tests can assert that none is lost.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use nebula_resource::{
    Config, CreateContext, CredentialFuture, CredentialProvider, Credentials, Error, Resource,
    TenantId,
};
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
    /// Panics while the hook's future is polled.
    Panic,
    /// Panics in the hook's body, before its future is made (for `is_broken`, which has no
    /// future, the same as `Panic`).
    PanicSync,
}

pub const SLOW: Duration = Duration::from_millis(50);

/// Outcomes a randomized fault picks from: mostly healthy, each fault about as likely as the
/// others. The first four never hang (`Ok` and `Err` only); `Slow` and `Never` outlast short
/// timeouts.
pub const FAULTS: [Outcome; 8] = [
    Outcome::Ok,
    Outcome::Ok,
    Outcome::Ok,
    Outcome::Err,
    Outcome::Slow,
    Outcome::Never,
    Outcome::Panic,
    Outcome::PanicSync,
];

#[derive(Default)]
pub struct Probe {
    pub create: Mutex<Option<Outcome>>,
    pub check: Mutex<Option<Outcome>>,
    pub recycle: Mutex<Option<Outcome>>,
    pub destroy: Mutex<Option<Outcome>>,
    /// `Err` reports every instance broken; `Panic`/`PanicSync` panic; otherwise the instance's
    /// own `broken` flag.
    pub is_broken: Mutex<Option<Outcome>>,
    /// What `degraded` reports for every instance.
    pub degraded: Mutex<Option<String>>,
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
            Hook::IsBroken => &self.is_broken,
        }
    }

    fn outcome(&self, hook: Hook) -> Outcome {
        self.slot(hook).lock().unwrap_or(Outcome::Ok)
    }

    pub fn alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }

    /// Set every hook back to `Ok`.
    pub fn reset(&self) {
        for hook in Hook::ALL {
            self.set(hook, Outcome::Ok);
        }
    }

    /// The synchronous part of a hook: count the call, read the outcome, and panic at once for
    /// `PanicSync` (before any future exists).
    fn enter(&self, hook: Hook, calls: &AtomicUsize) -> Outcome {
        calls.fetch_add(1, Ordering::SeqCst);
        let outcome = self.outcome(hook);
        if outcome == Outcome::PanicSync {
            panic!("{hook:?} panicked on purpose before making its future");
        }
        outcome
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Create,
    Check,
    Recycle,
    Destroy,
    IsBroken,
}

impl Hook {
    pub const ALL: [Hook; 5] = [
        Hook::Create,
        Hook::Check,
        Hook::Recycle,
        Hook::Destroy,
        Hook::IsBroken,
    ];
}

/// Behave as `outcome` says (`PanicSync` panics here too: the hook should have panicked before).
pub async fn run(outcome: Outcome, what: &str) -> Result<(), Error> {
    match outcome {
        Outcome::Ok => Ok(()),
        Outcome::Err => Err(Error::create(format!("{what} failed on purpose"))),
        Outcome::Slow => {
            tokio::time::sleep(SLOW).await;
            Ok(())
        }
        Outcome::Never => std::future::pending().await,
        Outcome::Panic | Outcome::PanicSync => panic!("{what} panicked on purpose"),
    }
}

/// One instance. It counts itself in `alive` until dropped; `busy` catches double hand-out.
pub struct Conn {
    pub id: u64,
    /// The config label it was created with.
    pub label: String,
    /// The secret of the credentials it was created with, if the registration has a provider.
    pub secret: Option<String>,
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

    // The hooks are plain `fn`s returning a future, so that `Outcome::PanicSync` can panic
    // before the future exists, as a hook that validates its arguments synchronously might.
    fn create(
        &self,
        config: &TestConfig,
        ctx: &CreateContext,
    ) -> impl Future<Output = Result<Conn, Error>> + Send {
        let outcome = self.probe.enter(Hook::Create, &self.probe.create_calls);
        let probe = Arc::clone(&self.probe);
        let label = config.label.clone();
        let secret = ctx
            .credentials()
            .map(|credentials| credentials.secret().expose().to_owned());
        async move {
            run(outcome, "create").await?;
            let alive = probe.alive.fetch_add(1, Ordering::SeqCst) + 1;
            probe.max_alive.fetch_max(alive, Ordering::SeqCst);
            probe.created.fetch_add(1, Ordering::SeqCst);
            Ok(Conn {
                id: probe.next_id.fetch_add(1, Ordering::SeqCst),
                label,
                secret,
                broken: Arc::new(AtomicBool::new(false)),
                busy: AtomicBool::new(false),
                probe,
            })
        }
    }

    fn check(&self, _conn: &mut Conn) -> impl Future<Output = Result<(), Error>> + Send {
        let outcome = self.probe.enter(Hook::Check, &self.probe.check_calls);
        run(outcome, "check")
    }

    fn is_broken(&self, conn: &Conn) -> bool {
        match self.probe.outcome(Hook::IsBroken) {
            Outcome::Panic | Outcome::PanicSync => panic!("is_broken panicked on purpose"),
            Outcome::Err => true,
            _ => conn.broken.load(Ordering::SeqCst),
        }
    }

    fn degraded(&self, _conn: &Conn) -> Option<String> {
        self.probe.degraded.lock().clone()
    }

    fn recycle(&self, _conn: &mut Conn) -> impl Future<Output = Result<(), Error>> + Send {
        let outcome = self.probe.enter(Hook::Recycle, &self.probe.recycle_calls);
        run(outcome, "recycle")
    }

    fn destroy(&self, conn: Conn) -> impl Future<Output = ()> + Send {
        let outcome = self.probe.enter(Hook::Destroy, &self.probe.destroy_calls);
        async move {
            let _ = run(outcome, "destroy").await;
            drop(conn);
        }
    }
}

/// Keep the default panic message off stderr for panics made on purpose (their message says
/// "on purpose"), so that a fault-injecting test's output shows only real failures. Other
/// panics print as usual.
pub fn quiet_deliberate_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !message.contains("on purpose") {
                default(info);
            }
        }));
    });
}

/// A credential provider whose secret is `s<generation>` ([`rotate`](Self::rotate) bumps the
/// generation), and whose fetches can be made to hang or fail.
#[derive(Default)]
pub struct TestCredentials {
    pub generation: AtomicU64,
    pub fetches: AtomicUsize,
    /// How every fetch behaves (`Ok` when unset); `Never` hangs, `Slow` answers after `SLOW`.
    pub outcome: Mutex<Option<Outcome>>,
    /// The next this many fetches never return, whatever `outcome` says.
    pub hang_next: AtomicUsize,
}

impl TestCredentials {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The secret a fetch answers now.
    pub fn secret(&self) -> String {
        format!("s{}", self.generation.load(Ordering::SeqCst))
    }

    /// Change the secret; returns the new one.
    pub fn rotate(&self) -> String {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        format!("s{generation}")
    }

    pub fn set(&self, outcome: Outcome) {
        *self.outcome.lock() = Some(outcome);
    }
}

impl CredentialProvider for TestCredentials {
    fn fetch<'a>(&'a self, _tenant: Option<&'a TenantId>) -> CredentialFuture<'a> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let hang = self
            .hang_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let outcome = if hang {
            Outcome::Never
        } else {
            self.outcome.lock().unwrap_or(Outcome::Ok)
        };
        let secret = self.secret();
        Box::pin(async move {
            run(outcome, "credential fetch").await?;
            Ok(Credentials::new(secret))
        })
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

/// The seeds of a stress test that runs `rounds` rounds, each on a fresh manager: the one in
/// `STRESS_SEED` if set (one round), else `rounds` random ones; and the operation count per
/// round (`STRESS_OPS`, `default_ops` when unset). Print each round's seed before running it.
pub fn stress_seeds(name: &str, rounds: usize, default_ops: usize) -> (Vec<u64>, usize) {
    let ops = std::env::var("STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_ops);
    let seeds = match std::env::var("STRESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(seed) => vec![seed],
        None => (0..rounds).map(|_| rand::random()).collect(),
    };
    eprintln!("{name}: {} round(s) of {ops} ops", seeds.len());
    (seeds, ops)
}

/// The message of a panic payload (a `JoinError`'s, `catch_unwind`'s).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic with a payload of another type".to_owned())
}

/// Run `task`; a panic that escapes it is recorded in `escaped` (its message) instead of
/// unwinding, so that a test that then hangs can say what panicked.
pub async fn record_panic(escaped: &Mutex<Vec<String>>, task: impl Future<Output = ()>) {
    use futures_util::FutureExt;
    if let Err(payload) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
        escaped.lock().push(panic_message(&*payload));
    }
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
