//! Which driver errors leave a SQLite connection unusable, so the pool destroys it instead of
//! handing it out again.

/// `SQLITE_IOERR`: the operating system reported an I/O error (with extended codes).
const SQLITE_IOERR: i32 = 10;
/// `SQLITE_CORRUPT`: the database file is malformed.
const SQLITE_CORRUPT: i32 = 11;
/// `SQLITE_CANTOPEN`: a file (the database, its journal or WAL) could not be opened.
const SQLITE_CANTOPEN: i32 = 14;
/// `SQLITE_NOTADB`: the file is not a database.
const SQLITE_NOTADB: i32 = 26;
/// `SQLITE_READONLY_DBMOVED`: the database file was moved or deleted under the connection.
const SQLITE_READONLY_DBMOVED: i32 = 8 | (4 << 8);

/// Whether `err` means the connection it came from is unusable: the pool must destroy it.
///
/// Fatal are:
///
/// - a crashed connection worker thread (sqlx runs each SQLite connection on a thread of its
///   own) and I/O errors reported by sqlx;
/// - SQLite result codes for which [`is_fatal_code`] holds: an I/O error, a corrupt database,
///   a file that cannot be opened or is not a database, a database file moved or deleted under
///   the connection.
///
/// Everything else — a constraint violation, a syntax error, `SQLITE_BUSY` after the busy
/// timeout, a full disk — leaves the connection usable.
///
/// Errors of statements run through [`SqliteConnection`](crate::SqliteConnection) and
/// [`SqliteTransaction`](crate::SqliteTransaction) are classified automatically.
///
/// ```
/// use nebula_resource_sqlite::{is_fatal, sqlx};
///
/// assert!(is_fatal(&sqlx::Error::WorkerCrashed));
/// assert!(!is_fatal(&sqlx::Error::RowNotFound));
/// ```
pub fn is_fatal(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|code| code.parse::<i32>().ok())
            .is_some_and(is_fatal_code),
        _ => false,
    }
}

/// Whether a SQLite result code (primary or extended) means the connection is unusable:
/// `SQLITE_IOERR` (10) and its extended codes, `SQLITE_CORRUPT` (11), `SQLITE_CANTOPEN` (14),
/// `SQLITE_NOTADB` (26) and `SQLITE_READONLY_DBMOVED` (1032).
///
/// ```
/// use nebula_resource_sqlite::is_fatal_code;
///
/// assert!(is_fatal_code(10)); // SQLITE_IOERR
/// assert!(is_fatal_code(3850)); // SQLITE_IOERR_LOCK
/// assert!(!is_fatal_code(5)); // SQLITE_BUSY
/// assert!(!is_fatal_code(2067)); // SQLITE_CONSTRAINT_UNIQUE
/// ```
pub fn is_fatal_code(code: i32) -> bool {
    matches!(
        code & 0xff,
        SQLITE_IOERR | SQLITE_CORRUPT | SQLITE_CANTOPEN | SQLITE_NOTADB
    ) || code == SQLITE_READONLY_DBMOVED
}

#[cfg(test)]
mod tests {
    use nebula_resource_sqlx::testing::database_error as database;

    use super::{is_fatal, is_fatal_code};

    #[test]
    fn io_corruption_and_lost_files_are_fatal() {
        for code in [10, 266, 522, 3850, 11, 267, 14, 26, 1032] {
            assert!(is_fatal_code(code), "{code}");
            assert!(is_fatal(&database(code)), "{code}");
        }
    }

    #[test]
    fn ordinary_errors_are_not_fatal() {
        // ERROR, BUSY, LOCKED, READONLY, FULL, CONSTRAINT_UNIQUE, CONSTRAINT_FOREIGNKEY,
        // LOCKED_SHAREDCACHE, BUSY_SNAPSHOT.
        for code in [1, 5, 6, 8, 13, 2067, 787, 262, 517] {
            assert!(!is_fatal_code(code), "{code}");
            assert!(!is_fatal(&database(code)), "{code}");
        }
    }

    #[test]
    fn worker_and_transport_failures_are_fatal() {
        assert!(is_fatal(&sqlx::Error::WorkerCrashed));
        assert!(is_fatal(&sqlx::Error::Io(std::io::Error::other("disk"))));
        assert!(!is_fatal(&sqlx::Error::RowNotFound));
        assert!(!is_fatal(&sqlx::Error::Decode("bad".into())));
        assert!(!is_fatal(&sqlx::Error::PoolTimedOut));
    }
}
