//! Commands through a guard of both resources, against a real server: plain commands,
//! pipelines, database selection, client names, blocking commands and pub/sub.

mod common;

use std::time::Duration;

use common::{admin, client_id, config, dedicated, prefix, resident};
use nebula_resource::{Policy, PoolConfig, Topology};
use nebula_resource_redis::redis::{self, AsyncCommands, ProtocolVersion};
use nebula_resource_redis::{Redis, RedisDedicated};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resident_connection_runs_commands_and_pipelines_for_every_acquirer() {
    let manager = resident(config()).await;
    let key = format!("{}counter", prefix("resident-commands"));

    let mut redis = manager.acquire::<Redis>().await.unwrap();
    redis.set::<_, _, ()>(&key, 40).await.unwrap();
    let (a, b): (i64, i64) = redis::pipe()
        .incr(&key, 1)
        .incr(&key, 1)
        .query_async(&mut *redis)
        .await
        .unwrap();
    assert_eq!((a, b), (41, 42));
    let id = client_id(&mut *redis).await;
    drop(redis);

    // Every acquirer gets a handle to the same connection.
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let manager = manager.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let mut redis = manager.acquire::<Redis>().await.unwrap();
                let _: i64 = redis.incr(&key, 1).await.unwrap();
                client_id(&mut *redis).await
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), id);
    }
    let mut redis = manager.acquire::<Redis>().await.unwrap();
    assert_eq!(redis.get::<_, i64>(&key).await.unwrap(), 74);
    let _: () = redis.del(&key).await.unwrap();
    drop(redis);

    let status = manager.status();
    let entry = status.resource("redis").unwrap();
    assert_eq!(entry.topology, Topology::Resident);
    assert_eq!((entry.pool.created, entry.pool.in_use), (1, 0));
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedicated_guard_runs_commands_on_a_connection_of_its_own() {
    let manager = dedicated(config(), PoolConfig::default().max_size(2)).await;
    let key = format!("{}value", prefix("dedicated-commands"));

    let mut first = manager.acquire::<RedisDedicated>().await.unwrap();
    let mut second = manager.acquire::<RedisDedicated>().await.unwrap();
    assert_ne!(client_id(&mut *first).await, client_id(&mut *second).await);

    first.set::<_, _, ()>(&key, "hello").await.unwrap();
    assert_eq!(second.get::<_, String>(&key).await.unwrap(), "hello");
    let (length, value): (usize, String) = redis::pipe()
        .strlen(&key)
        .get(&key)
        .query_async(&mut *second)
        .await
        .unwrap();
    assert_eq!((length, value.as_str()), (5, "hello"));
    let _: () = first.del(&key).await.unwrap();
    drop((first, second));

    let stats = manager.status().resource("redis-dedicated").unwrap().pool;
    assert_eq!((stats.created, stats.idle, stats.in_use), (2, 2, 0));
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        manager
            .status()
            .resource("redis-dedicated")
            .unwrap()
            .pool
            .destroyed,
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_and_the_client_name_are_set_on_both_resources() {
    let named = config().db(3).client_name("nebula-commands-test");
    let manager = nebula_resource::ResourceManager::builder()
        .register(Redis, named.clone())
        .register(RedisDedicated, named)
        .build()
        .await
        .unwrap();
    let key = format!("{}db3", prefix("database"));

    let mut shared = manager.acquire::<Redis>().await.unwrap();
    let mut own = manager.acquire::<RedisDedicated>().await.unwrap();
    for info in [
        redis::cmd("CLIENT")
            .arg("INFO")
            .query_async::<String>(&mut *shared)
            .await
            .unwrap(),
        redis::cmd("CLIENT")
            .arg("INFO")
            .query_async::<String>(&mut *own)
            .await
            .unwrap(),
    ] {
        assert!(info.contains(" db=3 "), "{info}");
        assert!(info.contains(" name=nebula-commands-test "), "{info}");
    }

    // A key written through the resource is in database 3, not in 0.
    shared.set::<_, _, ()>(&key, 1).await.unwrap();
    let mut db0 = admin().await;
    assert!(!db0.exists::<_, bool>(&key).await.unwrap());
    assert!(own.exists::<_, bool>(&key).await.unwrap());
    let _: () = own.del(&key).await.unwrap();
    drop((shared, own));
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_commands_on_a_dedicated_connection_outlast_the_response_timeout() {
    let manager = dedicated(
        config().response_timeout(Duration::from_millis(100)),
        PoolConfig::default().max_size(1),
    )
    .await;
    let queue = format!("{}queue", prefix("blocking"));

    let mut conn = manager.acquire::<RedisDedicated>().await.unwrap();
    let id = client_id(&mut *conn).await;
    let pusher = {
        let queue = queue.clone();
        tokio::spawn(async move {
            let mut other = admin().await;
            // Wait until the pop is blocked server-side, then serve it.
            loop {
                let blocked: String = redis::cmd("CLIENT")
                    .arg("LIST")
                    .arg("ID")
                    .arg(id)
                    .query_async(&mut other)
                    .await
                    .unwrap();
                if blocked.contains("cmd=blpop") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _: () = other.rpush(&queue, "job-1").await.unwrap();
        })
    };
    let popped: Option<(String, String)> = conn.blpop(&queue, 5.0).await.unwrap();
    assert_eq!(popped, Some((queue.clone(), "job-1".to_owned())));
    pusher.await.unwrap();

    // Its own timeout (300 ms, above the 100 ms response timeout) bounds it: nil, no error, and
    // the connection goes back to the pool.
    let nothing: Option<(String, String)> = conn.blpop(&queue, 0.3).await.unwrap();
    assert_eq!(nothing, None, "a timed-out BLPOP answers nil, not an error");
    drop(conn);
    let stats = manager.status().resource("redis-dedicated").unwrap().pool;
    assert_eq!((stats.created, stats.destroyed), (1, 0));
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_on_a_dedicated_resp3_connection_and_the_connection_is_not_reused() {
    let manager = nebula_resource::ResourceManager::builder()
        .register(Redis, config())
        .register_with(
            RedisDedicated,
            config().protocol(ProtocolVersion::RESP3),
            Policy::default().pool(PoolConfig::default().max_size(1)),
        )
        .build()
        .await
        .unwrap();
    let channel = format!("{}news", prefix("pubsub"));

    let mut subscriber = manager.acquire::<RedisDedicated>().await.unwrap();
    let subscribed_id = client_id(&mut *subscriber).await;
    subscriber.subscribe(&channel).await.unwrap();
    let mut publisher = manager.acquire::<Redis>().await.unwrap();
    let receivers: usize = publisher.publish(&channel, "first").await.unwrap();
    assert_eq!(receivers, 1);
    let message = tokio::time::timeout(Duration::from_secs(5), subscriber.next_message())
        .await
        .expect("a message within 5 s")
        .expect("the connection is open");
    assert_eq!(message.get_channel_name(), channel);
    assert_eq!(message.get_payload::<String>().unwrap(), "first");
    // RESP3: the subscribed connection still answers commands.
    assert_eq!(
        redis::cmd("PING")
            .query_async::<String>(&mut *subscriber)
            .await
            .unwrap(),
        "PONG"
    );
    drop(subscriber);

    // One place in the pool: the next acquire waits until the subscribed connection is gone.
    let mut next = manager.acquire::<RedisDedicated>().await.unwrap();
    assert_ne!(client_id(&mut *next).await, subscribed_id);
    let stats = manager.status().resource("redis-dedicated").unwrap().pool;
    assert_eq!((stats.created, stats.destroyed), (2, 1));
    drop((next, publisher));
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_on_a_resp2_connection_is_refused_without_touching_the_connection() {
    let manager = dedicated(config(), PoolConfig::default().max_size(1)).await;
    let mut conn = manager.acquire::<RedisDedicated>().await.unwrap();
    let id = client_id(&mut *conn).await;
    let err = conn.subscribe("anything").await.unwrap_err();
    assert!(err.to_string().contains("RESP3"), "{err}");
    assert!(conn.next_message().await.is_none());
    drop(conn);
    let mut again = manager.acquire::<RedisDedicated>().await.unwrap();
    assert_eq!(
        client_id(&mut *again).await,
        id,
        "the connection was reused"
    );
    drop(again);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}
