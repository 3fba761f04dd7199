//! [`WatchedConnection`]: a sqlx connection and the [`Session`] record of what was done with
//! it — the part of a pooled connection that is the same for every database. What a release
//! does with the record (roll back, reset, retire) is each database crate's own.

use std::ops::{Deref, DerefMut};

use sqlx::{Connection, SqlStr};

use crate::driver::{Driver, RawConnection};
use crate::session::{Effect, Session};
use crate::transaction::WatchedTransaction;

/// A sqlx connection whose operations are recorded in its [`Session`].
pub struct WatchedConnection<D: Driver> {
    conn: RawConnection<D>,
    session: Session<D>,
}

impl<D: Driver> WatchedConnection<D> {
    /// A fresh connection, with nothing recorded.
    pub fn new(conn: RawConnection<D>) -> Self {
        Self {
            conn,
            session: Session::default(),
        }
    }

    /// The raw connection and the session record, borrowed apart. What is run on the raw
    /// connection this way is not recorded: for the executor and the release's own statements.
    pub fn parts(&mut self) -> (&mut RawConnection<D>, &mut Session<D>) {
        (&mut self.conn, &mut self.session)
    }

    /// The session record.
    pub fn session(&self) -> &Session<D> {
        &self.session
    }

    /// The session record, to update.
    pub fn session_mut(&mut self) -> &mut Session<D> {
        &mut self.session
    }

    /// Begin a transaction with sqlx's own statement.
    ///
    /// # Errors
    ///
    /// As [`WatchedTransaction::start`].
    ///
    /// # Cancel safety
    ///
    /// As [`WatchedTransaction::start`].
    pub async fn begin(&mut self) -> Result<WatchedTransaction<'_, D>, sqlx::Error> {
        WatchedTransaction::start(&mut self.conn, &mut self.session).await
    }

    /// Begin a transaction with `statement`.
    ///
    /// # Errors
    ///
    /// As [`WatchedTransaction::start_with`].
    ///
    /// # Cancel safety
    ///
    /// As [`WatchedTransaction::start_with`].
    pub async fn begin_with(
        &mut self,
        statement: SqlStr,
    ) -> Result<WatchedTransaction<'_, D>, sqlx::Error> {
        WatchedTransaction::start_with(&mut self.conn, &mut self.session, statement).await
    }

    /// sqlx's ping, recorded: cut off, it leaves the session busy.
    ///
    /// # Errors
    ///
    /// The driver's error; a fatal one marks the session broken.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before it completes, it leaves the session busy (the statement's
    /// outcome is unknown), so the database crate's release resets or retires the connection.
    pub async fn ping(&mut self) -> Result<(), sqlx::Error> {
        self.session.start(Effect::Contained);
        let pinged = self.conn.ping().await;
        self.session.finish(pinged.as_ref().err());
        pinged
    }

    /// Record an error from an operation that could not be watched: a fatal one marks the
    /// session broken. Returns whether it was fatal.
    pub fn record_error(&mut self, err: &sqlx::Error) -> bool {
        let fatal = D::is_fatal(err);
        self.session.broken |= fatal;
        fatal
    }

    /// The sqlx connection, for good.
    pub fn into_inner(self) -> RawConnection<D> {
        self.conn
    }
}

impl<D: Driver> Deref for WatchedConnection<D> {
    type Target = RawConnection<D>;

    fn deref(&self) -> &RawConnection<D> {
        &self.conn
    }
}

impl<D: Driver> DerefMut for WatchedConnection<D> {
    /// The raw connection. What is done with it cannot be watched, so the session counts as
    /// changed.
    fn deref_mut(&mut self) -> &mut RawConnection<D> {
        self.session.changed = true;
        &mut self.conn
    }
}
