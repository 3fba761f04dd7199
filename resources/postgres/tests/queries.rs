//! Statements through a guard: every sqlx entry point works with `&mut *guard`, transactions
//! commit and roll back, and a connection used only for plain statements goes back to the pool
//! without a reset round trip.

mod common;

use std::time::Duration;

use common::{activity, admin, manager, manager_with, server_pid, unique, url};
use nebula_resource::PoolConfig;
use nebula_resource_postgres::sqlx::{self, Executor, Row, SqlSafeStr, Statement};
use nebula_resource_postgres::{Postgres, PostgresConfig, SessionReset};

/// A pool of one, so every acquire gets the same connection.
fn single() -> PoolConfig {
    PoolConfig::default().max_size(1)
}

#[tokio::test]
async fn every_sqlx_entry_point_runs_through_a_guard() {
    let manager = manager(PoolConfig::default().max_size(2)).await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();

    let done = sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
    assert_eq!(done.rows_affected(), 1);
    let answer: i32 = sqlx::query_scalar("SELECT $1::int4 + 1")
        .bind(41)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(answer, 42);
    let pairs: Vec<(i32, String)> =
        sqlx::query_as("SELECT n, 'row ' || n FROM generate_series(1, 3) AS n")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert_eq!(pairs[2], (3, "row 3".to_owned()));
    let missing = sqlx::query("SELECT 1 WHERE false")
        .fetch_optional(&mut *conn)
        .await
        .unwrap();
    assert!(missing.is_none());
    let batch = sqlx::raw_sql("SELECT 1; SELECT 2, 3")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(batch.len(), 2);
    assert_eq!(batch[1].len(), 2);
    let statement = (&mut *conn)
        .prepare("SELECT $1::text".into_sql_str())
        .await
        .unwrap();
    let echoed: String = statement
        .query_scalar()
        .bind("echo")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(echoed, "echo");

    assert_eq!(server_pid(&mut conn).await, conn.backend_pid());
    assert!(!conn.is_broken());
    assert!(
        !conn.needs_reset(),
        "plain statements leave the session as it was"
    );
    drop(conn);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn a_failed_statement_leaves_the_connection_usable() {
    let manager = manager(single()).await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let err = sqlx::query("SELECT 1 / 0")
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("22012")
    );
    assert!(!conn.is_broken());
    assert!(!conn.needs_reset());
    let pid = conn.backend_pid();
    drop(conn);
    let mut again = manager.acquire::<Postgres>().await.unwrap();
    assert_eq!(again.backend_pid(), pid, "the connection was kept");
    sqlx::query("SELECT 1").execute(&mut *again).await.unwrap();
}

#[tokio::test]
async fn a_clean_connection_goes_back_without_a_round_trip() {
    let manager = manager(single()).await;
    let mut admin = admin().await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let pid = conn.backend_pid();
    sqlx::query("SELECT 'nebula clean marker'")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let conn = manager.acquire::<Postgres>().await.unwrap();
    assert_eq!(conn.backend_pid(), pid);
    let (state, query) = activity(&mut admin, pid).await;
    assert_eq!(state, "idle");
    assert_eq!(
        query, "SELECT 'nebula clean marker'",
        "nothing was sent to the server on release"
    );
}

#[tokio::test]
async fn transactions_commit_roll_back_and_nest() {
    let table = unique("tx");
    let manager = manager(single()).await;
    let mut admin = admin().await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int4 PRIMARY KEY)"
    )))
    .execute(&mut *conn)
    .await
    .unwrap();
    let insert = format!("INSERT INTO {table} VALUES ($1)");
    let insert = |id: i32| sqlx::query(sqlx::AssertSqlSafe(insert.clone())).bind(id);

    let mut tx = conn.begin().await.unwrap();
    insert(1).execute(&mut tx).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    insert(2).execute(&mut tx).await.unwrap();
    tx.rollback().await.unwrap();

    let mut outer = conn.begin().await.unwrap();
    insert(3).execute(&mut outer).await.unwrap();
    let mut inner = outer.begin().await.unwrap();
    insert(4).execute(&mut inner).await.unwrap();
    inner.rollback().await.unwrap();
    let mut inner = outer.begin().await.unwrap();
    insert(5).execute(&mut inner).await.unwrap();
    inner.commit().await.unwrap();
    outer.commit().await.unwrap();

    let ids: Vec<i32> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {table} ORDER BY id"
    )))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(ids, [1, 3, 5]);

    // A transaction that ended leaves nothing behind: the release sends nothing.
    let pid = conn.backend_pid();
    drop(conn);
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    insert(6).execute(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    assert!(
        !conn.needs_reset(),
        "a committed transaction leaves nothing behind"
    );
    drop(conn);
    let _conn = manager.acquire::<Postgres>().await.unwrap();
    let (state, query) = activity(&mut admin, pid).await;
    assert_eq!((state.as_str(), query.as_str()), ("idle", "COMMIT"));

    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP TABLE {table}")))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_raw_connection_works_and_makes_the_release_reset() {
    let manager = manager(single()).await;
    let mut admin = admin().await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let pid = conn.backend_pid();
    let row = sqlx::query("SELECT 7::int4 AS seven")
        .fetch_one(&mut **conn)
        .await
        .unwrap();
    assert_eq!(row.get::<i32, _>("seven"), 7);
    assert!(
        conn.needs_reset(),
        "statements on the raw connection are not watched"
    );
    drop(conn);
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    assert_eq!(conn.backend_pid(), pid);
    assert!(!conn.needs_reset());
    let (state, query) = activity(&mut admin, pid).await;
    assert_eq!(state, "idle");
    assert!(
        query.contains("RESET ALL"),
        "the release reset the session: {query}"
    );
    sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
}

#[tokio::test]
async fn session_reset_always_resets_every_release() {
    let config = PostgresConfig::new(url()).session_reset(SessionReset::Always);
    let manager = manager_with(config, single()).await;
    let mut admin = admin().await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let pid = conn.backend_pid();
    sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
    assert!(conn.needs_reset());
    drop(conn);
    let _conn = manager.acquire::<Postgres>().await.unwrap();
    let (_, query) = activity(&mut admin, pid).await;
    assert!(query.contains("RESET ALL"), "{query}");
}

#[tokio::test]
async fn mark_dirty_makes_the_release_reset() {
    let manager = manager(single()).await;
    let mut admin = admin().await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let pid = conn.backend_pid();
    sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
    assert!(!conn.needs_reset());
    conn.mark_dirty();
    assert!(conn.needs_reset());
    drop(conn);
    let _conn = manager.acquire::<Postgres>().await.unwrap();
    let (_, query) = activity(&mut admin, pid).await;
    assert!(query.contains("RESET ALL"), "{query}");
}
