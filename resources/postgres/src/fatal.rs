//! Which driver errors leave a connection unusable, so the pool destroys it instead of handing it
//! out again — the way HikariCP evicts a connection on a fatal SQLSTATE.

use nebula_resource_sqlx::fatal::is_connection_lost;
use sqlx::postgres::{PgDatabaseError, PgSeverity};

/// Whether `err` means the connection it came from is unusable: the pool must destroy it.
///
/// Fatal are:
///
/// - I/O, TLS and protocol errors, and a crashed driver worker: the byte stream to the server is
///   lost or out of step;
/// - server errors with severity `FATAL` or `PANIC` (the server closes the session after sending
///   them: an administrator's `pg_terminate_backend`, a server shutdown or restart, an idle
///   session timeout);
/// - server errors whose SQLSTATE is fatal by [`is_fatal_sqlstate`] (class `08`, connection
///   exception; `57P01` admin shutdown, `57P02` crash shutdown, `57P03` cannot connect now).
///
/// Everything else — a constraint violation, a syntax error, a serialization failure, a row that
/// did not decode — leaves the connection usable.
///
/// Errors of statements run through [`PostgresConnection`](crate::PostgresConnection) and
/// [`PostgresTransaction`](crate::PostgresTransaction) are classified automatically; call this
/// for your own retry decisions.
///
/// ```
/// use nebula_resource_postgres::{is_fatal, sqlx};
///
/// let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
/// assert!(is_fatal(&sqlx::Error::Io(reset)));
/// assert!(!is_fatal(&sqlx::Error::RowNotFound));
/// ```
pub fn is_fatal(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => match db.try_downcast_ref::<PgDatabaseError>() {
            Some(pg) => {
                matches!(pg.severity(), PgSeverity::Fatal | PgSeverity::Panic)
                    || is_fatal_sqlstate(pg.code())
            }
            None => db.code().is_some_and(|code| is_fatal_sqlstate(&code)),
        },
        _ => is_connection_lost(err),
    }
}

/// Whether a SQLSTATE means the session is gone: class `08` (connection exception) and `57P01`
/// (admin shutdown), `57P02` (crash shutdown), `57P03` (cannot connect now).
///
/// ```
/// use nebula_resource_postgres::is_fatal_sqlstate;
///
/// assert!(is_fatal_sqlstate("57P01"));
/// assert!(is_fatal_sqlstate("08006"));
/// assert!(!is_fatal_sqlstate("23505")); // unique violation
/// ```
pub fn is_fatal_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// Whether `err` is `25P02`, "current transaction is aborted, commands ignored until end of
/// transaction block": only `ROLLBACK` gets the session out of it.
pub(crate) fn is_failed_transaction(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "25P02")
}

#[cfg(test)]
mod tests {
    use nebula_resource_sqlx::testing::database_error as database;

    use super::{is_failed_transaction, is_fatal, is_fatal_sqlstate};

    #[test]
    fn connection_exceptions_and_shutdowns_are_fatal() {
        for code in [
            "08000", "08003", "08006", "08001", "08P01", "57P01", "57P02", "57P03",
        ] {
            assert!(is_fatal_sqlstate(code), "{code}");
            assert!(is_fatal(&database(code)), "{code}");
        }
    }

    #[test]
    fn ordinary_server_errors_are_not_fatal() {
        for code in [
            "23505", "42601", "40001", "40P01", "57014", "25P02", "22012", "XX000",
        ] {
            assert!(!is_fatal_sqlstate(code), "{code}");
            assert!(!is_fatal(&database(code)), "{code}");
        }
    }

    #[test]
    fn lost_connections_are_fatal_and_client_side_errors_are_not() {
        assert!(is_fatal(&sqlx::Error::WorkerCrashed));
        assert!(!is_fatal(&sqlx::Error::RowNotFound));
    }

    #[test]
    fn only_25p02_is_a_failed_transaction() {
        assert!(is_failed_transaction(&database("25P02")));
        assert!(!is_failed_transaction(&database("25P01")));
        assert!(!is_failed_transaction(&sqlx::Error::RowNotFound));
    }
}
