//! [`PostgresConnection`]: the pooled instance. It wraps sqlx's `PgConnection` and keeps a
//! small record of what was done with it — whether a fatal error was seen, whether the session
//! may have changed, whether an operation was cut off half-way — so that releasing a clean
//! connection costs nothing and a broken one is never handed out again.

use std::fmt;
use std::ops::{Deref, DerefMut};

use nebula_resource::Error;
use nebula_resource_sqlx::{Driver, WatchedConnection};
use sqlx::{Connection, PgConnection};

use crate::config::SessionReset;
use crate::fatal::{is_failed_transaction, is_fatal};
use crate::sql::{Effect, effect_of};
use crate::transaction::PostgresTransaction;

/// The statements that bring a session back to the state of a fresh connection: what
/// `DISCARD ALL` does, except deallocating prepared statements — they are sqlx's statement cache,
/// and `DEALLOCATE ALL` would make every cached statement fail.
macro_rules! reset_statements {
    () => {
        "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; \
         SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES"
    };
}

/// Resets an idle session; sent with `begin_with`, which also tells whether a transaction is
/// open after it (see [`PostgresConnection::reset`]).
const RESET_SESSION: &str = reset_statements!();

/// Ends a failed transaction, then resets. `ROLLBACK` is only ever sent when a transaction is
/// known to be open: on an idle session it would put a warning in the server's log.
const ROLLBACK_AND_RESET: &str = concat!("ROLLBACK; ", reset_statements!());

/// PostgreSQL's rules for the shared statement watching: its classifier and its fatal errors.
pub(crate) struct Dialect;

impl Driver for Dialect {
    type Database = sqlx::Postgres;

    fn effect_of(sql: &str) -> Effect {
        effect_of(sql)
    }

    fn is_fatal(err: &sqlx::Error) -> bool {
        is_fatal(err)
    }
}

/// What the pool knows about a connection's session from the operations it has seen. The
/// classifier never reports [`Effect::Transaction`] (a `BEGIN` counts as a session change), so
/// `changed` covers everything a reset undoes: a statement with a lasting effect ran, or the
/// raw connection was used where its statements could not be seen.
pub(crate) type Session = nebula_resource_sqlx::Session<Dialect>;

/// Whether the session must be reset before the connection is reused.
fn session_needs_reset(session: &Session) -> bool {
    session.changed || session.needs_rollback()
}

/// A pooled PostgreSQL connection: what a [`Guard<Postgres>`](nebula_resource::Guard) derefs to.
///
/// Run statements by passing `&mut *guard` where sqlx wants an executor:
///
/// ```no_run
/// # async fn example(manager: nebula_resource::ResourceManager) -> Result<(), Box<dyn std::error::Error>> {
/// use nebula_resource_postgres::{Postgres, sqlx};
///
/// let mut conn = manager.acquire::<Postgres>().await?;
/// sqlx::query("UPDATE jobs SET state = 'done' WHERE id = $1")
///     .bind(7_i64)
///     .execute(&mut *conn)
///     .await?;
/// let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'pending'")
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
/// - a **fatal error** ([`is_fatal`](crate::is_fatal): I/O, a terminated backend, a server
///   shutting down) marks the connection broken, and the pool destroys it when the guard is
///   dropped instead of handing it to the next user;
/// - a statement that may **change the session** (`BEGIN`, `SET`, `CREATE TEMP TABLE`,
///   `LISTEN`, `set_config(…)`, …) or an operation **cancelled half-way** marks it dirty, and
///   the release resets the session (one round trip) before the connection is reused.
///
/// A connection used only for plain queries and committed [`PostgresTransaction`]s is released
/// with no round trip at all.
///
/// It also derefs to sqlx's [`PgConnection`], for what only that offers (`copy_in_raw`,
/// `PgAdvisoryLock`, functions that take `&mut PgConnection`). What happens through the raw
/// connection cannot be watched, so any mutable use of it (`&mut **guard`) marks the connection
/// dirty: it works, and costs the reset round trip on release, which also finds out whether the
/// connection is still alive.
pub struct PostgresConnection {
    inner: WatchedConnection<Dialect>,
    reset: SessionReset,
    backend_pid: i32,
}

impl PostgresConnection {
    pub(crate) fn new(conn: PgConnection, backend_pid: i32, reset: SessionReset) -> Self {
        Self {
            inner: WatchedConnection::new(conn),
            reset,
            backend_pid,
        }
    }

    /// The process id of the server backend serving this connection, as `pg_backend_pid()`
    /// returns it: for `pg_stat_activity`, `pg_cancel_backend` and matching server log lines.
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// The raw connection and the session record, borrowed apart.
    pub(crate) fn parts(&mut self) -> (&mut PgConnection, &mut Session) {
        self.inner.parts()
    }

    /// Begin a transaction. Run its statements with `&mut tx`, then
    /// [`commit`](PostgresTransaction::commit) it; dropped without a commit, it is rolled back.
    ///
    /// # Errors
    ///
    /// The driver's error if `BEGIN` fails; a fatal one marks the connection broken.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the connection is reset
    /// (rolling back a transaction that may have begun) before it is reused.
    pub async fn begin(&mut self) -> Result<PostgresTransaction<'_>, sqlx::Error> {
        self.inner.begin().await.map(PostgresTransaction::new)
    }

    /// Whether a fatal error was seen on this connection. A broken connection is destroyed when
    /// its guard is dropped; statements on it fail.
    pub fn is_broken(&self) -> bool {
        self.inner.session().broken
    }

    /// Whether the session will be reset (one round trip) when the guard is dropped: it may
    /// have changed, an operation was cut off, a transaction is open, the raw connection was
    /// used mutably, or the configuration says [`SessionReset::Always`].
    pub fn needs_reset(&self) -> bool {
        self.reset == SessionReset::Always
            || session_needs_reset(self.inner.session())
            || self.inner.is_in_transaction()
    }

    /// Have the session reset on release although nothing the pool could see changed it: after
    /// calling a function of your own that sets a setting or takes a session lock.
    pub fn mark_dirty(&mut self) {
        self.inner.session_mut().changed = true;
    }

    /// The sqlx connection, for good (after [`Guard::detach`](nebula_resource::Guard::detach)).
    pub fn into_inner(self) -> PgConnection {
        self.inner.into_inner()
    }

    /// A round trip: a `Sync` message answered by `ReadyForQuery`. Also reads whatever an
    /// earlier, cancelled operation left on the wire.
    pub(crate) async fn ping(&mut self) -> Result<(), sqlx::Error> {
        self.inner.ping().await
    }

    /// Bring the session back to the state of a fresh connection, if it may have left it.
    ///
    /// sqlx keeps the server's transaction status private, but `begin_with` reports it: it
    /// runs a statement and fails with `BeginFailed` unless a transaction is open afterwards.
    /// Running the reset statements that way costs one round trip on an idle session — the
    /// usual case — and finds out whether a transaction was left open, which then is rolled
    /// back and the session reset again (two more statements, pipelined in one round trip).
    /// A failed transaction rejects the reset with `25P02`; it is rolled back and reset in one
    /// more round trip.
    pub(crate) async fn reset(&mut self) -> Result<(), Error> {
        if self.inner.session().broken {
            return Err(Error::recycle("the connection hit a fatal error"));
        }
        if self.inner.is_in_transaction() {
            // Only a `Transaction` that was never dropped (`mem::forget`) leaves sqlx counting
            // one open; sqlx offers no way to settle its count, so the connection cannot be
            // trusted.
            return Err(Error::recycle(
                "sqlx still counts a transaction open on this connection (a `Transaction` was \
                 leaked)",
            ));
        }
        if !self.needs_reset() {
            return Ok(());
        }
        let (conn, session) = self.inner.parts();
        session.start(Effect::Contained);
        let reset = reset_session(conn).await;
        session.finish(reset.as_ref().err());
        match reset {
            Ok(()) => {
                *session = Session::default();
                Ok(())
            }
            Err(err) => Err(Error::recycle(err)),
        }
    }

    /// Close gracefully (a `Terminate` message), unless the connection is known broken.
    pub(crate) async fn close(self) {
        if self.inner.session().broken {
            return;
        }
        // Best effort: the socket is closed when the connection drops either way.
        let _ = self.inner.into_inner().close().await;
    }
}

/// See [`PostgresConnection::reset`].
async fn reset_session(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let left_open = match conn.begin_with(RESET_SESSION).await {
        // Nothing open after the reset: the session was idle, and is now reset.
        Err(sqlx::Error::BeginFailed) => return Ok(()),
        // The reset ran inside a transaction left open. Dropping it queues its `ROLLBACK`,
        // which goes out in one write with the second reset.
        Ok(open) => {
            drop(open);
            true
        }
        Err(err) if is_failed_transaction(&err) => false,
        Err(err) => return Err(err),
    };
    if !left_open {
        return sqlx::raw_sql(ROLLBACK_AND_RESET)
            .execute(conn)
            .await
            .map(drop);
    }
    match conn.begin_with(RESET_SESSION).await {
        Err(sqlx::Error::BeginFailed) => Ok(()),
        Ok(_) => Err(sqlx::Error::Protocol(
            "a transaction is still open after ROLLBACK".to_owned(),
        )),
        Err(err) => Err(err),
    }
}

impl Deref for PostgresConnection {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.inner
    }
}

impl DerefMut for PostgresConnection {
    /// The raw connection. What is done with it cannot be watched, so the session counts as
    /// changed: it is reset on release.
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.inner
    }
}

impl AsMut<PgConnection> for PostgresConnection {
    /// As [`DerefMut`]: the session counts as changed.
    fn as_mut(&mut self) -> &mut PgConnection {
        self
    }
}

impl fmt::Debug for PostgresConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConnection")
            .field("backend_pid", &self.backend_pid)
            .field("broken", &self.inner.session().broken)
            .field("needs_reset", &self.needs_reset())
            .field("server_version", &self.inner.server_version_num())
            .finish()
    }
}
