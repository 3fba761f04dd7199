//! [`Sqlite`]: the resource — how a pooled connection is opened, checked, reset and closed.

use nebula_resource::{CreateContext, Error, Resource};
use nebula_resource_sqlx::resource::ConnectError;
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
        let failed =
            |source| Error::create(ConnectError::new("opening", config.to_string(), source));
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
