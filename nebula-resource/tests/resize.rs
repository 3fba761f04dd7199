//! Live pool resize: growing serves waiters at once, shrinking never takes a guard away.

mod common;

use std::time::Duration;

use common::{Probe, TestConfig, TestResource, settle};
use nebula_resource::{Context, ErrorKind, Policy, PoolConfig, ResourceManager, Tenancy, TenantId};

#[tokio::test(start_paused = true)]
async fn growing_serves_a_waiter_at_once() {
    let probe = Probe::new();
    let manager = common::pool_manager(&probe, PoolConfig::default().max_size(2)).await;
    let a = manager.acquire::<TestResource>().await.expect("a");
    let b = manager.acquire::<TestResource>().await.expect("b");
    let waiter = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.acquire::<TestResource>().await.map(|g| g.id) })
    };
    settle().await;
    assert!(!waiter.is_finished(), "the pool is full");
    manager.resize::<TestResource>(4, 0).expect("resize");
    settle().await;
    assert!(waiter.is_finished(), "served by the new room");
    waiter.await.expect("task").expect("acquired");
    let stats = manager.handle::<TestResource>().expect("handle").stats();
    assert_eq!(stats.max_size, 4);
    drop((a, b));
}

#[tokio::test(start_paused = true)]
async fn shrinking_destroys_idle_now_and_surplus_in_use_instances_on_release() {
    let probe = Probe::new();
    let manager = common::pool_manager(&probe, PoolConfig::default().max_size(4)).await;
    let mut guards = Vec::new();
    for _ in 0..4 {
        guards.push(manager.acquire::<TestResource>().await.expect("acquire"));
    }
    drop(guards.pop());
    settle().await;
    assert_eq!(probe.alive(), 4);

    manager.resize::<TestResource>(2, 0).expect("resize");
    settle().await;
    assert_eq!(probe.alive(), 3, "the idle instance is destroyed");
    assert_eq!(guards.len(), 3, "no guard is taken away");
    drop(guards.pop());
    settle().await;
    assert_eq!(
        probe.alive(),
        2,
        "a surplus instance is destroyed on release"
    );
    drop(guards);
    settle().await;
    let stats = manager.handle::<TestResource>().expect("handle").stats();
    assert_eq!((stats.size, stats.idle, stats.max_size), (2, 2, 2));
    assert_eq!(probe.alive(), 2);
}

#[tokio::test]
async fn bad_sizes_and_wrong_registrations_are_rejected() {
    let probe = Probe::new();
    let manager = common::pool_manager(&probe, PoolConfig::default()).await;
    let err = manager.resize::<TestResource>(0, 0).expect_err("zero");
    assert_eq!(
        (err.kind(), err.field(), err.resource_key()),
        (ErrorKind::Config, Some("pool.max_size"), Some("test"))
    );
    let err = manager.resize::<TestResource>(2, 3).expect_err("min_idle");
    assert_eq!(err.field(), Some("pool.min_idle"));
    let err = manager
        .resize_tenant::<TestResource>("acme", 2, 0)
        .expect_err("not per tenant");
    assert_eq!(err.kind(), ErrorKind::Config);

    let tenants = ResourceManager::builder()
        .register_per_tenant_with(
            TestResource::new(&probe),
            |_: &TenantId| Ok(TestConfig::default()),
            Policy::default(),
            Tenancy::default(),
        )
        .build()
        .await
        .expect("build");
    let err = tenants
        .resize::<TestResource>(2, 0)
        .expect_err("per tenant");
    assert_eq!(err.kind(), ErrorKind::Config);
    let err = tenants
        .resize_tenant::<TestResource>("a;b", 2, 0)
        .expect_err("bad tenant");
    assert_eq!(err.kind(), ErrorKind::TenantRejected);
    tenants
        .resize_tenant::<TestResource>("acme", 3, 1)
        .expect("resize a tenant");
    let guard = tenants
        .acquire_in::<TestResource>(&Context::tenant("acme"))
        .await
        .expect("acquire");
    let status = tenants.status();
    let acme = &status.resource("test").expect("registered").tenants[0];
    assert_eq!(acme.pool.max_size, 3);
    drop(guard);
    tenants
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// Random resizes (1 to 16) every millisecond under a 64-task load with random holds and
/// cancellations: no instance is handed to two guards, never more than the largest size are
/// alive, and once the size settles the pool converges to it with no place lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_resizes_under_load_converge_and_lose_nothing() {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let seed: u64 = rand::random();
    eprintln!("resize stress seed {seed}");
    let probe = Probe::new();
    let manager = common::pool_manager(
        &probe,
        PoolConfig::default()
            .max_size(16)
            .acquire_timeout(Duration::from_secs(30)),
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let resizer = {
        let manager = manager.clone();
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            while !stop.load(Ordering::SeqCst) {
                let size = rng.random_range(1..=16);
                manager
                    .resize::<TestResource>(size, rng.random_range(0..=size.min(2)))
                    .expect("resize");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let manager = manager.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed ^ t.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                for _ in 0..500 {
                    let roll = rng.random_range(0..100u32);
                    let guard = if roll < 10 {
                        tokio::time::timeout(
                            Duration::from_micros(rng.random_range(0..100)),
                            manager.acquire::<TestResource>(),
                        )
                        .await
                        .ok()
                        .map(|acquired| acquired.expect("acquire"))
                    } else {
                        Some(manager.acquire::<TestResource>().await.expect("acquire"))
                    };
                    let Some(guard) = guard else { continue };
                    common::hold_exclusively(&guard, roll % 3 == 0).await;
                    drop(guard);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a load task failed");
    }
    stop.store(true, Ordering::SeqCst);
    resizer.await.expect("resizer");
    assert!(probe.max_alive.load(Ordering::SeqCst) <= 16);

    manager.resize::<TestResource>(4, 0).expect("resize");
    let handle = manager.handle::<TestResource>().expect("handle");
    // The surplus is destroyed on the release worker: wait for it.
    tokio::time::timeout(Duration::from_secs(5), async {
        while handle.stats().size > 4 || handle.stats().releasing > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the pool did not shrink: {:?}", handle.stats()));
    let stats = handle.stats();
    assert_eq!(
        (stats.in_use, stats.waiters, stats.max_size),
        (0, 0, 4),
        "{stats:?}"
    );
    assert_eq!(probe.alive(), stats.size, "{stats:?}");
    // No place was lost: four guards at once, without waiting long.
    let mut all = Vec::new();
    for _ in 0..4 {
        all.push(
            tokio::time::timeout(Duration::from_secs(5), manager.acquire::<TestResource>())
                .await
                .expect("a place was lost")
                .expect("acquire"),
        );
    }
    drop(all);
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    assert_eq!(probe.alive(), 0);
}

/// Regression (faults #13): a shrink missed creates already in flight: with no waiter left they
/// landed idle above the new maximum and stayed there (size 4, max_size 1, idle 4).
#[tokio::test(start_paused = true)]
async fn creates_in_flight_during_a_shrink_do_not_stay_above_the_new_maximum() {
    let probe = Probe::new();
    probe.set(common::Hook::Create, common::Outcome::Slow);
    let manager = common::pool_manager(&probe, PoolConfig::default().max_size(4)).await;
    // Four acquires start four creates (50 ms each) and give up after 10 ms.
    let acquires: Vec<_> = (0..4)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_millis(10), manager.acquire::<TestResource>())
                    .await
                    .is_err()
            })
        })
        .collect();
    for acquire in acquires {
        assert!(acquire.await.unwrap(), "the acquire gave up");
    }
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!((stats.size, stats.creating, stats.waiters), (4, 4, 0));

    manager.resize::<TestResource>(1, 0).expect("resize");
    tokio::time::sleep(Duration::from_millis(100)).await;
    settle().await;
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert!(
        stats.size <= stats.max_size && stats.max_size == 1,
        "instances above the new maximum: {stats:?}"
    );
    assert_eq!(stats.size, stats.idle, "{stats:?}");
    assert_eq!(probe.alive(), stats.size);
}

/// Regression (faults #15): a shrink destroyed more than the surplus: the size compared with
/// the new maximum still counted instances already handed to the release worker, so
/// resize 2 → 1 with both in use, then both dropped back to back, left the pool empty.
#[tokio::test(start_paused = true)]
async fn a_shrink_destroys_only_the_surplus_when_guards_return_back_to_back() {
    let probe = Probe::new();
    let manager = common::pool_manager(&probe, PoolConfig::default().max_size(2)).await;
    let a = manager.acquire::<TestResource>().await.expect("a");
    let b = manager.acquire::<TestResource>().await.expect("b");
    manager.resize::<TestResource>(1, 0).expect("resize");
    drop(a);
    drop(b);
    settle().await;
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!(
        (stats.size, stats.idle, stats.destroyed),
        (1, 1, 1),
        "one surplus instance, one destroyed: {stats:?}"
    );
    assert_eq!(probe.alive(), 1);
}

/// Regression (faults #16): resize was accepted after shutdown (Ok, and status reported the
/// new size of a closed pool); it must fail with ShuttingDown.
#[tokio::test(start_paused = true)]
async fn resize_after_shutdown_fails_with_shutting_down() {
    let probe = Probe::new();
    let manager = common::pool_manager(&probe, PoolConfig::default().max_size(2)).await;
    drop(manager.acquire::<TestResource>().await.expect("acquire"));
    manager
        .shutdown(Duration::from_secs(1))
        .await
        .expect("shutdown");
    let err = manager
        .resize::<TestResource>(8, 1)
        .expect_err("resize of a closed pool");
    assert_eq!(err.kind(), ErrorKind::ShuttingDown, "{err}");
    let stats = manager.handle::<TestResource>().unwrap().stats();
    assert_eq!((stats.size, stats.max_size), (0, 2), "{stats:?}");
}
