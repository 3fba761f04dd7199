//! Resilience against real PostgreSQL faults: the server restarted under load, and backends
//! killed while idle. These tests stop the machine's PostgreSQL server (`pg_ctlcluster`, as
//! root), so they live in a binary of their own, run one at a time, and always start the server
//! again when they end, pass or fail.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use nebula_resource::{
    BreakerConfig, ErrorKind, Event, HealthConfig, Policy, PoolConfig, ResourceManager, RetryPolicy,
};
use nebula_resource_postgres::{Postgres, PostgresConfig, sqlx};
use std::sync::Mutex as SyncMutex;
use tokio::sync::Mutex;
use tokio::time::Instant;

static SERVER: Mutex<()> = Mutex::const_new(());

fn url() -> String {
    std::env::var("NEBULA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn cluster(action: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "pg_ctlcluster --skip-systemctl-redirect \"$(ls /etc/postgresql | head -n1)\" main \
             {action}"
        ))
        .status()
        .is_ok_and(|status| status.success())
}

/// Starts the server again when dropped, however the test ends.
struct StartOnDrop;

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        cluster("start");
    }
}

/// A raw connection outside the pool, for admin statements.
async fn admin() -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&url())
        .await
        .unwrap_or_else(|err| panic!("PostgreSQL at {} must be reachable: {err}", url()))
}

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// The policy a production user would pick for a service that must come back within seconds: a
/// short acquire timeout, a breaker that waits 1 s before probing, health rounds every 500 ms
/// with one good probe lifting a quarantine, recovery probes at most 500 ms apart.
fn policy() -> Policy {
    Policy::default()
        .pool(
            PoolConfig::default()
                .max_size(16)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .create_timeout(Duration::from_secs(1)),
        )
        .breaker(BreakerConfig::default().open_wait(Duration::from_secs(1)))
        .health(
            HealthConfig::default()
                .interval(Duration::from_millis(500))
                .timeout(Duration::from_secs(1))
                .success_threshold(1),
        )
        .retry(
            RetryPolicy::exponential(Duration::from_millis(50), 3)
                .max_interval(Duration::from_millis(500)),
        )
}

#[derive(Default)]
struct Log {
    /// (when, ok, kind) for every acquire + query.
    outcomes: Vec<(Instant, bool, String)>,
    slowest_acquire: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_load_recovers_within_two_seconds_with_typed_errors_and_no_leak() {
    let _server = SERVER.lock().await;
    let _restart = StartOnDrop;
    let manager = ResourceManager::builder()
        .register_with(Postgres, PostgresConfig::new(url()), policy())
        .build()
        .await
        .expect("build");
    let log = Arc::new(SyncMutex::new(Log::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));

    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let manager = manager.clone();
            let log = Arc::clone(&log);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    // A hung acquire would show up as this outer timeout firing.
                    let acquired = tokio::time::timeout(
                        ACQUIRE_TIMEOUT + Duration::from_millis(500),
                        manager.acquire::<Postgres>(),
                    )
                    .await
                    .expect("an acquire hung past acquire_timeout");
                    let waited = started.elapsed();
                    let outcome = match acquired {
                        Ok(mut conn) => match sqlx::query("SELECT 1").execute(&mut *conn).await {
                            Ok(_) => (true, "ok".to_owned()),
                            Err(err) => (false, format!("query: {err}")),
                        },
                        Err(err) => {
                            assert!(
                                matches!(
                                    err.kind(),
                                    ErrorKind::Create
                                        | ErrorKind::Timeout
                                        | ErrorKind::CircuitOpen
                                        | ErrorKind::Unavailable
                                ),
                                "untyped outage error: {err}"
                            );
                            assert!(err.to_string().contains("postgres"), "{err}");
                            (false, format!("{:?}", err.kind()))
                        }
                    };
                    let ok = outcome.0;
                    {
                        let mut log = log.lock().unwrap();
                        log.slowest_acquire = log.slowest_acquire.max(waited);
                        log.outcomes.push((Instant::now(), outcome.0, outcome.1));
                    }
                    if !ok {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_secs(1)).await;
    // A restart with the server down for 1.5 s in between, so the load sees a real outage:
    // dead connections, refused connects, the breaker and quarantine at work.
    let stopped = tokio::task::spawn_blocking(|| cluster("stop"))
        .await
        .unwrap();
    assert!(stopped, "pg_ctlcluster stop failed");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = tokio::task::spawn_blocking(|| cluster("start"))
        .await
        .unwrap();
    assert!(started, "pg_ctlcluster start failed");
    // The server is back when a fresh connection succeeds.
    let back = loop {
        use sqlx::Connection;
        if sqlx::PgConnection::connect(&url()).await.is_ok() {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        task.await.expect("a load task panicked");
    }

    // All tasks are joined: take the log out of its mutex.
    let log = std::mem::take(&mut *log.lock().unwrap());
    let failures: Vec<&(Instant, bool, String)> =
        log.outcomes.iter().filter(|(_, ok, _)| !ok).collect();
    assert!(
        !failures.is_empty(),
        "the restart should have been seen by someone"
    );
    let last_failure = failures.iter().map(|(at, ..)| *at).max().unwrap();
    let resumed = last_failure.saturating_duration_since(back);
    eprintln!(
        "outage: {} failures, last {resumed:?} after the server was back, slowest acquire {:?}",
        failures.len(),
        log.slowest_acquire
    );
    assert!(
        resumed <= Duration::from_secs(2),
        "full service resumed {resumed:?} after the server was back; last failures: {:?}",
        failures
            .iter()
            .rev()
            .take(5)
            .map(|(_, _, kind)| kind)
            .collect::<Vec<_>>()
    );
    let after: usize = log
        .outcomes
        .iter()
        .filter(|(at, ok, _)| *ok && *at > back + Duration::from_secs(2))
        .count();
    assert!(after > 64, "only {after} successes after recovery");
    assert!(
        log.slowest_acquire <= ACQUIRE_TIMEOUT + Duration::from_millis(200),
        "an acquire took {:?}",
        log.slowest_acquire
    );

    // No instance leaked: nothing in use, and every instance that exists is accounted for.
    let stats = manager.handle::<Postgres>().unwrap().stats();
    assert_eq!(stats.in_use, 0, "{stats:?}");
    assert!(stats.size <= 16, "{stats:?}");
    assert_eq!(
        stats.created - stats.destroyed,
        stats.size as u64,
        "{stats:?}"
    );
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_backends_killed_server_side_are_caught_before_reaching_users() {
    let _server = SERVER.lock().await;
    for via_health in [false, true] {
        let pool = PoolConfig::default().max_size(8);
        let (pool, health) = if via_health {
            // No validation on acquire: only the health round can find the dead ones.
            (
                pool.validate_after_idle(None),
                HealthConfig::default().interval(Duration::from_millis(200)),
            )
        } else {
            (pool, HealthConfig::disabled())
        };
        let manager = ResourceManager::builder()
            .register_with(
                Postgres,
                PostgresConfig::new(url()),
                Policy::default().pool(pool).health(health),
            )
            .build()
            .await
            .expect("build");
        let mut events = manager.events();
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(manager.acquire::<Postgres>().await.expect("acquire"));
        }
        let pids: HashSet<i32> = held.iter().map(|conn| conn.backend_pid()).collect();
        drop(held);

        let mut admin = admin().await;
        for pid in &pids {
            sqlx::query("SELECT pg_terminate_backend($1)")
                .bind(pid)
                .execute(&mut admin)
                .await
                .expect("terminate");
        }
        if via_health {
            // Wait until a round has destroyed the 8 dead instances.
            tokio::time::timeout(Duration::from_secs(5), async {
                let mut destroyed = 0;
                while destroyed < 8 {
                    if let Ok(Event::InstanceDestroyed(_)) = events.recv().await {
                        destroyed += 1;
                    }
                }
            })
            .await
            .expect("the health round destroyed the dead connections");
        } else {
            // Idle longer than validate_after_idle (500 ms): the acquire checks first.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        let mut fresh = Vec::new();
        for _ in 0..8 {
            let mut conn = manager.acquire::<Postgres>().await.expect("acquire");
            assert!(
                !pids.contains(&conn.backend_pid()),
                "a killed backend was handed out (via_health={via_health})"
            );
            sqlx::query("SELECT 1")
                .execute(&mut *conn)
                .await
                .expect("a handed-out connection works");
            fresh.push(conn);
        }
        drop(fresh);
        manager
            .shutdown(Duration::from_secs(5))
            .await
            .expect("shutdown");
    }
}
