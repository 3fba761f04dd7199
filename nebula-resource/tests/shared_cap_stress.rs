//! Randomized stress of the cap shared by tenant pools: 128 tasks on a 2-worker runtime acquire
//! from random tenants with random cancellation, holds, taints and bursts of failing creates.
//! Asserts that no instance is handed to two guards and that the instances alive never exceed
//! the cap, and at the end that no place of the cap was lost.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Hook, Outcome, Probe, TestConfig, TestResource};
use nebula_resource::{
    BreakerConfig, Context, HealthConfig, Policy, PoolConfig, ResourceManager, RetryPolicy,
    Tenancy, TenantId,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TASKS: usize = 128;
const TENANTS: usize = 8;
const PER_POOL: usize = 8;
const CAP: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_tenant_load_never_exceeds_the_cap_nor_loses_a_place() {
    let (seed, ops) = common::stress_settings("shared cap stress", 200_000);
    let probe = Probe::new();
    let manager = ResourceManager::builder()
        .register_per_tenant_with(
            TestResource::new(&probe),
            |_: &TenantId| Ok(TestConfig::default()),
            Policy::default()
                .pool(
                    PoolConfig::default()
                        .max_size(PER_POOL)
                        .acquire_timeout(Duration::from_secs(30))
                        .validate_after_idle(Duration::from_micros(200)),
                )
                .retry(RetryPolicy::none())
                .breaker(BreakerConfig::disabled())
                .health(HealthConfig::disabled()),
            Tenancy::default().max_total_instances(CAP),
        )
        .build()
        .await
        .expect("build");
    let contexts: Arc<[Context]> = (0..TENANTS)
        .map(|i| Context::tenant(format!("t{i}")))
        .collect();

    // Bursts of failing creates: each failure must give its place back.
    let stop = Arc::new(AtomicBool::new(false));
    let flapping = {
        let probe = Arc::clone(&probe);
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                probe.set(Hook::Create, Outcome::Err);
                tokio::time::sleep(Duration::from_millis(1)).await;
                probe.set(Hook::Create, Outcome::Ok);
            }
        })
    };

    let per_task = ops / TASKS;
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let manager = manager.clone();
            let contexts = Arc::clone(&contexts);
            let probe = Arc::clone(&probe);
            tokio::spawn(async move {
                let mut rng =
                    StdRng::seed_from_u64(seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
                for _ in 0..per_task {
                    let ctx = &contexts[rng.random_range(0..TENANTS)];
                    let roll = rng.random_range(0..100u32);
                    let acquired = common::maybe_cancelled(roll, &mut rng, || {
                        manager.acquire_in::<TestResource>(ctx)
                    })
                    .await;
                    // A create that failed on purpose fails its acquire: that is expected.
                    let Some(Ok(guard)) = acquired else { continue };
                    assert!(probe.alive() <= CAP, "{} alive, cap {CAP}", probe.alive());
                    common::hold_exclusively(&guard, roll % 4 == 0).await;
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
        task.await.expect("a stress task failed");
    }
    stop.store(true, Ordering::SeqCst);
    flapping.await.expect("flapping task");
    probe.set(Hook::Create, Outcome::Ok);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let max_alive = probe.max_alive.load(Ordering::SeqCst);
    assert!(max_alive <= CAP, "{max_alive} alive at once, cap {CAP}");
    let status = manager.status();
    let pool = status.resource("test").expect("registered").pool;
    assert_eq!(
        (pool.in_use, pool.waiters, pool.creating, pool.releasing),
        (0, 0, 0, 0),
        "{pool:?}"
    );
    assert!(pool.size <= CAP, "{pool:?}");
    assert_eq!(probe.alive(), pool.size, "{pool:?}");

    // No place was lost: the whole cap can be held at once, across two tenants.
    let mut all = Vec::new();
    for i in 0..CAP {
        let ctx = &contexts[i / PER_POOL];
        let guard = tokio::time::timeout(
            Duration::from_secs(5),
            manager.acquire_in::<TestResource>(ctx),
        )
        .await
        .expect("a place of the cap was lost")
        .expect("acquire");
        all.push(guard);
    }
    assert_eq!(probe.alive(), CAP);
    drop(all);
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    assert_eq!(probe.alive(), 0);
}
