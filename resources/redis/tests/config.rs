//! Bad configurations fail `build()` naming the field, before anything connects; a password
//! never appears in an error, its `Debug`, its source chain, or the pool's last create error.

mod common;

use std::time::Duration;

use common::{config, redis_url};
use nebula_resource::{ErrorKind, Policy, PoolConfig, ResourceManager};
use nebula_resource_redis::{Redis, RedisConfig, RedisDedicated};

const SECRET: &str = "s3cr3tpw";

/// Everything an error can print: `Display`, `Debug` and every cause.
fn everything_shown(err: &(dyn std::error::Error + 'static)) -> String {
    let mut shown = format!("{err} | {err:?}");
    let mut source = err.source();
    while let Some(cause) = source {
        shown.push_str(&format!(" | {cause} | {cause:?}"));
        source = cause.source();
    }
    shown
}

/// `redis://:s3cr3tpw@host:port` for the server under test, which has no password.
fn url_with_password() -> String {
    let url = redis_url();
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    format!("{scheme}://:{SECRET}@{rest}")
}

#[tokio::test]
async fn bad_configs_fail_build_naming_the_field() {
    let cases = [
        (RedisConfig::new(""), "url"),
        (RedisConfig::new("localhost:6379"), "url"),
        (
            RedisConfig::new(format!("http://:{SECRET}@127.0.0.1")),
            "url",
        ),
        (
            RedisConfig::new(format!("rediss://:{SECRET}@127.0.0.1")),
            "url",
        ),
        (
            RedisConfig::new(format!("redis://:{SECRET}@127.0.0.1/abc")),
            "url",
        ),
        (
            RedisConfig::new(format!("redis://:{SECRET}@127.0.0.1/99999")),
            "db",
        ),
        (config().db(-1), "db"),
        (config().password(""), "password"),
        (config().client_name("two words"), "client_name"),
        (config().connect_timeout(Duration::ZERO), "connect_timeout"),
        (
            config().response_timeout(Duration::from_secs(7 * 24 * 3600)),
            "response_timeout",
        ),
        (config().reconnect_retries(1_000), "reconnect_retries"),
    ];
    for (bad, field) in cases {
        let debug = format!("{bad:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        for err in [
            ResourceManager::builder()
                .register(Redis, bad.clone())
                .build()
                .await
                .unwrap_err(),
            ResourceManager::builder()
                .register(RedisDedicated, bad.clone())
                .build()
                .await
                .unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::Config, "{err}");
            assert_eq!(err.field(), Some(field), "{err}");
            let shown = everything_shown(&err);
            assert!(shown.contains(&format!("`{field}`")), "{shown}");
            assert!(!shown.contains(SECRET), "{shown}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_password_never_shows_in_the_resident_create_error() {
    for config in [
        RedisConfig::new(url_with_password()),
        RedisConfig::new(redis_url()).password(SECRET),
    ] {
        let err = ResourceManager::builder()
            .register(Redis, config.reconnect_retries(0))
            .build()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Create, "{err}");
        let shown = everything_shown(&err);
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(
            shown.contains("authentication failed"),
            "the reason is kept: {shown}"
        );
        assert!(shown.contains("resource `redis`"), "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_password_never_shows_in_the_dedicated_create_error() {
    for config in [
        RedisConfig::new(url_with_password()),
        RedisConfig::new(redis_url()).password(SECRET),
    ] {
        let manager = ResourceManager::builder()
            .register_with(
                RedisDedicated,
                config,
                Policy::default().pool(
                    PoolConfig::default()
                        .max_size(1)
                        .acquire_timeout(Duration::from_secs(5)),
                ),
            )
            .build()
            .await
            .unwrap();
        let err = manager.acquire::<RedisDedicated>().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Create, "{err}");
        let shown = everything_shown(&err);
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(
            shown.contains("authentication failed"),
            "the reason is kept: {shown}"
        );
        let status = manager.status();
        let stats = status.resource("redis-dedicated").unwrap().pool;
        assert_eq!((stats.create_errors, stats.size), (1, 0));
        manager.shutdown(Duration::from_secs(5)).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_create_naming_it_without_the_password() {
    let url = format!("redis://user:{SECRET}@127.0.0.1:1");
    let err = ResourceManager::builder()
        .register(
            Redis,
            RedisConfig::new(&url)
                .reconnect_retries(0)
                .connect_timeout(Duration::from_secs(2)),
        )
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Create, "{err}");
    let shown = everything_shown(&err);
    assert!(shown.contains("redis://user:***@127.0.0.1:1"), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");

    let manager = ResourceManager::builder()
        .register(RedisDedicated, RedisConfig::new(&url))
        .build()
        .await
        .unwrap();
    let err = manager.acquire::<RedisDedicated>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Create, "{err}");
    let shown = everything_shown(&err);
    assert!(shown.contains("redis://user:***@127.0.0.1:1"), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}
