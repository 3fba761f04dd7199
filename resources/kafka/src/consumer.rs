//! [`KafkaConsumer`]: consumer group members, one `StreamConsumer` each, never shared and never
//! handed to a second acquirer.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nebula_resource::{CreateContext, Error, Resource, Topology};
use rdkafka::consumer::{CommitMode, Consumer, MessageStream, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;

use crate::blocking;
use crate::config::KafkaConsumerConfig;
use crate::context::{ClientState, Counters, KafkaContext};
use crate::probe::{Probe, ProbeFailed};

/// The Kafka consumer resource: each guard holds one member of the configured consumer group
/// ([`GroupConsumer`], a librdkafka [`StreamConsumer`]).
///
/// # Why this topology
///
/// A group member is state the broker tracks: its partitions, its position in them, its
/// heartbeats. It cannot be shared (two tasks reading one member split its messages between
/// them arbitrarily), and it must not sit idle in a pool either: an idle member keeps its
/// partitions, and nobody reads them until `max.poll.interval.ms` (5 minutes by default) makes
/// the group take them back. So the resource is [`Topology::Pooled`] with **one member per
/// acquire**:
///
/// - `create` makes the consumer and fetches metadata (a `Create` error if no broker answers);
///   it does not join the group yet. The first [`GroupConsumer::recv`] (or
///   [`stream`](GroupConsumer::stream), [`ensure_subscribed`](GroupConsumer::ensure_subscribed))
///   subscribes to the configured topics. An instance the pool made ahead (`min_idle`, a
///   health round's probe) is therefore never a group member while idle.
/// - Dropping the guard ends the member: `recycle` always declines (the instance is destroyed,
///   not reused; this is not counted as a failure), and `destroy` commits its stored offsets
///   (see [`commit_on_close`](KafkaConsumerConfig::commit_on_close)) and leaves the group, so its
///   partitions go to the other members at once.
/// - The pool's `max_size` is the number of members this process may run at once: hold one
///   guard per consuming task for as long as it consumes.
///
/// `destroy` never hangs on brokers that are gone (rust-rdkafka #509, #611: closing a consumer
/// waits on the group coordinator): the commit and close run on a thread of their own, waited
/// for at most [`close_timeout`](crate::KafkaConfig::close_timeout); past it they go on in the
/// background, and the `close_timeouts` counter says so. `commit_failures_at_close` counts
/// final commits that failed, `all_brokers_down` the outages the members saw.
///
/// `is_broken` and `check` are as for [`KafkaProducer`](crate::KafkaProducer): all brokers
/// down or a fatal error; a metadata round trip.
#[derive(Debug, Clone, Default)]
pub struct KafkaConsumer {
    counters: Arc<Counters>,
}

impl KafkaConsumer {
    /// A consumer resource with its counters at zero.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Resource for KafkaConsumer {
    type Config = KafkaConsumerConfig;
    type Instance = GroupConsumer;
    const KEY: &'static str = "kafka-consumer";
    const TOPOLOGY: Topology = Topology::Pooled;

    async fn create(
        &self,
        config: &KafkaConsumerConfig,
        ctx: &CreateContext,
    ) -> Result<GroupConsumer, Error> {
        let (client_config, secrets) = config.client_config_for(ctx)?;
        let state = Arc::new(ClientState::default());
        let context = KafkaContext::new(Arc::clone(&state), Arc::clone(&self.counters), Self::KEY);
        let consumer: StreamConsumer<KafkaContext> = client_config
            .create_with_context(context)
            .map_err(|err| Error::create(secrets.cause(err)))?;
        let member = GroupConsumer {
            inner: Arc::new(ConsumerInner {
                consumer: Some(consumer),
                state,
                probe: Probe::new(config.client()),
                topics: config.topics().to_vec(),
                subscribed: AtomicBool::new(false),
                commit_on_close: config.get_commit_on_close(),
                close_timeout: config.client().get_close_timeout(),
                counters: Arc::clone(&self.counters),
            }),
        };
        member
            .probe()
            .await
            .map_err(|err| Error::create(secrets.cause(err)))?;
        Ok(member)
    }

    async fn check(&self, member: &mut GroupConsumer) -> Result<(), Error> {
        member.ping().await
    }

    fn is_broken(&self, member: &GroupConsumer) -> bool {
        member.inner.state.all_brokers_down() || member.client().fatal_error().is_some()
    }

    fn degraded(&self, member: &GroupConsumer) -> Option<String> {
        member.inner.state.take_recent_errors()
    }

    async fn recycle(&self, _member: &mut GroupConsumer) -> Result<(), Error> {
        Err(Error::recycle(
            "a consumer group member is closed when its guard is dropped, never handed to another acquirer",
        ))
    }

    async fn destroy(&self, member: GroupConsumer) {
        let close_timeout = member.inner.close_timeout;
        let Some(mut inner) = Arc::into_inner(member.inner) else {
            // A metadata request that outlived its deadline still holds the consumer; the last
            // handle's drop closes it, on a thread of its own (see `ConsumerInner`).
            tracing::debug!(
                resource = Self::KEY,
                "consumer still referenced by a metadata request; it closes when that ends"
            );
            return;
        };
        let closed =
            blocking::run_detached("consumer-close", close_timeout, move || inner.close()).await;
        if let Err(blocked) = closed {
            Counters::add(&self.counters.close_timeouts, 1);
            tracing::warn!(
                resource = Self::KEY,
                error = %blocked,
                "consumer did not close within close_timeout; it goes on closing in the background"
            );
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            (
                "all_brokers_down",
                Counters::get(&self.counters.all_brokers_down),
            ),
            (
                "commit_failures_at_close",
                Counters::get(&self.counters.commit_failures_at_close),
            ),
            (
                "close_timeouts",
                Counters::get(&self.counters.close_timeouts),
            ),
        ]
    }
}

/// Commit the stored offsets of `consumer` (if `commit`) and close it, leaving its group.
/// Blocks, for as long as librdkafka takes.
fn commit_and_close(
    consumer: StreamConsumer<KafkaContext>,
    subscribed: bool,
    commit: bool,
    counters: &Counters,
) {
    if subscribed {
        // Closing polls the consumer until librdkafka says it is closed, and a message that
        // poll returns has its offset stored (`enable.auto.offset.store`) and committed, though
        // nobody read it. Pausing the assignment discards what was fetched ahead.
        if let Ok(assignment) = consumer.assignment()
            && let Err(err) = consumer.pause(&assignment)
        {
            tracing::debug!(resource = KafkaConsumer::KEY, error = %err, "could not pause the assignment before closing");
        }
    }
    if commit && subscribed {
        match consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(err) => {
                Counters::add(&counters.commit_failures_at_close, 1);
                tracing::warn!(resource = KafkaConsumer::KEY, error = %err, "final commit failed: the group restarts from its previous commit");
            }
        }
    }
    // `BaseConsumer`'s drop closes the consumer: it leaves the group and waits until librdkafka
    // says it is closed.
    drop(consumer);
    tracing::debug!(
        resource = KafkaConsumer::KEY,
        "consumer closed and left its group"
    );
}

/// One consumer group member of [`KafkaConsumer`]: a librdkafka [`StreamConsumer`] (`Deref`,
/// for commits, offsets, pause and resume, metadata) that joins its group on first use.
///
/// ```no_run
/// use nebula_resource::ResourceManager;
/// use nebula_resource_kafka::{KafkaConfig, KafkaConsumer, KafkaConsumerConfig};
/// use nebula_resource_kafka::rdkafka::Message;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let config = KafkaConsumerConfig::new(KafkaConfig::new("127.0.0.1:9092"), "billing", ["orders"]);
/// let manager = ResourceManager::builder()
///     .register(KafkaConsumer::new(), config)
///     .build()
///     .await?;
/// let member = manager.acquire::<KafkaConsumer>().await?;
/// let message = member.recv().await?;
/// println!("{:?}", message.payload_view::<str>());
/// # Ok(()) }
/// ```
pub struct GroupConsumer {
    inner: Arc<ConsumerInner>,
}

/// The consumer behind a member. However it goes — `destroy`, or the drop of the last handle
/// (an instance the pool dropped without `destroy`, a metadata request that outlived it) — it
/// commits and closes the same way; the drop does it on a thread of its own, since closing
/// blocks on the brokers.
struct ConsumerInner {
    /// Present until `close` or drop.
    consumer: Option<StreamConsumer<KafkaContext>>,
    state: Arc<ClientState>,
    probe: Probe,
    topics: Vec<String>,
    subscribed: AtomicBool,
    commit_on_close: bool,
    close_timeout: Duration,
    counters: Arc<Counters>,
}

impl ConsumerInner {
    fn consumer(&self) -> &StreamConsumer<KafkaContext> {
        self.consumer
            .as_ref()
            .unwrap_or_else(|| unreachable!("the consumer is present until closed or dropped"))
    }

    /// Commit (if configured) and close. Blocks.
    fn close(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            commit_and_close(
                consumer,
                self.subscribed.load(Ordering::Acquire),
                self.commit_on_close,
                &self.counters,
            );
        }
    }
}

impl Drop for ConsumerInner {
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            let subscribed = self.subscribed.load(Ordering::Acquire);
            let (commit, counters) = (self.commit_on_close, Arc::clone(&self.counters));
            blocking::spawn_named("consumer-close", move || {
                commit_and_close(consumer, subscribed, commit, &counters);
            });
        }
    }
}

impl GroupConsumer {
    /// The next message, joining the group (subscribing to the configured topics) first if this
    /// member has not yet.
    ///
    /// # Errors
    ///
    /// The subscription's error (an invalid regular expression), or the consumer's: a message
    /// that could not be fetched, a partition error, or a client event such as
    /// `AllBrokersDown` (`KafkaError::MessageConsumption`). The latter are reports, not the
    /// end of the member: librdkafka reconnects, and the next `recv` reads on.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe, as librdkafka's `StreamConsumer::recv`: a message is only taken when the
    /// future completes.
    pub async fn recv(&self) -> Result<BorrowedMessage<'_>, KafkaError> {
        self.ensure_subscribed()?;
        self.inner.consumer().recv().await
    }

    /// A stream of this member's messages, joining the group first if this member has not yet.
    ///
    /// # Errors
    ///
    /// The subscription's error (an invalid regular expression).
    pub fn stream(&self) -> KafkaResult<MessageStream<'_, KafkaContext>> {
        self.ensure_subscribed()?;
        Ok(self.inner.consumer().stream())
    }

    /// Subscribe to the configured topics, if not yet done. Joining the group itself happens in
    /// the background, and is only done while the member is read from (`recv`, `stream`).
    ///
    /// # Errors
    ///
    /// The subscription's error (an invalid regular expression).
    pub fn ensure_subscribed(&self) -> KafkaResult<()> {
        if self.inner.subscribed.load(Ordering::Acquire) {
            return Ok(());
        }
        let topics: Vec<&str> = self.inner.topics.iter().map(String::as_str).collect();
        self.inner.consumer().subscribe(&topics)?;
        self.inner.subscribed.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether librdkafka reported that every broker is down (and no health check has
    /// succeeded since).
    pub fn all_brokers_down(&self) -> bool {
        self.inner.state.all_brokers_down()
    }

    /// One metadata round trip to the brokers, the health check's: it proves a broker
    /// answers (and clears the [all-brokers-down](Self::all_brokers_down) mark). Runs off the
    /// async runtime; it does not join the group.
    ///
    /// # Errors
    ///
    /// A [`Check`](nebula_resource::ErrorKind::Check) error when no broker answered within
    /// [`metadata_timeout`](crate::KafkaConfig::metadata_timeout) (the call returns at most
    /// half a second after it), or the [`health_topic`](crate::KafkaConfig::health_topic) is
    /// unknown.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves the request to finish on the blocking pool.
    pub async fn ping(&self) -> Result<(), Error> {
        self.probe().await.map_err(Error::check)?;
        self.inner.state.broker_answered();
        Ok(())
    }

    async fn probe(&self) -> Result<(), ProbeFailed> {
        let handle = Arc::clone(&self.inner);
        self.inner
            .probe
            .run(handle, |inner: &Arc<ConsumerInner>| {
                inner.consumer().client()
            })
            .await
    }
}

impl Deref for GroupConsumer {
    type Target = StreamConsumer<KafkaContext>;

    fn deref(&self) -> &StreamConsumer<KafkaContext> {
        self.inner.consumer()
    }
}

impl fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("topics", &self.inner.topics)
            .field("subscribed", &self.inner.subscribed.load(Ordering::Relaxed))
            .field("all_brokers_down", &self.all_brokers_down())
            .finish_non_exhaustive()
    }
}
