//! [`NatsError`]: what the bounded operations of [`NatsClient`](crate::NatsClient) and
//! [`JetStreamContext`](crate::JetStreamContext) report, and the causes the resources put in a
//! [`nebula_resource::Error`].

use std::fmt;
use std::time::Duration;

use nebula_resource::BoxError;

/// What kind of failure a [`NatsError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NatsErrorKind {
    /// The operation did not finish within its bound (the server is down, unreachable, or the
    /// client's command buffer is full while it reconnects).
    TimedOut,
    /// The client is closed for good: drained, or out of reconnect attempts. Acquire again: the
    /// manager replaces a closed client.
    Closed,
    /// The driver or the server refused the operation (an invalid subject, a payload over the
    /// server's limit, a JetStream error such as a missing stream).
    Rejected,
}

/// A bounded operation failed: which one, on what subject, how, and the driver's cause.
#[derive(Debug)]
pub struct NatsError {
    kind: NatsErrorKind,
    operation: &'static str,
    subject: Option<String>,
    waited: Option<Duration>,
    source: Option<BoxError>,
}

impl NatsError {
    pub(crate) fn timed_out(
        operation: &'static str,
        subject: Option<&str>,
        after: Duration,
    ) -> Self {
        Self {
            kind: NatsErrorKind::TimedOut,
            operation,
            subject: subject.map(str::to_owned),
            waited: Some(after),
            source: None,
        }
    }

    pub(crate) fn closed(operation: &'static str, subject: Option<&str>) -> Self {
        Self {
            kind: NatsErrorKind::Closed,
            operation,
            subject: subject.map(str::to_owned),
            waited: None,
            source: None,
        }
    }

    pub(crate) fn rejected(
        operation: &'static str,
        subject: Option<&str>,
        cause: impl Into<BoxError>,
    ) -> Self {
        Self {
            kind: NatsErrorKind::Rejected,
            operation,
            subject: subject.map(str::to_owned),
            waited: None,
            source: Some(cause.into()),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> NatsErrorKind {
        self.kind
    }

    /// The operation that failed: `"publish"`, `"flush"`, `"jetstream publish"`, …
    pub fn operation(&self) -> &'static str {
        self.operation
    }

    /// The subject of the operation, if it had one.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// For [`NatsErrorKind::TimedOut`]: how long was waited.
    pub fn waited(&self) -> Option<Duration> {
        self.waited
    }

    /// Whether trying again (after acquiring again) may succeed: a timeout or a closed client,
    /// not a rejection.
    pub fn is_retryable(&self) -> bool {
        matches!(self.kind, NatsErrorKind::TimedOut | NatsErrorKind::Closed)
    }
}

impl fmt::Display for NatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nats {}", self.operation)?;
        if let Some(subject) = &self.subject {
            write!(f, " on `{subject}`")?;
        }
        match self.kind {
            NatsErrorKind::TimedOut => match self.waited {
                Some(waited) => write!(f, " timed out after {waited:?}")?,
                None => f.write_str(" timed out")?,
            },
            NatsErrorKind::Closed => f.write_str(" failed: the client is closed")?,
            NatsErrorKind::Rejected => f.write_str(" failed")?,
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NatsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn std::error::Error + 'static))
    }
}

/// A connection could not be made: to which servers (redacted), and why.
#[derive(Debug)]
pub(crate) struct ConnectFailed {
    servers: Vec<String>,
    cause: async_nats::ConnectError,
}

impl ConnectFailed {
    pub(crate) fn new(servers: Vec<String>, cause: async_nats::ConnectError) -> Self {
        Self { servers, cause }
    }
}

impl fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot connect to {}: {}",
            self.servers.join(", "),
            self.cause
        )
    }
}

impl std::error::Error for ConnectFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_failed_and_how() {
        let err = NatsError::timed_out("publish", Some("orders.new"), Duration::from_millis(200));
        assert_eq!(
            err.to_string(),
            "nats publish on `orders.new` timed out after 200ms"
        );
        assert!(err.is_retryable());
        assert_eq!(err.waited(), Some(Duration::from_millis(200)));
        let err = NatsError::closed("flush", None);
        assert_eq!(err.to_string(), "nats flush failed: the client is closed");
        assert_eq!(err.kind(), NatsErrorKind::Closed);
        let err = NatsError::rejected("publish", Some("a b"), "invalid subject");
        assert_eq!(
            err.to_string(),
            "nats publish on `a b` failed: invalid subject"
        );
        assert!(!err.is_retryable());
        assert!(std::error::Error::source(&err).is_some());
    }
}
