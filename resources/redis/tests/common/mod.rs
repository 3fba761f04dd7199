//! Helpers for the tests against a real Redis server: where it is, unique key prefixes, managers
//! and an independent admin connection. A test that cannot reach the server fails.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nebula_resource::{Policy, PoolConfig, ResourceManager};
use nebula_resource_redis::redis::{self, aio::ConnectionLike, aio::MultiplexedConnection};
use nebula_resource_redis::{Redis, RedisConfig, RedisDedicated};

/// The server under test: `NEBULA_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`.
pub fn redis_url() -> String {
    std::env::var("NEBULA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn config() -> RedisConfig {
    RedisConfig::new(redis_url())
}

/// A key prefix no other test (in this process or another) uses.
pub fn prefix(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "nebula-test:{test}:{}:{}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn unreachable(err: impl std::fmt::Display) -> ! {
    panic!(
        "the Redis server at {} must be reachable (set NEBULA_TEST_REDIS_URL): {err}",
        redis_url()
    )
}

/// A manager with the resident [`Redis`] registered with `config`.
pub async fn resident(config: RedisConfig) -> ResourceManager {
    ResourceManager::builder()
        .register(Redis, config)
        .build()
        .await
        .unwrap_or_else(|err| unreachable(err))
}

/// A manager with [`RedisDedicated`] registered with `config` and `pool`.
pub async fn dedicated(config: RedisConfig, pool: PoolConfig) -> ResourceManager {
    ResourceManager::builder()
        .register_with(RedisDedicated, config, Policy::default().pool(pool))
        .build()
        .await
        .unwrap_or_else(|err| unreachable(err))
}

/// A connection of the test's own, outside any pool, for `CLIENT KILL` and for checks.
pub async fn admin() -> MultiplexedConnection {
    let client = redis::Client::open(redis_url()).unwrap_or_else(|err| unreachable(err));
    client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|err| unreachable(err))
}

/// The server-side id of the connection behind `connection`.
pub async fn client_id(connection: &mut (impl ConnectionLike + Send)) -> i64 {
    redis::cmd("CLIENT")
        .arg("ID")
        .query_async(connection)
        .await
        .expect("CLIENT ID")
}

/// Close the server side of connection `id`.
pub async fn kill(id: i64) {
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query_async(&mut admin().await)
        .await
        .expect("CLIENT KILL");
    assert_eq!(killed, 1, "connection {id} was not found to kill");
}

/// Whether the server still has a connection with `id`.
pub async fn server_has_client(id: i64) -> bool {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("ID")
        .arg(id)
        .query_async(&mut admin().await)
        .await
        .expect("CLIENT LIST");
    !list.trim().is_empty()
}

/// Poll `condition` every 10 ms until it holds; panic with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
