//! [`RabbitMqChannel`]: a pool of channels on the shared [`RabbitMq`] connection, in confirm
//! mode, with a publish that has a deadline.

use std::fmt;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Consumer, ExchangeKind};
use nebula_resource::{CreateContext, Dependencies, Error, Resource};

use crate::config::RabbitMqChannelConfig;
use crate::connection::{RabbitMq, RabbitMqConnection};
use crate::error::{PublishError, PublishStage, Scrubbed};

/// Pooled AMQP channels on the connection of the [`RabbitMq`] registration (which must be
/// registered too: it is a declared dependency). Each guard holds one channel exclusively.
///
/// | Hook | What it does |
/// |---|---|
/// | `create` | acquires the shared connection, opens a channel, `confirm.select` (unless turned off) and `basic.qos` (if a prefetch is set) |
/// | `is_broken` | the channel is not open (closing, closed by the broker, failed), its connection is not connected or was retired, or a consumer was started on it |
/// | `degraded` | the connection is blocked by a broker resource alarm |
/// | `check` (after `validate_after_idle`) | a passive declare of `amq.direct`: a round trip on the channel itself (skipped while the connection is blocked) |
/// | `recycle` | without I/O: a channel whose publishes are not all confirmed yet (one whose publish timed out, say) is not reused |
/// | `destroy` | waits for outstanding confirms (up to `drain_timeout`), then closes the channel with code 200 |
#[derive(Debug, Clone, Copy, Default)]
pub struct RabbitMqChannel;

/// How often a publish looks whether the broker has unblocked its connection.
const BLOCKED_POLL: Duration = Duration::from_millis(10);

/// The exchange passively declared by `check`: it exists in every virtual host.
const PROBE_EXCHANGE: &str = "amq.direct";

impl Resource for RabbitMqChannel {
    type Config = RabbitMqChannelConfig;
    type Instance = PooledChannel;
    const KEY: &'static str = "rabbitmq-channel";

    fn dependencies() -> Dependencies {
        Dependencies::none().on::<RabbitMq>()
    }

    async fn create(
        &self,
        config: &RabbitMqChannelConfig,
        ctx: &CreateContext,
    ) -> Result<PooledChannel, Error> {
        let shared = ctx
            .dependency::<RabbitMq>()?
            .acquire()
            .await
            .map_err(Error::create)?;
        let connection = RabbitMqConnection::clone(&shared);
        match open(&connection, config).await {
            Ok(channel) => {
                drop(shared);
                Ok(PooledChannel {
                    channel,
                    connection,
                    publish_timeout: config.get_publish_timeout(),
                    drain_timeout: config.get_drain_timeout(),
                    consuming: AtomicBool::new(false),
                    draining: Mutex::new(None),
                })
            }
            Err(err) => {
                if connection.status().connected() {
                    drop(shared);
                } else {
                    // The connection died under us: have it replaced now, not at the next acquire.
                    shared.taint();
                }
                Err(Error::create(Scrubbed(format!(
                    "cannot open a channel on `{}`: {err}",
                    connection.broker()
                ))))
            }
        }
    }

    async fn check(&self, channel: &mut PooledChannel) -> Result<(), Error> {
        if channel.connection.status().blocked() {
            // No round trip can pass a blocked connection; `degraded` reports the alarm.
            return Ok(());
        }
        channel
            .channel
            .exchange_declare(
                PROBE_EXCHANGE.into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|err| Error::check(Scrubbed(err.to_string())))
    }

    fn is_broken(&self, channel: &PooledChannel) -> bool {
        channel.consuming.load(Ordering::Acquire)
            || !channel.channel.status().connected()
            || channel.connection.is_retired()
            || !channel.connection.status().connected()
    }

    fn degraded(&self, channel: &PooledChannel) -> Option<String> {
        channel.connection.blocked_reason()
    }

    async fn recycle(&self, channel: &mut PooledChannel) -> Result<(), Error> {
        channel.settle()
    }

    async fn destroy(&self, mut channel: PooledChannel) {
        let limit = channel.drain_timeout;
        let kept = channel
            .draining
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let draining = match kept {
            Some(draining) => draining,
            None => channel.wait_for_confirms_owned(),
        };
        // Confirms that do not come within the limit are lost with the channel; the publisher
        // that gave up on them was told so by its own deadline.
        let _ = tokio::time::timeout(limit, draining).await;
        if channel.channel.status().connected() {
            let _ = channel.channel.close(200, "OK".into()).await;
        }
    }
}

/// Open a channel on `connection` as `config` says.
async fn open(
    connection: &RabbitMqConnection,
    config: &RabbitMqChannelConfig,
) -> Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    if config.get_publisher_confirms() {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
    }
    if let Some(prefetch) = config.get_prefetch() {
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
    }
    Ok(channel)
}

/// The wait for a channel's outstanding confirms, owned so it can outlive a borrow.
type Draining = Pin<Box<dyn Future<Output = Result<(), lapin::Error>> + Send>>;

/// One AMQP channel, used by one guard at a time; see [`RabbitMqChannel`]. Derefs to
/// [`lapin::Channel`] for everything AMQP offers; [`publish`](Self::publish) adds a deadline.
///
/// ```no_run
/// use nebula_resource::ResourceManager;
/// use nebula_resource_rabbitmq::lapin::BasicProperties;
/// use nebula_resource_rabbitmq::{
///     RabbitMq, RabbitMqChannel, RabbitMqChannelConfig, RabbitMqConfig,
/// };
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = ResourceManager::builder()
///     .register(RabbitMq, RabbitMqConfig::new("amqp://127.0.0.1:5672/%2f"))
///     .register(RabbitMqChannel, RabbitMqChannelConfig::default())
///     .build()
///     .await?;
/// let channel = manager.acquire::<RabbitMqChannel>().await?;
/// // Returns once the broker has confirmed the message, or fails within 5 s.
/// channel
///     .publish("orders", "created", b"{\"id\":42}", BasicProperties::default())
///     .await?;
/// # Ok(()) }
/// ```
pub struct PooledChannel {
    channel: Channel,
    connection: RabbitMqConnection,
    publish_timeout: Duration,
    drain_timeout: Duration,
    /// A consumer was started on it: not to be reused.
    consuming: AtomicBool,
    /// Confirms still outstanding when it was released, for `destroy` to wait for. Only ever
    /// reached through `&mut self` (`get_mut`, no locking): the mutex makes the channel `Sync`,
    /// so a `publish` future borrowing it is `Send`.
    draining: Mutex<Option<Draining>>,
}

impl PooledChannel {
    /// Publish `payload` to `exchange` with `routing_key`, and wait for the broker's confirm,
    /// all within the configured `publish_timeout` (see
    /// [`RabbitMqChannelConfig::publish_timeout`](crate::RabbitMqChannelConfig::publish_timeout)).
    ///
    /// With publisher confirms on (the default), `Ok` means the broker has taken responsibility
    /// for the message (for a durable queue and a persistent message: written to disk). With
    /// them off, it means the message was handed to the socket.
    ///
    /// # Errors
    ///
    /// [`PublishError::Timeout`] when the deadline passes — a dead or blackholed broker never
    /// confirms; while the broker blocks the connection (a resource alarm) nothing is sent and
    /// the stage is [`PublishStage::Unblock`](crate::PublishStage::Unblock);
    /// [`PublishError::Nacked`] when the broker refuses the message;
    /// [`PublishError::Channel`] when the channel or connection failed (a missing exchange
    /// closes the channel).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the wait, not the message, once it was sent: it may still
    /// be delivered. The channel then has a confirm outstanding, so it is destroyed (after
    /// waiting for that confirm up to `drain_timeout`) rather than reused when its guard is
    /// dropped. Dropped while it waits for the broker to unblock the connection, nothing was
    /// sent and the channel is reused.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        self.publish_with(
            exchange,
            routing_key,
            BasicPublishOptions::default(),
            payload,
            properties,
            self.publish_timeout,
        )
        .await
    }

    /// [`publish`](Self::publish) with explicit options (`mandatory`) and deadline. A
    /// `mandatory` message that no queue takes is reported as [`PublishError::Returned`].
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish), and [`PublishError::Returned`].
    ///
    /// # Cancel safety
    ///
    /// As [`publish`](Self::publish).
    pub async fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        options: BasicPublishOptions,
        payload: &[u8],
        properties: BasicProperties,
        deadline: Duration,
    ) -> Result<(), PublishError> {
        let mut stage = PublishStage::Send;
        let attempt = async {
            // Nothing is sent while the broker blocks the connection: the message would only
            // sit in the socket, and the channel with it. Wait for the alarm to be lifted.
            let status = self.connection.status();
            if status.blocked() {
                stage = PublishStage::Unblock;
                while status.blocked() && status.connected() {
                    tokio::time::sleep(BLOCKED_POLL).await;
                }
                stage = PublishStage::Send;
            }
            let confirm = self
                .channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    options,
                    payload,
                    properties,
                )
                .await?;
            stage = PublishStage::Confirm;
            confirm.await
        };
        match tokio::time::timeout(deadline, attempt).await {
            // A confirm left outstanding keeps the channel out of the pool (see `recycle`),
            // without counting it as a failure: a resource alarm is no broken channel.
            Err(_) => Err(PublishError::Timeout {
                after: deadline,
                stage,
            }),
            Ok(Err(err)) => Err(PublishError::Channel(err)),
            Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => {
                Err(PublishError::Returned(Box::new(returned)))
            }
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
        }
    }

    /// Start a consumer on `queue` (an empty `consumer_tag` lets the broker pick one). A channel
    /// with a consumer is destroyed, not reused, when its guard is dropped, so the next user
    /// gets no deliveries meant for this one; a consumer that outlives the guard should use a
    /// channel of its own (`Guard::detach`).
    ///
    /// # Errors
    ///
    /// lapin's error when the broker refuses (`ACCESS_REFUSED`, a missing queue) or the
    /// channel is closed.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future may leave the consumer registered with the broker; the channel is
    /// marked not reusable before the request is sent, so it is destroyed either way.
    pub async fn consume(
        &self,
        queue: &str,
        consumer_tag: &str,
        options: BasicConsumeOptions,
    ) -> Result<Consumer, lapin::Error> {
        self.consuming.store(true, Ordering::Release);
        self.channel
            .basic_consume(
                queue.into(),
                consumer_tag.into(),
                options,
                FieldTable::default(),
            )
            .await
    }

    /// The shared connection this channel is open on.
    pub fn connection(&self) -> &RabbitMqConnection {
        &self.connection
    }

    /// The driver's channel (also reachable through `Deref`).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Whether every publish on this channel has been confirmed, checked without I/O; if not,
    /// keep the wait for `destroy`.
    fn settle(&mut self) -> Result<(), Error> {
        if !self.channel.status().connected() {
            return Err(Error::recycle("the channel is closing or closed"));
        }
        let mut waiting = self.wait_for_confirms_owned();
        match waiting
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(Ok(())) => Ok(()),
            Poll::Ready(Err(err)) => Err(Error::recycle(Scrubbed(err.to_string()))),
            Poll::Pending => {
                *self
                    .draining
                    .get_mut()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(waiting);
                Err(Error::recycle(
                    "publishes on the channel are not confirmed yet: it is not reused",
                ))
            }
        }
    }

    /// Wait for every outstanding confirm on this channel. lapin hands the wait out once (it
    /// takes the last pending confirm), so the future is kept until it ends.
    fn wait_for_confirms_owned(&self) -> Draining {
        let channel = self.channel.clone();
        Box::pin(async move { channel.wait_for_confirms().await.map(drop) })
    }
}

impl Deref for PooledChannel {
    type Target = Channel;

    fn deref(&self) -> &Channel {
        &self.channel
    }
}

impl fmt::Debug for PooledChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PooledChannel")
            .field("id", &self.channel.id())
            .field("status", self.channel.status())
            .field("broker", &self.connection.broker())
            .field("consuming", &self.consuming.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}
