//! What one user leaves on a connection is gone before the next user gets it: an open or
//! failed transaction, settings, temporary tables, session locks, `LISTEN`, cursors, a query
//! cut off half-way. And the reset keeps sqlx's prepared statements working.
//!
//! Each test uses a pool of one, so the next acquire gets the same connection (checked by its
//! backend pid), and looks at that backend from a connection of its own.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{activity, admin, manager, manager_with, unique, url};
use nebula_resource::{Guard, PoolConfig, ResourceManager};
use nebula_resource_postgres::sqlx::{self, AssertSqlSafe, Connection, PgConnection};
use nebula_resource_postgres::{Postgres, PostgresConfig};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// A pool of one connection, never validated on acquire, so nothing but the release touches it.
async fn single() -> ResourceManager {
    manager(PoolConfig::default().max_size(1).validate_after_idle(None)).await
}

/// Acquire the pool's one connection again, and check that it is `pid`, idle, and clean.
async fn next_user(
    manager: &ResourceManager,
    admin: &mut PgConnection,
    pid: i32,
) -> Guard<Postgres> {
    let conn = manager.acquire::<Postgres>().await.unwrap();
    assert_eq!(conn.backend_pid(), pid, "the pool kept its connection");
    assert!(!conn.needs_reset());
    let (state, _) = activity(admin, pid).await;
    assert_eq!(state, "idle", "the next user finds no transaction open");
    conn
}

/// A table of this test's own, dropped again at the end.
struct Table {
    name: String,
}

impl Table {
    async fn create(admin: &mut PgConnection, name: &str) -> Self {
        let name = unique(name);
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (id int4)"
        )))
        .execute(&mut *admin)
        .await
        .unwrap();
        Self { name }
    }

    fn insert(&self) -> String {
        format!("INSERT INTO {} VALUES (1)", self.name)
    }

    async fn rows(&self, admin: &mut PgConnection) -> i64 {
        sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {}", self.name)))
            .fetch_one(admin)
            .await
            .unwrap()
    }

    async fn drop_table(self, admin: &mut PgConnection) {
        sqlx::raw_sql(AssertSqlSafe(format!("DROP TABLE {}", self.name)))
            .execute(admin)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_open_transaction_is_rolled_back() {
    let manager = single().await;
    let mut admin = admin().await;
    let table = Table::create(&mut admin, "open_tx").await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let pid = conn.backend_pid();
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    sqlx::query(AssertSqlSafe(table.insert()))
        .execute(&mut *conn)
        .await
        .unwrap();
    assert_eq!(activity(&mut admin, pid).await.0, "idle in transaction");
    assert!(conn.needs_reset());
    drop(conn);

    let mut conn = next_user(&manager, &mut admin, pid).await;
    assert_eq!(
        table.rows(&mut admin).await,
        0,
        "the insert was rolled back"
    );
    // The next user's statements commit on their own, not inside a leftover transaction.
    sqlx::query(AssertSqlSafe(table.insert()))
        .execute(&mut *conn)
        .await
        .unwrap();
    assert_eq!(table.rows(&mut admin).await, 1);
    drop(conn);
    table.drop_table(&mut admin).await;
}

#[tokio::test]
async fn a_read_only_transaction_left_open_is_rolled_back() {
    let manager = single().await;
    let mut admin = admin().await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let pid = conn.backend_pid();
    sqlx::query("BEGIN READ ONLY ISOLATION LEVEL SERIALIZABLE")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
    drop(conn);
    let mut conn = next_user(&manager, &mut admin, pid).await;
    let read_only: String = sqlx::query_scalar("SHOW transaction_read_only")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(read_only, "off");
}

#[tokio::test]
async fn a_transaction_opened_on_the_raw_connection_is_rolled_back() {
    let manager = single().await;
    let mut admin = admin().await;
    let table = Table::create(&mut admin, "raw_tx").await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let pid = conn.backend_pid();
    sqlx::raw_sql(AssertSqlSafe(format!("BEGIN; {}", table.insert())))
        .execute(&mut **conn)
        .await
        .unwrap();
    drop(conn);
    drop(next_user(&manager, &mut admin, pid).await);
    assert_eq!(table.rows(&mut admin).await, 0);
    table.drop_table(&mut admin).await;
}

#[tokio::test]
async fn dropped_transactions_are_rolled_back() {
    let manager = single().await;
    let mut admin = admin().await;
    let table = Table::create(&mut admin, "dropped_tx").await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let pid = conn.backend_pid();

    // Ours, dropped without commit.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(AssertSqlSafe(table.insert()))
        .execute(&mut tx)
        .await
        .unwrap();
    drop(tx);
    assert!(conn.needs_reset());
    drop(conn);
    let mut conn = next_user(&manager, &mut admin, pid).await;
    assert_eq!(table.rows(&mut admin).await, 0);

    // sqlx's own, on the raw connection.
    let mut tx = (**conn).begin().await.unwrap();
    sqlx::query(AssertSqlSafe(table.insert()))
        .execute(&mut *tx)
        .await
        .unwrap();
    drop(tx);
    drop(conn);
    drop(next_user(&manager, &mut admin, pid).await);
    assert_eq!(table.rows(&mut admin).await, 0);
    table.drop_table(&mut admin).await;
}

#[tokio::test]
async fn a_failed_transaction_is_rolled_back() {
    let manager = single().await;
    let mut admin = admin().await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let pid = conn.backend_pid();
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    sqlx::query("SELECT 1 / 0")
        .execute(&mut *conn)
        .await
        .unwrap_err();
    // The transaction is now failed: it accepts nothing but its end.
    let aborted = sqlx::query("SELECT 1")
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert_eq!(
        aborted
            .as_database_error()
            .and_then(|e| e.code())
            .as_deref(),
        Some("25P02")
    );
    assert!(!conn.is_broken(), "a failed statement is not fatal");
    drop(conn);
    let mut conn = next_user(&manager, &mut admin, pid).await;
    sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
}

#[tokio::test]
async fn session_state_is_cleared() {
    let manager = single().await;
    let mut admin = admin().await;
    let lock_key: i64 = 0x6e65_6275_6c61;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let pid = conn.backend_pid();
    sqlx::raw_sql(
        "SET statement_timeout = 4321; SET search_path TO pg_catalog; \
         SET application_name = 'changed by a user'; \
         CREATE TEMP TABLE scratch (id int4); LISTEN nebula_channel; \
         DECLARE held CURSOR WITH HOLD FOR SELECT 1",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("SELECT set_config('lock_timeout', '1234', false)")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(lock_key)
        .execute(&mut *conn)
        .await
        .unwrap();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(lock_key)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(!locked, "the user holds the session lock");
    drop(conn);

    let mut conn = next_user(&manager, &mut admin, pid).await;
    let (timeout, path, name, lock_timeout): (String, String, String, String) = sqlx::query_as(
        "SELECT current_setting('statement_timeout'), current_setting('search_path'), \
         current_setting('application_name'), current_setting('lock_timeout')",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(timeout, "0");
    assert_eq!(path, "\"$user\", public");
    assert_eq!(name, "");
    assert_eq!(lock_timeout, "0");
    let (temp_table, channels, cursors): (Option<String>, i64, i64) = sqlx::query_as(
        "SELECT to_regclass('pg_temp.scratch')::text, \
         (SELECT count(*) FROM pg_listening_channels()), \
         (SELECT count(*) FROM pg_cursors WHERE name = 'held')",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!((temp_table, channels, cursors), (None, 0, 0));
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(lock_key)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert!(locked, "the session lock was released");
}

#[tokio::test]
async fn settings_given_at_connect_survive_the_reset() {
    let config = PostgresConfig::new(format!("{}?options[statement_timeout]=9000", url()))
        .application_name("nebula-configured");
    let manager = manager_with(config, PoolConfig::default().max_size(1)).await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    sqlx::raw_sql("SET application_name = 'changed'; SET statement_timeout = 1")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let (name, timeout): (String, String) = sqlx::query_as(
        "SELECT current_setting('application_name'), current_setting('statement_timeout')",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(name, "nebula-configured");
    assert_eq!(timeout, "9s");
}

#[tokio::test]
async fn a_query_cut_off_half_way_is_drained() {
    let manager = single().await;
    let mut admin = admin().await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let pid = conn.backend_pid();
    let cut = tokio::time::timeout(
        Duration::from_millis(50),
        sqlx::query("SELECT pg_sleep(0.3)").execute(&mut *conn),
    )
    .await;
    assert!(cut.is_err(), "the query was cancelled half-way");
    assert!(conn.needs_reset());
    drop(conn);
    let mut conn = next_user(&manager, &mut admin, pid).await;
    let answer: i32 = sqlx::query_scalar("SELECT 42")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        answer, 42,
        "the reply of the cut-off query was not taken for this one"
    );
}

#[tokio::test]
async fn a_stream_dropped_early_is_drained() {
    let manager = single().await;
    let mut admin = admin().await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let pid = conn.backend_pid();
    {
        use futures_util::TryStreamExt;
        let mut rows = sqlx::query_scalar::<_, i32>("SELECT n FROM generate_series(1, 10000) AS n")
            .fetch(&mut *conn);
        assert_eq!(rows.try_next().await.unwrap(), Some(1));
    }
    assert!(conn.needs_reset());
    drop(conn);
    let mut conn = next_user(&manager, &mut admin, pid).await;
    let answer: i32 = sqlx::query_scalar("SELECT 7")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(answer, 7);
}

#[tokio::test]
async fn prepared_statements_survive_the_reset() {
    let manager = single().await;
    let mut admin = admin().await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let pid = conn.backend_pid();
    let query = "SELECT $1::int4 * 2";
    let doubled: i32 = sqlx::query_scalar(query)
        .bind(21)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(doubled, 42);
    sqlx::query("SET work_mem = '8MB'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let cached = conn.cached_statements_size();
    assert!(cached >= 1);
    drop(conn);
    let mut conn = next_user(&manager, &mut admin, pid).await;
    assert_eq!(conn.cached_statements_size(), cached);
    let doubled: i32 = sqlx::query_scalar(query)
        .bind(50)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        doubled, 100,
        "the cached statement still exists on the server"
    );
}

#[tokio::test]
async fn session_state_changed_inside_a_function_needs_mark_dirty() {
    let function = unique("set_timeout");
    let mut admin = admin().await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE OR REPLACE FUNCTION {function}() RETURNS void LANGUAGE plpgsql AS \
         $$ BEGIN PERFORM set_config('statement_timeout', '777', false); END $$"
    )))
    .execute(&mut admin)
    .await
    .unwrap();
    let manager = single().await;
    let call = format!("SELECT {function}()");
    let timeout = "SELECT current_setting('statement_timeout')";

    // The pool cannot see inside the function: without help the setting outlives the user.
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    sqlx::query(AssertSqlSafe(call.clone()))
        .execute(&mut *conn)
        .await
        .unwrap();
    assert!(!conn.needs_reset());
    drop(conn);
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let leaked: String = sqlx::query_scalar(timeout)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(leaked, "777ms");

    // `mark_dirty` (or `SessionReset::Always`) has it reset.
    conn.mark_dirty();
    drop(conn);
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let reset: String = sqlx::query_scalar(timeout)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(reset, "0");
    drop(conn);

    let always = manager_with(
        PostgresConfig::new(url()).session_reset(nebula_resource_postgres::SessionReset::Always),
        PoolConfig::default().max_size(1),
    )
    .await;
    let mut conn = always.acquire::<Postgres>().await.unwrap();
    sqlx::query(AssertSqlSafe(call))
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    let mut conn = always.acquire::<Postgres>().await.unwrap();
    let reset: String = sqlx::query_scalar(timeout)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(reset, "0");
    drop(conn);

    sqlx::raw_sql(AssertSqlSafe(format!("DROP FUNCTION {function}()")))
        .execute(&mut admin)
        .await
        .unwrap();
}

/// Counts the server warnings sqlx reports (it logs notices under `sqlx::postgres::notice`).
struct ServerWarnings(Arc<AtomicUsize>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for ServerWarnings {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() == "sqlx::postgres::notice" && *meta.level() <= tracing::Level::WARN {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The reset never sends a `ROLLBACK` to an idle session, which would put a "there is no
/// transaction in progress" warning in the server's log on every release.
#[tokio::test(flavor = "current_thread")]
async fn resetting_raises_no_server_warning() {
    let warnings = Arc::new(AtomicUsize::new(0));
    // Current-thread runtime: the release worker runs on this thread, under this subscriber.
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::registry().with(ServerWarnings(Arc::clone(&warnings))),
    );
    let manager = single().await;
    let mut admin = admin().await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let pid = conn.backend_pid();

    // The counter works: a ROLLBACK on an idle session warns.
    sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
    assert_eq!(warnings.load(Ordering::SeqCst), 1);

    // Idle session (the ROLLBACK above made it dirty), then an open and a failed transaction.
    drop(conn);
    let mut conn = next_user(&manager, &mut admin, pid).await;
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    drop(conn);
    let mut conn = next_user(&manager, &mut admin, pid).await;
    sqlx::raw_sql("BEGIN; SELECT 1 / 0")
        .execute(&mut *conn)
        .await
        .unwrap_err();
    drop(conn);
    drop(next_user(&manager, &mut admin, pid).await);
    assert_eq!(warnings.load(Ordering::SeqCst), 1, "no reset warned");
}
