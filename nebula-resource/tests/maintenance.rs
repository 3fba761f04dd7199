//! Time-driven behaviour under `tokio::time::pause`: idle timeout, max lifetime (with jitter),
//! min_idle refill, validate-after-idle, leak reports.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Hook, Outcome, Probe, TestResource, settle};
use nebula_resource::{Event, PoolConfig, ResourceManager};

async fn manager(probe: &std::sync::Arc<Probe>, pool: PoolConfig) -> ResourceManager {
    common::pool_manager(probe, pool).await
}

async fn hold_n(manager: &ResourceManager, n: usize) {
    let mut guards = Vec::new();
    for _ in 0..n {
        guards.push(manager.acquire::<TestResource>().await.unwrap());
    }
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_retires_surplus_but_keeps_min_idle() {
    let probe = Probe::new();
    let manager = manager(
        &probe,
        PoolConfig::default()
            .max_size(5)
            .min_idle(2)
            .idle_timeout(Duration::from_secs(10))
            .maintenance_interval(Duration::from_secs(1)),
    )
    .await;
    hold_n(&manager, 5).await;
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!((stats.size, stats.idle), (5, 5));

    tokio::time::sleep(Duration::from_secs(9)).await;
    settle().await;
    assert_eq!(
        manager.handle::<TestResource>().unwrap().stats().size,
        5,
        "not yet idle long enough"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    settle().await;
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!((stats.size, stats.idle, stats.destroyed), (2, 2, 3));
    assert_eq!(probe.alive(), 2);
}

#[tokio::test(start_paused = true)]
async fn max_lifetime_retires_instances_with_jitter_and_min_idle_refills() {
    let probe = Probe::new();
    let lifetime = Duration::from_secs(100);
    let manager = manager(
        &probe,
        PoolConfig::default()
            .max_size(4)
            .min_idle(4)
            .idle_timeout(None)
            .max_lifetime(lifetime)
            .maintenance_interval(Duration::from_millis(100)),
    )
    .await;
    assert_eq!(probe.created.load(Ordering::SeqCst), 4);
    // Jitter takes up to 2.5 % off: nothing expires before 97.5 s.
    tokio::time::sleep(Duration::from_millis(97_400)).await;
    settle().await;
    assert_eq!(
        manager.handle::<TestResource>().unwrap().stats().destroyed,
        0
    );
    // Everything has expired by 100 s, and min_idle refilled the pool.
    tokio::time::sleep(Duration::from_millis(2_800)).await;
    settle().await;
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!(stats.destroyed, 4);
    assert_eq!((stats.size, stats.idle), (4, 4));
    assert_eq!(probe.created.load(Ordering::SeqCst), 8);
    assert_eq!(probe.alive(), 4);
}

#[tokio::test(start_paused = true)]
async fn expired_instance_is_not_handed_out_even_before_maintenance() {
    let probe = Probe::new();
    let manager = manager(
        &probe,
        PoolConfig::default()
            .max_size(1)
            .max_lifetime(Duration::from_secs(10))
            .maintenance_interval(Duration::from_secs(3600)),
    )
    .await;
    let first = manager.acquire::<TestResource>().await.unwrap().id;
    tokio::time::sleep(Duration::from_secs(11)).await;
    let second = manager.acquire::<TestResource>().await.unwrap();
    assert_ne!(second.id, first);
}

#[tokio::test(start_paused = true)]
async fn validate_after_idle_checks_only_instances_idle_long_enough() {
    let probe = Probe::new();
    let manager = manager(
        &probe,
        PoolConfig::default()
            .max_size(1)
            .validate_after_idle(Duration::from_millis(500)),
    )
    .await;
    drop(manager.acquire::<TestResource>().await.unwrap());
    tokio::time::sleep(Duration::from_millis(400)).await;
    drop(manager.acquire::<TestResource>().await.unwrap());
    assert_eq!(
        probe.check_calls.load(Ordering::SeqCst),
        0,
        "idle 400 ms: no check"
    );

    tokio::time::sleep(Duration::from_millis(600)).await;
    let guard = manager.acquire::<TestResource>().await.unwrap();
    assert_eq!(
        probe.check_calls.load(Ordering::SeqCst),
        1,
        "idle 600 ms: checked"
    );
    let id = guard.id;
    drop(guard);

    // A failing check discards the instance and hands out a fresh one.
    probe.set(Hook::Check, Outcome::Err);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let guard = manager.acquire::<TestResource>().await.unwrap();
    assert_ne!(guard.id, id);
    assert_eq!(probe.check_calls.load(Ordering::SeqCst), 2);
    settle().await;
    assert_eq!(probe.alive(), 1);
}

#[tokio::test(start_paused = true)]
async fn guard_held_past_leak_threshold_is_reported_with_key_and_hold_time() {
    let probe = Probe::new();
    let manager = manager(
        &probe,
        PoolConfig::default()
            .leak_threshold(Duration::from_secs(5))
            .maintenance_interval(Duration::from_secs(1)),
    )
    .await;
    let mut events = manager.events();
    let guard = manager.acquire::<TestResource>().await.unwrap();
    let quick = manager.acquire::<TestResource>().await.unwrap();
    drop(quick);
    tokio::time::sleep(Duration::from_secs(7)).await;
    settle().await;
    let mut leaks = Vec::new();
    while let Ok(event) = events.try_recv() {
        if let Event::LeakDetected { source, held } = event {
            leaks.push((source.key, held));
        }
    }
    assert_eq!(
        leaks.len(),
        1,
        "reported once, for the guard still held: {leaks:?}"
    );
    assert_eq!(leaks[0].0, "test");
    assert!(
        leaks[0].1 >= Duration::from_secs(5) && leaks[0].1 <= Duration::from_secs(7),
        "{leaks:?}"
    );
    drop(guard);
}

/// Regression (faults #9): health rounds must not defeat `idle_timeout`: a passing check used
/// to set the instance's idle time to now, so with health every 30 s and idle_timeout 600 s
/// surplus idle instances never retired.
#[tokio::test(start_paused = true)]
async fn surplus_idle_instances_retire_at_idle_timeout_while_health_rounds_pass() {
    let probe = Probe::new();
    let policy = nebula_resource::Policy::default()
        .pool(
            PoolConfig::default()
                .max_size(4)
                .min_idle(1)
                .idle_timeout(Duration::from_secs(600))
                .max_lifetime(None)
                .maintenance_interval(Duration::from_secs(1)),
        )
        .breaker(nebula_resource::BreakerConfig::disabled())
        .retry(nebula_resource::RetryPolicy::none())
        .health(nebula_resource::HealthConfig::default().interval(Duration::from_secs(30)));
    let manager = common::policy_manager(&probe, policy).await;
    hold_n(&manager, 3).await;
    settle().await;
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!((stats.size, stats.idle), (3, 3));

    tokio::time::sleep(Duration::from_secs(700)).await;
    settle().await;
    assert!(probe.check_calls.load(Ordering::SeqCst) >= 3);
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!(
        (stats.size, stats.idle, stats.destroyed),
        (1, 1, 2),
        "surplus idle 700 s with idle_timeout 600 s: {stats:?}"
    );
    assert_eq!(probe.alive(), 1);
}
