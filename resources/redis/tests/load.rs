//! Concurrent load: 64 tasks on 8 dedicated connections (half of them leaving a `WATCH` behind
//! for the pool to undo), and 64 tasks on the one resident connection; every increment lands and
//! the pools' counts are exact at the end.

mod common;

use std::time::Duration;

use common::{config, dedicated, prefix, resident};
use nebula_resource::PoolConfig;
use nebula_resource_redis::redis::{self, AsyncCommands};
use nebula_resource_redis::{Redis, RedisDedicated};

const TASKS: usize = 64;
const ROUNDS: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_share_eight_dedicated_connections() {
    let manager = dedicated(
        config(),
        PoolConfig::default()
            .max_size(8)
            .acquire_timeout(Duration::from_secs(20)),
    )
    .await;
    let prefix = prefix("dedicated-load");
    let counter = format!("{prefix}counter");

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let manager = manager.clone();
            let counter = counter.clone();
            let watched = format!("{prefix}watched:{task}");
            tokio::spawn(async move {
                for round in 0..ROUNDS {
                    let mut conn = manager.acquire::<RedisDedicated>().await.unwrap();
                    if (task + round) % 2 == 0 {
                        // Leave a WATCH behind; the pool must undo it.
                        redis::cmd("WATCH")
                            .arg(&watched)
                            .exec_async(&mut *conn)
                            .await
                            .unwrap();
                    }
                    // A transaction of our own must never be aborted by someone else's WATCH.
                    let committed: Option<(i64,)> = redis::pipe()
                        .atomic()
                        .incr(&counter, 1)
                        .query_async(&mut *conn)
                        .await
                        .unwrap();
                    assert!(committed.is_some(), "EXEC aborted by a stale WATCH");
                    if (task + round) % 2 == 0 {
                        redis::cmd("WATCH")
                            .arg(&watched)
                            .exec_async(&mut *conn)
                            .await
                            .unwrap();
                        let _: () = conn.set(&watched, round).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }

    let mut conn = manager.acquire::<RedisDedicated>().await.unwrap();
    let total: usize = conn.get(&counter).await.unwrap();
    assert_eq!(total, TASKS * ROUNDS);
    let keys: Vec<String> = conn.keys(format!("{prefix}*")).await.unwrap();
    let _: () = conn.del(keys).await.unwrap();
    drop(conn);

    let stats = manager.status().resource("redis-dedicated").unwrap().pool;
    assert_eq!(stats.size, 8, "{stats:?}");
    assert_eq!(stats.created, 8, "{stats:?}");
    assert_eq!(stats.destroyed, 0, "{stats:?}");
    assert_eq!(stats.idle, 8, "{stats:?}");
    assert_eq!(stats.in_use, 0, "{stats:?}");
    assert_eq!(stats.waiters, 0, "{stats:?}");
    assert_eq!((stats.create_errors, stats.timeouts), (0, 0), "{stats:?}");
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
    let stats = manager.status().resource("redis-dedicated").unwrap().pool;
    assert_eq!((stats.size, stats.destroyed), (0, 8), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_share_the_resident_connection() {
    let manager = resident(config()).await;
    let counter = format!("{}counter", prefix("resident-load"));
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let manager = manager.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                for _ in 0..ROUNDS {
                    let mut redis = manager.acquire::<Redis>().await.unwrap();
                    let _: i64 = redis.incr(&counter, 1).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let mut redis = manager.acquire::<Redis>().await.unwrap();
    assert_eq!(
        redis.get::<_, usize>(&counter).await.unwrap(),
        TASKS * ROUNDS
    );
    let _: () = redis.del(&counter).await.unwrap();
    drop(redis);
    let stats = manager.status().resource("redis").unwrap().pool;
    assert_eq!(
        (stats.size, stats.created, stats.in_use),
        (1, 1, 0),
        "{stats:?}"
    );
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}
