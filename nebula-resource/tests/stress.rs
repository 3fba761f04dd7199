//! Randomized stress: 10^6 acquire/release operations across 256 tasks on a 2-worker runtime,
//! with random cancellation at random await points, random holds and random taints. Asserts at
//! every step that no instance is handed to two guards and that at most `max_size` exist, and
//! at the end that no place in the pool was lost.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Probe, TestConfig, TestResource};
use nebula_resource::{Policy, PoolConfig, ResourceManager};
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
