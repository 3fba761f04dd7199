//! Concurrent load: 64 tasks share a pool of 8 connections, on a WAL file and on the shared
//! in-memory database; every committed write lands, every abandoned one is rolled back, and the
//! pool's counts are exact at the end.

mod common;

use std::time::Duration;

use common::{TempDb, manager, pool, settled, stats};
use nebula_resource::ResourceManager;
use nebula_resource_sqlite::sqlx;
use nebula_resource_sqlite::{Sqlite, SqliteConfig};

const TASKS: i64 = 64;
const ROUNDS: i64 = 5;
const POOL: usize = 8;

async fn run_load(manager: &ResourceManager) {
    let mut conn = manager.acquire::<Sqlite>().await.unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY, kind TEXT NOT NULL)")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let manager = manager.clone();
        tasks.spawn(async move {
            for round in 0..ROUNDS {
                let id = task * ROUNDS + round;
                let mut conn = manager.acquire::<Sqlite>().await.expect("acquire");
                match round % 3 {
                    // A committed transaction; `BEGIN IMMEDIATE` takes the write lock up front.
                    0 => {
                        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.expect("begin");
                        sqlx::query("INSERT INTO t VALUES (?, 'tx')")
                            .bind(id)
                            .execute(&mut tx)
                            .await
                            .expect("insert in tx");
                        tx.commit().await.expect("commit");
                    }
                    // A plain insert and a read.
                    1 => {
                        sqlx::query("INSERT INTO t VALUES (?, 'plain')")
                            .bind(id)
                            .execute(&mut *conn)
                            .await
                            .expect("insert");
                        let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t WHERE id = ?")
                            .bind(id)
                            .fetch_one(&mut *conn)
                            .await
                            .expect("read back");
                        assert_eq!(seen, 1);
                    }
                    // A transaction left open: rolled back on release.
                    _ => {
                        sqlx::query("BEGIN IMMEDIATE")
                            .execute(&mut *conn)
                            .await
                            .expect("begin");
                        sqlx::query("INSERT INTO t VALUES (?, 'abandoned')")
                            .bind(id)
                            .execute(&mut *conn)
                            .await
                            .expect("insert left open");
                    }
                }
                tokio::task::yield_now().await;
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("task");
    }

    let after = settled(manager).await;
    assert!(after.size <= POOL && after.size >= 1, "{after:?}");
    assert_eq!(after.in_use, 0, "{after:?}");
    assert_eq!(after.waiters, 0, "{after:?}");
    assert_eq!(after.idle, after.size, "{after:?}");
    assert_eq!(
        after.created - after.destroyed,
        after.size as u64,
        "{after:?}"
    );
    assert_eq!((after.timeouts, after.create_errors), (0, 0), "{after:?}");

    let mut conn = manager.acquire::<Sqlite>().await.unwrap();
    let kinds: Vec<(String, i64)> =
        sqlx::query_as("SELECT kind, COUNT(*) FROM t GROUP BY kind ORDER BY kind")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    let per_kind = |of: i64| (0..ROUNDS).filter(|round| round % 3 == of).count() as i64 * TASKS;
    assert_eq!(
        kinds,
        [
            ("plain".to_owned(), per_kind(1)),
            ("tx".to_owned(), per_kind(0))
        ]
    );
    drop(conn);

    manager.shutdown(Duration::from_secs(10)).await.unwrap();
    let closed = stats(manager);
    assert_eq!(
        (closed.size, closed.created),
        (0, closed.destroyed),
        "{closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_share_eight_connections_to_a_wal_file() {
    let db = TempDb::new("load");
    let manager = manager(SqliteConfig::file(db.path()), pool(POOL)).await;
    run_load(&manager).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_share_eight_connections_to_the_in_memory_database() {
    let manager = manager(SqliteConfig::in_memory(), pool(POOL)).await;
    run_load(&manager).await;
}
