//! [`WatchedTransaction`]: a transaction on a watched connection whose statements are watched
//! like the connection's own, and whose begin, commit and rollback are counted in its
//! [`Session`].

use std::ops::{Deref, DerefMut};

use sqlx::{Connection, SqlStr, Transaction};

use crate::driver::{Driver, RawConnection, begin_statement_effect};
use crate::session::{Effect, Session};

/// A sqlx transaction and the session record of the connection it runs on. Dropped without
/// [`commit`](Self::commit) or [`rollback`](Self::rollback), it is rolled back: sqlx queues the
/// rollback, and it stays counted in [`Session::open_transactions`] so the release makes sure
/// of it.
pub struct WatchedTransaction<'c, D: Driver> {
    tx: Transaction<'c, D::Database>,
    session: &'c mut Session<D>,
}

impl<'c, D: Driver> WatchedTransaction<'c, D> {
    /// Begin a transaction on `conn` (or a savepoint, if one is open) with sqlx's own
    /// statement.
    ///
    /// # Errors
    ///
    /// The driver's error if the statement fails; a fatal one marks the session broken.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before it completes, it leaves the session busy (the statement's
    /// outcome is unknown), so the database crate's release resets or retires the connection.
    pub async fn start(
        conn: &'c mut RawConnection<D>,
        session: &'c mut Session<D>,
    ) -> Result<Self, sqlx::Error> {
        session.start(Effect::Contained);
        let begun = conn.begin().await;
        Self::begun(begun, session)
    }

    /// Begin a transaction on `conn` with `statement`; what the statement may do beyond
    /// beginning the transaction is recorded in `session`.
    ///
    /// # Errors
    ///
    /// The driver's error if the statement fails or does not start a transaction
    /// (`sqlx::Error::BeginFailed`); a fatal one marks the session broken.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before it completes, it leaves the session busy (the statement's
    /// outcome is unknown), so the database crate's release resets or retires the connection.
    pub async fn start_with(
        conn: &'c mut RawConnection<D>,
        session: &'c mut Session<D>,
        statement: SqlStr,
    ) -> Result<Self, sqlx::Error> {
        session.start(begin_statement_effect::<D>(statement.as_str()));
        let begun = conn.begin_with(statement).await;
        Self::begun(begun, session)
    }

    fn begun(
        begun: Result<Transaction<'c, D::Database>, sqlx::Error>,
        session: &'c mut Session<D>,
    ) -> Result<Self, sqlx::Error> {
        session.finish(begun.as_ref().err());
        let tx = begun?;
        session.open_transactions += 1;
        Ok(Self { tx, session })
    }

    /// The raw connection and the session record, borrowed apart.
    pub fn parts(&mut self) -> (&mut RawConnection<D>, &mut Session<D>) {
        (&mut *self.tx, &mut *self.session)
    }

    /// The session record of the connection.
    pub fn session(&self) -> &Session<D> {
        self.session
    }

    /// Begin a nested transaction: a savepoint.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    ///
    /// # Cancel safety
    ///
    /// As [`start`](Self::start).
    pub async fn begin(&mut self) -> Result<WatchedTransaction<'_, D>, sqlx::Error> {
        WatchedTransaction::start(&mut *self.tx, &mut *self.session).await
    }

    /// Commit (or release the savepoint).
    ///
    /// # Errors
    ///
    /// The driver's error if the commit fails; a fatal one marks the session broken.
    ///
    /// # Cancel safety
    ///
    /// Dropped before it completes, whether the transaction committed is unknown: the session
    /// stays busy and the transaction counted open, so the release rolls back or retires.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let Self { tx, session } = self;
        session.start(Effect::Contained);
        let committed = tx.commit().await;
        session.finish(committed.as_ref().err());
        if committed.is_ok() {
            session.open_transactions -= 1;
        }
        committed
    }

    /// Roll back (or roll back to the savepoint).
    ///
    /// # Errors
    ///
    /// The driver's error if the rollback fails; a fatal one marks the session broken.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before it completes, it leaves the session busy (the statement's
    /// outcome is unknown), so the database crate's release resets or retires the connection.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        let Self { tx, session } = self;
        session.start(Effect::Contained);
        let rolled_back = tx.rollback().await;
        session.finish(rolled_back.as_ref().err());
        if rolled_back.is_ok() {
            session.open_transactions -= 1;
        }
        rolled_back
    }
}

impl<D: Driver> Deref for WatchedTransaction<'_, D> {
    type Target = RawConnection<D>;

    fn deref(&self) -> &RawConnection<D> {
        &self.tx
    }
}

impl<D: Driver> DerefMut for WatchedTransaction<'_, D> {
    /// The raw connection. What is done with it cannot be watched, so the session counts as
    /// changed.
    fn deref_mut(&mut self) -> &mut RawConnection<D> {
        self.session.changed = true;
        &mut self.tx
    }
}
