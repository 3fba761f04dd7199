//! Helpers for the SQLite tests: temporary database files that clean up after themselves, and
//! managers.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nebula_resource::{Policy, PoolConfig, PoolStats, ResourceManager};
use nebula_resource_sqlite::{Sqlite, SqliteConfig};

/// A database file in the system's temporary directory, unique to this process and call;
/// removed (with its `-wal`, `-shm` and `-journal` files) when dropped.
pub struct TempDb {
    path: PathBuf,
}

impl TempDb {
    pub fn new(test: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "nebula-sqlite-{test}-{}-{}.db",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let db = Self { path };
        db.remove();
        db
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn remove(&self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = self.path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A pool configuration for tests: `max_size`, no validation on acquire.
pub fn pool(max_size: usize) -> PoolConfig {
    PoolConfig::default()
        .max_size(max_size)
        .acquire_timeout(Duration::from_secs(10))
        .validate_after_idle(None)
}

/// A manager with [`Sqlite`] registered with `config` and `pool`.
pub async fn manager(config: SqliteConfig, pool: PoolConfig) -> ResourceManager {
    ResourceManager::builder()
        .register_with(Sqlite, config, Policy::default().pool(pool))
        .build()
        .await
        .expect("build")
}

/// The pool's counts now.
pub fn stats(manager: &ResourceManager) -> PoolStats {
    manager.handle::<Sqlite>().expect("registered").stats()
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
