//! [`Redis`]: one multiplexed connection, shared by every acquirer, that reconnects by itself.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nebula_resource::{CreateContext, Error, Resource, Topology};
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Client, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

use crate::config::RedisConfig;
use crate::deadline::within;
use crate::error::ConnectFailed;

/// The default Redis resource: [`Topology::Resident`], one [`RedisConnection`] whose clones every
/// acquirer gets.
///
/// Commands from all tasks are pipelined on one socket, which is the fastest way to talk to
/// Redis. When the connection is lost, the command that notices fails and a reconnection starts
/// in the background (see [`RedisConfig::reconnect_retries`]); later commands wait for it, each
/// for at most [`RedisConfig::response_timeout`] (a server that refuses connections fails
/// commands within that bound, not after every retry of the reconnection). The
/// instance is never replaced by the pool, so `is_broken` is always `false`.
///
/// Not for blocking commands (`BLPOP`), `WATCH`/`MULTI` transactions or pub/sub: they would stall
/// or corrupt every other user's commands. Use [`RedisDedicated`](crate::RedisDedicated).
#[derive(Debug, Clone, Copy, Default)]
pub struct Redis;

impl Resource for Redis {
    type Config = RedisConfig;
    type Instance = RedisConnection;
    const KEY: &'static str = "redis";
    const TOPOLOGY: Topology = Topology::Resident;

    async fn create(
        &self,
        config: &RedisConfig,
        ctx: &CreateContext,
    ) -> Result<RedisConnection, Error> {
        let (info, secrets) = config.connection_for(ctx)?;
        let fail = |err: RedisError| {
            Error::create(ConnectFailed::new(
                config.redacted_url(),
                secrets.cause(err),
            ))
        };
        let client = Client::open(info).map_err(fail)?;
        let mut manager = ConnectionManager::new_with_config(client, config.manager_config())
            .await
            .map_err(fail)?;
        let naming = match config.get_client_name() {
            None => None,
            Some(name) => {
                let set_name = redis::cmd("CLIENT").arg("SETNAME").arg(name).take();
                manager.send_packed_command(&set_name).await.map_err(fail)?;
                Some(Arc::new(Naming {
                    set_name,
                    pending: AtomicBool::new(false),
                }))
            }
        };
        Ok(RedisConnection {
            manager,
            naming,
            response_timeout: config.get_response_timeout(),
        })
    }

    async fn check(&self, connection: &mut RedisConnection) -> Result<(), Error> {
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

    fn share(&self, connection: &RedisConnection) -> Option<RedisConnection> {
        Some(connection.clone())
    }
}

/// A handle to the shared, reconnecting connection of [`Redis`]. Cheap to clone.
///
/// It implements [`redis::aio::ConnectionLike`], so every [`redis::AsyncCommands`] method,
/// [`redis::Cmd::query_async`] and [`redis::Pipeline::query_async`] work on it:
///
/// ```no_run
/// use nebula_resource::ResourceManager;
/// use nebula_resource_redis::{Redis, RedisConfig};
/// use nebula_resource_redis::redis::AsyncCommands;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = ResourceManager::builder()
///     .register(Redis, RedisConfig::new("redis://127.0.0.1:6379"))
///     .build()
///     .await?;
/// let mut redis = manager.acquire::<Redis>().await?;
/// redis.set::<_, _, ()>("greeting", "hello").await?;
/// let greeting: String = redis.get("greeting").await?;
/// # drop(greeting);
/// # Ok(()) }
/// ```
///
/// Commands on it are cancel safe: dropping a command's future leaves the connection usable
/// (the reply is read and discarded), though the command may still have run.
#[derive(Clone)]
pub struct RedisConnection {
    manager: ConnectionManager,
    naming: Option<Arc<Naming>>,
    /// The bound of every command, a reconnection it waits for included.
    response_timeout: Option<Duration>,
}

/// The configured client name, set again on the first command after a reconnection.
struct Naming {
    set_name: Cmd,
    pending: AtomicBool,
}

impl Naming {
    async fn rename_if_needed(&self, manager: &mut ConnectionManager) {
        if self.pending.load(Ordering::Acquire)
            && self.pending.swap(false, Ordering::AcqRel)
            && manager.send_packed_command(&self.set_name).await.is_err()
        {
            // Not reconnected yet: the next command tries again.
            self.pending.store(true, Ordering::Release);
        }
    }

    /// A command failed in a way that makes the connection manager reconnect.
    fn note<T>(&self, result: &RedisResult<T>) {
        if let Err(err) = result
            && (err.is_io_error() || err.is_unrecoverable_error())
        {
            self.pending.store(true, Ordering::Release);
        }
    }
}

impl RedisConnection {
    /// The driver's connection manager, for what this wrapper does not expose (RESP3
    /// `subscribe` with a push sender, cache statistics). Commands sent on it directly do not
    /// restore the client name after a reconnection.
    pub fn manager(&mut self) -> &mut ConnectionManager {
        &mut self.manager
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let Self {
            manager,
            naming,
            response_timeout,
        } = self;
        Box::pin(within(*response_timeout, async move {
            let Some(naming) = naming else {
                return manager.send_packed_command(cmd).await;
            };
            naming.rename_if_needed(manager).await;
            let result = manager.send_packed_command(cmd).await;
            naming.note(&result);
            result
        }))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let Self {
            manager,
            naming,
            response_timeout,
        } = self;
        Box::pin(within(*response_timeout, async move {
            let Some(naming) = naming else {
                return manager.send_packed_commands(pipeline, offset, count).await;
            };
            naming.rename_if_needed(manager).await;
            let result = manager.send_packed_commands(pipeline, offset, count).await;
            naming.note(&result);
            result
        }))
    }

    fn get_db(&self) -> i64 {
        self.manager.get_db()
    }
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnection")
            .field("db", &self.manager.get_db())
            .field("named", &self.naming.is_some())
            .finish_non_exhaustive()
    }
}
