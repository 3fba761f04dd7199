//! Bad configurations are rejected by `build()` naming the field; a database that cannot be
//! opened fails with a create error naming it.

mod common;

use std::time::Duration;

use nebula_resource::{ErrorKind, ResourceManager};
use nebula_resource_sqlite::sqlx::sqlite::SqliteJournalMode;
use nebula_resource_sqlite::{Sqlite, SqliteConfig};

#[tokio::test]
async fn bad_configs_are_rejected_by_build_naming_the_field() {
    let cases = [
        (SqliteConfig::file(""), "path"),
        (SqliteConfig::file(":memory:"), "path"),
        (SqliteConfig::new(""), "url"),
        (SqliteConfig::new("data.db"), "url"),
        (SqliteConfig::new("postgres://localhost/db"), "url"),
        (SqliteConfig::new("sqlite://"), "url"),
        (SqliteConfig::new("sqlite:data.db?mode=sometimes"), "url"),
        (SqliteConfig::new("sqlite:data.db?busy_timeout=5"), "url"),
        (
            SqliteConfig::in_memory().busy_timeout(Duration::ZERO),
            "busy_timeout",
        ),
        (
            SqliteConfig::in_memory().busy_timeout(Duration::from_secs(86_400)),
            "busy_timeout",
        ),
        (
            SqliteConfig::in_memory().statement_cache_capacity(0),
            "statement_cache_capacity",
        ),
        (
            SqliteConfig::in_memory().journal_mode(SqliteJournalMode::Wal),
            "journal_mode",
        ),
    ];
    for (config, field) in cases {
        let shown = format!("{config:?}");
        let err = ResourceManager::builder()
            .register(Sqlite, config)
            .build()
            .await
            .expect_err("rejected");
        assert_eq!(err.kind(), ErrorKind::Config, "{shown}: {err}");
        assert_eq!(err.field(), Some(field), "{shown}: {err}");
        let text = err.to_string();
        assert!(text.contains("resource `sqlite`"), "{text}");
        assert!(text.contains(&format!("field `{field}`")), "{text}");
    }
}

#[tokio::test]
async fn a_database_in_a_missing_directory_fails_to_open_naming_it() {
    let path = std::env::temp_dir()
        .join(format!("nebula-sqlite-no-such-dir-{}", std::process::id()))
        .join("app.db");
    let manager = ResourceManager::builder()
        .register(Sqlite, SqliteConfig::file(&path))
        .build()
        .await
        .unwrap();
    let err = manager.acquire::<Sqlite>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Create, "{err}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("unable to open database file"), "{text}");
}
