//! The test kit's conformance suite on a database file of the test's own (SQLite has no server
//! to cut, so the suite runs without its proxy scenario).

use std::time::Duration;

use nebula_resource::{Error, ResourceManager};
use nebula_resource_sqlite::{Sqlite, SqliteConfig, sqlx};
use nebula_resource_testing::Conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_conforms() {
    let dir =
        std::env::temp_dir().join(format!("nebula-sqlite-conformance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary folder");
    let config = SqliteConfig::file(dir.join("conformance.db")).create_if_missing(true);
    // Made once, and switched to WAL (which the file keeps), before the suite's pools open
    // several connections at once: on a new file, concurrent opens each switching the journal
    // to WAL can fail with "database is locked" (the switch takes an exclusive lock that
    // `busy_timeout` does not always wait for), and the suite runs without create retries.
    let manager = ResourceManager::builder()
        .register(Sqlite, config.clone())
        .build()
        .await
        .expect("create the database file");
    drop(manager.acquire::<Sqlite>().await.expect("open it once"));
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("close it");
    Conformance::new(Sqlite, config)
        .exercise(|conn| {
            Box::pin(async move {
                sqlx::query("SELECT 1")
                    .execute(&mut *conn)
                    .await
                    .map(drop)
                    .map_err(Error::check)
            })
        })
        .run()
        .await;
    std::fs::remove_dir_all(&dir).ok();
}
