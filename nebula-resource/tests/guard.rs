//! Guard behaviour: return on drop, taint, detach, hold duration, broken instances.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Hook, Outcome, Probe, TestConfig, TestResource, settle};
use nebula_resource::{Policy, PoolConfig, ResourceManager};

async fn manager(probe: &std::sync::Arc<Probe>, max: usize) -> ResourceManager {
    ResourceManager::builder()
        .register_with(
            TestResource::new(probe),
            TestConfig::default(),
            Policy::default().pool(PoolConfig::default().max_size(max)),
        )
        .build()
        .await
        .unwrap()
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
