//! [`SqliteConnection`]: the pooled instance. It wraps sqlx's connection and keeps a small
//! record of what was done with it — whether a fatal error was seen, whether a transaction may
//! be open, whether the connection's settings may have changed, whether an operation was cut off
//! half-way — so that releasing a clean connection costs nothing and a broken one is never
//! handed out again.

use std::fmt;
use std::ops::{Deref, DerefMut};

use nebula_resource::Error;
use nebula_resource_sqlx::{Driver, WatchedConnection};
use sqlx::{Connection, SqlSafeStr};

use crate::fatal::is_fatal;
use crate::sql::{Effect, effect_of};
use crate::transaction::SqliteTransaction;

/// Ends any transaction, whether or not one is open: `SAVEPOINT` starts one if none is open (or
/// nests in the open one), and `ROLLBACK` without `TO` rolls back the whole transaction. (A bare
/// `ROLLBACK` fails when no transaction is open.) The command queue of sqlx's worker runs it
/// after anything queued before, such as the `ROLLBACK` of a dropped transaction.
const RESET: &str = "SAVEPOINT nebula_reset; ROLLBACK";

/// SQLite's rules for the shared statement watching: its classifier and its fatal errors.
pub(crate) struct Dialect;

impl Driver for Dialect {
    type Database = sqlx::Sqlite;

    fn effect_of(sql: &str) -> Effect {
        effect_of(sql)
    }

    fn is_fatal(err: &sqlx::Error) -> bool {
        is_fatal(err)
    }
}

/// What the pool knows about a connection from the operations it has seen.
pub(crate) type Session = nebula_resource_sqlx::Session<Dialect>;

/// A pooled SQLite connection: what a [`Guard<Sqlite>`](nebula_resource::Guard) derefs to.
///
/// Run statements by passing `&mut *guard` where sqlx wants an executor:
///
/// ```no_run
/// # async fn example(manager: nebula_resource::ResourceManager) -> Result<(), Box<dyn std::error::Error>> {
/// use nebula_resource_sqlite::{Sqlite, sqlx};
///
/// let mut conn = manager.acquire::<Sqlite>().await?;
/// sqlx::query("INSERT INTO notes (body) VALUES (?)")
///     .bind("hello")
///     .execute(&mut *conn)
///     .await?;
///
/// let mut tx = conn.begin().await?;
/// sqlx::query("DELETE FROM notes WHERE body = ''").execute(&mut tx).await?;
/// tx.commit().await?;
/// # Ok(()) }
/// ```
///
/// Every statement run this way is watched:
///
/// - a **fatal error** ([`is_fatal`](crate::is_fatal): an I/O error, a corrupt or vanished
///   database file, a crashed worker thread) marks the connection broken, and the pool destroys
///   it when the guard is dropped;
/// - **transaction control** (`BEGIN`, `SAVEPOINT`, `COMMIT`, `END`, `ROLLBACK`, `RELEASE`), a
///   [`SqliteTransaction`] dropped unfinished, or an operation **cut off half-way** makes the
///   release roll back before the connection is reused;
/// - a statement that may **change the connection** beyond its transaction (a `PRAGMA`
///   setting, `ATTACH`, `DETACH`, a temporary table, view or trigger, a statement not
///   recognised) makes the pool close the connection and open a new one when needed.
///
/// A connection used only for plain statements and finished [`SqliteTransaction`]s goes back
/// to the pool at once, with no call into SQLite.
///
/// It also derefs to sqlx's [`SqliteConnection`](sqlx::sqlite::SqliteConnection), for what only
/// that offers (`lock_handle`, hooks, functions of your own that take
/// `&mut sqlx::sqlite::SqliteConnection`). What happens through the raw connection cannot be
/// watched, so any mutable use of it (`&mut **guard`) counts as a change: the connection is
/// closed on release.
pub struct SqliteConnection {
    inner: WatchedConnection<Dialect>,
}

impl SqliteConnection {
    pub(crate) fn new(conn: sqlx::sqlite::SqliteConnection) -> Self {
        Self {
            inner: WatchedConnection::new(conn),
        }
    }

    /// The raw connection and the session record, borrowed apart.
    pub(crate) fn parts(&mut self) -> (&mut sqlx::sqlite::SqliteConnection, &mut Session) {
        self.inner.parts()
    }

    /// Begin a transaction (`BEGIN`, deferred). Run its statements with `&mut tx`, then
    /// [`commit`](SqliteTransaction::commit) it; dropped without a commit, it is rolled back.
    ///
    /// # Errors
    ///
    /// The driver's error if `BEGIN` fails; a fatal one marks the connection broken.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the connection is rolled
    /// back before it is reused.
    pub async fn begin(&mut self) -> Result<SqliteTransaction<'_>, sqlx::Error> {
        self.inner.begin().await.map(SqliteTransaction::new)
    }

    /// Begin a transaction with a statement of your own: `BEGIN IMMEDIATE` takes the write lock
    /// at once, so a read-then-write transaction cannot fail with `SQLITE_BUSY` half-way.
    ///
    /// # Errors
    ///
    /// The driver's error if the statement fails or does not start a transaction
    /// (`sqlx::Error::BeginFailed`); a fatal one marks the connection broken.
    ///
    /// # Cancel safety
    ///
    /// As [`begin`](Self::begin).
    pub async fn begin_with(
        &mut self,
        statement: impl SqlSafeStr,
    ) -> Result<SqliteTransaction<'_>, sqlx::Error> {
        self.inner
            .begin_with(statement.into_sql_str())
            .await
            .map(SqliteTransaction::new)
    }

    /// Make sure the connection's worker thread is alive and answering.
    ///
    /// # Errors
    ///
    /// `sqlx::Error::WorkerCrashed` if it is not; that marks the connection broken.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the connection is rolled
    /// back before it is reused.
    pub async fn ping(&mut self) -> Result<(), sqlx::Error> {
        self.inner.ping().await
    }

    /// Whether a fatal error was seen on this connection. A broken connection is destroyed when
    /// its guard is dropped.
    pub fn is_broken(&self) -> bool {
        self.inner.session().broken
    }

    /// Whether the connection may have changed beyond its transaction; it is then closed on
    /// release.
    pub fn is_session_changed(&self) -> bool {
        self.inner.session().changed
    }

    /// Count the connection as changed although nothing the pool could see changed it (it is
    /// then closed on release): after registering a function or a hook of your own through the
    /// raw connection's handle.
    pub fn mark_session_changed(&mut self) {
        self.inner.session_mut().changed = true;
    }

    /// Tell the pool about an error from an operation it could not watch: a fatal one
    /// ([`is_fatal`](crate::is_fatal)) marks the connection broken. Returns whether it was
    /// fatal.
    pub fn record_error(&mut self, err: &sqlx::Error) -> bool {
        self.inner.record_error(err)
    }

    /// The sqlx connection, for good (after [`Guard::detach`](nebula_resource::Guard::detach)).
    pub fn into_inner(self) -> sqlx::sqlite::SqliteConnection {
        self.inner.into_inner()
    }

    /// Whether the pool must not reuse this connection: it is broken, it changed, or sqlx still
    /// counts a transaction open on it (only a `Transaction` that was never dropped does that,
    /// and sqlx offers no way to settle its count). Cheap: no call into SQLite.
    pub(crate) fn must_retire(&self) -> bool {
        let session = self.inner.session();
        session.broken || session.changed || self.inner.is_in_transaction()
    }

    /// Bring the connection back to a state fit for the next user: nothing to do for a clean
    /// connection (the future is ready at once), one call into SQLite otherwise.
    pub(crate) async fn reset(&mut self) -> Result<(), Error> {
        if self.must_retire() {
            return Err(Error::recycle(
                "the connection is broken, changed, or a transaction was leaked",
            ));
        }
        let (conn, session) = self.inner.parts();
        if !session.needs_rollback() {
            return Ok(());
        }
        session.start(Effect::Contained);
        let reset = sqlx::raw_sql(RESET).execute(conn).await;
        session.finish(reset.as_ref().err());
        match reset {
            Ok(_) => {
                session.transaction = false;
                session.open_transactions = 0;
                Ok(())
            }
            Err(err) => Err(Error::recycle(err)),
        }
    }

    /// Close gracefully (finalize statements, close the database, end the worker thread).
    pub(crate) async fn close(self) {
        if let Err(err) = self.inner.into_inner().close().await {
            tracing::debug!(error = %err, "closing a sqlite connection failed");
        }
    }
}

impl Deref for SqliteConnection {
    type Target = sqlx::sqlite::SqliteConnection;

    fn deref(&self) -> &sqlx::sqlite::SqliteConnection {
        &self.inner
    }
}

impl DerefMut for SqliteConnection {
    /// The raw connection. What is done with it cannot be watched, so the connection counts as
    /// changed.
    fn deref_mut(&mut self) -> &mut sqlx::sqlite::SqliteConnection {
        &mut self.inner
    }
}

impl AsMut<sqlx::sqlite::SqliteConnection> for SqliteConnection {
    /// As [`DerefMut`]: the connection counts as changed.
    fn as_mut(&mut self) -> &mut sqlx::sqlite::SqliteConnection {
        self
    }
}

impl fmt::Debug for SqliteConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteConnection")
            .field("broken", &self.inner.session().broken)
            .field("session_changed", &self.inner.session().changed)
            .field("needs_rollback", &self.inner.session().needs_rollback())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use nebula_resource_sqlx::begin_statement_effect;

    use super::{Dialect, Effect, Session};

    #[test]
    fn a_crashed_worker_breaks_the_connection() {
        let mut session = Session::default();
        session.start(Effect::Contained);
        session.finish(Some(&sqlx::Error::WorkerCrashed));
        assert!(session.broken);
    }

    #[test]
    fn begin_statements_only_count_their_session_effects() {
        assert_eq!(
            begin_statement_effect::<Dialect>("BEGIN IMMEDIATE"),
            Effect::Contained
        );
        assert_eq!(
            begin_statement_effect::<Dialect>("PRAGMA foreign_keys = OFF; BEGIN"),
            Effect::Session
        );
    }
}
