//! [`Sqlite`]: the resource — how a pooled connection is opened, checked, reset and closed.

use std::error::Error as StdError;
use std::fmt;

use nebula_resource::{CreateContext, Error, Resource};
use sqlx::ConnectOptions;

use crate::config::SqliteConfig;
use crate::connection::SqliteConnection;

/// The SQLite resource: a pool of [`SqliteConnection`]s, one per guard, to a database file or to
/// an in-memory database shared by the whole pool.
///
/// Register it with a [`SqliteConfig`]; acquire a [`Guard<Sqlite>`](nebula_resource::Guard) and
/// pass `&mut *guard` to sqlx. The hooks:
///
/// | Hook | What it does |
/// |---|---|
/// | `create` | opens the database and applies the settings (journal mode, busy timeout, foreign keys, synchronous); for an in-memory database, first opens the connection that keeps it alive |
/// | `check` | makes sure the connection's worker thread answers, for connections idle longer than the pool's `validate_after_idle` |
/// | `is_broken` | whether a fatal error ([`is_fatal`](crate::is_fatal)) was seen or the connection's settings changed: no call into SQLite |
/// | `recycle` | nothing for a clean connection; a rollback if a transaction may be open |
/// | `destroy` | closes the connection and ends its worker thread |
#[derive(Debug, Clone, Copy, Default)]
pub struct Sqlite;

impl Resource for Sqlite {
    type Config = SqliteConfig;
    type Instance = SqliteConnection;
    const KEY: &'static str = "sqlite";

    async fn create(
        &self,
        config: &SqliteConfig,
        _ctx: &CreateContext,
    ) -> Result<SqliteConnection, Error> {
        let options = config.connect_options()?;
        let failed = |source| {
            Error::create(OpenError {
                target: config.to_string(),
                source,
            })
        };
        if let Some(memory) = config.memory() {
            memory.keep_alive(&options).await.map_err(failed)?;
        }
        let conn = options.connect().await.map_err(failed)?;
        Ok(SqliteConnection::new(conn))
    }

    async fn check(&self, conn: &mut SqliteConnection) -> Result<(), Error> {
        conn.ping().await.map_err(Error::check)
    }

    fn is_broken(&self, conn: &SqliteConnection) -> bool {
        conn.must_retire()
    }

    async fn recycle(&self, conn: &mut SqliteConnection) -> Result<(), Error> {
        conn.reset().await
    }

    async fn destroy(&self, conn: SqliteConnection) {
        conn.close().await;
    }
}

/// A failed open: which database, and the driver's error.
#[derive(Debug)]
struct OpenError {
    target: String,
    source: sqlx::Error,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "opening {}: {}", self.target, self.source)
    }
}

impl StdError for OpenError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}
