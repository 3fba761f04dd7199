//! Randomized fault schedules over a resident: tasks acquire, hold, release (also on other
//! threads) and taint, while a controller reconfigures, rotates credentials (whose fetches
//! sometimes fail, stall or hang), and makes the hooks — create, check, share, is_broken,
//! destroy — fail, stall, hang past the health timeout, and panic, both while their future is
//! polled and in their body before the future exists. Health rounds run every few
//! milliseconds. In some rounds shutdown comes at a random moment under load.
//!
//! Acquires may fail meanwhile. What must hold: afterwards nothing is counted in use or being
//! created; once the last reconfigure and rotation have settled and every guard is dropped,
//! every instance alive was made with the current config and credentials, and at most one is
//! alive; and a shutdown returns `Ok` and leaves nothing alive.
//!
//! Each round prints its seed; `STRESS_SEED=<seed>` runs that round alone, `STRESS_OPS` sets
//! the operations per round.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use common::{Outcome, TestCredentials};
use nebula_resource::{
    BreakerConfig, Config, CreateContext, Error, Handle, HealthConfig, Policy, PoolConfig,
    Resource, ResourceManager, RetryPolicy, Topology,
};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;

const ROUNDS: usize = 20;
const OPS: usize = 300;
const TASKS: usize = 6;
/// A round that takes longer than this hung.
const ROUND_LIMIT: Duration = Duration::from_secs(10);
/// How long whatever is in flight may take to settle once the faults stop.
const SETTLE: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hook {
    Create,
    Check,
    Share,
    IsBroken,
    Destroy,
}

const HOOKS: [Hook; 5] = [
    Hook::Create,
    Hook::Check,
    Hook::Share,
    Hook::IsBroken,
    Hook::Destroy,
];

/// The config: a label that says which reconfigure an instance was made after.
#[derive(Clone, Default)]
struct Label(u64);
impl Config for Label {}

/// What the test sees of the resource: the hooks' outcomes, and every instance ever made.
#[derive(Default)]
struct World {
    outcomes: Mutex<[Option<Outcome>; 5]>,
    /// Underlying instances alive (some handle of them exists).
    alive: AtomicUsize,
    made: Mutex<Vec<Weak<Origin>>>,
}

impl World {
    fn outcome(&self, hook: Hook) -> Outcome {
        self.outcomes.lock()[hook as usize].unwrap_or(Outcome::Ok)
    }

    fn set(&self, hook: Hook, outcome: Outcome) {
        self.outcomes.lock()[hook as usize] = Some(outcome);
    }

    fn reset(&self) {
        *self.outcomes.lock() = [None; 5];
    }

    /// The synchronous part of a hook: panic at once for `PanicSync`, before any future exists.
    fn enter(&self, hook: Hook) -> Outcome {
        let outcome = self.outcome(hook);
        if outcome == Outcome::PanicSync {
            panic!("{hook:?} panicked on purpose before making its future");
        }
        outcome
    }

    /// The config label and secret of every instance alive.
    fn alive_origins(&self) -> Vec<(u64, String)> {
        self.made
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .map(|origin| (origin.label, origin.secret.clone()))
            .collect()
    }
}

/// One underlying instance: what it was made with. Every handle shares it, so it lives exactly
/// as long as some handle of the instance does, and counts itself alive until then.
struct Origin {
    label: u64,
    secret: String,
    world: Arc<World>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.world.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A handle; clones share the instance's origin and broken flag, as clones of a driver's
/// client share its connection.
#[derive(Clone)]
struct Client {
    origin: Arc<Origin>,
    broken: Arc<AtomicBool>,
}

struct Faulty {
    world: Arc<World>,
}

impl Resource for Faulty {
    type Config = Label;
    type Instance = Client;
    const KEY: &'static str = "faulty";
    const TOPOLOGY: Topology = Topology::Resident;

    fn create(
        &self,
        config: &Label,
        ctx: &CreateContext,
    ) -> impl Future<Output = Result<Client, Error>> + Send {
        let outcome = self.world.enter(Hook::Create);
        let world = Arc::clone(&self.world);
        let label = config.0;
        let secret = ctx
            .credentials()
            .map(|credentials| credentials.secret().expose().to_owned())
            .unwrap_or_default();
        async move {
            common::run(outcome, "create").await?;
            world.alive.fetch_add(1, Ordering::SeqCst);
            let origin = Arc::new(Origin {
                label,
                secret,
                world: Arc::clone(&world),
            });
            world.made.lock().push(Arc::downgrade(&origin));
            Ok(Client {
                origin,
                broken: Arc::new(AtomicBool::new(false)),
            })
        }
    }

    fn check(&self, _client: &mut Client) -> impl Future<Output = Result<(), Error>> + Send {
        common::run(self.world.enter(Hook::Check), "check")
    }

    fn is_broken(&self, client: &Client) -> bool {
        match self.world.outcome(Hook::IsBroken) {
            Outcome::Panic | Outcome::PanicSync => panic!("is_broken panicked on purpose"),
            Outcome::Err => true,
            _ => client.broken.load(Ordering::SeqCst),
        }
    }

    fn share(&self, client: &Client) -> Option<Client> {
        match self.world.outcome(Hook::Share) {
            Outcome::Panic | Outcome::PanicSync => panic!("share panicked on purpose"),
            Outcome::Err => None,
            _ => Some(client.clone()),
        }
    }

    fn destroy(&self, client: Client) -> impl Future<Output = ()> + Send {
        let outcome = self.world.enter(Hook::Destroy);
        async move {
            let _ = common::run(outcome, "destroy").await;
            drop(client);
        }
    }
}

/// Where a round is, for the message when it hangs.
#[derive(Default)]
struct Progress {
    phase: &'static str,
    handle: Option<Handle<Faulty>>,
    world: Option<Arc<World>>,
    /// Panics that escaped the load tasks (out of a guard's drop, say).
    escaped: Arc<Mutex<Vec<String>>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_faults_leave_nothing_counted_stale_or_alive() {
    common::quiet_deliberate_panics();
    let (seeds, ops) = common::stress_seeds("resident faults", ROUNDS, OPS);
    for seed in seeds {
        eprintln!("resident faults seed {seed} (rerun with STRESS_SEED={seed})");
        let progress = Arc::new(Mutex::new(Progress::default()));
        let round = tokio::time::timeout(ROUND_LIMIT, round(seed, ops, Arc::clone(&progress)));
        if round.await.is_err() {
            let progress = progress.lock();
            panic!(
                "seed {seed}: the round hung for {ROUND_LIMIT:?} while {}; {:?}; {} alive; \
                 panics that escaped the load tasks: {:?}",
                progress.phase,
                progress.handle.as_ref().map(Handle::stats),
                progress
                    .world
                    .as_ref()
                    .map_or(0, |world| world.alive.load(Ordering::SeqCst)),
                progress.escaped.lock(),
            );
        }
    }
}

/// Wait (up to `SETTLE`) until `done` holds; whether it did.
async fn settled(mut done: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + SETTLE;
    while tokio::time::Instant::now() < until {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done()
}

async fn round(seed: u64, ops: usize, progress: Arc<Mutex<Progress>>) {
    let set_phase = |phase| progress.lock().phase = phase;
    set_phase("building");
    let mut rng = StdRng::seed_from_u64(seed);
    let world = Arc::new(World::default());
    let credentials = TestCredentials::new();
    let manager = ResourceManager::builder()
        .register_with(
            Faulty {
                world: Arc::clone(&world),
            },
            Label(0),
            Policy::default()
                .pool(
                    PoolConfig::default()
                        .acquire_timeout(Duration::from_millis(500))
                        .create_timeout(Duration::from_millis(40))
                        .recycle_timeout(Duration::from_millis(40)),
                )
                .health(
                    HealthConfig::default()
                        .interval(Duration::from_millis(5))
                        .timeout(Duration::from_millis(20))
                        .failure_threshold(3)
                        .success_threshold(1),
                )
                .retry(
                    RetryPolicy::none()
                        .initial(Duration::from_millis(2))
                        .max_interval(Duration::from_millis(10)),
                )
                // The breaker would turn acquires away for a while; the quarantine is enough.
                .breaker(BreakerConfig::disabled())
                .credentials_shared(Arc::clone(&credentials) as _),
        )
        .build()
        .await
        .unwrap_or_else(|err| panic!("seed {seed}: build: {err}"));
    let handle = manager.handle::<Faulty>().expect("the handle");
    {
        let mut progress = progress.lock();
        progress.handle = Some(handle.clone());
        progress.world = Some(Arc::clone(&world));
    }
    // What instances made from now on must carry: the last config set, the last secret that a
    // rotation took (a cancelled or failed rotation changes nothing).
    let label = Arc::new(AtomicU64::new(0));
    let secret = Arc::new(Mutex::new(credentials.secret()));

    set_phase("running the load");
    let failed = Arc::new(AtomicUsize::new(0));
    let escaped = Arc::clone(&progress.lock().escaped);
    let mut load = JoinSet::new();
    for task in 0..TASKS as u64 {
        let handle = handle.clone();
        let failed = Arc::clone(&failed);
        let escaped = Arc::clone(&escaped);
        load.spawn(async move {
            common::record_panic(&escaped, async move {
                let mut rng =
                    StdRng::seed_from_u64(seed ^ task.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let mut held = Vec::new();
                for _ in 0..ops.div_ceil(TASKS) {
                    let roll = rng.random_range(0..100_u32);
                    let client =
                        match common::maybe_cancelled(roll, &mut rng, || handle.acquire()).await {
                            Some(Ok(client)) => client,
                            Some(Err(_)) => {
                                // A failing, hanging or panicking hook may fail an acquire.
                                failed.fetch_add(1, Ordering::SeqCst);
                                continue;
                            }
                            None => continue,
                        };
                    match roll {
                        0..3 => client.taint(),
                        3..6 => {
                            client.broken.store(true, Ordering::SeqCst);
                            drop(client);
                        }
                        // Released on a thread that did not acquire it.
                        6..14 => tokio::task::spawn_blocking(move || drop(client))
                            .await
                            .expect("release elsewhere"),
                        14..30 => held.push(client),
                        30..60 => {
                            tokio::time::sleep(Duration::from_micros(rng.random_range(0..500)))
                                .await;
                            drop(client);
                        }
                        _ => {
                            tokio::task::yield_now().await;
                            drop(client);
                        }
                    }
                    if held.len() > 3 || rng.random_bool(0.1) {
                        held.clear();
                    }
                }
            })
            .await;
        });
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut controller = Some({
        let manager = manager.clone();
        let world = Arc::clone(&world);
        let credentials = Arc::clone(&credentials);
        let label = Arc::clone(&label);
        let secret = Arc::clone(&secret);
        let stop = Arc::clone(&stop);
        let mut rng = StdRng::seed_from_u64(!seed);
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_micros(rng.random_range(0..3_000))).await;
                match rng.random_range(0..20_u32) {
                    0..10 => world.set(
                        HOOKS[rng.random_range(0..HOOKS.len())],
                        common::FAULTS[rng.random_range(0..common::FAULTS.len())],
                    ),
                    10..12 => world.reset(),
                    12..14 => {
                        let next = label.load(Ordering::SeqCst) + 1;
                        manager
                            .reconfigure::<Faulty>(Label(next))
                            .expect("reconfigure");
                        label.store(next, Ordering::SeqCst);
                    }
                    14..17 => {
                        let next = credentials.rotate();
                        if rng.random_ratio(1, 3) {
                            credentials.hang_next.store(1, Ordering::SeqCst);
                        }
                        let rotation = manager.rotate_credentials::<Faulty>();
                        if let Ok(Ok(_)) =
                            tokio::time::timeout(Duration::from_millis(100), rotation).await
                        {
                            *secret.lock() = next;
                        }
                    }
                    17 => credentials.set(common::FAULTS[rng.random_range(0..5)]),
                    _ => {}
                }
            }
        })
    });

    // In some rounds shutdown comes under load, with the hooks still faulty (but a destroy that
    // never ends would only make shutdown wait for its deadline).
    let shutdown_under_load = rng.random_bool(0.3);
    let mut shutdown = None;
    if shutdown_under_load {
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..100))).await;
        set_phase("shutting down under load");
        stop.store(true, Ordering::SeqCst);
        if let Some(controller) = controller.take() {
            controller.await.expect("the controller");
        }
        if world.outcome(Hook::Destroy) == Outcome::Never {
            world.set(Hook::Destroy, Outcome::Ok);
        }
        shutdown = Some(manager.shutdown(Duration::from_secs(5)).await);
    }

    set_phase("waiting for the load");
    while let Some(done) = load.join_next().await {
        done.expect("a load task");
    }
    let escaped = escaped.lock().clone();
    stop.store(true, Ordering::SeqCst);
    if let Some(controller) = controller.take() {
        controller.await.expect("the controller");
    }
    world.reset();
    credentials.set(Outcome::Ok);
    credentials.hang_next.store(0, Ordering::SeqCst);
    eprintln!(
        "seed {seed}: {} acquires failed; shutdown under load: {shutdown_under_load}; {:?}",
        failed.load(Ordering::SeqCst),
        handle.stats()
    );
    assert!(
        escaped.is_empty(),
        "seed {seed}: {} load task(s) panicked, first: {}",
        escaped.len(),
        escaped[0]
    );

    if let Some(shutdown) = shutdown {
        set_phase("checking after a shutdown under load");
        shutdown.unwrap_or_else(|err| panic!("seed {seed}: shutdown under load: {err}"));
        let s = handle.stats();
        assert_eq!(s.in_use, 0, "seed {seed}: in use after shutdown: {s:?}");
        assert!(
            settled(|| handle.stats().creating == 0).await,
            "seed {seed}: a create counted in flight long after shutdown: {:?}",
            handle.stats()
        );
        assert!(
            settled(|| world.alive.load(Ordering::SeqCst) == 0).await,
            "seed {seed}: {} instance(s) alive after shutdown returned Ok; {:?}",
            world.alive.load(Ordering::SeqCst),
            handle.stats()
        );
        return;
    }

    // Everything in flight — slow or hung creates, checks, destroys — settles; then nothing is
    // counted, and only what the last reconfigure and rotation asked for is alive.
    set_phase("waiting for the resident to settle");
    let label = label.load(Ordering::SeqCst);
    let secret = secret.lock().clone();
    let current = |origins: &[(u64, String)]| {
        origins.len() <= 1 && origins.iter().all(|(l, s)| (*l, s) == (label, &secret))
    };
    let quiet = settled(|| {
        let s = handle.stats();
        s.in_use == 0 && s.creating == 0 && current(&world.alive_origins())
    })
    .await;
    // Health rounds go on every 5 ms, each holding a handle while it checks: nothing counted
    // in use or in creation at one moment is what "settled" can mean.
    let s = handle.stats();
    let origins = world.alive_origins();
    assert!(
        quiet,
        "seed {seed}: not settled after {SETTLE:?} (nothing in use nor being created, only \
         current instances alive): alive {origins:?} (label, secret); current: ({label}, \
         {secret:?}); {s:?}; health {:?}",
        manager
            .status()
            .resource("faulty")
            .map(|r| r.health.clone())
    );
    assert_eq!(world.alive.load(Ordering::SeqCst), origins.len());

    // The resident serves again, with the current config and credentials.
    set_phase("acquiring once the faults are gone");
    let until = tokio::time::Instant::now() + SETTLE;
    let client = loop {
        match handle.acquire().await {
            Ok(client) => break client,
            // Quarantined until a recovery round passes.
            Err(_) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(err) => panic!("seed {seed}: no acquire succeeds once the faults are gone: {err}"),
        }
    };
    assert_eq!(
        (client.origin.label, client.origin.secret.as_str()),
        (label, secret.as_str()),
        "seed {seed}: a stale instance is served"
    );
    drop(client);

    set_phase("shutting down");
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .unwrap_or_else(|err| panic!("seed {seed}: shutdown: {err}"));
    assert_eq!(handle.stats().in_use, 0, "seed {seed}");
    assert!(
        settled(|| world.alive.load(Ordering::SeqCst) == 0).await,
        "seed {seed}: {} instance(s) alive after shutdown returned Ok; {:?}",
        world.alive.load(Ordering::SeqCst),
        handle.stats()
    );
}
