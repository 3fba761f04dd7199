//! What one user leaves on a connection never reaches the next: an open transaction is rolled
//! back, a changed session is retired (or reset, with `OnSessionChange::Keep`), and an
//! operation cut off half-way is finished before the connection is reused.

mod common;

use std::time::Duration;

use common::{
    admin, config, connection_id, count_rows, create_table, drop_table, in_transaction, manager,
    pool, settled, stats, table,
};
use nebula_resource_mysql::sqlx::{self, AssertSqlSafe};
use nebula_resource_mysql::{MySql, OnSessionChange};

fn insert(
    table: &str,
    id: i64,
) -> sqlx::query::Query<'static, sqlx::MySql, sqlx::mysql::MySqlArguments> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (id, note) VALUES (?, 'left open')"
    )))
    .bind(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_open_is_rolled_back_before_the_next_user() {
    let manager = manager(config(), pool(1)).await;
    let table = table("open_tx");
    create_table(&table).await;

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    let id = connection_id(&mut *conn).await;
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    insert(&table, 1).execute(&mut *conn).await.unwrap();
    assert!(in_transaction(&mut conn).await);
    drop(conn); // no COMMIT

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    assert_eq!(
        connection_id(&mut *conn).await,
        id,
        "the same connection, reused"
    );
    assert!(
        !in_transaction(&mut conn).await,
        "the next user is not in a transaction"
    );
    let seen: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(seen, 0, "the row was rolled back");
    // And its autocommit works: this insert is visible to others at once.
    insert(&table, 2).execute(&mut *conn).await.unwrap();
    assert_eq!(count_rows(&table).await, 1);
    drop(conn);

    let after = settled(&manager).await;
    assert_eq!((after.created, after.destroyed), (1, 0), "{after:?}");
    drop_table(&table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_transaction_and_savepoints_are_rolled_back_too() {
    let manager = manager(config(), pool(1)).await;
    let table = table("start_tx");
    create_table(&table).await;

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "START TRANSACTION; INSERT INTO {table} VALUES (1, 'a'); SAVEPOINT s; \
         INSERT INTO {table} VALUES (2, 'b')"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    assert!(!in_transaction(&mut conn).await);
    drop(conn);
    assert_eq!(count_rows(&table).await, 0);
    drop_table(&table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_dropped_without_commit_is_rolled_back() {
    let manager = manager(config(), pool(1)).await;
    let table = table("dropped_tx");
    create_table(&table).await;

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    let id = connection_id(&mut *conn).await;
    let mut tx = conn.begin().await.unwrap();
    insert(&table, 1).execute(&mut tx).await.unwrap();
    drop(tx);
    drop(conn);

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    assert_eq!(connection_id(&mut *conn).await, id);
    assert!(!in_transaction(&mut conn).await);
    drop(conn);
    assert_eq!(count_rows(&table).await, 0);
    drop_table(&table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaked_transaction_retires_the_connection() {
    let manager = manager(config(), pool(1)).await;
    let table = table("leaked_tx");
    create_table(&table).await;

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    let id = connection_id(&mut *conn).await;
    let mut tx = conn.begin().await.unwrap();
    insert(&table, 1).execute(&mut tx).await.unwrap();
    // sqlx keeps counting a forgotten transaction as open, forever.
    std::mem::forget(tx);
    drop(conn);

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    assert_ne!(connection_id(&mut *conn).await, id, "a fresh connection");
    assert!(!in_transaction(&mut conn).await);
    drop(conn);
    let after = settled(&manager).await;
    assert_eq!(
        (after.created, after.destroyed, after.size),
        (2, 1, 1),
        "{after:?}"
    );
    // The retired connection was closed, and the server rolled its transaction back.
    assert_eq!(count_rows(&table).await, 0);
    drop_table(&table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_session_is_retired_by_default() {
    let manager = manager(config(), pool(1)).await;

    for change in [
        "SET @left_behind = 42",
        "SET SESSION sql_mode = 'ANSI_QUOTES'",
        "SELECT @left_behind := 42",
        "CREATE TEMPORARY TABLE left_behind (id INT)",
        "SELECT GET_LOCK('nebula-left-behind', 0)",
        "SET autocommit = 0",
    ] {
        let mut conn = manager.acquire::<MySql>().await.unwrap();
        let id = connection_id(&mut *conn).await;
        sqlx::raw_sql(change).execute(&mut *conn).await.unwrap();
        assert!(conn.is_session_changed(), "{change}");
        drop(conn);

        let mut conn = manager.acquire::<MySql>().await.unwrap();
        assert_ne!(
            connection_id(&mut *conn).await,
            id,
            "{change}: a fresh connection"
        );
        let (variable, sql_mode, autocommit, lock): (Option<i64>, String, i64, Option<u64>) =
            sqlx::query_as(
                "SELECT @left_behind, @@SESSION.sql_mode, @@autocommit, \
                 IS_USED_LOCK('nebula-left-behind')",
            )
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(variable, None, "{change}");
        assert!(!sql_mode.contains("ANSI_QUOTES"), "{change}: {sql_mode}");
        assert_eq!(autocommit, 1, "{change}");
        assert_eq!(lock, None, "{change}: the named lock was released");
        let temporary = sqlx::query("SELECT * FROM left_behind")
            .fetch_all(&mut *conn)
            .await;
        assert!(temporary.is_err(), "{change}: the temporary table is gone");
        drop(conn);
    }
    let after = settled(&manager).await;
    assert_eq!(after.size, 1, "{after:?}");
    assert_eq!(after.created - after.destroyed, 1, "{after:?}");
    assert_eq!(after.destroyed, 6, "one retirement per change: {after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_connection_counts_as_a_session_change() {
    let manager = manager(config(), pool(1)).await;
    let mut conn = manager.acquire::<MySql>().await.unwrap();
    let id = connection_id(&mut *conn).await;
    sqlx::query("SELECT 1").execute(&mut **conn).await.unwrap();
    assert!(conn.is_session_changed());
    drop(conn);
    let mut conn = manager.acquire::<MySql>().await.unwrap();
    assert_ne!(connection_id(&mut *conn).await, id);
    drop(conn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_resets_transactions_and_locks_and_keeps_variables() {
    let manager = manager(config().on_session_change(OnSessionChange::Keep), pool(1)).await;
    let table = table("keep");
    create_table(&table).await;

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    let id = connection_id(&mut *conn).await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SET @kept = 7; DO GET_LOCK('nebula-keep', 0); LOCK TABLES {table} WRITE; \
         UNLOCK TABLES; SET autocommit = 0; INSERT INTO {table} VALUES (1, 'implicit tx')"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    assert_eq!(connection_id(&mut *conn).await, id, "kept");
    let (kept, lock): (Option<i64>, Option<u64>) =
        sqlx::query_as("SELECT @kept, IS_USED_LOCK('nebula-keep')")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(kept, Some(7), "variables are kept, as documented");
    assert_eq!(lock, None, "named locks are released");
    assert!(
        !in_transaction(&mut conn).await,
        "the implicit transaction was rolled back"
    );
    // `autocommit = 0` was kept: this insert opens a transaction again, with a plain statement.
    // Under `Keep`, a changed session is reset on every release, so it is rolled back too.
    insert(&table, 2).execute(&mut *conn).await.unwrap();
    drop(conn);

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    assert!(!in_transaction(&mut conn).await);
    // `LOCK TABLES` from this user is released for the next too.
    sqlx::raw_sql(AssertSqlSafe(format!("LOCK TABLES {table} READ")))
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let mut admin = admin().await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "SET SESSION lock_wait_timeout = 2; LOCK TABLES {table} WRITE; UNLOCK TABLES"
    )))
    .execute(&mut admin)
    .await
    .expect("the table lock was released on release");
    assert_eq!(
        count_rows(&table).await,
        0,
        "both implicit transactions were rolled back"
    );

    let after = settled(&manager).await;
    assert_eq!((after.created, after.destroyed), (1, 0), "{after:?}");
    drop_table(&table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_cut_off_half_way_is_finished_before_reuse() {
    let manager = manager(config(), pool(1)).await;
    let mut conn = manager.acquire::<MySql>().await.unwrap();
    let id = connection_id(&mut *conn).await;
    let cut_off = tokio::time::timeout(
        Duration::from_millis(50),
        sqlx::query_scalar::<_, i64>("SELECT SLEEP(0.5)").fetch_one(&mut *conn),
    )
    .await;
    assert!(cut_off.is_err(), "the query was cut off by the timeout");
    drop(conn);

    // The release reads the cut-off reply before the next user gets the connection, whose
    // first statement then gets its own answer.
    let mut conn = manager.acquire::<MySql>().await.unwrap();
    assert_eq!(connection_id(&mut *conn).await, id);
    let answer: i64 = sqlx::query_scalar("SELECT 42")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(answer, 42);
    drop(conn);
    let after = settled(&manager).await;
    assert_eq!((after.created, after.destroyed), (1, 0), "{after:?}");
    assert_eq!(stats(&manager).in_use, 0);
}
