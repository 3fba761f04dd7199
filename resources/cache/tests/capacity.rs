//! `max_capacity` bounds the entries held; what does not fit is evicted and counted.

use std::time::Duration;

use nebula_resource::ResourceManager;
use nebula_resource_cache::{Cache, CacheConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_never_holds_more_than_max_capacity() {
    let manager = ResourceManager::builder()
        .register(Cache::<u64, u64>::new(), CacheConfig::new(100))
        .build()
        .await
        .unwrap();
    let cache = manager.acquire::<Cache<u64, u64>>().await.unwrap();
    for key in 0..1_000 {
        cache.insert(key, key * 2).await;
        if key % 100 == 99 {
            cache.run_pending_tasks().await;
            assert!(
                cache.entry_count() <= 100,
                "{} entries",
                cache.entry_count()
            );
        }
    }
    cache.run_pending_tasks().await;
    let status = manager.status();
    let counters = &status.resource("cache").unwrap().counters;
    let get = |name: &str| {
        counters
            .iter()
            .find_map(|&(counter, value)| (counter == name).then_some(value))
            .unwrap()
    };
    assert!(get("entries") <= 100, "{counters:?}");
    assert!(get("entries") > 0, "{counters:?}");
    assert_eq!(get("entries") + get("evictions"), 1_000, "{counters:?}");
    drop(cache);
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
}
