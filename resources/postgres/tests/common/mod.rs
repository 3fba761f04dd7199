//! Helpers for the tests against the real server. The server's URL comes from
//! `NEBULA_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`); every test
//! fails, never skips, when it is unreachable.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use nebula_resource::{Event, Policy, PoolConfig, ResourceManager};
use nebula_resource_postgres::sqlx::{self, Connection, PgConnection};
use nebula_resource_postgres::{Postgres, PostgresConfig, PostgresConnection};
use tokio::sync::broadcast;

/// The server every test talks to.
pub fn url() -> String {
    std::env::var("NEBULA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// How long a test waits for something the pool does in the background.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A name unique to this test process, for tables and settings that tests create.
pub fn unique(name: &str) -> String {
    format!("nebula_pg_{name}_{}", std::process::id())
}

/// A manager with one `Postgres` registration.
pub async fn manager_with(config: PostgresConfig, pool: PoolConfig) -> ResourceManager {
    ResourceManager::builder()
        .register_with(Postgres, config, Policy::default().pool(pool))
        .build()
        .await
        .expect("build the manager")
}

/// A manager for [`url`] with `pool`.
pub async fn manager(pool: PoolConfig) -> ResourceManager {
    manager_with(PostgresConfig::new(url()), pool).await
}

/// A connection of the test's own, outside any pool: to look at and kill pooled ones.
pub async fn admin() -> PgConnection {
    PgConnection::connect(&url()).await.unwrap_or_else(|err| {
        panic!(
            "PostgreSQL must be reachable at {} (set NEBULA_TEST_POSTGRES_URL): {err}",
            nebula_resource::redact_url(&url())
        )
    })
}

/// `pg_backend_pid()` as the server reports it for `conn`.
pub async fn server_pid(conn: &mut PostgresConnection) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
        .expect("SELECT pg_backend_pid()")
}

/// Terminate backend `pid` and wait until it is gone.
pub async fn terminate(admin: &mut PgConnection, pid: i32) {
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)")
        .bind(pid)
        .fetch_one(admin)
        .await
        .expect("pg_terminate_backend");
    assert!(terminated, "backend {pid} did not terminate");
}

/// `pg_stat_activity.state` and `.query` of backend `pid`: whether it sits in a transaction,
/// and the last statement it ran.
pub async fn activity(admin: &mut PgConnection, pid: i32) -> (String, String) {
    sqlx::query_as("SELECT state, query FROM pg_stat_activity WHERE pid = $1")
        .bind(pid)
        .fetch_one(admin)
        .await
        .expect("the backend is in pg_stat_activity")
}

/// Wait for the next `InstanceDestroyed` event.
pub async fn destroyed(events: &mut broadcast::Receiver<Event>) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match events.recv().await {
                Ok(Event::InstanceDestroyed(_)) => return,
                Ok(_) => {}
                Err(err) => panic!("event stream: {err}"),
            }
        }
    })
    .await
    .expect("an instance was destroyed in time");
}
