//! Randomized stress: 10^6 acquire/release operations across 256 tasks on a 2-worker runtime,
//! with random cancellation at random await points, random holds and random taints. Asserts at
//! every step that no instance is handed to two guards and that at most `max_size` exist, and
//! at the end that no place in the pool was lost.
//!
//! A second test runs the same load while every hook (create, check, recycle, destroy,
//! is_broken) fails, stalls, hangs or panics at random — panicking both while its future is
//! polled and in its body before the future exists — while the credential provider's fetches
//! hang at random (the very first one never returns), credentials rotate and the config
//! changes. Acquires may fail then; what must hold is the pool's accounting.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Hook, Outcome, Probe, TestConfig, TestCredentials, TestResource};
use nebula_resource::{
    BreakerConfig, HealthConfig, Policy, PoolConfig, PoolStats, ResourceManager, RetryPolicy,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TASKS: usize = 256;
const MAX_SIZE: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_random_acquires_lose_nothing() {
    let (seed, total_ops) = common::stress_settings("stress", 1_000_000);
    let probe = Probe::new();
    let manager = ResourceManager::builder()
        .register_with(
            TestResource::new(&probe),
            TestConfig::default(),
            Policy::default().pool(
                PoolConfig::default()
                    .max_size(MAX_SIZE)
                    .acquire_timeout(Duration::from_secs(30))
                    .validate_after_idle(Duration::from_micros(200)),
            ),
        )
        .build()
        .await
        .unwrap();
    let holders = Arc::new(AtomicUsize::new(0));
    let max_holders = Arc::new(AtomicUsize::new(0));
    let per_task = total_ops / TASKS;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let manager = manager.clone();
            let holders = Arc::clone(&holders);
            let max_holders = Arc::clone(&max_holders);
            tokio::spawn(async move {
                let mut rng =
                    StdRng::seed_from_u64(seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                for _ in 0..per_task {
                    let roll = rng.random_range(0..100u32);
                    let acquired = common::maybe_cancelled(roll, &mut rng, || {
                        manager.acquire::<TestResource>()
                    })
                    .await;
                    let Some(guard) = acquired.map(Result::unwrap) else {
                        continue;
                    };
                    let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                    max_holders.fetch_max(now, Ordering::SeqCst);
                    common::hold_exclusively(&guard, roll % 4 == 0).await;
                    holders.fetch_sub(1, Ordering::SeqCst);
                    if roll == 99 {
                        guard.taint();
                    } else {
                        drop(guard);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    assert!(max_holders.load(Ordering::SeqCst) <= MAX_SIZE);
    assert!(probe.max_alive.load(Ordering::SeqCst) <= MAX_SIZE);
    let s = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!(
        (s.in_use, s.waiters, s.creating, s.releasing),
        (0, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!(s.size, s.idle, "{s:?}");
    assert_eq!(probe.alive(), s.size, "{s:?}");
    assert_eq!(s.created - s.destroyed, s.size as u64, "{s:?}");

    // No place was lost: all MAX_SIZE instances can be held at once, without waiting long.
    let mut all = Vec::new();
    for _ in 0..MAX_SIZE {
        let guard = tokio::time::timeout(Duration::from_secs(5), manager.acquire::<TestResource>())
            .await
            .expect("a place in the pool was lost")
            .unwrap();
        all.push(guard);
    }
    drop(all);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(probe.alive(), 0);
}

const FAULT_TASKS: usize = 32;
const FAULT_MAX_SIZE: usize = 8;
/// A round that takes longer than this hung.
const ROUND_LIMIT: Duration = Duration::from_secs(15);

/// Which faults a round injects.
#[derive(Clone, Copy)]
struct Faults {
    /// Hooks fail, stall, hang and panic (sync and async).
    hooks: bool,
    /// Credential fetches hang (the first one for good) and fail.
    credentials: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_hook_faults_and_panics_lose_nothing() {
    faulty_rounds(
        "stress hook faults",
        Faults {
            hooks: true,
            credentials: false,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_credential_fetches_lose_nothing() {
    faulty_rounds(
        "stress credential faults",
        Faults {
            hooks: false,
            credentials: true,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_faults_with_hung_credentials_lose_nothing() {
    faulty_rounds(
        "stress all faults",
        Faults {
            hooks: true,
            credentials: true,
        },
    )
    .await;
}

/// Where a round is, for the message when it hangs.
#[derive(Default)]
struct Progress {
    phase: &'static str,
    handle: Option<nebula_resource::Handle<TestResource>>,
    /// Panics that escaped the load tasks (out of a guard's drop, say).
    escaped: Arc<parking_lot::Mutex<Vec<String>>>,
}

async fn faulty_rounds(name: &str, faults: Faults) {
    common::quiet_deliberate_panics();
    let (seeds, ops) = common::stress_seeds(name, 3, 3_000);
    for seed in seeds {
        eprintln!("{name} seed {seed} (rerun with STRESS_SEED={seed})");
        let progress = Arc::new(parking_lot::Mutex::new(Progress::default()));
        let round = faulty_round(seed, ops, faults, Arc::clone(&progress));
        if tokio::time::timeout(ROUND_LIMIT, round).await.is_err() {
            let progress = progress.lock();
            panic!(
                "{name} seed {seed}: the round hung for {ROUND_LIMIT:?} while {}; {:?}; \
                 panics that escaped the load tasks: {:?}",
                progress.phase,
                progress.handle.as_ref().map(|handle| handle.stats()),
                progress.escaped.lock(),
            );
        }
    }
}

/// `size == idle + in_use + creating + releasing`, and no more than `max_size`.
fn assert_consistent(s: &PoolStats, seed: u64) {
    assert_eq!(
        s.size,
        s.idle + s.in_use + s.creating + s.releasing,
        "seed {seed}: {s:?}"
    );
    assert!(s.size <= s.max_size, "seed {seed}: {s:?}");
}

async fn faulty_round(
    seed: u64,
    ops: usize,
    faults: Faults,
    progress: Arc<parking_lot::Mutex<Progress>>,
) {
    let set_phase = |phase| progress.lock().phase = phase;
    set_phase("building");
    let probe = Probe::new();
    let credentials = TestCredentials::new();
    if faults.credentials {
        // The very first fetch never returns: the create waiting for it must not wedge the pool.
        credentials.hang_next.store(1, Ordering::SeqCst);
    }
    let manager = ResourceManager::builder()
        .register_with(
            TestResource::new(&probe),
            TestConfig {
                label: "c0".to_owned(),
            },
            Policy::default()
                .pool(
                    PoolConfig::default()
                        .max_size(FAULT_MAX_SIZE)
                        .acquire_timeout(Duration::from_secs(1))
                        .create_timeout(Duration::from_millis(100))
                        .recycle_timeout(Duration::from_millis(100))
                        .validate_after_idle(Duration::from_micros(200)),
                )
                .retry(RetryPolicy::none())
                .breaker(BreakerConfig::disabled())
                .health(HealthConfig::disabled())
                .credentials_shared(Arc::clone(&credentials) as _),
        )
        .build()
        .await
        .expect("build");
    let handle = manager.handle::<TestResource>().expect("the handle");
    progress.lock().handle = Some(handle.clone());
    set_phase("running the load");
    let holders = Arc::new(AtomicUsize::new(0));
    let max_holders = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let per_task = ops.div_ceil(FAULT_TASKS);
    let escaped = Arc::clone(&progress.lock().escaped);
    let tasks: Vec<_> = (0..FAULT_TASKS)
        .map(|t| {
            let handle = handle.clone();
            let holders = Arc::clone(&holders);
            let max_holders = Arc::clone(&max_holders);
            let failed = Arc::clone(&failed);
            let escaped = Arc::clone(&escaped);
            tokio::spawn(async move {
                common::record_panic(&escaped, async move {
                    let mut rng = StdRng::seed_from_u64(
                        seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    );
                    for _ in 0..per_task {
                        let roll = rng.random_range(0..100u32);
                        let acquired =
                            common::maybe_cancelled(roll, &mut rng, || handle.acquire()).await;
                        assert_consistent(&handle.stats(), seed);
                        let guard = match acquired {
                            Some(Ok(guard)) => guard,
                            Some(Err(_)) => {
                                // A failing, hanging or panicking hook may fail an acquire.
                                failed.fetch_add(1, Ordering::SeqCst);
                                continue;
                            }
                            None => continue,
                        };
                        let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
                        max_holders.fetch_max(now, Ordering::SeqCst);
                        common::hold_exclusively(&guard, roll % 4 == 0).await;
                        if roll % 8 == 1 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        holders.fetch_sub(1, Ordering::SeqCst);
                        match roll {
                            95.. => guard.taint(),
                            90..95 => {
                                guard.broken.store(true, Ordering::SeqCst);
                                drop(guard);
                            }
                            _ => drop(guard),
                        }
                    }
                })
                .await;
            })
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let faults = {
        let probe = Arc::clone(&probe);
        let credentials = Arc::clone(&credentials);
        let manager = manager.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(!seed);
            let mut label = 0;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_micros(rng.random_range(0..1_000))).await;
                match rng.random_range(0..20u32) {
                    0..14 if !faults.hooks => {}
                    14..16 | 17.. if !faults.credentials => {}
                    0..12 => {
                        let hook = Hook::ALL[rng.random_range(0..Hook::ALL.len())];
                        probe.set(
                            hook,
                            common::FAULTS[rng.random_range(0..common::FAULTS.len())],
                        );
                    }
                    12..14 => probe.reset(),
                    14..16 => {
                        // A rotation; its fetch hangs one time in two. Cancelling a rotation
                        // changes nothing.
                        credentials.rotate();
                        if rng.random_bool(0.5) {
                            credentials.hang_next.store(1, Ordering::SeqCst);
                        }
                        let rotation = manager.rotate_credentials::<TestResource>();
                        let _ = tokio::time::timeout(Duration::from_millis(50), rotation).await;
                    }
                    16 => {
                        label += 1;
                        manager
                            .reconfigure::<TestResource>(TestConfig {
                                label: format!("c{label}"),
                            })
                            .expect("reconfigure");
                    }
                    17 => credentials.set(common::FAULTS[rng.random_range(0..4)]),
                    _ => credentials.hang_next.store(1, Ordering::SeqCst),
                }
            }
        })
    };

    set_phase("waiting for the load tasks");
    for task in tasks {
        task.await.expect("a load task");
    }
    let escaped = escaped.lock().clone();
    stop.store(true, Ordering::SeqCst);
    faults.await.expect("the fault task");
    probe.reset();
    credentials.set(Outcome::Ok);
    credentials.hang_next.store(0, Ordering::SeqCst);
    assert!(
        escaped.is_empty(),
        "seed {seed}: {} load task(s) panicked, first: {}",
        escaped.len(),
        escaped[0]
    );

    set_phase("waiting for the pool to settle");
    // Whatever was in flight (slow or hung hooks, bounded by their timeouts) settles.
    let mut s = handle.stats();
    for _ in 0..300 {
        s = handle.stats();
        if (s.in_use, s.waiters, s.creating, s.releasing) == (0, 0, 0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!(
        "seed {seed}: {} acquires failed; {s:?}",
        failed.load(Ordering::SeqCst)
    );
    assert_consistent(&s, seed);
    assert_eq!(
        (s.in_use, s.waiters, s.creating, s.releasing),
        (0, 0, 0, 0),
        "seed {seed}: nothing may stay counted once every hook has settled: {s:?}"
    );
    assert!(max_holders.load(Ordering::SeqCst) <= FAULT_MAX_SIZE);
    assert!(
        probe.max_alive.load(Ordering::SeqCst) <= FAULT_MAX_SIZE,
        "seed {seed}: more instances alive than max_size"
    );
    assert_eq!(s.size, s.idle, "seed {seed}: {s:?}");
    assert_eq!(probe.alive(), s.size, "seed {seed}: {s:?}");
    assert_eq!(s.created - s.destroyed, s.size as u64, "seed {seed}: {s:?}");

    // No place was lost, and the credentials work again: all FAULT_MAX_SIZE instances can be
    // held at once, without waiting long.
    set_phase("acquiring max_size instances at once");
    let mut all = Vec::new();
    for _ in 0..FAULT_MAX_SIZE {
        let guard = tokio::time::timeout(Duration::from_secs(3), handle.acquire())
            .await
            .unwrap_or_else(|_| panic!("seed {seed}: a place was lost: {:?}", handle.stats()))
            .unwrap_or_else(|err| panic!("seed {seed}: {err}"));
        all.push(guard);
    }
    drop(all);
    set_phase("shutting down");
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .unwrap_or_else(|err| panic!("seed {seed}: shutdown: {err}"));
    assert_eq!(probe.alive(), 0, "seed {seed}: alive after shutdown");
}
