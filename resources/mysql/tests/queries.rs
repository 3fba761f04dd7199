//! Queries through a guard, transactions, and the cheap release of a clean connection.

mod common;

use common::{
    config, connection_id, count_rows, create_table, drop_table, manager, pool, questions, stats,
    table,
};
use nebula_resource_mysql::sqlx::{self, AssertSqlSafe, Row};
use nebula_resource_mysql::{MySql, MySqlConnection};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_run_through_a_guard() {
    let manager = manager(config(), pool(2)).await;
    let table = table("queries");
    create_table(&table).await;

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    let sum: i64 = sqlx::query_scalar("SELECT CAST(? + ? AS SIGNED)")
        .bind(40_i64)
        .bind(2_i64)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(sum, 42);

    let inserted = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (id, note) VALUES (?, ?), (?, ?)"
    )))
    .bind(1_i64)
    .bind("one")
    .bind(2_i64)
    .bind("two")
    .execute(&mut *conn)
    .await
    .unwrap();
    assert_eq!(inserted.rows_affected(), 2);

    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT id, note FROM {table} ORDER BY id"
    )))
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let notes: Vec<(i64, String)> = rows
        .iter()
        .map(|row| (row.get("id"), row.get("note")))
        .collect();
    assert_eq!(notes, [(1, "one".to_owned()), (2, "two".to_owned())]);

    let missing: Option<(i64,)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id FROM {table} WHERE id = ?"
    )))
    .bind(3_i64)
    .fetch_optional(&mut *conn)
    .await
    .unwrap();
    assert_eq!(missing, None);

    // A server error (duplicate key) leaves the connection usable.
    let duplicate = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (id, note) VALUES (1, 'again')"
    )))
    .execute(&mut *conn)
    .await
    .unwrap_err();
    assert!(!nebula_resource_mysql::is_fatal(&duplicate), "{duplicate}");
    assert!(!conn.is_broken());
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(one, 1);

    drop(conn);
    drop_table(&table).await;
    manager
        .shutdown(std::time::Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_roll_back_and_nest() {
    let manager = manager(config(), pool(2)).await;
    let table = table("tx");
    create_table(&table).await;
    let insert = |id: i64| {
        sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO {table} (id, note) VALUES (?, 'tx')"
        )))
        .bind(id)
    };

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    insert(1).execute(&mut tx).await.unwrap();
    {
        let mut savepoint = tx.begin().await.unwrap();
        insert(2).execute(&mut savepoint).await.unwrap();
        savepoint.rollback().await.unwrap();
    }
    insert(3).execute(&mut tx).await.unwrap();
    assert_eq!(
        count_rows(&table).await,
        0,
        "nothing is visible before the commit"
    );
    tx.commit().await.unwrap();
    assert_eq!(count_rows(&table).await, 2, "rows 1 and 3 are committed");

    let mut tx = conn.begin().await.unwrap();
    insert(4).execute(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(count_rows(&table).await, 2);

    let mut tx = conn
        .begin_with("START TRANSACTION READ ONLY")
        .await
        .unwrap();
    let read_only = insert(5).execute(&mut tx).await.unwrap_err();
    assert!(read_only.to_string().contains("READ ONLY"), "{read_only}");
    tx.rollback().await.unwrap();

    // Nothing above changed the session or left a transaction open: no reset is due.
    assert!(!conn.is_session_changed());
    drop(conn);
    drop_table(&table).await;
}

/// A connection used only for queries and finished transactions goes back to the pool at once
/// (the release is synchronous), and the server sees no statement between two users.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_release_costs_no_round_trip() {
    let manager = manager(config(), pool(1)).await;
    let table = table("clean");
    create_table(&table).await;

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    let id = connection_id(&mut *conn).await;
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} (id, note) VALUES (1, 'x')"
    )))
    .execute(&mut tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let before = questions(&mut *conn).await;
    drop(conn);
    let now = stats(&manager);
    assert_eq!(
        (now.idle, now.in_use),
        (1, 0),
        "returned synchronously: {now:?}"
    );

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    assert_eq!(connection_id(&mut *conn).await, id, "the same connection");
    // `before` counted its own `SHOW`; the `SELECT CONNECTION_ID()` and this `SHOW` are the
    // only statements since.
    assert_eq!(questions(&mut *conn).await, before + 2);
    drop(conn);

    // For contrast: a transaction left open costs exactly one statement (the `ROLLBACK`).
    let mut conn = manager.acquire::<MySql>().await.unwrap();
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    let before = questions(&mut *conn).await;
    drop(conn);
    let mut conn = manager.acquire::<MySql>().await.unwrap();
    assert_eq!(questions(&mut *conn).await, before + 2);
    drop(conn);
    drop_table(&table).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instance_type_is_the_watched_connection() {
    let manager = manager(config(), pool(1)).await;
    let conn = manager.acquire::<MySql>().await.unwrap();
    let watched: &MySqlConnection = &conn;
    let debug = format!("{watched:?}");
    assert!(debug.contains("broken: false"), "{debug}");
    drop(conn);
}
