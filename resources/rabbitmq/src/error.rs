//! The errors of this crate: [`PublishError`] for a publish that did not end in a confirm, the
//! cause of a failed connect (every broker tried and why it failed), and the scrubbing of
//! configured secrets from driver messages.
//!
//! The broker does not echo passwords and lapin does not print them; scrubbing is the belt to
//! those braces: a driver message is kept only as text, with every configured secret replaced by
//! `***`.

use std::fmt;
use std::time::Duration;

use lapin::message::BasicReturnMessage;
use nebula_resource::Secret;

/// The secrets of one configuration.
#[derive(Clone, Default)]
pub(crate) struct Secrets(Vec<Secret>);

impl Secrets {
    pub(crate) fn add(&mut self, secret: &str) {
        if !secret.is_empty() && !self.0.iter().any(|known| known.expose() == secret) {
            self.0.push(Secret::new(secret));
        }
    }

    /// `text` with every secret replaced by `***`.
    pub(crate) fn scrub(&self, text: &str) -> String {
        // Longest first, so a secret that contains another is replaced whole.
        let mut secrets: Vec<&str> = self.0.iter().map(Secret::expose).collect();
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        secrets
            .into_iter()
            .fold(text.to_owned(), |text, secret| text.replace(secret, "***"))
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

/// No broker accepted a connection: each one tried (its URL with the password redacted) and
/// why it failed, in the order tried.
#[derive(Debug)]
pub(crate) struct ConnectFailed {
    pub(crate) attempts: Vec<(String, String)>,
}

impl fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let [(url, cause)] = self.attempts.as_slice() {
            return write!(f, "cannot connect to `{url}`: {cause}");
        }
        write!(f, "no broker accepted a connection (")?;
        for (index, (url, cause)) in self.attempts.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "`{url}`: {cause}")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for ConnectFailed {}

/// A driver failure, as text with the configured secrets scrubbed.
#[derive(Debug)]
pub(crate) struct Scrubbed(pub(crate) String);

impl fmt::Display for Scrubbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Scrubbed {}

/// Where a publish was when its deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishStage {
    /// Waiting for the broker to unblock the connection (`connection.blocked`: a memory or
    /// disk alarm). Nothing was sent; the channel stays fit for reuse.
    Unblock,
    /// Handing the message to the connection: the socket did not take it (a peer that stopped
    /// reading, or a broker that blocked the connection before its notice arrived).
    Send,
    /// Waiting for the broker's confirm of a message that was sent (a dead or blackholed broker
    /// never sends one: lapin#409).
    Confirm,
}

impl fmt::Display for PublishStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unblock => "the broker to unblock the connection (a resource alarm)",
            Self::Send => "sending the message",
            Self::Confirm => "the broker's confirm",
        })
    }
}

/// Why [`PooledChannel::publish`](crate::PooledChannel::publish) did not end with the broker
/// taking the message.
#[derive(Debug)]
#[non_exhaustive]
pub enum PublishError {
    /// The deadline passed. At [`PublishStage::Unblock`] nothing was sent; at the other stages
    /// the message may or may not have reached the broker, and the channel, with a confirm
    /// outstanding, is destroyed rather than reused when its guard is dropped.
    Timeout {
        /// The deadline that passed.
        after: Duration,
        /// What was being waited for.
        stage: PublishStage,
    },
    /// The broker refused the message (`basic.nack`): it was not stored.
    Nacked,
    /// The message was published `mandatory` and no queue was bound to take it: the broker sent
    /// it back (`basic.return`), then confirmed.
    Returned(Box<BasicReturnMessage>),
    /// The channel or its connection failed (closed, broken, or closed by the broker with a
    /// protocol error such as a missing exchange).
    Channel(lapin::Error),
}

impl PublishError {
    /// Whether publishing the same message again (on another channel) may succeed: after a
    /// timeout, a nack or a channel failure, yes; a returned message would be returned again.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Returned(_))
    }
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout { after, stage } => {
                write!(f, "publish timed out after {after:?} waiting for {stage}")
            }
            Self::Nacked => f.write_str("the broker refused the message (basic.nack)"),
            Self::Returned(message) => write!(
                f,
                "the message was returned as unroutable: {} {}",
                message.reply_code, message.reply_text
            ),
            Self::Channel(err) => write!(f, "publish failed: {err}"),
        }
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Channel(err) => Some(err),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed_longest_first_and_never_printed() {
        let mut secrets = Secrets::default();
        secrets.add("pw");
        secrets.add("longer-pw");
        secrets.add("");
        assert_eq!(secrets.scrub("longer-pw and pw"), "*** and ***".to_owned());
        assert!(!format!("{secrets:?}").contains("pw"));
    }

    #[test]
    fn a_connect_failure_lists_every_broker_in_order() {
        let one = ConnectFailed {
            attempts: vec![("amqp://a".to_owned(), "refused".to_owned())],
        };
        assert_eq!(one.to_string(), "cannot connect to `amqp://a`: refused");
        let two = ConnectFailed {
            attempts: vec![
                ("amqp://a".to_owned(), "refused".to_owned()),
                ("amqp://b".to_owned(), "timed out".to_owned()),
            ],
        };
        assert_eq!(
            two.to_string(),
            "no broker accepted a connection (`amqp://a`: refused; `amqp://b`: timed out)"
        );
    }

    #[test]
    fn publish_errors_say_what_was_waited_for() {
        let err = PublishError::Timeout {
            after: Duration::from_millis(250),
            stage: PublishStage::Confirm,
        };
        assert_eq!(
            err.to_string(),
            "publish timed out after 250ms waiting for the broker's confirm"
        );
        assert!(err.is_retryable());
        assert!(PublishError::Nacked.is_retryable());
        let blocked = PublishError::Timeout {
            after: Duration::from_secs(1),
            stage: PublishStage::Unblock,
        };
        assert_eq!(
            blocked.to_string(),
            "publish timed out after 1s waiting for the broker to unblock the connection (a resource alarm)"
        );
    }
}
