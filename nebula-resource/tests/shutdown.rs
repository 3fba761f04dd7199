//! Shutdown: reverse dependency order, draining guards in use, ShuttingDown for acquires.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Probe, TestConfig, TestResource, settle};
use nebula_resource::{
    Config, CreateContext, Dependencies, Error, ErrorKind, Event, Phase, PoolConfig, Resource,
    ResourceManager, TimeoutPhase,
};
use parking_lot::Mutex;

#[derive(Clone, Default)]
struct NoConfig;
impl Config for NoConfig {}

/// Depends on `TestResource`; records its destroys in a shared log.
struct Dependent {
    log: Arc<Mutex<Vec<String>>>,
}

impl Resource for Dependent {
    type Config = NoConfig;
    type Instance = u8;
    const KEY: &'static str = "dependent";
    fn dependencies() -> Dependencies {
        Dependencies::none().on::<TestResource>()
    }
    async fn create(&self, _: &NoConfig, _: &CreateContext) -> Result<u8, Error> {
        Ok(0)
    }
    async fn destroy(&self, _: u8) {
        self.log.lock().push("dependent destroyed".into());
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_dependents_before_dependencies() {
    let probe = Probe::new();
    let log = Arc::new(Mutex::new(Vec::new()));
    let manager = ResourceManager::builder()
        .register(TestResource::new(&probe), TestConfig::default())
        .register(
            Dependent {
                log: Arc::clone(&log),
            },
            NoConfig,
        )
        .build()
        .await
        .unwrap();
    let mut events = manager.events();
    let base = manager.acquire::<TestResource>().await.unwrap();
    let top = manager.acquire::<Dependent>().await.unwrap();

    let shutting = tokio::spawn({
        let manager = manager.clone();
        async move { manager.shutdown(Duration::from_secs(30)).await }
    });
    settle().await;
    // New acquires are refused at once; nothing has been destroyed while guards are held.
    let err = manager.acquire::<TestResource>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ShuttingDown);
    assert!(manager.status().shutting_down);
    assert_eq!(
        manager.status().resource("dependent").unwrap().phase,
        Phase::Draining
    );
    assert_eq!(
        manager.status().resource("test").unwrap().phase,
        Phase::Ready,
        "waits for its dependents"
    );
    assert_eq!(probe.alive(), 1);

    // The base resource's guard is released first, but it is not destroyed before the dependent.
    drop(base);
    settle().await;
    assert_eq!(probe.alive(), 1);
    assert!(log.lock().is_empty());

    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(top);
    shutting.await.unwrap().unwrap();
    assert_eq!(log.lock().as_slice(), ["dependent destroyed"]);
    assert_eq!(probe.alive(), 0);
    assert!(
        manager
            .status()
            .resources
            .iter()
            .all(|r| r.phase == Phase::Stopped)
    );
    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(format!("{event:?}"));
    }
    let at = |needle: &str| {
        seen.iter()
            .position(|e| e.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {seen:?}"))
    };
    assert!(
        at("ShutdownStarted") < at("InstanceDestroyed(Source { key: \"dependent\""),
        "{seen:?}"
    );
    assert!(
        at("InstanceDestroyed(Source { key: \"dependent\"")
            < at("InstanceDestroyed(Source { key: \"test\""),
        "{seen:?}"
    );
    assert!(
        seen.last().unwrap().starts_with("ShutdownCompleted"),
        "{seen:?}"
    );
    // Calling it again is harmless.
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn waiters_are_released_with_shutting_down() {
    let probe = Probe::new();
    let manager = common::pool_manager(&probe, PoolConfig::default().max_size(1)).await;
    let held = manager.acquire::<TestResource>().await.unwrap();
    let waiter = tokio::spawn({
        let manager = manager.clone();
        async move { manager.acquire::<TestResource>().await.map(|g| g.id) }
    });
    settle().await;
    let shutting = tokio::spawn({
        let manager = manager.clone();
        async move { manager.shutdown(Duration::from_secs(5)).await }
    });
    let err = waiter.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ShuttingDown);
    drop(held);
    shutting.await.unwrap().unwrap();
    assert_eq!(probe.alive(), 0);
}

#[tokio::test(start_paused = true)]
async fn shutdown_deadline_names_what_is_still_in_use() {
    let probe = Probe::new();
    let manager = ResourceManager::builder()
        .register(TestResource::new(&probe), TestConfig::default())
        .build()
        .await
        .unwrap();
    let held = manager.acquire::<TestResource>().await.unwrap();
    let err = manager.shutdown(Duration::from_secs(3)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.timeout_phase(), Some(TimeoutPhase::Shutdown));
    assert_eq!(err.waited(), Some(Duration::from_secs(3)));
    assert!(
        err.to_string()
            .contains("still in use at the deadline: test (1 in use, 1 not yet destroyed)"),
        "{err}"
    );
    // The late guard is destroyed when it drops, not returned.
    drop(held);
    settle().await;
    assert_eq!(probe.alive(), 0);
    let _ = Event::ShutdownStarted;
}

/// Regression (faults #10): the create retry loop ignored close: a closed pool kept sleeping
/// and retrying while it held a place, and shutdown failed with nothing in use.
#[tokio::test(start_paused = true)]
async fn shutdown_stops_a_create_retrying_with_backoff() {
    let probe = Probe::new();
    let manager = common::policy_manager(
        &probe,
        nebula_resource::Policy::default()
            .pool(
                PoolConfig::default()
                    .max_size(1)
                    .acquire_timeout(Duration::from_millis(500)),
            )
            .breaker(nebula_resource::BreakerConfig::disabled())
            .health(nebula_resource::HealthConfig::disabled())
            .retry(
                nebula_resource::RetryPolicy::exponential(Duration::from_secs(1), 20)
                    .randomization_factor(0.0)
                    .max_interval(Duration::from_secs(10)),
            ),
    )
    .await;
    probe.set(common::Hook::Create, common::Outcome::Err);
    // The acquire gives up; its create goes on retrying (1 s, 2 s, 4 s, ... apart).
    let err = manager.acquire::<TestResource>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!((stats.size, stats.creating), (1, 1), "{stats:?}");

    let calls_at_shutdown = probe.create_calls.load(std::sync::atomic::Ordering::SeqCst);
    manager
        .shutdown(Duration::from_secs(3))
        .await
        .expect("nothing in use: shutdown ends the retrying create");
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!((stats.size, stats.creating), (0, 0), "{stats:?}");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(
        probe.create_calls.load(std::sync::atomic::Ordering::SeqCst) <= calls_at_shutdown + 1,
        "a closed pool kept retrying its create"
    );
    assert_eq!(probe.alive(), 0);
}

/// A create that shutdown stops between two attempts did not fail: it is neither counted in
/// `create_errors` nor reported as `CreateFailed` (its failed attempt already was, by the log).
#[tokio::test(start_paused = true)]
async fn a_create_stopped_by_shutdown_is_not_counted_as_a_failed_create() {
    let probe = Probe::new();
    probe.set(common::Hook::Create, common::Outcome::Err);
    let manager = common::policy_manager(
        &probe,
        nebula_resource::Policy::default()
            .retry(nebula_resource::RetryPolicy::exponential(
                Duration::from_secs(10),
                5,
            ))
            .breaker(nebula_resource::BreakerConfig::disabled())
            .health(nebula_resource::HealthConfig::disabled()),
    )
    .await;
    let mut events = manager.events();
    let acquire = tokio::spawn({
        let manager = manager.clone();
        async move { manager.acquire::<TestResource>().await.map(drop) }
    });
    // The first attempt failed; the create waits out its backoff.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        probe.create_calls.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    let acquired = acquire.await.expect("the acquire task");
    assert!(acquired.is_err());
    let pool = manager.status().resource("test").expect("status").pool;
    assert_eq!((pool.size, pool.create_errors), (0, 0), "{pool:?}");
    while let Ok(event) = events.try_recv() {
        assert!(!matches!(event, Event::CreateFailed { .. }), "{event:?}");
    }
}
