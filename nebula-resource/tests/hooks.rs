//! Hooks that panic synchronously: `fn hook(..) -> impl Future { panic!(..) }` panics while the
//! hook is called, before any future exists. That must count as the hook's failure, exactly
//! like a panic while polling, and never unwind into a guard's drop, an acquire or the release
//! worker.

mod common;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Probe, TestResource, settle};
use nebula_resource::{
    BreakerConfig, Config, CreateContext, Error, HealthConfig, Policy, PoolConfig, Resource,
    ResourceManager, RetryPolicy,
};

#[derive(Clone, Default)]
struct NoConfig;
impl Config for NoConfig {}

/// Which hook panics synchronously.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Panics {
    Recycle,
    Destroy,
    Check,
}

#[derive(Default)]
struct Counts {
    alive: AtomicUsize,
    created: AtomicUsize,
}

struct Instance {
    counts: Arc<Counts>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.counts.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

struct SyncPanic {
    panics: Panics,
    counts: Arc<Counts>,
}

impl Resource for SyncPanic {
    type Config = NoConfig;
    type Instance = Instance;
    const KEY: &'static str = "sync-panic";

    async fn create(&self, _: &NoConfig, _: &CreateContext) -> Result<Instance, Error> {
        self.counts.alive.fetch_add(1, Ordering::SeqCst);
        self.counts.created.fetch_add(1, Ordering::SeqCst);
        Ok(Instance {
            counts: Arc::clone(&self.counts),
        })
    }

    #[allow(clippy::manual_async_fn)]
    fn check(&self, _: &mut Instance) -> impl Future<Output = Result<(), Error>> + Send {
        if self.panics == Panics::Check {
            panic!("check panicked synchronously on purpose");
        }
        async { Ok(()) }
    }

    #[allow(clippy::manual_async_fn)]
    fn recycle(&self, _: &mut Instance) -> impl Future<Output = Result<(), Error>> + Send {
        if self.panics == Panics::Recycle {
            panic!("recycle panicked synchronously on purpose");
        }
        async { Ok(()) }
    }

    fn destroy(&self, instance: Instance) -> impl Future<Output = ()> + Send {
        if self.panics == Panics::Destroy {
            drop(instance);
            panic!("destroy panicked synchronously on purpose");
        }
        async move { drop(instance) }
    }
}

fn policy(pool: PoolConfig) -> Policy {
    Policy::default()
        .pool(pool)
        .retry(RetryPolicy::none())
        .breaker(BreakerConfig::disabled())
        .health(HealthConfig::disabled())
}

async fn manager(panics: Panics, pool: PoolConfig) -> (ResourceManager, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let manager = ResourceManager::builder()
        .register_with(
            SyncPanic {
                panics,
                counts: Arc::clone(&counts),
            },
            NoConfig,
            policy(pool),
        )
        .build()
        .await
        .unwrap();
    (manager, counts)
}

/// Regression (faults #2): a `recycle` that panics before returning its future unwound out of
/// `Guard::drop`, leaving `in_use` and `size` one too high for good.
#[tokio::test(start_paused = true)]
async fn a_synchronously_panicking_recycle_discards_the_instance_without_unwinding_out_of_drop() {
    let (manager, counts) = manager(Panics::Recycle, PoolConfig::default().max_size(1)).await;
    let guard = manager.acquire::<SyncPanic>().await.unwrap();
    let dropped = std::panic::catch_unwind(AssertUnwindSafe(|| drop(guard)));
    assert!(dropped.is_ok(), "the recycle panic escaped Guard::drop");
    settle().await;
    let stats = manager.handle::<SyncPanic>().unwrap().stats();
    assert_eq!(
        (stats.size, stats.in_use, stats.idle, stats.destroyed),
        (0, 0, 0, 1),
        "{stats:?}"
    );
    assert_eq!(counts.alive.load(Ordering::SeqCst), 0);

    // The pool (max_size 1) still serves: its one place was given back.
    let guard = tokio::time::timeout(Duration::from_secs(1), manager.acquire::<SyncPanic>())
        .await
        .expect("acquire finishes")
        .expect("the place was freed");
    assert!(std::panic::catch_unwind(AssertUnwindSafe(|| drop(guard))).is_ok());
    settle().await;
    let stats = manager.handle::<SyncPanic>().unwrap().stats();
    assert_eq!((stats.size, stats.in_use, stats.destroyed), (0, 0, 2));
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
}

/// Regression (faults #2): a `destroy` that panics before returning its future killed the
/// manager's release worker, after which every pool's release jobs were dropped unpolled and
/// their places leaked.
#[tokio::test(start_paused = true)]
async fn a_synchronously_panicking_destroy_leaves_the_release_worker_serving_other_pools() {
    let counts = Arc::new(Counts::default());
    let probe = Probe::new();
    let manager = ResourceManager::builder()
        .register_with(
            SyncPanic {
                panics: Panics::Destroy,
                counts: Arc::clone(&counts),
            },
            NoConfig,
            policy(PoolConfig::default().max_size(2)),
        )
        .register_with(
            TestResource::new(&probe),
            common::TestConfig::default(),
            policy(PoolConfig::default().max_size(2)),
        )
        .build()
        .await
        .unwrap();

    // Destroying the panicking resource's instance: counted as destroyed all the same.
    manager.acquire::<SyncPanic>().await.unwrap().taint();
    settle().await;
    let stats = manager.handle::<SyncPanic>().unwrap().stats();
    assert_eq!((stats.size, stats.releasing, stats.destroyed), (0, 0, 1));
    assert_eq!(counts.alive.load(Ordering::SeqCst), 0);

    // Another pool's release still runs on the worker.
    manager.acquire::<TestResource>().await.unwrap().taint();
    settle().await;
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!(
        (stats.size, stats.releasing, stats.in_use, stats.destroyed),
        (0, 0, 0, 1),
        "the release worker died: {stats:?}"
    );
    assert_eq!(probe.alive(), 0);
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
}

/// Regression (faults #2): a `check` that panics before returning its future unwound out of
/// the acquire instead of counting as a failed check (instance discarded, another one made).
#[tokio::test(start_paused = true)]
async fn a_synchronously_panicking_check_discards_the_instance_and_the_acquire_gets_a_new_one() {
    let (manager, counts) = manager(
        Panics::Check,
        PoolConfig::default()
            .max_size(1)
            .validate_after_idle(Duration::from_millis(10)),
    )
    .await;
    drop(manager.acquire::<SyncPanic>().await.unwrap());
    settle().await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The idle instance is due for a check; the check panics.
    let acquire = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.acquire::<SyncPanic>().await.map(drop) })
    };
    let joined = tokio::time::timeout(Duration::from_secs(1), acquire)
        .await
        .expect("acquire finishes");
    assert!(
        joined.is_ok(),
        "the check panic escaped the acquire: {joined:?}"
    );
    joined.unwrap().expect("served by a new instance");
    settle().await;
    let stats = manager.handle::<SyncPanic>().unwrap().stats();
    assert_eq!(
        (
            stats.size,
            stats.in_use,
            stats.idle,
            stats.created,
            stats.destroyed
        ),
        (1, 0, 1, 2, 1),
        "{stats:?}"
    );
    assert_eq!(counts.alive.load(Ordering::SeqCst), 1);
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
}

/// A resident resource whose `destroy` panics before returning its future.
struct ResidentSyncPanic {
    counts: Arc<Counts>,
}

#[derive(Clone)]
struct SharedInstance(#[allow(dead_code)] Arc<Instance>);

impl Resource for ResidentSyncPanic {
    type Config = NoConfig;
    type Instance = SharedInstance;
    const KEY: &'static str = "resident-sync-panic";
    const TOPOLOGY: nebula_resource::Topology = nebula_resource::Topology::Resident;

    async fn create(&self, _: &NoConfig, _: &CreateContext) -> Result<SharedInstance, Error> {
        self.counts.alive.fetch_add(1, Ordering::SeqCst);
        self.counts.created.fetch_add(1, Ordering::SeqCst);
        Ok(SharedInstance(Arc::new(Instance {
            counts: Arc::clone(&self.counts),
        })))
    }

    fn destroy(&self, instance: SharedInstance) -> impl Future<Output = ()> + Send {
        drop(instance);
        panic!("resident destroy panicked synchronously on purpose");
        #[allow(unreachable_code)]
        async {}
    }

    fn share(&self, instance: &SharedInstance) -> Option<SharedInstance> {
        Some(instance.clone())
    }
}

/// Regression (faults #2, resident side): a resident's `destroy` that panics before returning
/// its future unwound out of `shutdown`.
#[tokio::test(start_paused = true)]
async fn a_synchronously_panicking_resident_destroy_does_not_unwind_out_of_shutdown() {
    let counts = Arc::new(Counts::default());
    let manager = ResourceManager::builder()
        .register_with(
            ResidentSyncPanic {
                counts: Arc::clone(&counts),
            },
            NoConfig,
            policy(PoolConfig::default()),
        )
        .build()
        .await
        .unwrap();
    drop(manager.acquire::<ResidentSyncPanic>().await.unwrap());
    let shutdown = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.shutdown(Duration::from_secs(1)).await })
    };
    let joined = tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown finishes");
    assert!(
        joined.is_ok(),
        "the destroy panic escaped shutdown: {joined:?}"
    );
    joined.unwrap().expect("shutdown succeeds");
    assert_eq!(counts.alive.load(Ordering::SeqCst), 0);
    let pool = manager
        .status()
        .resource("resident-sync-panic")
        .unwrap()
        .pool;
    assert_eq!((pool.size, pool.destroyed), (0, 1), "{pool:?}");
}
