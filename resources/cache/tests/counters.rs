//! Hits, misses, entries, evictions and expirations show in `manager.status()` through
//! `Resource::counters`, shared by the resource value and every handle.

use std::time::Duration;

use nebula_resource::{ResourceManager, ResourceStatus, Topology};
use nebula_resource_cache::{Cache, CacheConfig};

fn counter(status: &ResourceStatus, name: &str) -> u64 {
    status
        .counters
        .iter()
        .find_map(|&(counter, value)| (counter == name).then_some(value))
        .unwrap_or_else(|| panic!("no counter {name:?} in {:?}", status.counters))
}

async fn manager() -> ResourceManager {
    ResourceManager::builder()
        .register(Cache::<String, u64>::new(), CacheConfig::new(1_000))
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn hits_misses_and_entries_show_in_the_status() {
    let manager = manager().await;
    let cache = manager.acquire::<Cache<String, u64>>().await.unwrap();
    for (key, value) in [("a", 1), ("b", 2), ("c", 3)] {
        cache.insert(key.to_owned(), value).await;
    }
    assert_eq!(cache.get("a").await, Some(1));
    assert_eq!(cache.get("b").await, Some(2));
    assert_eq!(cache.get("zzz").await, None);
    // Not lookups: not counted.
    assert!(cache.contains_key("c"));
    assert_eq!(cache.inner().get("c").await, Some(3));
    cache.run_pending_tasks().await;

    let status = manager.status();
    let entry = status.resource("cache").unwrap();
    assert_eq!(entry.topology, Topology::Resident);
    assert_eq!(counter(entry, "hits"), 2);
    assert_eq!(counter(entry, "misses"), 1);
    assert_eq!(counter(entry, "entries"), 3);
    assert_eq!(counter(entry, "evictions"), 0);
    assert_eq!(counter(entry, "expirations"), 0);
    assert_eq!((cache.hits(), cache.misses()), (2, 1));

    assert_eq!(cache.remove("a").await, Some(1));
    cache.invalidate("b").await;
    cache.run_pending_tasks().await;
    let status = manager.status();
    assert_eq!(counter(status.resource("cache").unwrap(), "entries"), 1);
    drop(cache);
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
    // Shut down: the cache is gone, the counts stay.
    let status = manager.status();
    let entry = status.resource("cache").unwrap();
    assert_eq!(counter(entry, "entries"), 0);
    assert_eq!(counter(entry, "hits"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_runs_init_once_and_counts_one_miss() {
    let manager = manager().await;
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move {
                let cache = manager.acquire::<Cache<String, u64>>().await.unwrap();
                cache
                    .get_with("computed".to_owned(), async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        42
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 42);
    }
    let cache = manager.acquire::<Cache<String, u64>>().await.unwrap();
    let failed = cache
        .try_get_with("broken".to_owned(), async { Err::<u64, _>("no value") })
        .await
        .unwrap_err();
    assert_eq!(*failed, "no value");
    assert!(!cache.contains_key("broken"), "an error is not cached");
    let value = cache
        .try_get_with("computed".to_owned(), async { Err::<u64, _>("not called") })
        .await
        .unwrap();
    assert_eq!(value, 42);

    let status = manager.status();
    let entry = status.resource("cache").unwrap();
    assert_eq!(counter(entry, "misses"), 2, "one init ran, one failed");
    assert_eq!(
        counter(entry, "hits"),
        16,
        "fifteen waiters and one try_get_with"
    );
    drop(cache);
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn counters_survive_a_replaced_cache_and_are_kept_per_registration() {
    let manager = ResourceManager::builder()
        .register_named("users", Cache::<String, u64>::new(), CacheConfig::new(10))
        .register_named("orders", Cache::<String, u64>::new(), CacheConfig::new(10))
        .build()
        .await
        .unwrap();
    let users = manager
        .acquire_named::<Cache<String, u64>>("users")
        .await
        .unwrap();
    users.insert("ada".to_owned(), 1).await;
    assert_eq!(users.get("ada").await, Some(1));
    // A tainted resident instance is replaced by a new, empty cache; the counts go on.
    users.taint();
    let users = manager
        .acquire_named::<Cache<String, u64>>("users")
        .await
        .unwrap();
    assert_eq!(users.get("ada").await, None);

    let status = manager.status();
    let entry = status.named("cache", "users").unwrap();
    assert_eq!((counter(entry, "hits"), counter(entry, "misses")), (1, 1));
    assert_eq!(counter(entry, "entries"), 0);
    assert_eq!(entry.pool.created, 2);
    let orders = status.named("cache", "orders").unwrap();
    assert_eq!((counter(orders, "hits"), counter(orders, "misses")), (0, 0));
    drop(users);
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
}
