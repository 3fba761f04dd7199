//! [`SqliteTransaction`]: a transaction on a pooled connection whose statements are watched like
//! the connection's own.

use std::fmt;
use std::ops::{Deref, DerefMut};

use nebula_resource_sqlx::WatchedTransaction;

use crate::connection::{Dialect, Session};

/// A transaction on a [`SqliteConnection`](crate::SqliteConnection), begun with
/// [`SqliteConnection::begin`](crate::SqliteConnection::begin) (or, nested, as a savepoint with
/// [`begin`](Self::begin)).
///
/// Run statements with `&mut tx` as the executor; their errors and effects are watched as on
/// the connection itself. End it with [`commit`](Self::commit) or [`rollback`](Self::rollback).
/// Dropped without either, it is rolled back: sqlx queues the `ROLLBACK` on the connection's
/// worker, and the release makes sure no transaction is left.
///
/// Like the connection, it derefs to sqlx's
/// [`SqliteConnection`](sqlx::sqlite::SqliteConnection); a mutable use of that cannot be watched,
/// so it counts as a change of the connection, which is then closed on release.
pub struct SqliteTransaction<'c> {
    inner: WatchedTransaction<'c, Dialect>,
}

impl<'c> SqliteTransaction<'c> {
    pub(crate) fn new(inner: WatchedTransaction<'c, Dialect>) -> Self {
        Self { inner }
    }

    /// The raw connection and the session record, borrowed apart.
    pub(crate) fn parts(&mut self) -> (&mut sqlx::sqlite::SqliteConnection, &mut Session) {
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
    /// Cancel safe: if the future is dropped before it completes, the connection is rolled
    /// back before it is reused.
    pub async fn begin(&mut self) -> Result<SqliteTransaction<'_>, sqlx::Error> {
        self.inner.begin().await.map(SqliteTransaction::new)
    }

    /// Commit (`COMMIT`, or `RELEASE SAVEPOINT` for a nested transaction).
    ///
    /// # Errors
    ///
    /// The driver's error if the commit fails; the transaction is then rolled back. A fatal
    /// error marks the connection broken.
    ///
    /// # Cancel safety
    ///
    /// If the future is dropped before it completes, whether the transaction committed is
    /// unknown; the connection is rolled back before it is reused.
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
    /// Cancel safe: if the future is dropped before it completes, the connection is rolled
    /// back before it is reused.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

impl Deref for SqliteTransaction<'_> {
    type Target = sqlx::sqlite::SqliteConnection;

    fn deref(&self) -> &sqlx::sqlite::SqliteConnection {
        &self.inner
    }
}

impl DerefMut for SqliteTransaction<'_> {
    /// The raw connection. What is done with it cannot be watched, so the connection counts as
    /// changed.
    fn deref_mut(&mut self) -> &mut sqlx::sqlite::SqliteConnection {
        &mut self.inner
    }
}

impl AsMut<sqlx::sqlite::SqliteConnection> for SqliteTransaction<'_> {
    /// As [`DerefMut`]: the connection counts as changed.
    fn as_mut(&mut self) -> &mut sqlx::sqlite::SqliteConnection {
        self
    }
}

impl fmt::Debug for SqliteTransaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteTransaction")
            .field("broken", &self.inner.session().broken)
            .finish_non_exhaustive()
    }
}
