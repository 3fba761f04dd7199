//! Connecting for a resource's `create` hook: the timeout, the error that names the target
//! (never with a password) and the split between failures worth retrying and refusals that
//! retrying cannot help.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use nebula_resource::Error;

/// A failed connection attempt: what was being done to which target (password hidden), and the
/// driver's error.
#[derive(Debug)]
pub struct ConnectError {
    action: &'static str,
    target: String,
    source: sqlx::Error,
}

impl ConnectError {
    /// `action` (such as `"connecting to"`) on `target` failed with `source`.
    pub fn new(action: &'static str, target: String, source: sqlx::Error) -> Self {
        Self {
            action,
            target,
            source,
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.action, self.target, self.source)
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.source)
    }
}

/// Run `connect` within `timeout`. A driver error becomes a `create` error naming `target`
/// (its `Display` must hide the password), permanent if `refused_for_good` says retrying cannot
/// help; running out of time is a `create` error too.
///
/// # Errors
///
/// As above.
///
/// # Cancel safety
///
/// Dropping the future drops `connect`: a connection being made is abandoned, none is leaked.
pub async fn connect_within<T>(
    target: &impl fmt::Display,
    timeout: Duration,
    connect: impl Future<Output = Result<T, sqlx::Error>>,
    refused_for_good: fn(&sqlx::Error) -> bool,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(source)) => {
            let permanent = refused_for_good(&source);
            let err = Error::create(ConnectError::new(
                "connecting to",
                target.to_string(),
                source,
            ));
            Err(if permanent { err.permanent() } else { err })
        }
        Err(_) => Err(Error::create(format!(
            "connecting to {target} did not finish within the connect timeout of {timeout:?}"
        ))),
    }
}
