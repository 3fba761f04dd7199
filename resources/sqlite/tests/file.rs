//! A database file: WAL mode, the configured pragmas, data shared by all connections, and the
//! create-if-missing and read-only switches.

mod common;

use std::time::Duration;

use common::{TempDb, manager, pool};
use nebula_resource::ErrorKind;
use nebula_resource_sqlite::sqlx::{self, ConnectOptions};
use nebula_resource_sqlite::{Sqlite, SqliteConfig, is_fatal};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_database_runs_in_wal_mode_with_the_configured_pragmas() {
    let db = TempDb::new("wal");
    let manager = manager(
        SqliteConfig::file(db.path()).busy_timeout(Duration::from_millis(2500)),
        pool(2),
    )
    .await;
    let mut conn = manager.acquire::<Sqlite>().await.unwrap();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
    let (busy, foreign_keys, synchronous): (i64, i64, i64) = (
        sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap(),
        sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap(),
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap(),
    );
    assert_eq!(
        (busy, foreign_keys, synchronous),
        (2500, 1, 2),
        "busy, fk, FULL"
    );
    assert!(!conn.is_session_changed(), "pragma queries change nothing");
    sqlx::query("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    assert!(db.path().exists(), "created if missing");
    let mut wal = db.path().as_os_str().to_owned();
    wal.push("-wal");
    assert!(
        std::path::Path::new(&wal).exists(),
        "a WAL file beside the database"
    );
    manager.shutdown(Duration::from_secs(5)).await.unwrap();

    // WAL is a property of the file now: a plain connection sees it too.
    let mut plain = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db.path())
        .connect()
        .await
        .unwrap();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut plain)
        .await
        .unwrap();
    assert_eq!(journal, "wal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_share_the_file_and_enforce_foreign_keys() {
    let db = TempDb::new("shared");
    let manager = manager(SqliteConfig::file(db.path()), pool(2)).await;
    let mut writer = manager.acquire::<Sqlite>().await.unwrap();
    let mut reader = manager.acquire::<Sqlite>().await.unwrap();
    assert_eq!(common::stats(&manager).size, 2, "two connections");

    sqlx::raw_sql(
        "CREATE TABLE parent (id INTEGER PRIMARY KEY); \
         CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER NOT NULL REFERENCES parent(id)); \
         INSERT INTO parent VALUES (1)",
    )
    .execute(&mut *writer)
    .await
    .unwrap();
    let mut tx = writer.begin().await.unwrap();
    sqlx::query("INSERT INTO child VALUES (1, 1)")
        .execute(&mut tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let children: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM child")
        .fetch_one(&mut *reader)
        .await
        .unwrap();
    assert_eq!(children, 1);

    let violation = sqlx::query("INSERT INTO child VALUES (2, 99)")
        .execute(&mut *reader)
        .await
        .unwrap_err();
    assert!(violation.to_string().contains("FOREIGN KEY"), "{violation}");
    assert!(!is_fatal(&violation));
    assert!(!reader.is_broken());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_is_not_created_when_asked_not_to() {
    let db = TempDb::new("missing");
    let manager = manager(
        SqliteConfig::file(db.path()).create_if_missing(false),
        pool(1),
    )
    .await;
    let err = manager.acquire::<Sqlite>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Create, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&db.path().display().to_string()),
        "names the file: {text}"
    );
    assert!(!db.path().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_refuses_writes() {
    let db = TempDb::new("read_only");
    {
        let writer = manager(SqliteConfig::file(db.path()), pool(1)).await;
        let mut conn = writer.acquire::<Sqlite>().await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (id INTEGER); INSERT INTO t VALUES (1)")
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        writer.shutdown(Duration::from_secs(5)).await.unwrap();
    }
    let url = format!("sqlite://{}?mode=ro", db.path().display());
    let manager = manager(SqliteConfig::new(url), pool(1)).await;
    let mut conn = manager.acquire::<Sqlite>().await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    let err = sqlx::query("INSERT INTO t VALUES (2)")
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("readonly"), "{err}");
}
