//! Which driver errors leave a connection unusable, so the pool destroys it instead of handing it
//! out again — the way HikariCP evicts a connection on a fatal SQLSTATE, with MySQL's and
//! MariaDB's own set of fatal error numbers.

use nebula_resource_sqlx::fatal::is_connection_lost;
use sqlx::mysql::MySqlDatabaseError;

/// Whether `err` means the connection it came from is unusable: the pool must destroy it.
///
/// Fatal are:
///
/// - I/O, TLS and protocol errors, and a crashed driver worker: the byte stream to the server is
///   lost or out of step (a server restart, a network failure, `KILL` of an idle connection);
/// - server errors whose SQLSTATE is in class `08`, connection exception
///   ([`is_fatal_sqlstate`]);
/// - server errors whose number is fatal by [`is_fatal_error_number`]: the server shut down,
///   killed the connection or the query, or dropped the connection.
///
/// Everything else — a duplicate key, a syntax error, a deadlock, a lock wait timeout, a
/// statement timeout, a row that did not decode — leaves the connection usable.
///
/// Errors of statements run through [`MySqlConnection`](crate::MySqlConnection) and
/// [`MySqlTransaction`](crate::MySqlTransaction) are classified automatically; call this for
/// your own retry decisions, or pass errors from the raw connection to
/// [`MySqlConnection::record_error`](crate::MySqlConnection::record_error).
///
/// ```
/// use nebula_resource_mysql::{is_fatal, sqlx};
///
/// let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
/// assert!(is_fatal(&sqlx::Error::Io(reset)));
/// assert!(!is_fatal(&sqlx::Error::RowNotFound));
/// ```
pub fn is_fatal(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => match db.try_downcast_ref::<MySqlDatabaseError>() {
            Some(mysql) => {
                (is_fatal_error_number(mysql.number())
                    && !is_mariadb_4031(mysql.number(), mysql.message()))
                    || mysql.code().is_some_and(is_fatal_sqlstate)
            }
            None => db.code().is_some_and(|code| is_fatal_sqlstate(&code)),
        },
        _ => is_connection_lost(err),
    }
}

/// Whether a SQLSTATE means the session is gone: class `08`, connection exception (MySQL reports
/// `08S01` for a server shutdown, an aborted connection and network errors, `08004` for too
/// many connections).
///
/// ```
/// use nebula_resource_mysql::is_fatal_sqlstate;
///
/// assert!(is_fatal_sqlstate("08S01"));
/// assert!(!is_fatal_sqlstate("23000")); // duplicate key
/// ```
pub fn is_fatal_sqlstate(code: &str) -> bool {
    code.starts_with("08")
}

/// Whether a MySQL or MariaDB error number means the connection is unusable:
///
/// | Number | Name | Meaning |
/// |---|---|---|
/// | 1053 | `ER_SERVER_SHUTDOWN` | the server is shutting down |
/// | 1080 | `ER_FORCING_CLOSE` | the server closes this connection while shutting down |
/// | 1152–1161 | `ER_ABORTING_CONNECTION`, `ER_NET_*` | network error or oversized packet; the server drops the connection |
/// | 1184 | `ER_NEW_ABORTING_CONNECTION` | aborted connection |
/// | 1317 | `ER_QUERY_INTERRUPTED` | the statement was killed: by `KILL QUERY`, or by MySQL's `KILL CONNECTION` just before it closes the connection |
/// | 1927 | `ER_CONNECTION_KILLED` | MariaDB: the connection was killed (`KILL`) |
/// | 2006, 2013, 2055 | `CR_SERVER_GONE_ERROR`, `CR_SERVER_LOST`, `CR_SERVER_LOST_EXTENDED` | client codes, relayed by some proxies |
/// | 3169 | `ER_SESSION_WAS_KILLED` | MySQL: the session was killed |
/// | 4031 | `ER_CLIENT_INTERACTION_TIMEOUT` | MySQL: disconnected after `wait_timeout` (MariaDB uses 4031 for something else, told apart by its message) |
///
/// 1317 is fatal although `KILL QUERY` leaves the connection open: the error cannot tell the two
/// kills apart, and reconnecting once after an operator's kill is cheaper than handing the next
/// user a connection the server is about to close. Statement timeouts have numbers of their own
/// (MariaDB's 1969, MySQL's 3024) and are not fatal.
///
/// ```
/// use nebula_resource_mysql::is_fatal_error_number;
///
/// assert!(is_fatal_error_number(1927)); // MariaDB: connection was killed
/// assert!(!is_fatal_error_number(1062)); // duplicate entry
/// assert!(!is_fatal_error_number(1213)); // deadlock: the transaction is rolled back, the connection is fine
/// ```
pub fn is_fatal_error_number(number: u16) -> bool {
    matches!(
        number,
        1053 | 1080 | 1152..=1161 | 1184 | 1317 | 1927 | 2006 | 2013 | 2055 | 3169 | 4031
    )
}

/// MariaDB's 4031 is `ER_REFERENCED_TRG_DOES_NOT_EXIST`, a harmless DDL error; MySQL's is the
/// inactivity disconnect, whose message says so.
fn is_mariadb_4031(number: u16, message: &str) -> bool {
    number == 4031 && !message.contains("disconnected")
}

#[cfg(test)]
mod tests {
    use nebula_resource_sqlx::testing::database_error as database;

    use super::{is_fatal, is_fatal_error_number, is_fatal_sqlstate, is_mariadb_4031};

    #[test]
    fn connection_exceptions_are_fatal() {
        for code in ["08000", "08001", "08003", "08004", "08S01"] {
            assert!(is_fatal_sqlstate(code), "{code}");
            assert!(is_fatal(&database(code)), "{code}");
        }
    }

    #[test]
    fn ordinary_server_errors_are_not_fatal() {
        for code in [
            "23000", "42000", "40001", "HY000", "70100", "22007", "XA102",
        ] {
            assert!(!is_fatal_sqlstate(code), "{code}");
            assert!(!is_fatal(&database(code)), "{code}");
        }
    }

    #[test]
    fn shutdown_kill_and_network_numbers_are_fatal() {
        for number in [
            1053, 1080, 1152, 1153, 1156, 1158, 1159, 1160, 1161, 1184, 1317, 1927, 2006, 2013,
            2055, 3169, 4031,
        ] {
            assert!(is_fatal_error_number(number), "{number}");
        }
    }

    #[test]
    fn ordinary_numbers_are_not_fatal() {
        for number in [
            1045, // access denied (at connect; nothing to evict)
            1062, // duplicate entry
            1064, // syntax error
            1146, // no such table
            1205, // lock wait timeout
            1213, // deadlock
            1290, // read-only server
            1969, // MariaDB statement timeout
            3024, // MySQL statement timeout
            4025, // constraint failed
        ] {
            assert!(!is_fatal_error_number(number), "{number}");
        }
    }

    #[test]
    fn mariadb_4031_is_told_apart_by_its_message() {
        assert!(is_mariadb_4031(
            4031,
            "Referenced trigger 't' for the given action time and event type does not exist"
        ));
        assert!(!is_mariadb_4031(
            4031,
            "The client was disconnected by the server because of inactivity. See wait_timeout \
             and interactive_timeout for configuring this behavior."
        ));
        assert!(!is_mariadb_4031(1927, "Connection was killed"));
    }

    #[test]
    fn lost_connections_are_fatal_and_client_side_errors_are_not() {
        assert!(is_fatal(&sqlx::Error::WorkerCrashed));
        assert!(!is_fatal(&sqlx::Error::RowNotFound));
    }
}
