//! A timeout says what it waited for, how long, the pool's counts and the last create error.

mod common;

use std::time::Duration;

use common::{Hook, Outcome, Probe, TestResource};
use nebula_resource::{ErrorKind, PoolConfig, TimeoutPhase};

#[tokio::test(start_paused = true)]
async fn permit_timeout_reports_phase_wait_stats_and_last_create_error() {
    let probe = Probe::new();
    let manager = common::pool_manager(
        &probe,
        PoolConfig::default()
            .max_size(1)
            .acquire_timeout(Duration::from_millis(250)),
    )
    .await;

    // A create that fails gives its error to the acquire it was made for...
    probe.set(Hook::Create, Outcome::Err);
    let err = manager.acquire::<TestResource>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Create);
    assert!(
        err.to_string().contains("create failed on purpose"),
        "{err}"
    );

    // ...and is remembered for the timeouts that follow.
    probe.set(Hook::Create, Outcome::Ok);
    let held = manager.acquire::<TestResource>().await.unwrap();
    let err = manager.acquire::<TestResource>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(err.is_retryable());
    assert_eq!(err.timeout_phase(), Some(TimeoutPhase::Permit));
    assert_eq!(err.waited(), Some(Duration::from_millis(250)));
    let stats = err.pool_stats().expect("stats");
    assert_eq!(
        (
            stats.size,
            stats.max_size,
            stats.in_use,
            stats.idle,
            stats.waiters
        ),
        (1, 1, 1, 0, 1)
    );
    assert!(
        err.last_create_error()
            .unwrap()
            .contains("create failed on purpose")
    );
    assert_eq!(
        err.to_string(),
        "resource `test`: timed out after 250ms waiting for an available instance \
         (pool size 1/1, idle 0, in use 1, waiters 1, creating 0); \
         last create error: resource `test`: create failed: create failed on purpose"
    );
    drop(held);
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!(
        (stats.timeouts, stats.create_errors, stats.waiters),
        (1, 1, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn hung_create_times_out_with_the_create_phase() {
    let probe = Probe::new();
    probe.set(Hook::Create, Outcome::Never);
    let manager = common::pool_manager(
        &probe,
        PoolConfig::default()
            .create_timeout(Duration::from_millis(100))
            .acquire_timeout(Duration::from_secs(1)),
    )
    .await;
    let err = manager.acquire::<TestResource>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.timeout_phase(), Some(TimeoutPhase::Create));
    assert!(
        err.to_string().contains("waiting for instance creation"),
        "{err}"
    );
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!((stats.size, stats.creating), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn context_deadline_caps_the_wait() {
    let probe = Probe::new();
    let manager = common::pool_manager(&probe, PoolConfig::default().max_size(1)).await;
    let _held = manager.acquire::<TestResource>().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(40);
    let ctx = nebula_resource::Context::tenant("acme").with_deadline(deadline);
    let err = manager.acquire_in::<TestResource>(&ctx).await.unwrap_err();
    assert_eq!(err.timeout_phase(), Some(TimeoutPhase::Permit));
    assert_eq!(err.waited(), Some(Duration::from_millis(40)));

    let bad = nebula_resource::Context::tenant("acme; DROP");
    let err = manager.acquire_in::<TestResource>(&bad).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TenantRejected);
    assert_eq!(err.tenant(), Some("acme; DROP"));
}

/// Regression (faults #17): a waiter re-queued after a bad hand-off restarted its clock, so a
/// Timeout reported only the time since the last re-queue (an acquire that waited 201 ms said
/// "timed out after 6.089µs").
#[tokio::test(start_paused = true)]
async fn a_timeout_after_a_requeue_reports_the_whole_wait() {
    let probe = Probe::new();
    let manager = common::pool_manager(
        &probe,
        PoolConfig::default()
            .max_size(1)
            .acquire_timeout(Duration::from_millis(200)),
    )
    .await;
    let held = manager.acquire::<TestResource>().await.unwrap();
    let waiter = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.acquire::<TestResource>().await.map(drop) })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    // At 100 ms the waiter is handed an instance that is broken by the time it looks: it
    // waits again, and no new instance comes (creates hang).
    probe.set(Hook::Create, Outcome::Never);
    let broken = std::sync::Arc::clone(&held.broken);
    drop(held);
    broken.store(true, std::sync::atomic::Ordering::SeqCst);

    let err = waiter.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(err.timeout_phase(), Some(TimeoutPhase::Permit), "{err}");
    assert_eq!(
        err.waited(),
        Some(Duration::from_millis(200)),
        "the acquire waited 200 ms in all: {err}"
    );
}
