//! [`RedisDedicated`]: a pool of connections, each used by one guard at a time — for blocking
//! commands, `WATCH`/`MULTI` transactions and pub/sub, which must not share a connection.
//!
//! `redis` 1.x has no non-multiplexed async connection any more, so a [`DedicatedConnection`]
//! owns a private [`MultiplexedConnection`] over its own socket and never hands out a clone of it:
//! while a guard holds it, nobody else sends on it. Around it, the wrapper keeps what the pool needs
//! to know before the next user gets the connection: which session state the commands changed
//! ([`Session`]), whether a reply is still owed (a cancelled `BLPOP` keeps the connection blocked
//! server-side), and whether the socket is closed — the driver task it spawns sets a flag when
//! the server closes the connection, so `is_broken` needs no I/O.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nebula_resource::{CreateContext, Error, Resource};
use redis::aio::{AsyncStream, ConnectionLike, MultiplexedConnection};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, Msg, Pipeline, PushInfo, PushKind,
    RedisError, RedisFuture, RedisResult, ToRedisArgs, Value,
};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::AbortHandle;

use crate::config::RedisConfig;
use crate::deadline::within;
use crate::error::ConnectFailed;
use crate::session::{Session, is_blocking, is_fatal, pipeline_is_blocking};

/// A pool of [`DedicatedConnection`]s: [`Topology::Pooled`](nebula_resource::Topology::Pooled),
/// one connection per guard.
///
/// Use it for what the shared [`Redis`](crate::Redis) connection cannot do: blocking commands
/// (`BLPOP`, `XREAD BLOCK`), transactions with `WATCH`, and pub/sub. For ordinary commands the
/// resident connection is faster (no checkout, pipelining across tasks).
///
/// What happens when a guard is dropped:
///
/// | The user left | The pool |
/// |---|---|
/// | nothing | returns it at once, no round trip |
/// | keys `WATCH`ed | sends `UNWATCH`, then returns it |
/// | a `MULTI` open | sends `DISCARD`, then returns it |
/// | pub/sub mode (a `SUBSCRIBE`, even if later unsubscribed) | destroys it |
/// | a command whose reply never came (its future was dropped, or it timed out) | destroys it |
/// | an I/O or protocol error, or a socket the server closed | destroys it |
/// | `SELECT`, `AUTH`, `HELLO`, `RESET`, `MONITOR`, `CLIENT SETNAME`/`REPLY`/`TRACKING`… | destroys it |
///
/// `check` (run on acquire after `validate_after_idle`) sends `PING`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisDedicated;

impl Resource for RedisDedicated {
    type Config = RedisConfig;
    type Instance = DedicatedConnection;
    const KEY: &'static str = "redis-dedicated";

    async fn create(
        &self,
        config: &RedisConfig,
        ctx: &CreateContext,
    ) -> Result<DedicatedConnection, Error> {
        DedicatedConnection::connect(config, ctx).await
    }

    async fn check(&self, connection: &mut DedicatedConnection) -> Result<(), Error> {
        let pong: String = redis::cmd("PING")
            .query_async(connection)
            .await
            .map_err(Error::check)?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(Error::check(format!("PING answered {pong:?}")))
        }
    }

    fn is_broken(&self, connection: &DedicatedConnection) -> bool {
        connection.is_closed() || connection.session.is_unusable()
    }

    async fn recycle(&self, connection: &mut DedicatedConnection) -> Result<(), Error> {
        connection.reset().await
    }
}

/// One Redis connection used by one guard at a time; see [`RedisDedicated`].
///
/// It implements [`redis::aio::ConnectionLike`], so every [`redis::AsyncCommands`] method,
/// [`redis::Cmd::query_async`] and [`redis::Pipeline::query_async`] work on it:
///
/// ```no_run
/// use nebula_resource::ResourceManager;
/// use nebula_resource_redis::{RedisConfig, RedisDedicated};
/// use nebula_resource_redis::redis::AsyncCommands;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = ResourceManager::builder()
///     .register(RedisDedicated, RedisConfig::new("redis://127.0.0.1:6379"))
///     .build()
///     .await?;
/// let mut conn = manager.acquire::<RedisDedicated>().await?;
/// // Blocks this connection only, up to one second.
/// let job: Option<(String, String)> = conn.brpop("jobs", 1.0).await?;
/// # drop(job);
/// # Ok(()) }
/// ```
///
/// Commands on it are cancel safe in the sense that dropping a command's future loses no
/// connection: the pool destroys the connection when the guard is dropped, since a reply is still
/// owed.
pub struct DedicatedConnection {
    connection: MultiplexedConnection,
    response_timeout: Option<Duration>,
    session: Session,
    driver: Driver,
    messages: Option<UnboundedReceiver<PushInfo>>,
}

/// The task that reads and writes the socket.
struct Driver {
    closed: Arc<AtomicBool>,
    task: AbortHandle,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A dropped connection owes nothing to anyone; do not wait for a blocked reply.
        self.task.abort();
    }
}

impl DedicatedConnection {
    /// Connect, authenticate, select the database and set the client name, all within
    /// `connect_timeout`.
    async fn connect(config: &RedisConfig, ctx: &CreateContext) -> Result<Self, Error> {
        let (info, secrets) = config.connection_for(ctx)?;
        let limit = config.get_connect_timeout();
        let fail = |cause| Error::create(ConnectFailed::new(config.redacted_url(), cause));
        match tokio::time::timeout(limit, Self::open(&info, config)).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(err)) => Err(fail(secrets.cause(err))),
            Err(_) => Err(fail(
                format!("no connection within connect_timeout ({limit:?})").into(),
            )),
        }
    }

    async fn open(info: &ConnectionInfo, config: &RedisConfig) -> RedisResult<Self> {
        let stream: Pin<Box<dyn AsyncStream + Send + Sync>> = match info.addr() {
            ConnectionAddr::Tcp(host, port) => {
                let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Box::pin(stream)
            }
            #[cfg(unix)]
            ConnectionAddr::Unix(path) => Box::pin(tokio::net::UnixStream::connect(path).await?),
            other => {
                return Err(RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "unsupported address",
                    other.to_string(),
                )));
            }
        };
        // Timeouts are applied per command by this wrapper, which exempts blocking commands.
        let mut settings = AsyncConnectionConfig::new()
            .set_connection_timeout(None)
            .set_response_timeout(None);
        let mut messages = None;
        if info.redis_settings().protocol().supports_resp3() {
            let (sender, receiver) = unbounded_channel();
            settings = settings.set_push_sender(sender);
            messages = Some(receiver);
        }
        let (mut connection, driver) =
            MultiplexedConnection::new_with_config(info.redis_settings(), stream, settings).await?;
        let closed = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&closed);
        let task = tokio::spawn(async move {
            driver.await;
            flag.store(true, Ordering::Release);
        });
        let driver = Driver {
            closed,
            task: task.abort_handle(),
        };
        if let Some(name) = config.get_client_name() {
            redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg(name)
                .exec_async(&mut connection)
                .await?;
        }
        Ok(Self {
            connection,
            response_timeout: config.get_response_timeout(),
            session: Session::default(),
            driver,
            messages,
        })
    }

    /// Whether the socket is closed: the server closed it (`CLIENT KILL`, a restart, a timeout)
    /// or it failed. A closed connection is never handed out again.
    pub fn is_closed(&self) -> bool {
        self.driver.closed.load(Ordering::Acquire)
    }

    /// Undo what the last user left: `DISCARD` an open `MULTI`, `UNWATCH` watched keys.
    /// Finishes at once, with no round trip, when there is nothing to undo.
    async fn reset(&mut self) -> Result<(), Error> {
        if !self.session.needs_reset() {
            return Ok(());
        }
        if self.session.in_multi {
            match redis::cmd("DISCARD").exec_async(&mut *self).await {
                Err(err) if is_fatal(&err) => return Err(Error::recycle(err)),
                // `DISCARD` also unwatches; an error means no `MULTI` was open after all.
                Ok(()) | Err(_) => {}
            }
        }
        if self.session.watching {
            redis::cmd("UNWATCH")
                .exec_async(&mut *self)
                .await
                .map_err(Error::recycle)?;
        }
        Ok(())
    }

    /// Subscribe to `channels`; read the messages with [`next_message`](Self::next_message).
    ///
    /// Pub/sub needs RESP3 (Redis 6+): add `?protocol=resp3` to the URL or set
    /// [`RedisConfig::protocol`]. The connection can still run other commands while subscribed.
    /// A connection that subscribed is destroyed when its guard is dropped.
    ///
    /// # Errors
    ///
    /// A client error if the connection speaks RESP2; the server's or the I/O error otherwise.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if the future is dropped, whether the subscription happened is unknown
    /// (the connection is destroyed on release either way).
    pub async fn subscribe(&mut self, channels: impl ToRedisArgs) -> RedisResult<()> {
        self.pubsub(|connection| connection.subscribe(channels))
            .await
    }

    /// Subscribe to the channels matching `patterns`; as [`subscribe`](Self::subscribe).
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe).
    ///
    /// # Cancel safety
    ///
    /// As [`subscribe`](Self::subscribe).
    pub async fn psubscribe(&mut self, patterns: impl ToRedisArgs) -> RedisResult<()> {
        self.pubsub(|connection| connection.psubscribe(patterns))
            .await
    }

    /// Unsubscribe from `channels`. The connection is still destroyed on release.
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe).
    ///
    /// # Cancel safety
    ///
    /// As [`subscribe`](Self::subscribe).
    pub async fn unsubscribe(&mut self, channels: impl ToRedisArgs) -> RedisResult<()> {
        self.pubsub(|connection| connection.unsubscribe(channels))
            .await
    }

    /// Unsubscribe from `patterns`. The connection is still destroyed on release.
    ///
    /// # Errors
    ///
    /// As [`subscribe`](Self::subscribe).
    ///
    /// # Cancel safety
    ///
    /// As [`subscribe`](Self::subscribe).
    pub async fn punsubscribe(&mut self, patterns: impl ToRedisArgs) -> RedisResult<()> {
        self.pubsub(|connection| connection.punsubscribe(patterns))
            .await
    }

    async fn pubsub<'a, F, Fut>(&'a mut self, send: F) -> RedisResult<()>
    where
        F: FnOnce(&'a mut MultiplexedConnection) -> Fut,
        Fut: Future<Output = RedisResult<()>> + 'a,
    {
        if self.messages.is_none() {
            return Err(RedisError::from((
                redis::ErrorKind::Client,
                "pub/sub on a dedicated connection needs RESP3",
                "add `?protocol=resp3` to the URL or set RedisConfig::protocol".to_owned(),
            )));
        }
        self.session.subscribed = true;
        self.session.begin();
        let result = within(self.response_timeout, send(&mut self.connection)).await;
        self.session.in_flight = false;
        if result.as_ref().is_err_and(is_fatal) {
            self.session.failed = true;
        }
        result
    }

    /// The next message on a subscribed channel or pattern; `None` once the connection is closed,
    /// or at once if it speaks RESP2 (see [`subscribe`](Self::subscribe)).
    ///
    /// Messages are buffered from the moment of subscription until read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is never lost when the future is dropped.
    pub async fn next_message(&mut self) -> Option<Msg> {
        let messages = self.messages.as_mut()?;
        loop {
            let push = messages.recv().await?;
            if push.kind == PushKind::Disconnection {
                return None;
            }
            if let Some(message) = Msg::from_push_info(push) {
                return Some(message);
            }
        }
    }
}

impl ConnectionLike for DedicatedConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let limit = if is_blocking(cmd) {
                None
            } else {
                self.response_timeout
            };
            self.session.begin();
            let result = within(limit, self.connection.send_packed_command(cmd)).await;
            self.session.settle_command(cmd, &result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let limit = if pipeline_is_blocking(pipeline) {
                None
            } else {
                self.response_timeout
            };
            self.session.begin();
            let result = within(
                limit,
                self.connection
                    .send_packed_commands(pipeline, offset, count),
            )
            .await;
            self.session.settle_pipeline(pipeline, &result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.connection.get_db()
    }
}

impl fmt::Debug for DedicatedConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DedicatedConnection")
            .field("db", &self.connection.get_db())
            .field("session", &self.session)
            .field("closed", &self.is_closed())
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}
