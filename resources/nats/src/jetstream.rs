//! [`JetStream`]: a JetStream context on the client of the [`Nats`] registration, a resource
//! of its own so that it has its own settings (domain, timeouts), health and status.

use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::context::{
    Context, ContextBuilder, PublishErrorKind, RequestError, RequestErrorKind,
};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::response::Response;
use bytes::Bytes;
use nebula_resource::{CreateContext, Dependencies, Error, Resource, Topology};
use serde::de::IgnoredAny;

use crate::client::{Nats, NatsClient};
use crate::config::JetStreamConfig;
use crate::error::NatsError;

/// The JetStream resource: [`Topology::Resident`], one [`JetStreamContext`] on the client of
/// the [`Nats`] registration (which it depends on: register both). Key `nats-jetstream`.
///
/// Why a resource of its own rather than a method on [`NatsClient`]: a JetStream context has
/// settings of its own (domain or API prefix, request and ack timeouts) and a health of its
/// own — JetStream can be unavailable (disabled for the account, out of storage, no meta
/// leader) while core NATS works, and its `check` asks JetStream itself (`$JS.API.INFO`), so
/// the status shows which of the two is at fault.
///
/// - **create** acquires the current [`Nats`] client and builds the context on it (no I/O).
/// - **check** is [`JetStreamContext::ping`]: an account-info request to the JetStream API,
///   answered within [`check_timeout`](JetStreamConfig::check_timeout); it passes without I/O
///   while the client reconnects, and [`degraded`](Resource::degraded) says so.
/// - **is_broken** once the client it was built on is retired or closed (replaced after a
///   credential rotation, say): the next acquire builds a context on the new client.
#[derive(Debug, Clone, Copy, Default)]
pub struct JetStream;

impl Resource for JetStream {
    type Config = JetStreamConfig;
    type Instance = JetStreamContext;
    const KEY: &'static str = "nats-jetstream";
    const TOPOLOGY: Topology = Topology::Resident;

    fn dependencies() -> Dependencies {
        Dependencies::none().on::<Nats>()
    }

    async fn create(
        &self,
        config: &JetStreamConfig,
        ctx: &CreateContext,
    ) -> Result<JetStreamContext, Error> {
        let client = NatsClient::clone(&*ctx.dependency::<Nats>()?.acquire().await?);
        let context = ContextBuilder::new()
            .api_prefix(config.prefix())
            .timeout(config.get_timeout())
            .build(client.client().clone());
        Ok(JetStreamContext {
            context,
            client,
            prefix: config.prefix(),
            timeout: config.get_timeout(),
            check_timeout: config.get_check_timeout(),
        })
    }

    async fn check(&self, jetstream: &mut JetStreamContext) -> Result<(), Error> {
        if Nats.degraded(&jetstream.client).is_some() {
            return Ok(());
        }
        match jetstream.ping().await {
            // The connection dropped meanwhile: reconnecting, which `degraded` reports.
            Err(_)
                if Nats.degraded(&jetstream.client).is_some() && !jetstream.client.is_closed() =>
            {
                Ok(())
            }
            outcome => outcome.map_err(Error::check),
        }
    }

    fn is_broken(&self, jetstream: &JetStreamContext) -> bool {
        jetstream.client.is_retired()
    }

    fn degraded(&self, jetstream: &JetStreamContext) -> Option<String> {
        Nats.degraded(&jetstream.client)
    }

    fn share(&self, jetstream: &JetStreamContext) -> Option<JetStreamContext> {
        Some(jetstream.clone())
    }
}

/// A handle to the JetStream context of [`JetStream`]. Cheap to clone; derefs to
/// [`async_nats::jetstream::Context`], so every driver method (`get_or_create_stream`,
/// `publish`, `get_stream`, …) works on a guard:
///
/// ```no_run
/// use nebula_resource::ResourceManager;
/// use nebula_resource_nats::async_nats::jetstream::stream;
/// use nebula_resource_nats::{JetStream, JetStreamConfig, Nats, NatsConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = ResourceManager::builder()
///     .register(Nats, NatsConfig::new("nats://127.0.0.1:4222"))
///     .register(JetStream, JetStreamConfig::default())
///     .build()
///     .await?;
/// let js = manager.acquire::<JetStream>().await?;
/// js.get_or_create_stream(stream::Config {
///     name: "ORDERS".into(),
///     subjects: vec!["orders.>".into()],
///     ..Default::default()
/// })
/// .await?;
/// let ack = js.publish_acked("orders.new", "order 42".into()).await?;
/// assert_eq!(ack.stream, "ORDERS");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct JetStreamContext {
    context: Context,
    client: NatsClient,
    /// The API prefix, for messages.
    prefix: String,
    timeout: Duration,
    check_timeout: Duration,
}

impl JetStreamContext {
    /// The driver's context.
    pub fn context(&self) -> &Context {
        &self.context
    }

    /// The [`Nats`] client this context was built on.
    pub fn nats(&self) -> &NatsClient {
        &self.client
    }

    /// A round trip to JetStream itself, within [`check_timeout`](JetStreamConfig::check_timeout):
    /// an account-info request (`INFO` under the context's API prefix), which JetStream answers.
    /// Only whether the answer is an error counts, not its fields, so that servers whose answer
    /// lacks fields the driver's `query_account` requires (nats-server 2.9 has no
    /// `reserved_memory`) pass too.
    ///
    /// # Errors
    ///
    /// [`NatsErrorKind::TimedOut`](crate::NatsErrorKind::TimedOut) without an answer in time,
    /// [`Closed`](crate::NatsErrorKind::Closed) if the client is closed for good,
    /// [`Rejected`](crate::NatsErrorKind::Rejected) when JetStream answered with an error (not
    /// enabled for the account, say) or nobody answers at the API prefix (JetStream is off, or
    /// the domain or prefix is wrong).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it only stops the wait.
    pub async fn ping(&self) -> Result<(), NatsError> {
        const OPERATION: &str = "jetstream ping";
        if self.client.is_closed() {
            return Err(NatsError::closed(OPERATION, None));
        }
        let timeout = self.check_timeout;
        let request = self
            .context
            .request::<_, _, Response<IgnoredAny>>("INFO", b"");
        match tokio::time::timeout(timeout, request).await {
            Ok(Ok(Response::Ok(_))) => Ok(()),
            Ok(Ok(Response::Err { error })) => Err(NatsError::rejected(OPERATION, None, error)),
            Ok(Err(err)) => Err(self.request_failed(OPERATION, err, timeout)),
            Err(_) => Err(NatsError::timed_out(OPERATION, None, timeout)),
        }
    }

    fn request_failed(
        &self,
        operation: &'static str,
        err: RequestError,
        timeout: Duration,
    ) -> NatsError {
        match err.kind() {
            RequestErrorKind::TimedOut => NatsError::timed_out(operation, None, timeout),
            RequestErrorKind::NoResponders => NatsError::rejected(
                operation,
                None,
                format!(
                    "no JetStream answers at `{}` (is JetStream enabled, and the domain or API prefix right?)",
                    self.prefix
                ),
            ),
            _ if self.client.is_closed() => NatsError::closed(operation, None),
            _ => NatsError::rejected(operation, None, err),
        }
    }

    /// Publish `payload` to `subject` and wait for the stream's acknowledgement, all within
    /// [`timeout`](JetStreamConfig::timeout). An `Ok` means the message is stored.
    ///
    /// # Errors
    ///
    /// [`NatsErrorKind::TimedOut`](crate::NatsErrorKind::TimedOut) when no acknowledgement
    /// came in time (the message may or may not be stored: publish with a message id to make a
    /// retry safe), [`Closed`](crate::NatsErrorKind::Closed) if the client is closed for good,
    /// [`Rejected`](crate::NatsErrorKind::Rejected) when JetStream refused it (no stream for the
    /// subject, a payload over the limit, an expectation not met).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped after the publish was queued, the message may be stored with
    /// nobody told.
    pub async fn publish_acked(
        &self,
        subject: impl Into<Subject>,
        payload: Bytes,
    ) -> Result<PublishAck, NatsError> {
        let subject = subject.into();
        let timeout = self.timeout;
        let outcome = tokio::time::timeout(timeout, async {
            self.context.publish(subject.clone(), payload).await?.await
        })
        .await;
        match outcome {
            Ok(Ok(ack)) => Ok(ack),
            Ok(Err(err)) => Err(match err.kind() {
                PublishErrorKind::TimedOut => {
                    NatsError::timed_out("jetstream publish", Some(&subject), timeout)
                }
                PublishErrorKind::BrokenPipe if self.client.is_closed() => {
                    NatsError::closed("jetstream publish", Some(&subject))
                }
                _ => NatsError::rejected("jetstream publish", Some(&subject), err),
            }),
            Err(_) => Err(NatsError::timed_out(
                "jetstream publish",
                Some(&subject),
                timeout,
            )),
        }
    }
}

impl Deref for JetStreamContext {
    type Target = Context;

    fn deref(&self) -> &Context {
        &self.context
    }
}

impl fmt::Debug for JetStreamContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamContext")
            .field("timeout", &self.timeout)
            .field("nats", &self.client)
            .finish_non_exhaustive()
    }
}
