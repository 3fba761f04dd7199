//! Guard behaviour: return on drop, taint, detach, hold duration, broken instances.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Hook, Outcome, Probe, TestResource, settle};
use nebula_resource::{PoolConfig, ResourceManager};

async fn manager(probe: &std::sync::Arc<Probe>, max: usize) -> ResourceManager {
    common::pool_manager(probe, PoolConfig::default().max_size(max)).await
}

#[tokio::test(start_paused = true)]
async fn dropped_guard_returns_the_instance() {
    let probe = Probe::new();
    let manager = manager(&probe, 2).await;
    let first = manager.acquire::<TestResource>().await.unwrap();
    let id = first.id;
    drop(first);
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!((stats.size, stats.idle, stats.in_use), (1, 1, 0));
    let again = manager.acquire::<TestResource>().await.unwrap();
    assert_eq!(again.id, id, "the returned instance is reused");
    assert_eq!(probe.recycle_calls.load(Ordering::SeqCst), 1);
    drop(again);
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
    assert_eq!(probe.alive(), 0);
}

#[tokio::test(start_paused = true)]
async fn tainted_guard_destroys_the_instance() {
    let probe = Probe::new();
    let manager = manager(&probe, 2).await;
    let guard = manager.acquire::<TestResource>().await.unwrap();
    let id = guard.id;
    guard.taint();
    settle().await;
    assert_eq!(probe.alive(), 0);
    assert_eq!(probe.destroy_calls.load(Ordering::SeqCst), 1);
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!((stats.size, stats.destroyed), (0, 1));
    let next = manager.acquire::<TestResource>().await.unwrap();
    assert_ne!(next.id, id);
}

#[tokio::test(start_paused = true)]
async fn broken_instance_is_destroyed_not_returned() {
    let probe = Probe::new();
    let manager = manager(&probe, 2).await;
    let guard = manager.acquire::<TestResource>().await.unwrap();
    guard.broken.store(true, Ordering::SeqCst);
    drop(guard);
    settle().await;
    assert_eq!(probe.alive(), 0);
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!((stats.size, stats.idle, stats.destroyed), (0, 0, 1));
}

#[tokio::test(start_paused = true)]
async fn detached_instance_leaves_the_pool_and_frees_its_place() {
    let probe = Probe::new();
    let manager = manager(&probe, 1).await;
    let guard = manager.acquire::<TestResource>().await.unwrap();
    let conn = guard.detach();
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!((stats.size, stats.in_use), (0, 0));
    // Its place is free: a second instance can be created although max_size is 1.
    let other = manager.acquire::<TestResource>().await.unwrap();
    assert_ne!(other.id, conn.id);
    assert_eq!(probe.alive(), 2);
    drop(conn);
    assert_eq!(probe.alive(), 1);
}

#[tokio::test(start_paused = true)]
async fn hold_duration_measures_the_checkout() {
    let probe = Probe::new();
    let manager = manager(&probe, 1).await;
    let guard = manager.acquire::<TestResource>().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let held = guard.hold_duration();
    assert!(
        held >= Duration::from_millis(1500) && held < Duration::from_millis(1600),
        "{held:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_recycle_destroys_instead_of_returning() {
    let probe = Probe::new();
    probe.set(Hook::Recycle, Outcome::Err);
    let manager = manager(&probe, 1).await;
    drop(manager.acquire::<TestResource>().await.unwrap());
    settle().await;
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!((stats.size, stats.idle, stats.destroyed), (0, 0, 1));
    assert_eq!(probe.alive(), 0);
}

#[tokio::test(start_paused = true)]
async fn slow_recycle_finishes_on_the_release_worker() {
    let probe = Probe::new();
    probe.set(Hook::Recycle, Outcome::Slow);
    let manager = manager(&probe, 1).await;
    let guard = manager.acquire::<TestResource>().await.unwrap();
    let id = guard.id;
    drop(guard); // returns at once; the recycle goes on in the background
    // The next acquire waits for the recycle, then gets the same instance.
    let again = manager.acquire::<TestResource>().await.unwrap();
    assert_eq!(again.id, id);
    assert_eq!(probe.created.load(Ordering::SeqCst), 1);
}

#[allow(unreachable_pub, reason = "items of a test module")]
mod default_recycle {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use nebula_resource::{
        Config, CreateContext, Dependencies, Error, Guard, Resource, ResourceManager,
    };

    #[derive(Clone, Default)]
    pub struct NoConfig;
    impl Config for NoConfig {}

    /// Keeps every default hook, `recycle` included.
    pub struct Plain;
    impl Resource for Plain {
        type Config = NoConfig;
        type Instance = u32;
        const KEY: &'static str = "plain";
        async fn create(&self, _: &NoConfig, _: &CreateContext) -> Result<u32, Error> {
            Ok(1)
        }
    }

    /// Its own `recycle` releases a `Plain` guard, whose pool then learns that `Plain` keeps the
    /// default recycle — which must not be mistaken for this resource's.
    pub struct Wrapper {
        pub recycles: Arc<AtomicUsize>,
    }
    pub struct Wrapped {
        inner: Option<Guard<Plain>>,
        plain: nebula_resource::Handle<Plain>,
    }
    impl Resource for Wrapper {
        type Config = NoConfig;
        type Instance = Wrapped;
        const KEY: &'static str = "wrapper";
        fn dependencies() -> Dependencies {
            Dependencies::none().on::<Plain>()
        }
        async fn create(&self, _: &NoConfig, ctx: &CreateContext) -> Result<Wrapped, Error> {
            let plain = ctx.dependency::<Plain>()?;
            Ok(Wrapped {
                inner: Some(plain.acquire().await?),
                plain,
            })
        }
        async fn recycle(&self, wrapped: &mut Wrapped) -> Result<(), Error> {
            self.recycles.fetch_add(1, Ordering::SeqCst);
            drop(wrapped.inner.take());
            wrapped.inner = Some(wrapped.plain.acquire().await?);
            Ok(())
        }
    }

    #[tokio::test]
    async fn custom_recycle_runs_on_every_release_even_around_default_ones() {
        let recycles = Arc::new(AtomicUsize::new(0));
        let manager = ResourceManager::builder()
            .register(Plain, NoConfig)
            .register(
                Wrapper {
                    recycles: Arc::clone(&recycles),
                },
                NoConfig,
            )
            .build()
            .await
            .unwrap();
        for expected in 1..=5 {
            drop(manager.acquire::<Wrapper>().await.unwrap());
            drop(manager.acquire::<Plain>().await.unwrap());
            assert_eq!(recycles.load(Ordering::SeqCst), expected);
        }
        let plain = manager.handle::<Plain>().unwrap().stats();
        assert_eq!((plain.size, plain.in_use), (2, 1), "{plain:?}");
    }
}
