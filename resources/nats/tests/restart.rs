//! The server restarted under load: no task hangs, every failure is a typed error within its
//! bound, and service is back within 2 s of the server accepting connections again — on the
//! same instance, which async-nats reconnected.
//!
//! This file is its own test binary: no other test runs while the machine's NATS is down. The
//! test kit's `Service` starts the server again however the test ends.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{config, unique};
use nebula_resource::{HealthConfig, Policy, PoolConfig, RetryPolicy};
use nebula_resource_nats::{Nats, NatsErrorKind};
use nebula_resource_testing::Service;
use tokio::time::Instant;

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_under_load_hangs_nothing_and_service_is_back_within_two_seconds() {
    let manager = common::manager_with(
        config()
            .publish_timeout(PUBLISH_TIMEOUT)
            .check_timeout(Duration::from_millis(300)),
        Policy::default()
            .pool(PoolConfig::default().acquire_timeout(ACQUIRE_TIMEOUT))
            .retry(RetryPolicy::none())
            .health(HealthConfig::default().interval(Duration::from_millis(100))),
    )
    .await;
    let subject = format!("nebula.test.{}", unique("restart"));

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..16 {
        let (manager, subject) = (manager.clone(), subject.clone());
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let call = Instant::now();
                match manager.acquire::<Nats>().await {
                    Ok(nats) => {
                        let sent = match nats.publish_bounded(subject.clone(), "x".into()).await {
                            Ok(()) => nats.flush_bounded().await,
                            Err(err) => Err(err),
                        };
                        match sent {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(err) => {
                                assert!(
                                    matches!(
                                        err.kind(),
                                        NatsErrorKind::TimedOut | NatsErrorKind::Closed
                                    ),
                                    "{err}"
                                );
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                    Err(err) => {
                        assert!(err.is_retryable(), "{err}");
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                let took = call.elapsed();
                assert!(
                    took < ACQUIRE_TIMEOUT + 2 * PUBLISH_TIMEOUT + Duration::from_millis(300),
                    "one acquire + publish + flush took {took:?}"
                );
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = ok.load(Ordering::Relaxed);
    assert!(before > 0, "the load works before the restart");

    let stopped = Service::nats().stop().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let failed_while_down = failed.load(Ordering::Relaxed);
    assert!(failed_while_down > 0, "calls fail while the server is down");
    stopped.start().await;
    let back_at = Instant::now();

    // Back: a fresh acquire makes a round trip within 2 s of the server accepting connections.
    loop {
        if let Ok(nats) = manager.acquire::<Nats>().await
            && nats.ping().await.is_ok()
        {
            break;
        }
        assert!(
            back_at.elapsed() < Duration::from_secs(2),
            "service not back within 2 s of the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back_after = back_at.elapsed();
    let ok_at_return = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        ok.load(Ordering::Relaxed) > ok_at_return,
        "the load is served again"
    );

    stop.store(true, Ordering::Relaxed);
    for task in load {
        tokio::time::timeout(ACQUIRE_TIMEOUT + 3 * PUBLISH_TIMEOUT, task)
            .await
            .expect("no load task hangs")
            .expect("no load task panics");
    }
    eprintln!(
        "restart: back after {back_after:?}; {before} ok before, {failed_while_down} failed while down"
    );
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}
