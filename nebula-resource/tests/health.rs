//! Health rounds and quarantine, driven through a real pool under paused time.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Hook, Outcome, Probe, TestResource, settle};
use nebula_resource::{
    BreakerConfig, ErrorKind, Health, HealthConfig, Policy, PoolConfig, RetryPolicy,
};

/// Regression (faults #1): a successful recovery probe's instance (and any instance returned
/// while quarantined) must not leave the next probe without room: with `max_size(1)` and the
/// default `success_threshold` of 2, a healthy backend used to stay Unhealthy forever.
#[tokio::test(start_paused = true)]
async fn a_quarantined_pool_with_max_size_one_recovers_when_the_backend_heals() {
    let probe = Probe::new();
    let policy = Policy::default()
        .pool(PoolConfig::default().max_size(1))
        .breaker(BreakerConfig::disabled())
        .retry(
            RetryPolicy::exponential(Duration::from_millis(200), 3)
                .randomization_factor(0.0)
                .max_interval(Duration::from_secs(1)),
        )
        .health(
            HealthConfig::default()
                .interval(Duration::from_secs(1))
                .timeout(Duration::from_millis(100))
                .failure_threshold(2),
        );
    let manager = common::policy_manager(&probe, policy).await;

    // Nothing idle: each round probes by creating, and the creates fail. Two failed rounds:
    // Unhealthy, quarantined.
    probe.set(Hook::Create, Outcome::Err);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    settle().await;
    let status = manager.status();
    let entry = status.resource("test").unwrap();
    assert_eq!(entry.health.health, Health::Unhealthy, "{:?}", entry.health);
    let err = manager.acquire::<TestResource>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");

    // The backend heals. Recovery probes (every 1 s at most) must bring it back: two good
    // probes in a row are needed.
    probe.set(Hook::Create, Outcome::Ok);
    tokio::time::sleep(Duration::from_secs(10)).await;
    settle().await;
    let status = manager.status();
    let entry = status.resource("test").unwrap();
    assert_eq!(
        entry.health.health,
        Health::Healthy,
        "still quarantined with a healthy backend: {:?}, pool {:?}",
        entry.health,
        entry.pool
    );
    let guard = tokio::time::timeout(Duration::from_secs(1), manager.acquire::<TestResource>())
        .await
        .expect("acquire finishes")
        .expect("recovered pool serves");
    drop(guard);
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
    assert_eq!(probe.alive(), 0);
}

/// Regression (faults #9, health side): a passing health check must not reset an instance's
/// idle time, or surplus idle instances never reach `idle_timeout` while health rounds run.
#[tokio::test(start_paused = true)]
async fn passing_health_checks_do_not_keep_surplus_idle_instances_alive() {
    let probe = Probe::new();
    let policy = Policy::default()
        .pool(
            PoolConfig::default()
                .max_size(4)
                .min_idle(0)
                .idle_timeout(Duration::from_secs(610))
                .max_lifetime(None)
                .maintenance_interval(Duration::from_secs(1)),
        )
        .breaker(BreakerConfig::disabled())
        .retry(RetryPolicy::none())
        .health(HealthConfig::default().interval(Duration::from_secs(30)));
    let manager = common::policy_manager(&probe, policy).await;
    {
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(manager.acquire::<TestResource>().await.unwrap());
        }
    }
    settle().await;
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!((stats.size, stats.idle), (3, 3));

    // Health rounds at 30 s, 60 s, ... 600 s check (and pass) the idle instances; at 610 s they
    // have been idle for `idle_timeout` and retire, before the round at 630 s.
    tokio::time::sleep(Duration::from_secs(620)).await;
    settle().await;
    assert!(
        probe.check_calls.load(Ordering::SeqCst) >= 3,
        "health rounds checked the idle instances"
    );
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!(
        (stats.size, stats.idle, stats.destroyed),
        (0, 0, 3),
        "idle 620 s with idle_timeout 610 s: {stats:?}"
    );
    assert_eq!(probe.alive(), 0);
}

/// A `check` that panics in its body (before it returns its future) during a health round used to
/// unwind out of the scheduler task, and no registration of the manager had a health round
/// again. Now the panic is that check's failure, and the rounds go on.
#[tokio::test(start_paused = true)]
async fn a_check_panicking_in_a_health_round_does_not_stop_the_scheduler() {
    let probe = Probe::new();
    probe.set(Hook::Check, Outcome::PanicSync);
    let policy = Policy::default()
        .pool(PoolConfig::default().max_size(2).min_idle(1))
        .retry(RetryPolicy::none())
        .breaker(BreakerConfig::disabled())
        .health(
            HealthConfig::default()
                .interval(Duration::from_secs(1))
                .failure_threshold(1000),
        );
    let manager = common::policy_manager(&probe, policy).await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    settle().await;
    let checks = probe.check_calls.load(Ordering::SeqCst);
    assert!(checks >= 5, "{checks} health checks in 5.5 s of 1 s rounds");
    let status = manager.status();
    let health = &status.resource("test").expect("status").health;
    assert_eq!(health.health, Health::Degraded, "{health:?}");
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// `Resource::degraded`: a pool whose instances pass their checks but say they are impaired
/// reports Degraded with their reason, keeps serving, and counts no failure.
#[tokio::test(start_paused = true)]
async fn a_pool_whose_instances_report_impairment_is_degraded_not_failed() {
    let probe = Probe::new();
    let policy = Policy::default()
        .pool(PoolConfig::default().max_size(2).min_idle(1))
        .health(HealthConfig::default().interval(Duration::from_secs(1)));
    let manager = common::policy_manager(&probe, policy).await;
    *probe.degraded.lock() = Some("replica lag 30 s".to_owned());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    settle().await;
    let status = manager.status();
    let entry = status.resource("test").unwrap();
    assert_eq!(entry.health.health, Health::Degraded, "{:?}", entry.health);
    assert_eq!(entry.health.reason.as_deref(), Some("replica lag 30 s"));
    assert_eq!(entry.health.consecutive_failures, 0);
    let created = probe.created.load(Ordering::SeqCst);
    drop(
        manager
            .acquire::<TestResource>()
            .await
            .expect("still serves"),
    );
    assert_eq!(
        probe.created.load(Ordering::SeqCst),
        created,
        "nothing replaced"
    );

    *probe.degraded.lock() = None;
    tokio::time::sleep(Duration::from_secs(1)).await;
    settle().await;
    let status = manager.status();
    assert_eq!(
        status.resource("test").unwrap().health.health,
        Health::Healthy
    );
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
}
