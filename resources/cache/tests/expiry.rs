//! Time to live and time to idle. moka expires entries by its own clock, not tokio's, so these
//! tests let short real durations pass: the passing time is what is under test.

use std::time::{Duration, Instant};

use nebula_resource::ResourceManager;
use nebula_resource_cache::{Cache, CacheConfig};

async fn manager(config: CacheConfig) -> ResourceManager {
    ResourceManager::builder()
        .register(Cache::<u32, &'static str>::new(), config)
        .build()
        .await
        .unwrap()
}

fn counter(manager: &ResourceManager, name: &str) -> u64 {
    let status = manager.status();
    status
        .resource("cache")
        .unwrap()
        .counters
        .iter()
        .find_map(|&(counter, value)| (counter == name).then_some(value))
        .unwrap()
}

#[tokio::test]
async fn an_entry_expires_after_its_time_to_live() {
    let manager = manager(CacheConfig::new(100).time_to_live(Duration::from_millis(150))).await;
    let cache = manager.acquire::<Cache<u32, &str>>().await.unwrap();
    cache.insert(1, "short-lived").await;
    assert_eq!(cache.get(&1).await, Some("short-lived"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cache.get(&1).await, None);
    cache.run_pending_tasks().await;
    assert_eq!(cache.entry_count(), 0);
    assert_eq!(counter(&manager, "expirations"), 1);
    assert_eq!(
        (counter(&manager, "hits"), counter(&manager, "misses")),
        (1, 1)
    );
}

#[tokio::test]
async fn reads_keep_an_entry_alive_until_its_time_to_idle_passes_unread() {
    let tti = Duration::from_millis(300);
    let manager = manager(CacheConfig::new(100).time_to_idle(tti)).await;
    let cache = manager.acquire::<Cache<u32, &str>>().await.unwrap();
    cache.insert(1, "kept by reads").await;
    // Read every 60 ms for 600 ms: twice the time to idle, never idle for long.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(cache.get(&1).await, Some("kept by reads"));
    }
    tokio::time::sleep(tti + Duration::from_millis(200)).await;
    assert_eq!(cache.get(&1).await, None);
    cache.run_pending_tasks().await;
    assert_eq!(counter(&manager, "expirations"), 1);
}

#[tokio::test]
async fn time_to_live_ends_an_entry_however_often_it_is_read() {
    let ttl = Duration::from_millis(500);
    let manager = manager(
        CacheConfig::new(100)
            .time_to_live(ttl)
            .time_to_idle(Duration::from_millis(400)),
    )
    .await;
    let cache = manager.acquire::<Cache<u32, &str>>().await.unwrap();
    let inserted = Instant::now();
    cache.insert(1, "read often").await;
    loop {
        tokio::time::sleep(Duration::from_millis(40)).await;
        if cache.get(&1).await.is_none() {
            break;
        }
        assert!(
            inserted.elapsed() < ttl + Duration::from_millis(400),
            "still there {:?} after insertion",
            inserted.elapsed()
        );
    }
    assert!(
        inserted.elapsed() >= ttl,
        "gone after {:?}, before its time to live",
        inserted.elapsed()
    );
}
