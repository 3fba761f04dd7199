//! 64 tasks share a pool of 8 connections: plain statements, transactions and session changes
//! that force a reset, all at once. The pool's counts are exact at the end, and the server
//! never sees more than 8 of its connections.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{admin, manager_with, unique, url};
use nebula_resource::PoolConfig;
use nebula_resource_postgres::sqlx;
use nebula_resource_postgres::{Postgres, PostgresConfig};
use parking_lot::Mutex;
use tokio::task::JoinSet;

const TASKS: usize = 64;
const POOL: usize = 8;
const ROUNDS: usize = 25;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_share_eight_connections() {
    let app = unique("load");
    let config = PostgresConfig::new(url()).application_name(app.clone());
    let manager = manager_with(
        config,
        PoolConfig::default()
            .max_size(POOL)
            .acquire_timeout(Duration::from_secs(30)),
    )
    .await;
    let mut admin = admin().await;
    let pids = Arc::new(Mutex::new(HashSet::new()));

    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let handle = manager.handle::<Postgres>().unwrap();
        let pids = Arc::clone(&pids);
        tasks.spawn(async move {
            for round in 0..ROUNDS {
                let mut conn = handle.acquire().await.expect("acquire");
                pids.lock().insert(conn.backend_pid());
                match (task + round) % 4 {
                    0 | 1 => {
                        let n: i64 = sqlx::query_scalar("SELECT $1::int8 * 2")
                            .bind(i64::try_from(round).unwrap())
                            .fetch_one(&mut *conn)
                            .await
                            .expect("query");
                        assert_eq!(n, i64::try_from(round * 2).unwrap());
                    }
                    2 => {
                        let mut tx = conn.begin().await.expect("begin");
                        sqlx::query("SELECT 1")
                            .execute(&mut tx)
                            .await
                            .expect("in tx");
                        tx.commit().await.expect("commit");
                    }
                    _ => {
                        // Every user starts from a fresh session...
                        let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
                            .fetch_one(&mut *conn)
                            .await
                            .expect("show");
                        assert_eq!(timeout, "0");
                        // ...and this one changes it: the release resets it.
                        sqlx::query("SET statement_timeout = 5000")
                            .execute(&mut *conn)
                            .await
                            .expect("set");
                        let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
                            .fetch_one(&mut *conn)
                            .await
                            .expect("show");
                        assert_eq!(timeout, "5s");
                    }
                }
                drop(conn);
            }
        });
    }
    let mut connected: i64 = 0;
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task");
        let seen: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(&app)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        connected = connected.max(seen);
    }
    assert!(
        connected <= POOL as i64,
        "the server saw {connected} connections"
    );
    assert!(pids.lock().len() <= POOL, "{:?}", pids.lock());

    // Releases that reset a session finish on the release worker; taking every connection
    // waits for them.
    let handle = manager.handle::<Postgres>().unwrap();
    let mut all = Vec::new();
    for _ in 0..handle.stats().size {
        let mut conn = handle.acquire().await.unwrap();
        let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(timeout, "0", "no session reached a user unreset");
        all.push(conn);
    }
    drop(all);

    let stats = handle.stats();
    assert!(stats.size <= POOL, "{stats:?}");
    assert_eq!(stats.in_use, 0, "{stats:?}");
    assert_eq!(stats.idle, stats.size, "{stats:?}");
    assert_eq!(stats.waiters, 0, "{stats:?}");
    assert_eq!(
        stats.created - stats.destroyed,
        stats.size as u64,
        "{stats:?}"
    );
    assert_eq!((stats.create_errors, stats.timeouts), (0, 0), "{stats:?}");
    let status = manager.status();
    assert_eq!(status.resources[0].pool, stats);

    manager.shutdown(Duration::from_secs(10)).await.unwrap();
    let stats = handle.stats();
    assert_eq!(
        (stats.size, stats.created),
        (0, stats.destroyed),
        "{stats:?}"
    );
}
