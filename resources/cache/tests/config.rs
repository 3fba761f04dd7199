//! A bad cache configuration fails `build()` naming the field, before anything is created.

use std::time::Duration;

use nebula_resource::{Config, ErrorKind, ResourceManager};
use nebula_resource_cache::{Cache, CacheConfig, MAX_CAPACITY, MAX_EXPIRY};

#[tokio::test]
async fn bad_configs_fail_build_naming_the_field() {
    let cases = [
        (CacheConfig::new(0), "max_capacity"),
        (CacheConfig::new(MAX_CAPACITY + 1), "max_capacity"),
        (
            CacheConfig::default().time_to_live(Duration::ZERO),
            "time_to_live",
        ),
        (
            CacheConfig::default().time_to_live(MAX_EXPIRY + Duration::from_secs(1)),
            "time_to_live",
        ),
        (
            CacheConfig::default().time_to_idle(Duration::ZERO),
            "time_to_idle",
        ),
        (
            CacheConfig::default().time_to_idle(Duration::from_secs(400 * 24 * 3600)),
            "time_to_idle",
        ),
        (
            CacheConfig::default()
                .time_to_live(Duration::from_secs(60))
                .time_to_idle(Duration::from_secs(61)),
            "time_to_idle",
        ),
    ];
    for (config, field) in cases {
        let err = ResourceManager::builder()
            .register(Cache::<String, String>::new(), config.clone())
            .build()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert_eq!(err.field(), Some(field), "{config:?}: {err}");
        let message = err.to_string();
        assert!(message.contains("resource `cache`"), "{message}");
        assert!(message.contains(&format!("`{field}`")), "{message}");
    }
}

#[test]
fn defaults_and_edges_are_valid() {
    CacheConfig::default().validate().unwrap();
    assert_eq!(CacheConfig::default().get_max_capacity(), 10_000);
    assert_eq!(CacheConfig::default().get_time_to_live(), None);
    assert_eq!(CacheConfig::default().get_time_to_idle(), None);
    CacheConfig::new(1).validate().unwrap();
    CacheConfig::new(MAX_CAPACITY)
        .time_to_live(MAX_EXPIRY)
        .time_to_idle(MAX_EXPIRY)
        .validate()
        .unwrap();
    CacheConfig::default()
        .max_capacity(5)
        .time_to_live(Duration::from_secs(60))
        .time_to_idle(None)
        .validate()
        .unwrap();
}
