//! [`PostgresTransaction`]: a transaction on a pooled connection whose statements are watched
//! like the connection's own.

use std::fmt;
use std::ops::{Deref, DerefMut};

use nebula_resource_sqlx::WatchedTransaction;
use sqlx::PgConnection;

use crate::connection::{Dialect, Session};

/// A transaction on a [`PostgresConnection`](crate::PostgresConnection), begun with
/// [`PostgresConnection::begin`](crate::PostgresConnection::begin) (or, nested, as a savepoint
/// with [`begin`](Self::begin)).
///
/// Run statements with `&mut tx` as the executor; their errors and effects are watched as on
/// the connection itself. End it with [`commit`](Self::commit) or [`rollback`](Self::rollback).
/// Dropped without either, it is rolled back: sqlx sends the `ROLLBACK` before the connection's
/// next statement, and the pool resets the session on release.
///
/// Like the connection, it derefs to sqlx's [`PgConnection`]; a mutable use of that (such as
/// `&mut *tx`) works but cannot be watched, so the session is reset on release.
pub struct PostgresTransaction<'c> {
    inner: WatchedTransaction<'c, Dialect>,
}

impl<'c> PostgresTransaction<'c> {
    pub(crate) fn new(inner: WatchedTransaction<'c, Dialect>) -> Self {
        Self { inner }
    }

    /// The raw connection and the session record, borrowed apart.
    pub(crate) fn parts(&mut self) -> (&mut PgConnection, &mut Session) {
        self.inner.parts()
    }

    /// Begin a nested transaction: a savepoint, released by its `commit` and rolled back to by
    /// its `rollback`.
    ///
    /// # Errors
    ///
    /// The driver's error if `SAVEPOINT` fails; a fatal one marks the connection broken.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the connection is reset
    /// before it is reused.
    pub async fn begin(&mut self) -> Result<PostgresTransaction<'_>, sqlx::Error> {
        self.inner.begin().await.map(PostgresTransaction::new)
    }

    /// Commit (`COMMIT`, or `RELEASE SAVEPOINT` for a nested transaction).
    ///
    /// # Errors
    ///
    /// The driver's error if the commit fails (a deferred constraint, a serialization failure);
    /// the transaction is then rolled back. A fatal error marks the connection broken.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it completes, whether the transaction committed is
    /// unknown; the connection is reset before it is reused.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await
    }

    /// Roll back (`ROLLBACK`, or `ROLLBACK TO SAVEPOINT` for a nested transaction).
    ///
    /// # Errors
    ///
    /// The driver's error if the rollback fails; a fatal one marks the connection broken.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, the connection is reset
    /// before it is reused.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

impl Deref for PostgresTransaction<'_> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.inner
    }
}

impl DerefMut for PostgresTransaction<'_> {
    /// The raw connection. What is done with it cannot be watched, so the session counts as
    /// changed: it is reset on release.
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.inner
    }
}

impl AsMut<PgConnection> for PostgresTransaction<'_> {
    /// As [`DerefMut`]: the session counts as changed.
    fn as_mut(&mut self) -> &mut PgConnection {
        self
    }
}

impl fmt::Debug for PostgresTransaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresTransaction")
            .field("broken", &self.inner.session().broken)
            .finish_non_exhaustive()
    }
}
