//! Credential rotation against the real server: a role whose password is checked (a
//! `scram-sha-256` line for it, first in `pg_hba.conf`), its password changed with `ALTER ROLE`
//! and the provider's answer changed while 32 tasks query. No acquire fails, and once the guards
//! are back no connection opened with the old password remains.
//!
//! The test edits `pg_hba.conf` and reloads the server, so it lives in a binary of its own and
//! always restores the file (and drops its role) when it ends, pass or fail.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nebula_resource::{Credentials, Policy, PoolConfig, ResourceManager, StaticCredentials};
use nebula_resource_postgres::sqlx::{self, Connection};
use nebula_resource_postgres::{Postgres, PostgresConfig};

fn admin_url() -> String {
    std::env::var("NEBULA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn hba_path() -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg("echo /etc/postgresql/$(ls /etc/postgresql | head -n1)/main/pg_hba.conf")
        .output()
        .expect("find pg_hba.conf");
    String::from_utf8(output.stdout)
        .expect("path")
        .trim()
        .to_owned()
}

fn reload() {
    let reloaded = Command::new("sh")
        .arg("-c")
        .arg("pg_ctlcluster --skip-systemctl-redirect \"$(ls /etc/postgresql | head -n1)\" main reload")
        .status()
        .is_ok_and(|s| s.success());
    assert!(reloaded, "pg_ctlcluster reload failed");
}

/// Puts `pg_hba.conf` back and reloads, however the test ends.
struct RestoreHba {
    path: String,
    original: String,
}

impl Drop for RestoreHba {
    fn drop(&mut self) {
        if std::fs::write(&self.path, &self.original).is_ok() {
            reload();
        }
    }
}

async fn admin() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&admin_url())
        .await
        .unwrap_or_else(|err| panic!("PostgreSQL at {} must be reachable: {err}", admin_url()))
}

async fn pids_of(admin: &mut sqlx::PgConnection, role: &str) -> HashSet<i32> {
    sqlx::query_scalar::<_, i32>("SELECT pid FROM pg_stat_activity WHERE usename = $1")
        .bind(role)
        .fetch_all(admin)
        .await
        .expect("pg_stat_activity")
        .into_iter()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_rotation_under_load_fails_no_acquire_and_leaves_no_old_connection() {
    let role = format!("nebula_rotation_{}", std::process::id());
    let mut admin = admin().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN PASSWORD 'first-pw';"
    )))
    .execute(&mut admin)
    .await
    .expect("create role");

    let path = hba_path();
    let original = std::fs::read_to_string(&path).expect("read pg_hba.conf");
    let _restore = RestoreHba {
        path: path.clone(),
        original: original.clone(),
    };
    std::fs::write(
        &path,
        format!("host all {role} 127.0.0.1/32 scram-sha-256\n{original}"),
    )
    .expect("write pg_hba.conf");
    reload();

    // The password is really checked now.
    let wrong =
        sqlx::PgConnection::connect(&format!("postgres://{role}:not-it@127.0.0.1:5432/test")).await;
    assert!(wrong.is_err(), "the role's password is not checked");

    let provider = Arc::new(StaticCredentials::new(
        Credentials::new("first-pw").username(role.clone()),
    ));
    let manager = ResourceManager::builder()
        .register_with(
            Postgres,
            PostgresConfig::new("postgres://127.0.0.1:5432/test"),
            Policy::default()
                .pool(PoolConfig::default().max_size(8).min_idle(8))
                .credentials_shared(Arc::clone(&provider) as _),
        )
        .build()
        .await
        .expect("build with the first password");

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let manager = manager.clone();
            let stop = Arc::clone(&stop);
            let failures = Arc::clone(&failures);
            tokio::spawn(async move {
                let mut done = 0_usize;
                while !stop.load(Ordering::Relaxed) {
                    match manager.acquire::<Postgres>().await {
                        Ok(mut conn) => {
                            if sqlx::query("SELECT 1").execute(&mut *conn).await.is_err() {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                            done += 1;
                        }
                        Err(err) => {
                            eprintln!("acquire failed: {err}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                done
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = pids_of(&mut admin, &role).await;
    assert!(!before.is_empty(), "the pool's connections use the role");

    // Rotate: the server first, then the provider's answer and the pool.
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "ALTER ROLE {role} PASSWORD 'second-pw'"
    )))
    .execute(&mut admin)
    .await
    .expect("alter role");
    provider.set(Credentials::new("second-pw").username(role.clone()));
    assert_eq!(manager.rotate_credentials::<Postgres>().await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(1000)).await;

    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("load task");
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed acquisitions or queries"
    );
    assert!(total > 500, "only {total} queries");

    // Guards are back: the connections of the old generation are gone from the server.
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let now = pids_of(&mut admin, &role).await;
            if now.is_disjoint(&before) && !now.is_empty() {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("old-password connections closed");
    assert!(drained.len() <= 8);
    // And the new connections really use the new password: the old one is refused.
    let old =
        sqlx::PgConnection::connect(&format!("postgres://{role}:first-pw@127.0.0.1:5432/test"))
            .await;
    assert!(old.is_err(), "the old password still works");

    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
        .execute(&mut admin)
        .await
        .expect("drop role");
}
