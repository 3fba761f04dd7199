//! A connection the server closes (`CLIENT KILL ID`) is never handed out again by the dedicated
//! pool, and the resident connection reconnects by itself (its client name restored).

mod common;

use std::time::Duration;

use common::{client_id, config, dedicated, eventually, kill, prefix, resident};
use nebula_resource::PoolConfig;
use nebula_resource_redis::redis::{self, AsyncCommands};
use nebula_resource_redis::{Redis, RedisDedicated};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_connection_killed_while_held_is_destroyed_on_release() {
    let manager = dedicated(config(), PoolConfig::default().max_size(1)).await;
    let mut conn = manager.acquire::<RedisDedicated>().await.unwrap();
    let id = client_id(&mut *conn).await;
    kill(id).await;

    let err = redis::cmd("PING")
        .query_async::<String>(&mut *conn)
        .await
        .unwrap_err();
    assert!(
        err.is_io_error() || err.is_connection_dropped(),
        "an I/O error, got {err}"
    );
    drop(conn);

    let mut next = manager.acquire::<RedisDedicated>().await.unwrap();
    assert_ne!(client_id(&mut *next).await, id);
    drop(next);
    let stats = manager.status().resource("redis-dedicated").unwrap().pool;
    assert_eq!((stats.created, stats.destroyed, stats.size), (2, 1, 1));
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_connection_killed_while_idle_is_not_handed_out() {
    let manager = dedicated(
        config(),
        PoolConfig::default()
            .max_size(1)
            .validate_after_idle(Duration::from_millis(1)),
    )
    .await;
    let mut conn = manager.acquire::<RedisDedicated>().await.unwrap();
    let id = client_id(&mut *conn).await;
    drop(conn);
    kill(id).await;
    // Idle longer than `validate_after_idle`: whether or not the driver task has seen the
    // socket close yet (`is_broken`), the `PING` check on acquire catches it.
    tokio::time::sleep(Duration::from_millis(20)).await;

    let mut next = manager.acquire::<RedisDedicated>().await.unwrap();
    assert_ne!(client_id(&mut *next).await, id);
    assert!(!next.is_closed());
    drop(next);
    let stats = manager.status().resource("redis-dedicated").unwrap().pool;
    assert_eq!((stats.created, stats.destroyed), (2, 1));
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_notices_a_killed_connection_without_io_from_its_user() {
    let manager = dedicated(config(), PoolConfig::default().max_size(1)).await;
    let mut conn = manager.acquire::<RedisDedicated>().await.unwrap();
    let id = client_id(&mut *conn).await;
    assert!(!conn.is_closed());
    kill(id).await;
    eventually(
        Duration::from_secs(5),
        "the connection reports closed",
        || {
            let closed = conn.is_closed();
            async move { closed }
        },
    )
    .await;
    drop(conn);
    // Destroyed on the release worker, not returned to the idle store.
    eventually(
        Duration::from_secs(5),
        "the closed connection is destroyed",
        || {
            let stats = manager.status().resource("redis-dedicated").unwrap().pool;
            async move { (stats.destroyed, stats.idle, stats.size) == (1, 0, 0) }
        },
    )
    .await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resident_connection_reconnects_after_a_kill_and_restores_its_name() {
    let manager = resident(config().client_name("nebula-killed-test")).await;
    let key = format!("{}survives", prefix("resident-kill"));
    let mut redis = manager.acquire::<Redis>().await.unwrap();
    redis.set::<_, _, ()>(&key, "kept").await.unwrap();
    let id = client_id(&mut *redis).await;
    drop(redis);
    kill(id).await;

    // The command that notices the lost connection may fail; a later one succeeds on a new
    // connection, without the pool replacing the instance.
    eventually(
        Duration::from_secs(10),
        "the resident connection is back",
        || {
            let manager = manager.clone();
            async move {
                let mut redis = manager.acquire::<Redis>().await.unwrap();
                redis::cmd("PING")
                    .query_async::<String>(&mut *redis)
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    let mut redis = manager.acquire::<Redis>().await.unwrap();
    assert_ne!(client_id(&mut *redis).await, id);
    assert_eq!(redis.get::<_, String>(&key).await.unwrap(), "kept");
    let name: Option<String> = redis::cmd("CLIENT")
        .arg("GETNAME")
        .query_async(&mut *redis)
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("nebula-killed-test"));
    let _: () = redis.del(&key).await.unwrap();
    drop(redis);
    let stats = manager.status().resource("redis").unwrap().pool;
    assert_eq!((stats.created, stats.destroyed), (1, 0));
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}
