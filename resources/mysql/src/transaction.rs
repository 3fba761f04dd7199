//! [`MySqlTransaction`]: a transaction on a pooled connection whose statements are watched like
//! the connection's own.

use std::fmt;
use std::ops::{Deref, DerefMut};

use nebula_resource_sqlx::WatchedTransaction;

use crate::connection::{Dialect, Session};

/// A transaction on a [`MySqlConnection`](crate::MySqlConnection), begun with
/// [`MySqlConnection::begin`](crate::MySqlConnection::begin) (or, nested, as a savepoint with
/// [`begin`](Self::begin)).
///
/// Run statements with `&mut tx` as the executor; their errors and effects are watched as on
/// the connection itself. End it with [`commit`](Self::commit) or [`rollback`](Self::rollback).
/// Dropped without either, it is rolled back: sqlx queues the `ROLLBACK`, and the pool sends
/// it on release at the latest.
///
/// Like the connection, it derefs to sqlx's
/// [`MySqlConnection`](sqlx::mysql::MySqlConnection); a mutable use of that cannot be watched,
/// so it counts as a session change.
pub struct MySqlTransaction<'c> {
    inner: WatchedTransaction<'c, Dialect>,
}

impl<'c> MySqlTransaction<'c> {
    pub(crate) fn new(inner: WatchedTransaction<'c, Dialect>) -> Self {
        Self { inner }
    }

    /// The raw connection and the session record, borrowed apart.
    pub(crate) fn parts(&mut self) -> (&mut sqlx::mysql::MySqlConnection, &mut Session) {
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
    pub async fn begin(&mut self) -> Result<MySqlTransaction<'_>, sqlx::Error> {
        self.inner.begin().await.map(MySqlTransaction::new)
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

impl Deref for MySqlTransaction<'_> {
    type Target = sqlx::mysql::MySqlConnection;

    fn deref(&self) -> &sqlx::mysql::MySqlConnection {
        &self.inner
    }
}

impl DerefMut for MySqlTransaction<'_> {
    /// The raw connection. What is done with it cannot be watched, so the session counts as
    /// changed.
    fn deref_mut(&mut self) -> &mut sqlx::mysql::MySqlConnection {
        &mut self.inner
    }
}

impl AsMut<sqlx::mysql::MySqlConnection> for MySqlTransaction<'_> {
    /// As [`DerefMut`]: the session counts as changed.
    fn as_mut(&mut self) -> &mut sqlx::mysql::MySqlConnection {
        self
    }
}

impl fmt::Debug for MySqlTransaction<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlTransaction")
            .field("broken", &self.inner.session().broken)
            .finish_non_exhaustive()
    }
}
