//! The secrets of one configuration, and driver errors as causes with every secret scrubbed.
//!
//! librdkafka does not echo a SASL password in its own messages, but a configuration error
//! (`KafkaError::ClientConfig`) prints the offending property's value, which may be a secret
//! given as an extra property. A driver message that holds a configured secret is kept with the
//! secret replaced by `***`, and the driver error itself is dropped, so no `source()` chain can
//! print it either.

use std::fmt;

use nebula_resource::{BoxError, Secret};

/// The secrets of one configuration.
#[derive(Clone, Default)]
pub(crate) struct Secrets(Vec<Secret>);

impl Secrets {
    pub(crate) fn add(&mut self, secret: &str) {
        if !secret.is_empty() && !self.0.iter().any(|known| known.expose() == secret) {
            self.0.push(Secret::new(secret));
        }
    }

    fn occur_in(&self, text: &str) -> bool {
        self.0.iter().any(|secret| text.contains(secret.expose()))
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

    /// `err` as a cause: itself, or only its scrubbed message if it mentions a secret.
    pub(crate) fn cause<E>(&self, err: E) -> BoxError
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let display = err.to_string();
        if self.occur_in(&display) || self.occur_in(&format!("{err:?}")) {
            Box::new(Scrubbed(self.scrub(&display)))
        } else {
            Box::new(err)
        }
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} redacted)", self.0.len())
    }
}

/// A driver message with the secrets it held replaced by `***`.
#[derive(Debug)]
struct Scrubbed(String);

impl fmt::Display for Scrubbed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Scrubbed {}

#[cfg(test)]
mod tests {
    use rdkafka::error::KafkaError;
    use rdkafka::types::RDKafkaConfRes;

    use super::*;

    #[test]
    fn a_message_holding_a_secret_is_scrubbed_and_its_source_dropped() {
        let mut secrets = Secrets::default();
        secrets.add("pw");
        secrets.add("longer-pw");
        let err = KafkaError::ClientConfig(
            RDKafkaConfRes::RD_KAFKA_CONF_INVALID,
            "invalid value".to_owned(),
            "ssl.key.password".to_owned(),
            "longer-pw and pw".to_owned(),
        );
        let cause = secrets.cause(err);
        let shown = format!("{cause} {cause:?}");
        assert!(
            !shown.contains("pw and") && !shown.contains("longer"),
            "{shown}"
        );
        assert!(shown.contains("*** and ***"), "{shown}");
        assert!(cause.downcast_ref::<KafkaError>().is_none());

        let clean = KafkaError::ClientCreation("no brokers".to_owned());
        assert!(secrets.cause(clean).downcast_ref::<KafkaError>().is_some());
        assert!(!format!("{secrets:?}").contains("pw"));
    }
}
