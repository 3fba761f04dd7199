//! What one user of a dedicated connection leaves behind never reaches the next: `WATCH` is
//! undone, an open `MULTI` discarded, and a connection that cannot be reset (pub/sub mode, a
//! reply still owed, another database) is destroyed. Every pool here has one connection, so
//! "the next user" is the same connection unless it was destroyed.

mod common;

use std::time::Duration;

use common::{admin, client_id, config, dedicated, eventually, prefix, server_has_client};
use nebula_resource::{PoolConfig, ResourceManager};
use nebula_resource_redis::RedisDedicated;
use nebula_resource_redis::redis::{self, AsyncCommands, Value};

async fn one_connection_pool() -> ResourceManager {
    dedicated(config(), PoolConfig::default().max_size(1)).await
}

fn stats(manager: &ResourceManager) -> nebula_resource::PoolStats {
    manager.status().resource("redis-dedicated").unwrap().pool
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_watched_by_one_user_do_not_abort_the_next_users_transaction() {
    let manager = one_connection_pool().await;
    let key = format!("{}watched", prefix("watch"));

    let mut first = manager.acquire::<RedisDedicated>().await.unwrap();
    let id = client_id(&mut *first).await;
    redis::cmd("WATCH")
        .arg(&key)
        .exec_async(&mut *first)
        .await
        .unwrap();
    drop(first);

    // Someone else changes the key the first user watched.
    let _: () = admin().await.set(&key, "changed").await.unwrap();

    let mut second = manager.acquire::<RedisDedicated>().await.unwrap();
    assert_eq!(client_id(&mut *second).await, id, "the same connection");
    let committed: Option<(String,)> = redis::pipe()
        .atomic()
        .set(&key, "second")
        .ignore()
        .get(&key)
        .query_async(&mut *second)
        .await
        .unwrap();
    assert_eq!(
        committed,
        Some(("second".to_owned(),)),
        "EXEC was aborted: the first user's WATCH was still in force"
    );
    let _: () = second.del(&key).await.unwrap();
    drop(second);
    let stats = stats(&manager);
    assert_eq!((stats.created, stats.destroyed), (1, 0));
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_left_open_is_discarded_before_the_next_user() {
    let manager = one_connection_pool().await;
    let key = format!("{}queued", prefix("multi"));

    let mut first = manager.acquire::<RedisDedicated>().await.unwrap();
    let id = client_id(&mut *first).await;
    redis::cmd("MULTI").exec_async(&mut *first).await.unwrap();
    let queued: String = redis::cmd("SET")
        .arg(&key)
        .arg("never")
        .query_async(&mut *first)
        .await
        .unwrap();
    assert_eq!(queued, "QUEUED");
    drop(first);

    let mut second = manager.acquire::<RedisDedicated>().await.unwrap();
    assert_eq!(client_id(&mut *second).await, id, "the same connection");
    // Not queued: answered at once, and the first user's SET never ran.
    assert_eq!(second.get::<_, Value>(&key).await.unwrap(), Value::Nil);
    let err = redis::cmd("EXEC")
        .query_async::<Value>(&mut *second)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("without MULTI"), "{err}");
    drop(second);
    let stats = stats(&manager);
    assert_eq!((stats.created, stats.destroyed), (1, 0));
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_connection_and_a_finished_transaction_are_reused_as_they_are() {
    let manager = one_connection_pool().await;
    let key = format!("{}clean", prefix("clean"));

    let mut first = manager.acquire::<RedisDedicated>().await.unwrap();
    let id = client_id(&mut *first).await;
    redis::cmd("WATCH")
        .arg(&key)
        .exec_async(&mut *first)
        .await
        .unwrap();
    let _: Option<(i64,)> = redis::pipe()
        .atomic()
        .incr(&key, 1)
        .query_async(&mut *first)
        .await
        .unwrap();
    drop(first);
    let mut second = manager.acquire::<RedisDedicated>().await.unwrap();
    assert_eq!(client_id(&mut *second).await, id);
    let _: () = second.del(&key).await.unwrap();
    drop(second);
    assert_eq!(stats(&manager).destroyed, 0);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_blocking_command_destroys_the_connection() {
    let manager = one_connection_pool().await;
    let queue = format!("{}never-filled", prefix("cancelled"));

    let mut first = manager.acquire::<RedisDedicated>().await.unwrap();
    let id = client_id(&mut *first).await;
    // Give up on the pop long before its own 30 s timeout: the server keeps blocking.
    let popped = tokio::time::timeout(
        Duration::from_millis(100),
        first.blpop::<_, Option<(String, String)>>(&queue, 30.0),
    )
    .await;
    assert!(popped.is_err(), "nothing should have been popped");
    drop(first);

    // The next user does not wait 30 s behind the abandoned pop: it gets a new connection.
    let mut second =
        tokio::time::timeout(Duration::from_secs(5), manager.acquire::<RedisDedicated>())
            .await
            .expect("acquire within 5 s")
            .unwrap();
    let second_id = tokio::time::timeout(Duration::from_secs(5), client_id(&mut *second))
        .await
        .expect("an answer within 5 s, not after the abandoned BLPOP");
    assert_ne!(second_id, id);
    drop(second);
    let stats = stats(&manager);
    assert_eq!((stats.created, stats.destroyed), (2, 1));
    // Destroying it closed its socket: the server no longer blocks for it.
    eventually(
        Duration::from_secs(5),
        "the abandoned connection is closed",
        || async move { !server_has_client(id).await },
    )
    .await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_switched_to_another_database_is_destroyed() {
    let manager = one_connection_pool().await;
    let mut first = manager.acquire::<RedisDedicated>().await.unwrap();
    let id = client_id(&mut *first).await;
    redis::cmd("SELECT")
        .arg(5)
        .exec_async(&mut *first)
        .await
        .unwrap();
    drop(first);
    let mut second = manager.acquire::<RedisDedicated>().await.unwrap();
    assert_ne!(client_id(&mut *second).await, id);
    let info: String = redis::cmd("CLIENT")
        .arg("INFO")
        .query_async(&mut *second)
        .await
        .unwrap();
    assert!(info.contains(" db=0 "), "{info}");
    drop(second);
    assert_eq!(stats(&manager).destroyed, 1);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_subscribe_command_also_retires_the_connection() {
    let manager = dedicated(
        config().protocol(redis::ProtocolVersion::RESP3),
        PoolConfig::default().max_size(1),
    )
    .await;
    let channel = format!("{}raw", prefix("raw-subscribe"));
    let mut first = manager.acquire::<RedisDedicated>().await.unwrap();
    let id = client_id(&mut *first).await;
    redis::cmd("SUBSCRIBE")
        .arg(&channel)
        .exec_async(&mut *first)
        .await
        .unwrap();
    drop(first);
    let mut second = manager.acquire::<RedisDedicated>().await.unwrap();
    assert_ne!(client_id(&mut *second).await, id);
    drop(second);
    assert_eq!(stats(&manager).destroyed, 1);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}
