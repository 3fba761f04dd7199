//! [`Session`]: the record a pooled connection keeps of the statements it has seen — started,
//! finished, cut off, fatal — from which its release decides whether it can be reused as is.

use std::fmt;
use std::marker::PhantomData;

use crate::driver::Driver;

/// What running a piece of SQL may leave behind once it has finished. Ordered: a batch has the
/// greatest effect of its statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Effect {
    /// Nothing outlives the statement, or the transaction it runs in.
    Contained,
    /// Transaction control: a transaction may be left open, which a rollback ends.
    Transaction,
    /// The session may have changed beyond what a rollback undoes, or the statement was not
    /// recognised.
    Session,
}

/// What the pool knows about a connection's session from the operations it has seen.
pub struct Session<D> {
    /// A fatal error was seen: the connection is unusable.
    pub broken: bool,
    /// An operation is in flight. Still set after it, the operation was cut off half-way: its
    /// reply may still be on the wire, and what it did is unknown.
    pub busy: bool,
    /// A transaction may be open: transaction control ran outside a
    /// [`WatchedTransaction`](crate::WatchedTransaction).
    pub transaction: bool,
    /// The session may differ from a fresh one beyond its transaction.
    pub changed: bool,
    /// Transactions begun and not yet committed or rolled back. One dropped unfinished stays
    /// counted: sqlx queued its rollback, which the release makes sure of.
    pub open_transactions: usize,
    /// The driver's fatal-error test is used by [`finish`](Self::finish).
    driver: PhantomData<fn() -> D>,
}

impl<D: Driver> Session<D> {
    /// An operation with `effect` starts.
    pub fn start(&mut self, effect: Effect) {
        self.busy = true;
        match effect {
            Effect::Contained => {}
            Effect::Transaction => self.transaction = true,
            Effect::Session => self.changed = true,
        }
    }

    /// The operation started last finished with `error`, if any.
    pub fn finish(&mut self, error: Option<&sqlx::Error>) {
        self.busy = false;
        if error.is_some_and(D::is_fatal) {
            self.broken = true;
        }
    }

    /// Whether a rollback is needed before the connection is reused: a transaction may be
    /// open, or an operation was cut off.
    pub fn needs_rollback(&self) -> bool {
        self.transaction || self.busy || self.open_transactions > 0
    }
}

// Written out rather than derived: a derive would require `D: Default`, and `D` is only a
// marker.
impl<D> Default for Session<D> {
    fn default() -> Self {
        Self {
            broken: false,
            busy: false,
            transaction: false,
            changed: false,
            open_transactions: 0,
            driver: PhantomData,
        }
    }
}

impl<D> fmt::Debug for Session<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("broken", &self.broken)
            .field("busy", &self.busy)
            .field("transaction", &self.transaction)
            .field("changed", &self.changed)
            .field("open_transactions", &self.open_transactions)
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{Effect, Session};
    use crate::driver::Driver;

    /// Classifies nothing; only I/O errors are fatal.
    pub(crate) struct Test;

    impl Driver for Test {
        type Database = sqlx::Sqlite;

        fn effect_of(_sql: &str) -> Effect {
            Effect::Contained
        }

        fn is_fatal(err: &sqlx::Error) -> bool {
            matches!(err, sqlx::Error::Io(_))
        }
    }

    fn is_fresh(session: &Session<Test>) -> bool {
        !session.broken
            && !session.busy
            && !session.transaction
            && !session.changed
            && session.open_transactions == 0
    }

    #[test]
    fn effects_mark_the_session() {
        let mut session = Session::<Test>::default();
        session.start(Effect::Contained);
        session.finish(None);
        assert!(is_fresh(&session));

        session.start(Effect::Transaction);
        session.finish(None);
        assert!(session.transaction && !session.changed && session.needs_rollback());

        let mut session = Session::<Test>::default();
        session.start(Effect::Session);
        session.finish(None);
        assert!(session.changed && !session.needs_rollback());
    }

    #[test]
    fn a_cut_off_operation_needs_a_rollback() {
        let mut session = Session::<Test>::default();
        session.start(Effect::Contained);
        assert!(session.busy && session.needs_rollback());
    }

    #[test]
    fn only_fatal_errors_break_the_connection() {
        let mut session = Session::<Test>::default();
        session.start(Effect::Contained);
        session.finish(Some(&sqlx::Error::RowNotFound));
        assert!(!session.broken && !session.busy);
        session.start(Effect::Contained);
        session.finish(Some(&sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "eof",
        ))));
        assert!(session.broken);
    }
}
