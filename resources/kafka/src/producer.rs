//! [`KafkaProducer`]: one `FutureProducer`, shared by every acquirer, flushed when it is
//! destroyed.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use nebula_resource::{CreateContext, Error, Resource, Topology};
use rdkafka::producer::{FutureProducer, Producer};

use crate::blocking::{self, GRACE};
use crate::config::{KafkaConfig, Role};
use crate::context::{ClientState, Counters, KafkaContext};
use crate::probe::Probe;

/// The Kafka producer resource: [`Topology::Resident`], one librdkafka producer whose handles
/// ([`ProducerClient`]) every acquirer gets.
///
/// librdkafka batches the messages of all tasks on its own connections, so one producer per
/// process is the fastest and the usual setup.
///
/// - `create` makes the producer and fetches metadata once (bounded by
///   [`metadata_timeout`](KafkaConfig::metadata_timeout)), so a registration whose brokers do
///   not answer fails there instead of queueing messages for nobody.
/// - `is_broken`: librdkafka reported `ALL_BROKERS_DOWN` to the client context's error callback
///   (and no health check has succeeded since), or a fatal error. The manager then replaces the
///   producer: the next acquire creates a new one, which fails with a `Create` error while no
///   broker answers, so the circuit breaker can open and acquires fail fast.
/// - `check` (health rounds) fetches metadata; `degraded` reports the errors librdkafka
///   reported since the previous round (a dropped connection it has since re-made).
/// - `destroy` flushes: it waits up to [`flush_timeout`](KafkaConfig::flush_timeout) for every
///   queued and in-flight message to be acknowledged. Messages still unacknowledged then are
///   lost (dropping a librdkafka producer purges its queue, rust-rdkafka #518): `destroy` logs a
///   warning with their number and adds it to the `undelivered_at_close` counter, shown with
///   `flush_timeouts` and `all_brokers_down` in `ResourceStatus::counters`. When guards still
///   hold handles to a replaced producer, the last of them to be dropped flushes and reports
///   the same way, on a thread of its own. (A `FutureProducer` cloned out of a handle escapes
///   all this: dropping the last such clone purges what it still holds.)
///
/// Every blocking librdkafka call (`fetch_metadata`, `flush`, the producer's drop) runs off the
/// async runtime and is waited for with a deadline.
///
/// Register a value made with [`KafkaProducer::new`] (or `default()`); it holds the
/// registration's counters.
#[derive(Debug, Clone, Default)]
pub struct KafkaProducer {
    counters: Arc<Counters>,
}

impl KafkaProducer {
    /// A producer resource with its counters at zero.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Resource for KafkaProducer {
    type Config = KafkaConfig;
    type Instance = ProducerClient;
    const KEY: &'static str = "kafka-producer";
    const TOPOLOGY: Topology = Topology::Resident;

    async fn create(
        &self,
        config: &KafkaConfig,
        ctx: &CreateContext,
    ) -> Result<ProducerClient, Error> {
        let (client_config, secrets) = config.client_config_for(Role::Producer, ctx)?;
        let state = Arc::new(ClientState::default());
        let context = KafkaContext::new(Arc::clone(&state), Arc::clone(&self.counters), Self::KEY);
        let producer: FutureProducer<KafkaContext> = client_config
            .create_with_context(context)
            .map_err(|err| Error::create(secrets.cause(err)))?;
        let client = ProducerClient {
            inner: Arc::new(ProducerInner {
                producer: Some(producer),
                state,
                probe: Probe::new(config),
                flush_timeout: config.get_flush_timeout(),
                counters: Arc::clone(&self.counters),
            }),
        };
        // On failure the producer is closed on a thread of its own (see `ProducerInner`).
        client
            .probe()
            .await
            .map_err(|err| Error::create(secrets.cause(err)))?;
        Ok(client)
    }

    async fn check(&self, client: &mut ProducerClient) -> Result<(), Error> {
        client.ping().await
    }

    fn is_broken(&self, client: &ProducerClient) -> bool {
        client.inner.state.all_brokers_down() || client.client().fatal_error().is_some()
    }

    fn degraded(&self, client: &ProducerClient) -> Option<String> {
        client.inner.state.take_recent_errors()
    }

    fn share(&self, client: &ProducerClient) -> Option<ProducerClient> {
        Some(client.clone())
    }

    async fn destroy(&self, client: ProducerClient) {
        let flush_timeout = client.inner.flush_timeout;
        // Logging and counting happen on the blocking thread, so they happen even if the
        // manager stops waiting for this `destroy` (its `recycle_timeout`).
        let flushed = blocking::run("flush", flush_timeout + GRACE, move || {
            // What is queued now is delivered, or `flush_timeout` runs out.
            let flushed = client.flush(flush_timeout);
            match Arc::into_inner(client.inner) {
                // The last handle: report what is left, and drop the producer here.
                Some(mut inner) => inner.close(Duration::ZERO),
                // Handles are still out (a guard that outlived its producer's replacement):
                // the last one to go flushes again and reports (see `ProducerInner`).
                None => {
                    if let Err(err) = flushed {
                        tracing::debug!(resource = KafkaProducer::KEY, error = %err, "producer flush incomplete; handles are still out");
                    }
                }
            }
        })
        .await;
        if let Err(blocked) = flushed {
            Counters::add(&self.counters.flush_timeouts, 1);
            tracing::warn!(resource = Self::KEY, error = %blocked, "producer flush did not return; it goes on in the background");
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            (
                "all_brokers_down",
                Counters::get(&self.counters.all_brokers_down),
            ),
            (
                "flush_timeouts",
                Counters::get(&self.counters.flush_timeouts),
            ),
            (
                "undelivered_at_close",
                Counters::get(&self.counters.undelivered_at_close),
            ),
        ]
    }
}

/// Flush `producer` for up to `flush_timeout`, report what is left unacknowledged (it is lost:
/// dropping a librdkafka producer purges its queue, rust-rdkafka #518), and drop it. Blocks.
fn close_producer(
    producer: FutureProducer<KafkaContext>,
    flush_timeout: Duration,
    counters: &Counters,
) {
    let flushed = producer.flush(flush_timeout);
    let left = producer.in_flight_count();
    if flushed.is_err() || left > 0 {
        let left = u64::try_from(left).unwrap_or_default();
        Counters::add(&counters.flush_timeouts, 1);
        Counters::add(&counters.undelivered_at_close, left);
        tracing::warn!(
            resource = KafkaProducer::KEY,
            undelivered = left,
            "producer closed with messages not acknowledged within flush_timeout: they are lost"
        );
    } else {
        tracing::debug!(
            resource = KafkaProducer::KEY,
            "producer flushed: every message acknowledged"
        );
    }
    drop(producer);
}

/// A handle to the shared producer of [`KafkaProducer`]: a librdkafka
/// [`FutureProducer`] (`Deref`), cheap to clone.
///
/// ```no_run
/// use std::time::Duration;
/// use nebula_resource::ResourceManager;
/// use nebula_resource_kafka::{KafkaConfig, KafkaProducer};
/// use nebula_resource_kafka::rdkafka::producer::FutureRecord;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = ResourceManager::builder()
///     .register(KafkaProducer::new(), KafkaConfig::new("127.0.0.1:9092"))
///     .build()
///     .await?;
/// let producer = manager.acquire::<KafkaProducer>().await?;
/// let delivery = producer
///     .send(FutureRecord::to("orders").key("42").payload("paid"), Duration::from_secs(1))
///     .await
///     .map_err(|(err, _message)| err)?;
/// println!("stored at partition {} offset {}", delivery.partition, delivery.offset);
/// # Ok(()) }
/// ```
///
/// A send's future is cancel safe in the sense librdkafka gives: dropping it does not take the
/// message back; it is delivered (or fails) all the same.
#[derive(Clone)]
pub struct ProducerClient {
    inner: Arc<ProducerInner>,
}

/// The producer behind every handle. Whoever drops the last handle, the producer is flushed
/// (for up to `flush_timeout`) before it is dropped, and what is left is reported: `destroy`
/// does it in place when it holds the last handle; otherwise the drop below does it on a
/// thread of its own, since flushing blocks.
struct ProducerInner {
    /// Present until `close` or drop.
    producer: Option<FutureProducer<KafkaContext>>,
    state: Arc<ClientState>,
    probe: Probe,
    flush_timeout: Duration,
    counters: Arc<Counters>,
}

impl ProducerInner {
    fn producer(&self) -> &FutureProducer<KafkaContext> {
        self.producer
            .as_ref()
            .unwrap_or_else(|| unreachable!("the producer is present until closed or dropped"))
    }

    /// Flush for up to `flush_timeout`, report, drop the producer. Blocks.
    fn close(&mut self, flush_timeout: Duration) {
        if let Some(producer) = self.producer.take() {
            close_producer(producer, flush_timeout, &self.counters);
        }
    }
}

impl Drop for ProducerInner {
    fn drop(&mut self) {
        if let Some(producer) = self.producer.take() {
            let (flush_timeout, counters) = (self.flush_timeout, Arc::clone(&self.counters));
            blocking::spawn_named("producer-close", move || {
                close_producer(producer, flush_timeout, &counters);
            });
        }
    }
}

impl ProducerClient {
    /// Whether librdkafka reported that every broker is down (and no health check has
    /// succeeded since): the manager replaces such a producer on the next acquire.
    pub fn all_brokers_down(&self) -> bool {
        self.inner.state.all_brokers_down()
    }

    /// One metadata round trip to the brokers, the health check's: it proves a broker
    /// answers (and clears the [all-brokers-down](Self::all_brokers_down) mark). Runs off the
    /// async runtime.
    ///
    /// # Errors
    ///
    /// A [`Check`](nebula_resource::ErrorKind::Check) error when no broker answered within
    /// [`metadata_timeout`](KafkaConfig::metadata_timeout) (the call returns at most half a
    /// second after it), or the [`health_topic`](KafkaConfig::health_topic) is unknown.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves the request to finish on the blocking pool.
    pub async fn ping(&self) -> Result<(), Error> {
        self.probe().await.map_err(Error::check)?;
        self.inner.state.broker_answered();
        Ok(())
    }

    async fn probe(&self) -> Result<(), crate::probe::ProbeFailed> {
        let handle = self.clone();
        self.inner
            .probe
            .run(handle, |handle: &ProducerClient| handle.client())
            .await
    }
}

impl Deref for ProducerClient {
    type Target = FutureProducer<KafkaContext>;

    fn deref(&self) -> &FutureProducer<KafkaContext> {
        self.inner.producer()
    }
}

impl fmt::Debug for ProducerClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerClient")
            .field("all_brokers_down", &self.all_brokers_down())
            .field("in_flight", &self.in_flight_count())
            .finish_non_exhaustive()
    }
}
