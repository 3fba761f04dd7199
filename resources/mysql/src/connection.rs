//! [`MySqlConnection`]: the pooled instance. It wraps sqlx's connection and keeps a small record
//! of what was done with it — whether a fatal error was seen, whether a transaction may be
//! open, whether the session may have changed, whether an operation was cut off half-way — so
//! that releasing a clean connection costs nothing and a broken one is never handed out again.

use std::fmt;
use std::ops::{Deref, DerefMut};

use nebula_resource::Error;
use nebula_resource_sqlx::{Driver, WatchedConnection};
use sqlx::{Connection, SqlSafeStr};

use crate::config::OnSessionChange;
use crate::fatal::is_fatal;
use crate::sql::{Effect, effect_of};
use crate::transaction::MySqlTransaction;

/// Ends any transaction, in one round trip. Sent when a transaction may be open: a
/// transaction-control statement ran, a [`MySqlTransaction`] was dropped unfinished, or an
/// operation was cut off. sqlx first reads whatever an earlier, cut-off operation left on the
/// wire, and sends a `ROLLBACK` it queued for a dropped transaction. `ROLLBACK` also clears the
/// one-shot characteristics of `SET TRANSACTION`.
const ROLLBACK: &str = "ROLLBACK";

/// What [`OnSessionChange::Keep`] resets, in one round trip: the transaction, table locks (and
/// `FLUSH TABLES WITH READ LOCK`), and named locks taken with `GET_LOCK`.
const KEEP_RESET: &str = "ROLLBACK; UNLOCK TABLES; DO RELEASE_ALL_LOCKS()";

/// MySQL's rules for the shared statement watching: its classifier and its fatal errors.
pub(crate) struct Dialect;

impl Driver for Dialect {
    type Database = sqlx::MySql;

    fn effect_of(sql: &str) -> Effect {
        effect_of(sql)
    }

    fn is_fatal(err: &sqlx::Error) -> bool {
        is_fatal(err)
    }
}

/// What the pool knows about a connection's session from the operations it has seen.
pub(crate) type Session = nebula_resource_sqlx::Session<Dialect>;

/// A pooled MySQL or MariaDB connection: what a [`Guard<MySql>`](nebula_resource::Guard) derefs
/// to.
///
/// Run statements by passing `&mut *guard` where sqlx wants an executor:
///
/// ```no_run
/// # async fn example(manager: nebula_resource::ResourceManager) -> Result<(), Box<dyn std::error::Error>> {
/// use nebula_resource_mysql::{MySql, sqlx};
///
/// let mut conn = manager.acquire::<MySql>().await?;
/// sqlx::query("UPDATE jobs SET state = 'done' WHERE id = ?")
///     .bind(7_i64)
///     .execute(&mut *conn)
///     .await?;
/// let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE state = 'pending'")
///     .fetch_one(&mut *conn)
///     .await?;
///
/// let mut tx = conn.begin().await?;
/// sqlx::query("DELETE FROM jobs WHERE state = 'done'").execute(&mut tx).await?;
/// tx.commit().await?;
/// # let _ = pending; Ok(()) }
/// ```
///
/// Every statement run this way is watched:
///
/// - a **fatal error** ([`is_fatal`](crate::is_fatal): I/O, a killed connection, a server
///   shutting down) marks the connection broken, and the pool destroys it when the guard is
///   dropped instead of handing it to the next user;
/// - **transaction control** (`BEGIN`, `START TRANSACTION`, `COMMIT`, `SAVEPOINT`,
///   `SET TRANSACTION`), a [`MySqlTransaction`] dropped without `commit` or `rollback`, or an
///   operation **cut off half-way** (its future dropped) makes the release send one `ROLLBACK`
///   before the connection is reused;
/// - a statement that may **change the session** beyond its transaction (`SET`, `USE`,
///   `CREATE TEMPORARY TABLE`, `LOCK TABLES`, `GET_LOCK`, `PREPARE`, `CALL`, …) is handled as
///   [`OnSessionChange`](crate::OnSessionChange) says: by default the connection is closed
///   and replaced, so no user ever sees another's session state.
///
/// A connection used only for plain queries and committed (or rolled back)
/// [`MySqlTransaction`]s goes back to the pool with no round trip at all.
///
/// Values the server keeps about the last statement — `LAST_INSERT_ID()`, `ROW_COUNT()`,
/// `FOUND_ROWS()`, warnings — are not reset.
///
/// It also derefs to sqlx's [`MySqlConnection`](sqlx::mysql::MySqlConnection), for what only
/// that offers (functions of your own that take `&mut sqlx::mysql::MySqlConnection`). What
/// happens through the raw connection cannot be watched, so any mutable use of it
/// (`&mut **guard`) counts as a session change: it works, and the connection is then retired
/// (or reset, with [`OnSessionChange::Keep`](crate::OnSessionChange::Keep)) on release.
pub struct MySqlConnection {
    inner: WatchedConnection<Dialect>,
    policy: OnSessionChange,
}

impl MySqlConnection {
    pub(crate) fn new(conn: sqlx::mysql::MySqlConnection, policy: OnSessionChange) -> Self {
        Self {
            inner: WatchedConnection::new(conn),
            policy,
        }
    }

    /// The raw connection and the session record, borrowed apart.
    pub(crate) fn parts(&mut self) -> (&mut sqlx::mysql::MySqlConnection, &mut Session) {
        self.inner.parts()
    }

    /// Begin a transaction (`BEGIN`). Run its statements with `&mut tx`, then
    /// [`commit`](MySqlTransaction::commit) it; dropped without a commit, it is rolled back.
    ///
    /// # Errors
    ///
    /// The driver's error if `BEGIN` fails; a fatal one marks the connection broken.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the connection is rolled
    /// back before it is reused.
    pub async fn begin(&mut self) -> Result<MySqlTransaction<'_>, sqlx::Error> {
        self.inner.begin().await.map(MySqlTransaction::new)
    }

    /// Begin a transaction with a statement of your own, such as
    /// `START TRANSACTION READ ONLY` or `START TRANSACTION WITH CONSISTENT SNAPSHOT`.
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
    ) -> Result<MySqlTransaction<'_>, sqlx::Error> {
        self.inner
            .begin_with(statement.into_sql_str())
            .await
            .map(MySqlTransaction::new)
    }

    /// One round trip (`COM_PING`). Also reads whatever an earlier, cut-off operation left on
    /// the wire.
    ///
    /// # Errors
    ///
    /// The driver's error; a fatal one marks the connection broken.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the connection is rolled
    /// back (and so its state read) before it is reused.
    pub async fn ping(&mut self) -> Result<(), sqlx::Error> {
        self.inner.ping().await
    }

    /// Whether a fatal error was seen on this connection. A broken connection is destroyed when
    /// its guard is dropped; statements on it fail.
    pub fn is_broken(&self) -> bool {
        self.inner.session().broken
    }

    /// Whether the session may have changed beyond its transaction (see
    /// [`OnSessionChange`](crate::OnSessionChange)).
    pub fn is_session_changed(&self) -> bool {
        self.inner.session().changed
    }

    /// Count the session as changed although nothing the pool could see changed it: after
    /// calling a stored function of your own that sets a variable or takes a lock.
    pub fn mark_session_changed(&mut self) {
        self.inner.session_mut().changed = true;
    }

    /// Tell the pool about an error from an operation it could not watch (one run on the raw
    /// connection): a fatal one ([`is_fatal`](crate::is_fatal)) marks the connection broken.
    /// Returns whether it was fatal.
    pub fn record_error(&mut self, err: &sqlx::Error) -> bool {
        self.inner.record_error(err)
    }

    /// The sqlx connection, for good (after [`Guard::detach`](nebula_resource::Guard::detach)).
    pub fn into_inner(self) -> sqlx::mysql::MySqlConnection {
        self.inner.into_inner()
    }

    /// Whether the pool must not reuse this connection: it is broken, its session changed under
    /// [`OnSessionChange::Retire`], or sqlx still counts a transaction open on it (only a
    /// `Transaction` that was never dropped does that, and sqlx offers no way to settle its
    /// count). Cheap: no I/O.
    pub(crate) fn must_retire(&self) -> bool {
        let session = self.inner.session();
        session.broken
            || (session.changed && self.policy == OnSessionChange::Retire)
            || self.inner.is_in_transaction()
    }

    /// Bring the connection back to a state fit for the next user: nothing to do for a clean
    /// connection (the future is ready at once), one round trip otherwise.
    pub(crate) async fn reset(&mut self) -> Result<(), Error> {
        if self.must_retire() {
            return Err(Error::recycle(
                "the connection is broken, its session changed, or a transaction was leaked",
            ));
        }
        let (conn, session) = self.inner.parts();
        let sql = if session.changed {
            KEEP_RESET
        } else if session.needs_rollback() {
            ROLLBACK
        } else {
            return Ok(());
        };
        session.start(Effect::Contained);
        let reset = sqlx::raw_sql(sql).execute(conn).await;
        session.finish(reset.as_ref().err());
        match reset {
            Ok(_) => {
                // `changed` stays: a session changed under `Keep` (say, `autocommit = 0`) is
                // reset on every release from now on.
                session.transaction = false;
                session.open_transactions = 0;
                Ok(())
            }
            Err(err) => Err(Error::recycle(err)),
        }
    }

    /// Close gracefully (`COM_QUIT`), unless the connection is known broken.
    pub(crate) async fn close(self) {
        if self.inner.session().broken {
            return;
        }
        if let Err(err) = self.inner.into_inner().close().await {
            tracing::debug!(error = %err, "closing a mysql connection failed");
        }
    }
}

impl Deref for MySqlConnection {
    type Target = sqlx::mysql::MySqlConnection;

    fn deref(&self) -> &sqlx::mysql::MySqlConnection {
        &self.inner
    }
}

impl DerefMut for MySqlConnection {
    /// The raw connection. What is done with it cannot be watched, so the session counts as
    /// changed.
    fn deref_mut(&mut self) -> &mut sqlx::mysql::MySqlConnection {
        &mut self.inner
    }
}

impl AsMut<sqlx::mysql::MySqlConnection> for MySqlConnection {
    /// As [`DerefMut`]: the session counts as changed.
    fn as_mut(&mut self) -> &mut sqlx::mysql::MySqlConnection {
        self
    }
}

impl fmt::Debug for MySqlConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlConnection")
            .field("broken", &self.inner.session().broken)
            .field("session_changed", &self.inner.session().changed)
            .field("needs_rollback", &self.inner.session().needs_rollback())
            .field("on_session_change", &self.policy)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use nebula_resource_sqlx::begin_statement_effect;

    use super::{Dialect, Effect, Session};

    #[test]
    fn fatal_errors_break_the_connection() {
        let mut session = Session::default();
        session.start(Effect::Contained);
        session.finish(Some(&sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "eof",
        ))));
        assert!(session.broken);
    }

    #[test]
    fn begin_statements_only_count_their_session_effects() {
        assert_eq!(
            begin_statement_effect::<Dialect>("START TRANSACTION READ ONLY"),
            Effect::Contained
        );
        assert_eq!(
            begin_statement_effect::<Dialect>("SET @x = 1; START TRANSACTION"),
            Effect::Session
        );
    }
}
