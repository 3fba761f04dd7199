//! Server restart and outage recovery. These tests stop the PostgreSQL server of the machine
//! (`pg_ctlcluster`, as root), so they live in a binary of their own, run one at a time, and
//! always start the server again when they end, pass or fail.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

use common::{destroyed, manager};
use nebula_resource::{ErrorKind, PoolConfig, ResourceManager};
use nebula_resource_postgres::{Postgres, is_fatal, sqlx};
use tokio::sync::Mutex;

/// One test at a time: they share the server.
static SERVER: Mutex<()> = Mutex::const_new(());

/// Run `pg_ctlcluster … main <action>` on the machine's one cluster; `true` if it succeeded.
fn cluster(action: &str) -> bool {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "pg_ctlcluster --skip-systemctl-redirect \"$(ls /etc/postgresql | head -n1)\" main \
             {action}"
        ))
        .output()
        .expect("run pg_ctlcluster");
    output.status.success()
}

/// Starts the server again when dropped, however the test ends.
struct StartOnDrop;

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        // Fails harmlessly ("already running") when the server is up.
        cluster("start");
    }
}

async fn run(action: &'static str) -> StartOnDrop {
    let guard = StartOnDrop;
    let done = tokio::task::spawn_blocking(move || cluster(action))
        .await
        .unwrap();
    assert!(done, "pg_ctlcluster {action} failed");
    guard
}

/// Check out `n` connections at once and give them back; their backend pids.
async fn warm(manager: &ResourceManager, n: usize) -> HashSet<i32> {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(manager.acquire::<Postgres>().await.unwrap());
    }
    held.iter().map(|conn| conn.backend_pid()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_check_replaces_every_dead_connection() {
    let _server = SERVER.lock().await;
    let manager = manager(
        PoolConfig::default()
            .max_size(4)
            .validate_after_idle(Duration::from_millis(1)),
    )
    .await;
    let mut events = manager.events();
    let old = warm(&manager, 4).await;
    let _started = run("restart").await;

    // Every acquire gets a working connection: the dead ones fail their check and are
    // destroyed before anyone sees them.
    for _ in 0..8 {
        let mut conn = manager.acquire::<Postgres>().await.unwrap();
        assert!(!old.contains(&conn.backend_pid()));
        sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
    }
    for _ in 0..4 {
        destroyed(&mut events).await;
    }
    let stats = manager.handle::<Postgres>().unwrap().stats();
    assert_eq!(stats.destroyed, 4, "{stats:?}");
    assert_eq!(
        stats.created - stats.destroyed,
        stats.size as u64,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_no_dead_connection_is_handed_out_twice() {
    let _server = SERVER.lock().await;
    // No check on acquire: only the fatal errors of statements find the dead connections.
    let manager = manager(PoolConfig::default().max_size(4).validate_after_idle(None)).await;
    let mut events = manager.events();
    let old = warm(&manager, 4).await;
    let _started = run("restart").await;

    let mut dead_seen = Vec::new();
    for _ in 0..12 {
        let mut conn = manager.acquire::<Postgres>().await.unwrap();
        let pid = conn.backend_pid();
        match sqlx::query("SELECT 1").execute(&mut *conn).await {
            Ok(_) => assert!(!old.contains(&pid), "dead connection {pid} answered"),
            Err(err) => {
                assert!(is_fatal(&err), "{err:?}");
                assert!(old.contains(&pid));
                assert!(
                    !dead_seen.contains(&pid),
                    "dead connection {pid} handed out twice"
                );
                dead_seen.push(pid);
                drop(conn);
                destroyed(&mut events).await;
            }
        }
    }
    assert_eq!(dead_seen.len(), 4, "each dead connection reached one user");
    let stats = manager.handle::<Postgres>().unwrap().stats();
    assert_eq!(stats.destroyed, 4, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_server_is_down_acquires_fail_and_then_recover() {
    let _server = SERVER.lock().await;
    let manager = manager(
        PoolConfig::default()
            .max_size(2)
            .acquire_timeout(Duration::from_secs(2))
            .validate_after_idle(Duration::from_millis(1)),
    )
    .await;
    let old = warm(&manager, 2).await;
    let _started = run("stop").await;

    let err = manager.acquire::<Postgres>().await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Create | ErrorKind::Timeout),
        "{err}"
    );
    assert!(
        err.to_string().contains("connecting to postgres://"),
        "{err}"
    );

    let _restarted = run("start").await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    assert!(!old.contains(&conn.backend_pid()));
    sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
    let stats = manager.handle::<Postgres>().unwrap().stats();
    assert!(stats.create_errors >= 1, "{stats:?}");
}
