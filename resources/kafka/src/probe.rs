//! The metadata round trip that proves a broker answers: made by `create` and by `check`, on
//! the blocking pool, bounded by `metadata_timeout`.

use std::fmt;
use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka::error::KafkaError;

use crate::blocking::{self, GRACE};
use crate::config::KafkaConfig;

/// What one metadata request asks for, and how long it may take.
#[derive(Debug, Clone)]
pub(crate) struct Probe {
    timeout: Duration,
    topic: Option<String>,
}

/// Why a metadata round trip failed.
#[derive(Debug)]
pub(crate) enum ProbeFailed {
    /// librdkafka returned an error (no broker answered within the timeout, …).
    Driver(KafkaError),
    /// A broker answered, but the metadata names no broker.
    NoBrokers,
    /// The health topic is not known to the brokers (or has an error).
    Topic { topic: String, error: String },
    /// The call did not return (see [`blocking::run`]).
    Blocked(blocking::Blocked),
}

impl fmt::Display for ProbeFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Driver(err) => write!(f, "metadata request failed: {err}"),
            Self::NoBrokers => f.write_str("the metadata lists no broker"),
            Self::Topic { topic, error } => {
                write!(f, "health topic `{topic}` is not usable: {error}")
            }
            Self::Blocked(blocked) => blocked.fmt(f),
        }
    }
}

impl std::error::Error for ProbeFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Driver(err) => Some(err),
            Self::Blocked(blocked) => Some(blocked),
            Self::NoBrokers | Self::Topic { .. } => None,
        }
    }
}

impl Probe {
    pub(crate) fn new(config: &KafkaConfig) -> Self {
        Self {
            timeout: config.get_metadata_timeout(),
            topic: config.get_health_topic().map(str::to_owned),
        }
    }

    /// Fetch the metadata through the client `client_of(&handle)`, off the runtime.
    ///
    /// Cancel safe: dropping the future leaves the request to finish on the blocking pool.
    pub(crate) async fn run<H, C, F>(&self, handle: H, client_of: F) -> Result<(), ProbeFailed>
    where
        H: Send + 'static,
        C: ClientContext + 'static,
        F: FnOnce(&H) -> &Client<C> + Send + 'static,
    {
        let probe = self.clone();
        blocking::run("fetch_metadata", self.timeout + GRACE, move || {
            probe.fetch(client_of(&handle))
        })
        .await
        .map_err(ProbeFailed::Blocked)?
    }

    fn fetch<C: ClientContext>(&self, client: &Client<C>) -> Result<(), ProbeFailed> {
        let metadata = client
            .fetch_metadata(self.topic.as_deref(), self.timeout)
            .map_err(ProbeFailed::Driver)?;
        if metadata.brokers().is_empty() {
            return Err(ProbeFailed::NoBrokers);
        }
        if let Some(topic) = &self.topic {
            let known = metadata.topics().iter().find(|t| t.name() == topic);
            let error = match known {
                None => Some(String::from("not in the metadata")),
                Some(found) => found
                    .error()
                    .map(|code| rdkafka::error::RDKafkaErrorCode::from(code).to_string()),
            };
            if let Some(error) = error {
                return Err(ProbeFailed::Topic {
                    topic: topic.clone(),
                    error,
                });
            }
        }
        Ok(())
    }
}
