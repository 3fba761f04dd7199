//! The in-memory database is one database for the whole pool, alive as long as its
//! configuration: a table created through one connection is seen through every other, and
//! survives the pool closing all its connections.

mod common;

use std::time::Duration;

use common::{manager, pool, settled, stats};
use nebula_resource::{Policy, ResourceManager};
use nebula_resource_sqlite::sqlx;
use nebula_resource_sqlite::{Sqlite, SqliteConfig};

async fn count(conn: &mut nebula_resource_sqlite::SqliteConnection) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM notes")
        .fetch_one(&mut *conn)
        .await
        .expect("the table is there")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_created_through_one_connection_is_visible_through_another() {
    for config in [
        SqliteConfig::in_memory(),
        SqliteConfig::new("sqlite::memory:"),
    ] {
        let manager = manager(config, pool(4)).await;
        let mut first = manager.acquire::<Sqlite>().await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT); \
             INSERT INTO notes (body) VALUES ('one'), ('two')",
        )
        .execute(&mut *first)
        .await
        .unwrap();

        // Held at the same time, so these are three distinct connections.
        let mut second = manager.acquire::<Sqlite>().await.unwrap();
        let mut third = manager.acquire::<Sqlite>().await.unwrap();
        assert_eq!(stats(&manager).size, 3);
        assert_eq!(count(&mut second).await, 2);
        sqlx::query("INSERT INTO notes (body) VALUES ('three')")
            .execute(&mut *second)
            .await
            .unwrap();
        assert_eq!(count(&mut third).await, 3);
        assert_eq!(count(&mut first).await, 3);
        let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *third)
            .await
            .unwrap();
        assert_eq!(journal, "memory");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_outlives_every_pooled_connection() {
    let manager = manager(SqliteConfig::in_memory(), pool(2)).await;
    let mut conn = manager.acquire::<Sqlite>().await.unwrap();
    sqlx::raw_sql("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('kept')")
        .execute(&mut *conn)
        .await
        .unwrap();
    let other = manager.acquire::<Sqlite>().await.unwrap();
    // Destroy both connections: the pool is left with none.
    conn.taint();
    other.taint();
    let empty = settled(&manager).await;
    assert_eq!((empty.size, empty.destroyed), (0, 2), "{empty:?}");

    let mut conn = manager.acquire::<Sqlite>().await.unwrap();
    assert_eq!(
        count(&mut conn).await,
        1,
        "the data outlived the connections"
    );
    drop(conn);

    // Even a shutdown of the pool keeps it while the manager (and so the config) lives.
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(stats(&manager).size, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_in_memory_config_is_a_database_of_its_own_and_clones_share_it() {
    let shared = SqliteConfig::in_memory();
    let manager = ResourceManager::builder()
        .register_named_with("a", Sqlite, shared.clone(), Policy::default().pool(pool(1)))
        .register_named_with("a-clone", Sqlite, shared, Policy::default().pool(pool(1)))
        .register_named_with(
            "b",
            Sqlite,
            SqliteConfig::in_memory(),
            Policy::default().pool(pool(1)),
        )
        .build()
        .await
        .unwrap();

    let mut a = manager.acquire_named::<Sqlite>("a").await.unwrap();
    sqlx::raw_sql("CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('in a')")
        .execute(&mut *a)
        .await
        .unwrap();
    drop(a);

    let mut clone = manager.acquire_named::<Sqlite>("a-clone").await.unwrap();
    assert_eq!(
        count(&mut clone).await,
        1,
        "a clone of the config is the same database"
    );
    drop(clone);

    let mut b = manager.acquire_named::<Sqlite>("b").await.unwrap();
    let missing = sqlx::query("SELECT COUNT(*) FROM notes")
        .fetch_one(&mut *b)
        .await
        .unwrap_err();
    assert!(missing.to_string().contains("no such table"), "{missing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_waits_for_the_first_to_commit() {
    let manager = manager(SqliteConfig::in_memory(), pool(2)).await;
    let mut first = manager.acquire::<Sqlite>().await.unwrap();
    sqlx::query("CREATE TABLE notes (body TEXT)")
        .execute(&mut *first)
        .await
        .unwrap();
    let mut tx = first.begin_with("BEGIN IMMEDIATE").await.unwrap();
    sqlx::query("INSERT INTO notes VALUES ('first')")
        .execute(&mut tx)
        .await
        .unwrap();

    let mut second = manager.acquire::<Sqlite>().await.unwrap();
    let waiting = tokio::spawn(async move {
        sqlx::query("INSERT INTO notes VALUES ('second')")
            .execute(&mut *second)
            .await
            .map(|done| done.rows_affected())
    });
    // The second writer waits for the table lock (shared-cache unlock-notify), and goes
    // ahead once the first commits.
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    tx.commit().await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), 1);
    assert_eq!(count(&mut first).await, 2);
}
