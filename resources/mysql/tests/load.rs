//! Concurrent load: 64 tasks share a pool of 8 connections; every task's work lands, and the
//! pool's counts are exact at the end.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, count_rows, create_table, drop_table, manager, pool, settled, table};
use nebula_resource_mysql::MySql;
use nebula_resource_mysql::sqlx::{self, AssertSqlSafe};

const TASKS: i64 = 64;
const ROUNDS: i64 = 5;
const POOL: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_tasks_share_eight_connections() {
    let manager = manager(
        config(),
        pool(POOL).acquire_timeout(Duration::from_secs(30)),
    )
    .await;
    let table = Arc::new(table("load"));
    create_table(&table).await;

    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let manager = manager.clone();
        let table = Arc::clone(&table);
        tasks.spawn(async move {
            for round in 0..ROUNDS {
                let id = task * ROUNDS + round;
                let mut conn = manager.acquire::<MySql>().await.expect("acquire");
                match round % 3 {
                    // A committed transaction.
                    0 => {
                        let mut tx = conn.begin().await.expect("begin");
                        sqlx::query(AssertSqlSafe(format!(
                            "INSERT INTO {table} (id, note) VALUES (?, 'tx')"
                        )))
                        .bind(id)
                        .execute(&mut tx)
                        .await
                        .expect("insert in tx");
                        tx.commit().await.expect("commit");
                    }
                    // A plain insert and a read.
                    1 => {
                        sqlx::query(AssertSqlSafe(format!(
                            "INSERT INTO {table} (id, note) VALUES (?, 'plain')"
                        )))
                        .bind(id)
                        .execute(&mut *conn)
                        .await
                        .expect("insert");
                        let seen: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                            "SELECT COUNT(*) FROM {table} WHERE id = ?"
                        )))
                        .bind(id)
                        .fetch_one(&mut *conn)
                        .await
                        .expect("read back");
                        assert_eq!(seen, 1);
                    }
                    // A transaction left open: rolled back on release, the row never lands.
                    _ => {
                        sqlx::query("BEGIN")
                            .execute(&mut *conn)
                            .await
                            .expect("begin");
                        sqlx::query(AssertSqlSafe(format!(
                            "INSERT INTO {table} (id, note) VALUES (?, 'abandoned')"
                        )))
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

    let after = settled(&manager).await;
    assert!(after.size <= POOL, "{after:?}");
    assert!(after.size >= 1, "{after:?}");
    assert_eq!(after.in_use, 0, "{after:?}");
    assert_eq!(after.waiters, 0, "{after:?}");
    assert_eq!(
        after.created - after.destroyed,
        after.size as u64,
        "{after:?}"
    );
    assert_eq!(after.idle, after.size, "{after:?}");
    assert_eq!(after.timeouts, 0, "{after:?}");
    assert_eq!(after.create_errors, 0, "{after:?}");

    let kept = (0..TASKS * ROUNDS)
        .filter(|id| id % ROUNDS % 3 != 2)
        .count();
    assert_eq!(count_rows(&table).await, kept as i64);

    manager.shutdown(Duration::from_secs(10)).await.unwrap();
    let closed = common::stats(&manager);
    assert_eq!(closed.size, 0, "{closed:?}");
    assert_eq!(closed.created, closed.destroyed, "{closed:?}");
    drop_table(&table).await;
}
