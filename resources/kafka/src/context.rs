//! [`KafkaContext`]: the librdkafka client context of every producer and consumer this crate
//! makes. Its error callback is how a client learns that every broker is down (librdkafka
//! reconnects by itself and reports that only there), and its log callback forwards
//! librdkafka's log to `tracing`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// What the error callback of one client learned.
#[derive(Debug, Default)]
pub(crate) struct ClientState {
    /// librdkafka reported `ALL_BROKERS_DOWN` and no health check has succeeded since.
    all_brokers_down: AtomicBool,
    /// Errors reported since the last health round read them.
    errors_since_round: AtomicU64,
    /// The last error reported, for the health round's reason.
    last_error: Mutex<Option<String>>,
}

impl ClientState {
    pub(crate) fn all_brokers_down(&self) -> bool {
        self.all_brokers_down.load(Ordering::Relaxed)
    }

    /// A metadata round trip succeeded: a broker answers again.
    pub(crate) fn broker_answered(&self) {
        self.all_brokers_down.store(false, Ordering::Relaxed);
    }

    /// The errors reported since the previous call, as a health reason; `None` if there were
    /// none.
    pub(crate) fn take_recent_errors(&self) -> Option<String> {
        let count = self.errors_since_round.swap(0, Ordering::Relaxed);
        (count > 0).then(|| {
            let last = self.last_error.lock().clone().unwrap_or_default();
            format!("librdkafka reported {count} client error(s) since the last health round; last: {last}")
        })
    }
}

/// Counters of one registration, shown in `ResourceStatus::counters`.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) all_brokers_down: AtomicU64,
    pub(crate) flush_timeouts: AtomicU64,
    pub(crate) undelivered_at_close: AtomicU64,
    pub(crate) commit_failures_at_close: AtomicU64,
    pub(crate) close_timeouts: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The client context of every producer and consumer of this crate (the `C` of
/// `FutureProducer<C>` and `StreamConsumer<C>`).
///
/// It marks the client broken when librdkafka reports that all brokers are down (see
/// [`all_brokers_down`](Self::all_brokers_down)), counts errors for health rounds, and sends
/// librdkafka's log lines to `tracing` with target `librdkafka`.
#[derive(Debug, Clone)]
pub struct KafkaContext {
    state: Arc<ClientState>,
    counters: Arc<Counters>,
    key: &'static str,
}

impl KafkaContext {
    pub(crate) fn new(state: Arc<ClientState>, counters: Arc<Counters>, key: &'static str) -> Self {
        Self {
            state,
            counters,
            key,
        }
    }

    /// Whether librdkafka reported that every broker is down, and no health check has
    /// succeeded since.
    pub fn all_brokers_down(&self) -> bool {
        self.state.all_brokers_down()
    }
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let resource = self.key;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", resource, facility = fac, "{log_message}");
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", resource, facility = fac, "{log_message}");
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", resource, facility = fac, "{log_message}");
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", resource, facility = fac, "{log_message}");
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let resource = self.key;
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            if !self.state.all_brokers_down.swap(true, Ordering::Relaxed) {
                Counters::add(&self.counters.all_brokers_down, 1);
            }
            tracing::warn!(resource, %error, reason, "all brokers down: the client is marked broken");
        } else {
            tracing::debug!(resource, %error, reason, "librdkafka client error");
        }
        *self.state.last_error.lock() = Some(format!("{error}: {reason}"));
        self.state
            .errors_since_round
            .fetch_add(1, Ordering::Relaxed);
    }
}

impl ConsumerContext for KafkaContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_brokers_down_marks_the_client_until_a_broker_answers() {
        let state = Arc::new(ClientState::default());
        let counters = Arc::new(Counters::default());
        let context = KafkaContext::new(Arc::clone(&state), Arc::clone(&counters), "kafka-test");
        context.error(
            KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure),
            "127.0.0.1:9092/1: Disconnected",
        );
        assert!(!context.all_brokers_down());
        context.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        context.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert!(context.all_brokers_down());
        assert_eq!(Counters::get(&counters.all_brokers_down), 1, "one outage");
        let reason = state.take_recent_errors().unwrap();
        assert!(reason.contains("3 client error(s)"), "{reason}");
        assert!(reason.contains("1/1 brokers are down"), "{reason}");
        assert_eq!(state.take_recent_errors(), None);

        state.broker_answered();
        assert!(!context.all_brokers_down());
        context.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert_eq!(
            Counters::get(&counters.all_brokers_down),
            2,
            "a second outage"
        );
    }
}
