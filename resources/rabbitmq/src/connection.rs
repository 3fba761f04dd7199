//! [`RabbitMq`]: the one AMQP connection of a registration, shared by every acquirer.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lapin::Connection;
use nebula_resource::{CreateContext, Error, Resource, Topology};

use crate::config::RabbitMqConfig;
use crate::error::{ConnectFailed, Scrubbed};

/// The RabbitMQ connection: [`Topology::Resident`], one [`RabbitMqConnection`] whose clones every
/// acquirer gets.
///
/// A lapin connection is one socket driven by one I/O thread, multiplexing any number of
/// channels: pooling connections only multiplies threads and sockets. Pool the channels
/// instead, with [`RabbitMqChannel`](crate::RabbitMqChannel), which depends on this resource.
///
/// | Hook | What it does |
/// |---|---|
/// | `create` | tries the configured URLs in order, each within `connect_timeout`; the first broker that accepts wins |
/// | `is_broken` | the connection's status is anything but connected (closing, closed, failed) |
/// | `degraded` | the broker has blocked the connection (a memory or disk alarm): publishes wait |
/// | `check` (health rounds) | opens a channel and closes it: a round trip (skipped while the connection is blocked, when none can pass) |
/// | `destroy` | closes the connection with code 200 once the last channel on it is gone |
///
/// lapin's automatic recovery stays off. A lost connection is reported broken; the next acquire
/// (or health probe) creates a new one through the registration's retry policy, circuit breaker
/// and failover order, so there is one reconnect loop, not two racing.
#[derive(Debug, Clone, Copy, Default)]
pub struct RabbitMq;

impl Resource for RabbitMq {
    type Config = RabbitMqConfig;
    type Instance = RabbitMqConnection;
    const KEY: &'static str = "rabbitmq";
    const TOPOLOGY: Topology = Topology::Resident;

    async fn create(
        &self,
        config: &RabbitMqConfig,
        ctx: &CreateContext,
    ) -> Result<RabbitMqConnection, Error> {
        let (targets, secrets) = config.targets(ctx)?;
        let limit = config.get_connect_timeout();
        let mut attempts = Vec::with_capacity(targets.len());
        for target in targets {
            let connect = Connection::connect_uri(target.uri, config.properties());
            match tokio::time::timeout(limit, connect).await {
                Ok(Ok(connection)) => {
                    return Ok(RabbitMqConnection {
                        live: Arc::new(Live {
                            connection,
                            broker: target.shown,
                            retired: AtomicBool::new(false),
                        }),
                    });
                }
                Ok(Err(err)) => attempts.push((target.shown, secrets.scrub(&err.to_string()))),
                Err(_) => attempts.push((
                    target.shown,
                    format!("no connection within connect_timeout ({limit:?})"),
                )),
            }
        }
        Err(Error::create(ConnectFailed { attempts }))
    }

    async fn check(&self, connection: &mut RabbitMqConnection) -> Result<(), Error> {
        if connection.status().blocked() {
            // A blocked connection can do no round trip (the broker stops reading it and lapin
            // stops writing), and the broker's notice proves it alive: `degraded` reports it.
            return Ok(());
        }
        let channel = connection
            .create_channel()
            .await
            .map_err(|err| Error::check(Scrubbed(err.to_string())))?;
        channel
            .close(200, "OK".into())
            .await
            .map_err(|err| Error::check(Scrubbed(err.to_string())))
    }

    fn is_broken(&self, connection: &RabbitMqConnection) -> bool {
        // `connected()` is false while closing, closed, failed or reconnecting.
        !connection.status().connected()
    }

    fn degraded(&self, connection: &RabbitMqConnection) -> Option<String> {
        connection.blocked_reason()
    }

    async fn destroy(&self, connection: RabbitMqConnection) {
        connection.live.retired.store(true, Ordering::Release);
        // Channels still open on it keep it alive: lapin closes it (code 200) when the last of
        // them is dropped, so a rotation does not cut publishes in flight.
        if let Ok(live) = Arc::try_unwrap(connection.live)
            && live.connection.status().connected()
        {
            // Best effort: a broker that does not answer is cut off by `recycle_timeout`.
            let _ = live.connection.close(200, "OK".into()).await;
        }
    }

    fn share(&self, connection: &RabbitMqConnection) -> Option<RabbitMqConnection> {
        Some(connection.clone())
    }
}

/// A handle to the shared connection of [`RabbitMq`]. Cheap to clone; derefs to
/// [`lapin::Connection`], so `create_channel`, `status` and `update_secret` work on it.
///
/// ```no_run
/// use nebula_resource::ResourceManager;
/// use nebula_resource_rabbitmq::{RabbitMq, RabbitMqConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = ResourceManager::builder()
///     .register(RabbitMq, RabbitMqConfig::new("amqp://127.0.0.1:5672/%2f"))
///     .build()
///     .await?;
/// let connection = manager.acquire::<RabbitMq>().await?;
/// // A channel of your own, for a long-lived consumer.
/// let channel = connection.create_channel().await?;
/// # drop(channel);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RabbitMqConnection {
    live: Arc<Live>,
}

struct Live {
    connection: Connection,
    broker: String,
    /// Set when the manager retired this connection: channels on it leave their pool.
    retired: AtomicBool,
}

impl RabbitMqConnection {
    /// The broker this connection reached: its URL, password replaced by `***`.
    pub fn broker(&self) -> &str {
        &self.live.broker
    }

    /// Whether the manager has retired this connection (after a failure, a credential rotation
    /// or a reconfiguration): it still serves the channels open on it, but no new work should
    /// start on it.
    pub fn is_retired(&self) -> bool {
        self.live.retired.load(Ordering::Acquire)
    }

    /// Why the connection is impaired, if it is: the broker's `connection.blocked`.
    pub(crate) fn blocked_reason(&self) -> Option<String> {
        self.status().blocked().then(|| {
            format!(
                "the broker at `{}` blocked the connection (a resource alarm): publishes wait until it is unblocked",
                self.live.broker
            )
        })
    }
}

impl Deref for RabbitMqConnection {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.live.connection
    }
}

impl fmt::Debug for RabbitMqConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqConnection")
            .field("broker", &self.live.broker)
            .field("state", &self.live.connection.status())
            .field("retired", &self.is_retired())
            .finish()
    }
}
