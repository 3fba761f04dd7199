//! Helpers for the tests against a real MariaDB or MySQL server: where it is, unique table
//! names, managers, and an admin connection of the test's own. A test that cannot reach the
//! server fails; it never skips.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nebula_resource::{Policy, PoolConfig, PoolStats, ResourceManager};
use nebula_resource_mysql::sqlx::{self, AssertSqlSafe, Connection, Executor};
use nebula_resource_mysql::{MySql, MySqlConfig};

/// The server under test: `NEBULA_TEST_MYSQL_URL`, default `mysql://root@127.0.0.1:3306/test`.
pub fn mysql_url() -> String {
    std::env::var("NEBULA_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned())
}

pub fn config() -> MySqlConfig {
    MySqlConfig::new(mysql_url())
}

fn unreachable(err: impl std::fmt::Display) -> ! {
    panic!(
        "the MySQL/MariaDB server at {} must be reachable (set NEBULA_TEST_MYSQL_URL): {err}",
        nebula_resource::redact_url(&mysql_url())
    )
}

/// A pool configuration for tests: `max_size`, no validation on acquire unless asked for.
pub fn pool(max_size: usize) -> PoolConfig {
    PoolConfig::default()
        .max_size(max_size)
        .acquire_timeout(Duration::from_secs(10))
        .validate_after_idle(None)
}

/// A manager with [`MySql`] registered with `config` and `pool`.
pub async fn manager(config: MySqlConfig, pool: PoolConfig) -> ResourceManager {
    let manager = ResourceManager::builder()
        .register_with(MySql, config, Policy::default().pool(pool))
        .build()
        .await
        .unwrap_or_else(|err| unreachable(err));
    // Fail here, with a clear message, if the server is down: the pool connects lazily.
    let mut conn = manager
        .acquire::<MySql>()
        .await
        .unwrap_or_else(|err| unreachable(err));
    sqlx::query("SELECT 1")
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|err| unreachable(err));
    manager
}

/// The pool's counts now.
pub fn stats(manager: &ResourceManager) -> PoolStats {
    manager.handle::<MySql>().expect("registered").stats()
}

/// A table name no other test (in this process or another) uses.
pub fn table(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "nebula_{test}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A connection of the test's own, outside any pool, for setup, `KILL` and checks.
pub async fn admin() -> sqlx::mysql::MySqlConnection {
    sqlx::mysql::MySqlConnection::connect(&mysql_url())
        .await
        .unwrap_or_else(|err| unreachable(err))
}

/// Run `sql` on a fresh admin connection.
pub async fn admin_execute(sql: String) {
    let mut admin = admin().await;
    admin
        .execute(AssertSqlSafe(sql.clone()))
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"));
}

/// Create an InnoDB table `name (id BIGINT PRIMARY KEY, note VARCHAR(64))`.
pub async fn create_table(name: &str) {
    admin_execute(format!(
        "CREATE TABLE {name} (id BIGINT PRIMARY KEY, note VARCHAR(64)) ENGINE=InnoDB"
    ))
    .await;
}

pub async fn drop_table(name: &str) {
    admin_execute(format!("DROP TABLE IF EXISTS {name}")).await;
}

/// Rows in `table`, counted by the admin connection (so only committed rows).
pub async fn count_rows(table: &str) -> i64 {
    let mut admin = admin().await;
    sqlx::query_scalar(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(&mut admin)
        .await
        .expect("count rows")
}

/// The server-side id of the connection behind `executor`.
pub async fn connection_id<'c, E>(executor: E) -> u64
where
    E: Executor<'c, Database = sqlx::MySql>,
{
    sqlx::query_scalar("SELECT CONNECTION_ID()")
        .fetch_one(executor)
        .await
        .expect("SELECT CONNECTION_ID()")
}

/// Kill the server side of connection `id` (`KILL <id>`).
pub async fn kill(id: u64) {
    admin_execute(format!("KILL {id}")).await;
}

/// Whether the server still lists a connection with `id`.
pub async fn server_has_connection(id: u64) -> bool {
    let mut admin = admin().await;
    let count: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = ?")
            .bind(id)
            .fetch_one(&mut admin)
            .await
            .expect("PROCESSLIST");
    count > 0
}

/// Whether the connection `conn` has a transaction open: MariaDB's exact `@@in_transaction`;
/// on MySQL, which lacks it, `INFORMATION_SCHEMA.INNODB_TRX` (refreshed at most every 100 ms).
pub async fn in_transaction(conn: &mut nebula_resource_mysql::MySqlConnection) -> bool {
    match sqlx::query_scalar::<_, u64>("SELECT @@in_transaction")
        .fetch_one(&mut *conn)
        .await
    {
        Ok(open) => open == 1,
        Err(_) => {
            let open: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.INNODB_TRX \
                 WHERE trx_mysql_thread_id = CONNECTION_ID()",
            )
            .fetch_one(&mut *conn)
            .await
            .expect("INNODB_TRX");
            open > 0
        }
    }
}

/// Statements the server has run for the connection behind `executor` (its `Questions`
/// counter; `COM_PING` and statement preparation do not count).
pub async fn questions<'c, E>(executor: E) -> u64
where
    E: Executor<'c, Database = sqlx::MySql>,
{
    let (_, value): (String, String) = sqlx::query_as("SHOW SESSION STATUS LIKE 'Questions'")
        .fetch_one(executor)
        .await
        .expect("SHOW SESSION STATUS");
    value.parse().expect("Questions is a number")
}

/// Poll `condition` every 10 ms until it holds; panic with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until the pool has settled: nothing in use, being created or destroyed.
pub async fn settled(manager: &ResourceManager) -> PoolStats {
    eventually(Duration::from_secs(10), "pool settles", || async {
        let s = stats(manager);
        s.in_use == 0 && s.creating == 0 && s.releasing == 0
    })
    .await;
    stats(manager)
}
