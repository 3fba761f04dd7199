//! What one user leaves on a connection never reaches the next: an open transaction is rolled
//! back (its locks released), a changed connection is closed, and a clean connection goes back at
//! once.

mod common;

use std::time::Duration;

use common::{TempDb, manager, pool, settled, stats};
use nebula_resource_sqlite::sqlx::{self, ConnectOptions};
use nebula_resource_sqlite::{Sqlite, SqliteConfig};

/// An independent connection to `db` that gives up on a lock after 200 ms.
async fn outsider(db: &TempDb) -> sqlx::sqlite::SqliteConnection {
    sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db.path())
        .busy_timeout(Duration::from_millis(200))
        .connect()
        .await
        .expect("open the test database")
}

async fn rows(conn: &mut sqlx::sqlite::SqliteConnection) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM t")
        .fetch_one(conn)
        .await
        .expect("count")
}

async fn setup(db: &TempDb) -> nebula_resource::ResourceManager {
    let manager = manager(SqliteConfig::file(db.path()), pool(1)).await;
    let mut conn = manager.acquire::<Sqlite>().await.unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    manager
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_is_rolled_back_before_the_next_user() {
    let db = TempDb::new("open_tx");
    let manager = setup(&db).await;

    for begin in ["BEGIN", "BEGIN IMMEDIATE", "SAVEPOINT s"] {
        let mut conn = manager.acquire::<Sqlite>().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(begin.to_owned()))
            .execute(&mut *conn)
            .await
            .unwrap();
        sqlx::query("INSERT INTO t VALUES (1)")
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn); // no COMMIT

        let mut conn = manager.acquire::<Sqlite>().await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(seen, 0, "{begin}: the row was rolled back");
        // `BEGIN` fails inside a transaction: the next user is not in one.
        sqlx::query("BEGIN")
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|err| panic!("{begin}: the next user is in a transaction: {err}"));
        sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
        drop(conn);

        // And the write lock is released: another connection can write at once.
        let mut other = outsider(&db).await;
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut other)
            .await
            .unwrap_or_else(|err| panic!("{begin}: the write lock was kept: {err}"));
        sqlx::query("DELETE FROM t")
            .execute(&mut other)
            .await
            .unwrap();
    }
    let after = settled(&manager).await;
    assert_eq!(
        (after.created, after.destroyed),
        (1, 0),
        "rolled back, not replaced: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_without_commit_is_rolled_back() {
    let db = TempDb::new("dropped_tx");
    let manager = setup(&db).await;
    let mut conn = manager.acquire::<Sqlite>().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut tx)
        .await
        .unwrap();
    drop(tx);
    drop(conn);

    let mut other = outsider(&db).await;
    assert_eq!(rows(&mut other).await, 0);
    sqlx::query("INSERT INTO t VALUES (2)")
        .execute(&mut other)
        .await
        .expect("no lock is left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_work_is_kept_and_the_release_is_synchronous() {
    let db = TempDb::new("clean");
    let manager = setup(&db).await;
    let mut conn = manager.acquire::<Sqlite>().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sqlx::query("INSERT INTO t VALUES (2)")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    // Nothing to reset: the guard's drop put the connection straight back.
    let now = stats(&manager);
    assert_eq!((now.idle, now.in_use), (1, 0), "{now:?}");
    assert_eq!(rows(&mut outsider(&db).await).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_connection_is_closed_and_replaced() {
    let db = TempDb::new("changed");
    let manager = setup(&db).await;

    for change in [
        "PRAGMA foreign_keys = OFF",
        "CREATE TEMP TABLE scratch (id)",
        "ATTACH DATABASE ':memory:' AS scratch",
    ] {
        let mut conn = manager.acquire::<Sqlite>().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(change.to_owned()))
            .execute(&mut *conn)
            .await
            .unwrap();
        assert!(conn.is_session_changed(), "{change}");
        drop(conn);

        let mut conn = manager.acquire::<Sqlite>().await.unwrap();
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(foreign_keys, 1, "{change}");
        let databases: Vec<(i64, String, String)> = sqlx::query_as("PRAGMA database_list")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
        assert_eq!(databases.len(), 1, "{change}: only `main`: {databases:?}");
        assert!(
            sqlx::query("SELECT * FROM scratch")
                .fetch_all(&mut *conn)
                .await
                .is_err(),
            "{change}: the temporary table is gone"
        );
        drop(conn);
    }
    let after = settled(&manager).await;
    assert_eq!(after.destroyed, 3, "{after:?}");
    assert_eq!(
        after.created - after.destroyed,
        after.size as u64,
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_cut_off_half_way_leaves_no_transaction_behind() {
    let db = TempDb::new("cut_off");
    let manager = setup(&db).await;
    let mut conn = manager.acquire::<Sqlite>().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *conn)
        .await
        .unwrap();
    let slow = sqlx::query_scalar::<_, i64>(
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 2000000) \
         SELECT COUNT(*) FROM c",
    );
    let cut_off = tokio::time::timeout(Duration::from_millis(5), slow.fetch_one(&mut *conn)).await;
    assert!(cut_off.is_err(), "cut off by the timeout");
    drop(conn);

    let mut conn = manager.acquire::<Sqlite>().await.unwrap();
    let answer: i64 = sqlx::query_scalar("SELECT 42")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(answer, 42);
    drop(conn);
    let mut other = outsider(&db).await;
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut other)
        .await
        .expect("the transaction was rolled back, its lock released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_transaction_closes_the_connection() {
    let db = TempDb::new("leaked");
    let manager = setup(&db).await;
    let mut conn = manager.acquire::<Sqlite>().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("INSERT INTO t VALUES (1)")
        .execute(&mut tx)
        .await
        .unwrap();
    std::mem::forget(tx);
    drop(conn);
    let after = settled(&manager).await;
    assert_eq!((after.destroyed, after.size), (1, 0), "{after:?}");
    let mut other = outsider(&db).await;
    assert_eq!(
        rows(&mut other).await,
        0,
        "closing the connection rolled it back"
    );
}
