//! Test support for the database crates (the `testing` feature, for their dev-dependencies):
//! a driver error carrying only a code, as a database crate's fatal-error tests need without a
//! server.

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;

use sqlx::error::{DatabaseError, ErrorKind};

/// A server error with only a code (a SQLSTATE, or SQLite's result code as text), as another
/// driver layer might report it.
#[derive(Debug)]
struct Coded(String);

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error {}", self.0)
    }
}

impl StdError for Coded {}

impl DatabaseError for Coded {
    fn message(&self) -> &str {
        "coded"
    }
    fn code(&self) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(&self.0))
    }
    fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self
    }
    fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
        self
    }
    fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
        self
    }
    fn kind(&self) -> ErrorKind {
        ErrorKind::Other
    }
}

/// A `sqlx::Error::Database` whose only content is `code`.
pub fn database_error(code: impl fmt::Display) -> sqlx::Error {
    sqlx::Error::Database(Box::new(Coded(code.to_string())))
}
