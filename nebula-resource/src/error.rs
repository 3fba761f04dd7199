//! The one error type of the crate.
//!
//! Every failure the framework reports is an [`Error`]: a [`kind`](Error::kind) to match on, the
//! resource it concerns (key, registration name, tenant), and, where one exists, the underlying
//! cause as [`source`](std::error::Error::source). Messages are written for the operator reading a
//! log line: a timeout says what it waited for, for how long, the last create error and the pool's
//! counts at that moment.

use std::fmt;
use std::time::Duration;

use crate::stats::PoolStats;

/// A boxed cause: a driver error, or a message.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, in categories a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A configuration value is invalid; the error names the field and the rule.
    Config,
    /// The declared dependencies form a cycle; the error lists it.
    Cycle,
    /// A resource depends on a resource that is not registered.
    MissingDependency,
    /// The same resource type (and name) was registered twice.
    Duplicate,
    /// The requested resource is not registered with this manager.
    NotRegistered,
    /// An operation did not finish in time; see [`Error::timeout_phase`].
    Timeout,
    /// The resource's circuit breaker is open; see [`Error::retry_after`].
    CircuitOpen,
    /// The resource is quarantined or otherwise out of service.
    Unavailable,
    /// Creating an instance failed (or its hook panicked).
    Create,
    /// Validating an instance failed (or its hook panicked).
    Check,
    /// Resetting a released instance failed (or its hook panicked).
    Recycle,
    /// The manager is shutting down or has shut down.
    ShuttingDown,
    /// A tenant id was rejected, or its configuration could not be resolved.
    TenantRejected,
    /// The resource is registered at a workflow or execution [`Scope`](crate::Scope) and the
    /// [`Context`](crate::Context) does not name one (or `end_scope` was given no scope).
    ScopeRequired,
}

impl ErrorKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Config => "invalid configuration",
            Self::Cycle => "dependency cycle",
            Self::MissingDependency => "missing dependency",
            Self::Duplicate => "duplicate registration",
            Self::NotRegistered => "not registered",
            Self::Timeout => "timed out",
            Self::CircuitOpen => "circuit open",
            Self::Unavailable => "unavailable",
            Self::Create => "create failed",
            Self::Check => "check failed",
            Self::Recycle => "recycle failed",
            Self::ShuttingDown => "shutting down",
            Self::TenantRejected => "tenant rejected",
            Self::ScopeRequired => "scope required",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// What a [`ErrorKind::Timeout`] waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// Waiting for an instance to become available (a permit in the pool).
    Permit,
    /// `Resource::create` did not finish within `create_timeout`.
    Create,
    /// `Resource::check` did not finish in time.
    Check,
    /// `shutdown` reached its deadline with instances still in use.
    Shutdown,
}

impl fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Permit => "an available instance",
            Self::Create => "instance creation",
            Self::Check => "instance check",
            Self::Shutdown => "instances in use to be released",
        })
    }
}

/// Which resource an error concerns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Subject {
    pub(crate) key: Option<&'static str>,
    pub(crate) name: Option<String>,
    pub(crate) tenant: Option<String>,
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.key {
            Some(key) => write!(f, "resource `{key}`")?,
            None => f.write_str("resource")?,
        }
        if let Some(name) = &self.name {
            write!(f, " (name `{name}`)")?;
        }
        if let Some(tenant) = &self.tenant {
            // Escaped: a rejected tenant id may hold control characters meant for a log line.
            write!(f, " for tenant `{}`", tenant.escape_debug())?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct TimeoutDetail {
    phase: TimeoutPhase,
    waited: Duration,
    stats: Option<PoolStats>,
    last_create_error: Option<String>,
}

#[derive(Debug)]
struct Inner {
    kind: ErrorKind,
    subject: Subject,
    field: Option<&'static str>,
    message: String,
    timeout: Option<TimeoutDetail>,
    retry_after: Option<Duration>,
    note: Option<String>,
    source: Option<BoxError>,
    /// Set by [`Error::permanent`]: retrying cannot help.
    permanent: bool,
}

/// The error type of every fallible operation in this crate.
///
/// It is one pointer wide, so `Result<Guard<R>, Error>` stays small on the acquire path.
/// Match on [`kind`](Self::kind); print it (`Display`) for a message that names the resource,
/// the field or phase, and the cause.
pub struct Error {
    inner: Box<Inner>,
}

impl Error {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            inner: Box::new(Inner {
                kind,
                subject: Subject::default(),
                field: None,
                message: message.into(),
                timeout: None,
                retry_after: None,
                note: None,
                source: None,
                permanent: false,
            }),
        }
    }

    /// `Resource::create` failed: wrap the driver's error (or a message) as the cause.
    pub fn create(cause: impl Into<BoxError>) -> Self {
        Self::with_source(ErrorKind::Create, cause.into())
    }

    /// `Resource::check` found the instance unusable: wrap the cause.
    pub fn check(cause: impl Into<BoxError>) -> Self {
        Self::with_source(ErrorKind::Check, cause.into())
    }

    /// `Resource::recycle` could not reset the instance: wrap the cause.
    pub fn recycle(cause: impl Into<BoxError>) -> Self {
        Self::with_source(ErrorKind::Recycle, cause.into())
    }

    /// A configuration value broke a rule: name the field and say what the rule is.
    ///
    /// The manager adds the resource's key (and name, tenant) when it reports the error.
    pub fn config(field: &'static str, message: impl Into<String>) -> Self {
        let mut err = Self::new(ErrorKind::Config, message);
        err.inner.field = Some(field);
        err
    }

    /// An error of `kind` with a message, for resource authors whose failure fits another kind
    /// (for example [`ErrorKind::Unavailable`]).
    pub fn other(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::new(kind, message)
    }

    fn with_source(kind: ErrorKind, cause: BoxError) -> Self {
        let mut err = Self::new(kind, String::new());
        err.inner.source = Some(cause);
        err
    }

    pub(crate) fn timeout(
        phase: TimeoutPhase,
        waited: Duration,
        stats: Option<PoolStats>,
        last_create_error: Option<String>,
    ) -> Self {
        let mut err = Self::new(ErrorKind::Timeout, String::new());
        err.inner.timeout = Some(TimeoutDetail {
            phase,
            waited,
            stats,
            last_create_error,
        });
        err
    }

    pub(crate) fn panicked(
        kind: ErrorKind,
        hook: &str,
        payload: &(dyn std::any::Any + Send),
    ) -> Self {
        Self::new(
            kind,
            format!("`{hook}` panicked: {}", panic_message(payload)),
        )
    }

    /// The resource is quarantined (its health rounds failed), for `reason`: fail fast.
    pub(crate) fn quarantined(reason: &str) -> Self {
        Self::new(ErrorKind::Unavailable, format!("quarantined: {reason}"))
    }

    /// The breaker is open: fail fast, and say when a probe will be let through.
    pub(crate) fn circuit_open(retry_after: Duration, why: &str) -> Self {
        let mut err = Self::new(
            ErrorKind::CircuitOpen,
            format!("circuit breaker open ({why}); retry after {retry_after:?}"),
        );
        err.inner.retry_after = Some(retry_after);
        err
    }

    pub(crate) fn shutting_down() -> Self {
        Self::new(ErrorKind::ShuttingDown, "the manager is shutting down")
    }

    /// Add context the operator needs (what was not started, what is still in use).
    #[must_use]
    pub(crate) fn with_note(mut self, note: String) -> Self {
        self.inner.note = Some(match self.inner.note.take() {
            Some(earlier) => format!("{earlier}; {note}"),
            None => note,
        });
        self
    }

    /// Attach the resource this error concerns (key, registration name).
    #[must_use]
    pub(crate) fn in_resource(mut self, key: &'static str, name: Option<&str>) -> Self {
        if self.inner.subject.key.is_none() {
            self.inner.subject.key = Some(key);
            self.inner.subject.name = name.map(str::to_owned);
        }
        self
    }

    /// Attach the tenant this error concerns.
    #[must_use]
    pub(crate) fn for_tenant(mut self, tenant: Option<&str>) -> Self {
        if self.inner.subject.tenant.is_none() {
            self.inner.subject.tenant = tenant.map(str::to_owned);
        }
        self
    }

    /// What category of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Mark a failure that retrying cannot fix (authentication refused, unknown database): a
    /// create that fails with it is not retried, whatever its kind.
    ///
    /// ```
    /// use nebula_resource::Error;
    /// let err = Error::create("password authentication failed for user \"app\"").permanent();
    /// assert!(!err.is_retryable());
    /// ```
    #[must_use]
    pub fn permanent(mut self) -> Self {
        self.inner.permanent = true;
        self
    }

    /// Whether trying the same operation again may succeed: timeouts, failed creates and checks,
    /// an open circuit or an unavailable resource — unless marked [`permanent`](Self::permanent).
    /// Configuration and registration errors are not.
    pub fn is_retryable(&self) -> bool {
        !self.inner.permanent
            && matches!(
                self.inner.kind,
                ErrorKind::Timeout
                    | ErrorKind::CircuitOpen
                    | ErrorKind::Unavailable
                    | ErrorKind::Create
                    | ErrorKind::Check
                    | ErrorKind::Recycle
            )
    }

    /// The key of the resource this error concerns, if known.
    pub fn resource_key(&self) -> Option<&'static str> {
        self.inner.subject.key
    }

    /// The registration name (see `register_named`), if any.
    pub fn resource_name(&self) -> Option<&str> {
        self.inner.subject.name.as_deref()
    }

    /// The tenant this error concerns, if any.
    pub fn tenant(&self) -> Option<&str> {
        self.inner.subject.tenant.as_deref()
    }

    /// For [`ErrorKind::Config`]: the configuration field at fault.
    pub fn field(&self) -> Option<&'static str> {
        self.inner.field
    }

    /// For [`ErrorKind::Timeout`]: what was waited for.
    pub fn timeout_phase(&self) -> Option<TimeoutPhase> {
        self.inner.timeout.as_ref().map(|t| t.phase)
    }

    /// For [`ErrorKind::Timeout`]: how long was waited.
    pub fn waited(&self) -> Option<Duration> {
        self.inner.timeout.as_ref().map(|t| t.waited)
    }

    /// For [`ErrorKind::Timeout`]: the pool's counts when the wait gave up.
    pub fn pool_stats(&self) -> Option<&PoolStats> {
        self.inner.timeout.as_ref().and_then(|t| t.stats.as_ref())
    }

    /// For [`ErrorKind::Timeout`]: the last error seen while creating an instance, if any.
    pub fn last_create_error(&self) -> Option<&str> {
        self.inner
            .timeout
            .as_ref()
            .and_then(|t| t.last_create_error.as_deref())
    }

    /// For [`ErrorKind::CircuitOpen`]: how long until the breaker lets a call through.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &*self.inner;
        if inner.subject.key.is_some() || inner.subject.tenant.is_some() {
            write!(f, "{}: ", inner.subject)?;
        }
        write!(f, "{}", inner.kind)?;
        if let Some(field) = inner.field {
            write!(f, " in field `{field}`")?;
        }
        if let Some(t) = &inner.timeout {
            write!(f, " after {:?} waiting for {}", t.waited, t.phase)?;
            if let Some(stats) = &t.stats {
                write!(f, " ({stats})")?;
            }
            if let Some(last) = &t.last_create_error {
                write!(f, "; last create error: {last}")?;
            }
        }
        if !inner.message.is_empty() {
            write!(f, ": {}", inner.message)?;
        }
        if let Some(retry_after) = inner.retry_after {
            write!(f, "; retry after {retry_after:?}")?;
        }
        if let Some(source) = &inner.source {
            write!(f, ": {source}")?;
        }
        if let Some(note) = &inner.note {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.inner.kind)
            .field("message", &self.to_string())
            .finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// What a panic said, if it said it with a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_error_names_resource_and_field() {
        let err = Error::config("max_size", "must be at least 1 (got 0)")
            .in_resource("db", Some("replica"));
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.field(), Some("max_size"));
        assert_eq!(
            err.to_string(),
            "resource `db` (name `replica`): invalid configuration in field `max_size`: must be at least 1 (got 0)"
        );
        assert!(!err.is_retryable());
    }

    #[test]
    fn create_error_keeps_its_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err = Error::create(io).in_resource("db", None);
        assert!(err.is_retryable());
        assert_eq!(
            err.to_string(),
            "resource `db`: create failed: connection refused"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn error_is_one_pointer_wide() {
        assert_eq!(std::mem::size_of::<Error>(), std::mem::size_of::<usize>());
    }
}
