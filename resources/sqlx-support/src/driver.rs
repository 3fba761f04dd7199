//! [`Driver`]: what a database crate tells the shared code about its database — the sqlx
//! database type, how a statement is classified and which errors are fatal. Everything else in
//! this crate is generic over it.

use crate::session::Effect;

/// One database's rules, implemented by each sqlx-based resource crate on a type of its own.
pub trait Driver: Send + Sync + 'static {
    /// The sqlx database.
    type Database: sqlx::Database;

    /// What `sql` (possibly several statements) may leave behind once it has run.
    fn effect_of(sql: &str) -> Effect;

    /// Whether `err` means the connection it came from is unusable.
    fn is_fatal(err: &sqlx::Error) -> bool;
}

/// The sqlx connection of a driver's database.
pub type RawConnection<D> = <<D as Driver>::Database as sqlx::Database>::Connection;

/// The effect of a statement that begins a transaction, beyond the transaction it begins: the
/// transaction itself is counted by the [`WatchedTransaction`](crate::WatchedTransaction).
pub fn begin_statement_effect<D: Driver>(sql: &str) -> Effect {
    match D::effect_of(sql) {
        Effect::Session => Effect::Session,
        Effect::Contained | Effect::Transaction => Effect::Contained,
    }
}
