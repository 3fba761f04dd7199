//! [`Nats`]: one `async_nats::Client`, shared by every acquirer, with a round-trip health
//! check, "degraded while reconnecting", and a draining `destroy`.

use std::fmt;
use std::future::{Future, poll_fn};
use std::ops::Deref;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use async_nats::client::{FlushErrorKind, PublishErrorKind, RequestErrorKind};
use async_nats::connection::State;
use async_nats::{Client, ClientError, ConnectErrorKind, ConnectOptions, Event, Request, Subject};
use bytes::Bytes;
use nebula_resource::{CreateContext, Error, Resource, Topology};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::{Auth, NatsConfig};
use crate::error::{ConnectFailed, NatsError};

/// The NATS client resource: [`Topology::Resident`], one [`NatsClient`] whose clones every
/// acquirer gets. Key `nats`.
///
/// - **create** connects once, to each configured server in turn, and fails fast (async-nats's
///   `retry_on_initial_connect` is off): the registration's retry policy drives further
///   attempts, and its circuit breaker sees every failure. A refused authentication fails the
///   create as permanent (not retried until the credentials change).
/// - **After** the first connection, async-nats reconnects by itself when the connection is lost,
///   up to [`reconnect_attempts`](NatsConfig::reconnect_attempts) with delays up to
///   [`reconnect_max_delay`](NatsConfig::reconnect_max_delay), resubscribing what was
///   subscribed. Meanwhile publishes queue in the client (up to
///   [`client_capacity`](NatsConfig::client_capacity)) and are sent on reconnect.
/// - **check** is a real round trip: a request to `<health_subject_prefix>.<unique id>`, which
///   nobody serves, answered by the server's "no responders" within
///   [`check_timeout`](NatsConfig::check_timeout) (a flush only proves that the local socket
///   took the bytes). While the client is reconnecting the check passes without a round trip
///   and [`degraded`](Resource::degraded) reports why: reconnecting is not a reason to replace
///   the client.
/// - **is_broken** only once the client is closed for good (drained, or out of reconnect
///   attempts): the manager then creates a new one.
/// - **destroy** waits (at most half of [`drain_timeout`](NatsConfig::drain_timeout)) for the
///   handles still held to be released, then flushes, drains and waits for the client's
///   `Closed` event — `Client::drain` only asks for the drain — all within `drain_timeout`.
/// - **Credentials** from the registration's `CredentialProvider` (a username means user and
///   password, none means a token) go to the server through async-nats's `auth_callback`,
///   which every connect and reconnect calls. A rotation starts a new instance (the manager's
///   rule for a new generation); the old one keeps serving the handles already given out,
///   then drains: no acquire fails and nothing queued in it is dropped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nats;

impl Resource for Nats {
    type Config = NatsConfig;
    type Instance = NatsClient;
    const KEY: &'static str = "nats";
    const TOPOLOGY: Topology = Topology::Resident;

    async fn create(&self, config: &NatsConfig, ctx: &CreateContext) -> Result<NatsClient, Error> {
        let servers = config.addresses()?;
        let link = Arc::new(Link::default());
        let options = connect_options(config, config.auth_for(ctx), &link);
        let client = options.connect(servers).await.map_err(|err| {
            let permanent = matches!(
                err.kind(),
                ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication
            );
            let err = Error::create(ConnectFailed::new(config.redacted_servers(), err));
            if permanent { err.permanent() } else { err }
        })?;
        Ok(NatsClient {
            inner: Arc::new(Inner {
                client,
                link,
                health_subject_prefix: config.get_health_subject_prefix().to_owned(),
                check_timeout: config.get_check_timeout(),
                publish_timeout: config.get_publish_timeout(),
                drain_timeout: config.get_drain_timeout(),
                reconnect_attempts: config.get_reconnect_attempts(),
            }),
        })
    }

    async fn check(&self, client: &mut NatsClient) -> Result<(), Error> {
        client.health_round_trip().await.map_err(Error::check)
    }

    fn is_broken(&self, client: &NatsClient) -> bool {
        client.is_closed()
    }

    fn degraded(&self, client: &NatsClient) -> Option<String> {
        match client.inner.client.connection_state() {
            State::Connected => None,
            State::Disconnected => Some(format!(
                "disconnected; async-nats is reconnecting (at most {} attempts)",
                client.inner.reconnect_attempts
            )),
            State::Pending => Some(String::from("not connected yet")),
        }
    }

    async fn destroy(&self, client: NatsClient) {
        client.retire().await;
    }

    fn share(&self, client: &NatsClient) -> Option<NatsClient> {
        Some(client.clone())
    }
}

/// The driver's options for one create.
fn connect_options(config: &NatsConfig, auth: Auth, link: &Arc<Link>) -> ConnectOptions {
    let mut options = match auth {
        Auth::None => ConnectOptions::new(),
        auth => {
            // Called on every connect and reconnect; the secret stays out of `ConnectOptions`.
            ConnectOptions::with_auth_callback(move |_nonce| {
                let auth = auth.clone();
                async move {
                    let mut driver = async_nats::Auth::new();
                    match auth {
                        Auth::UserPassword { user, password } => {
                            driver.username = Some(user);
                            driver.password = Some(password.expose().to_owned());
                        }
                        Auth::Token(token) => driver.token = Some(token.expose().to_owned()),
                        Auth::None => {}
                    }
                    Ok(driver)
                }
            })
        }
    };
    if let Some(name) = config.get_name() {
        options = options.name(name);
    }
    let max_delay = config.get_reconnect_max_delay();
    let watcher = Watcher(Arc::clone(link));
    options
        .connection_timeout(config.get_connect_timeout())
        .request_timeout(Some(config.get_request_timeout()))
        .ping_interval(config.get_ping_interval())
        .client_capacity(config.get_client_capacity())
        .max_reconnects(config.get_reconnect_attempts())
        .reconnect_delay_callback(move |attempts| reconnect_delay(attempts, max_delay))
        .event_callback(move |event| {
            watcher.0.observe(&event);
            async {}
        })
}

/// The delay before reconnect attempt `attempts` (1-based): none for the first, then 10 ms
/// doubling up to `max`.
fn reconnect_delay(attempts: usize, max: Duration) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exponent = u32::try_from(attempts - 2).unwrap_or(u32::MAX).min(20);
    Duration::from_millis(10)
        .saturating_mul(1 << exponent)
        .min(max)
}

/// What the client's event callback learns, shared with every handle.
#[derive(Default)]
struct Link {
    /// The client is closed for good: `Closed` was reported, the reconnect budget ran out, or
    /// the driver's event task ended (which it does only once the connection handler is gone).
    closed: AtomicBool,
    /// Woken when `closed` is set.
    closed_notify: Notify,
    /// `destroy` has begun: handles should be released (a JetStream context built on this
    /// client rebuilds itself on the next instance).
    retired: AtomicBool,
}

impl Link {
    fn observe(&self, event: &Event) {
        match event {
            Event::Closed | Event::ClientError(ClientError::MaxReconnects) => self.close(),
            Event::Disconnected => tracing::debug!("nats client disconnected; reconnecting"),
            Event::Connected => tracing::debug!("nats client connected"),
            Event::ServerError(err) => tracing::warn!(error = %err, "nats server error"),
            Event::SlowConsumer(sid) => {
                tracing::warn!(subscription = sid, "nats slow consumer: messages dropped");
            }
            _ => {}
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.closed_notify.notify_waiters();
    }

    async fn wait_closed(&self) {
        loop {
            let notified = self.closed_notify.notified();
            if self.closed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// Owned by the event callback: dropped when the driver's event task ends, that is once the
/// connection handler has exited for good, so the client is known closed even if its `Closed`
/// event was lost (the driver drops events when its event queue is full).
struct Watcher(Arc<Link>);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Per instance, shared by its handles (so that a handle costs one reference count, not the
/// several a driver `Client` clone takes); the number of references is the number of handles.
struct Inner {
    client: Client,
    link: Arc<Link>,
    health_subject_prefix: String,
    check_timeout: Duration,
    publish_timeout: Duration,
    drain_timeout: Duration,
    reconnect_attempts: usize,
}

/// A handle to the shared client of [`Nats`]. Cheap to clone; derefs to
/// [`async_nats::Client`], so every driver method (`publish`, `subscribe`, `request`,
/// `queue_subscribe`, …) works on a guard:
///
/// ```no_run
/// use nebula_resource::ResourceManager;
/// use nebula_resource_nats::{Nats, NatsConfig};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let manager = ResourceManager::builder()
///     .register(Nats, NatsConfig::new("nats://127.0.0.1:4222"))
///     .build()
///     .await?;
/// let nats = manager.acquire::<Nats>().await?;
/// let mut inbox = nats.subscribe("greetings").await?;
/// // Bounded by `publish_timeout`: never hangs on a dead server.
/// nats.publish_bounded("greetings", "hello".into()).await?;
/// nats.flush_bounded().await?;
/// # drop(inbox.unsubscribe().await);
/// # Ok(()) }
/// ```
///
/// The driver's own `publish` queues the message and returns once it is queued; while the
/// client reconnects with its queue full, it waits until the connection is back. Use
/// [`publish_bounded`](Self::publish_bounded) (and [`flush_bounded`](Self::flush_bounded) to
/// know the bytes left this process) where a dead server must not stall the caller.
#[derive(Clone)]
pub struct NatsClient {
    inner: Arc<Inner>,
}

impl NatsClient {
    /// The driver's client.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// Whether the client is closed for good (drained, or out of reconnect attempts). The
    /// manager replaces such a client on the next acquire.
    pub fn is_closed(&self) -> bool {
        self.inner.link.closed.load(Ordering::Acquire)
    }

    /// Whether the manager has retired this client (it is being drained): a handle that keeps
    /// one should acquire again.
    pub fn is_retired(&self) -> bool {
        self.inner.link.retired.load(Ordering::Acquire) || self.is_closed()
    }

    /// Publish `payload` to `subject`, within [`publish_timeout`](NatsConfig::publish_timeout).
    ///
    /// Returns once the message is queued in the client, as the driver's `publish` does; it
    /// waits only when that queue is full (the server is slow, or down and the client is
    /// reconnecting), and never past the timeout.
    ///
    /// # Errors
    ///
    /// [`NatsErrorKind::TimedOut`](crate::NatsErrorKind::TimedOut) past the timeout,
    /// [`Closed`](crate::NatsErrorKind::Closed) if the client is closed for good,
    /// [`Rejected`](crate::NatsErrorKind::Rejected) for an invalid subject or a payload over
    /// the server's limit.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped before it returns, the message was either queued whole or not at
    /// all.
    pub async fn publish_bounded(
        &self,
        subject: impl Into<Subject>,
        payload: Bytes,
    ) -> Result<(), NatsError> {
        let subject = subject.into();
        let timeout = self.inner.publish_timeout;
        let mut publish = pin!(self.inner.client.publish(subject.clone(), payload));
        // With room in the client's queue the publish is done at its first poll: no timer then
        // (setting one up reads the clock, a quarter of the cost of the publish itself).
        let outcome = match poll_fn(|cx| Poll::Ready(publish.as_mut().poll(cx))).await {
            Poll::Ready(outcome) => outcome,
            Poll::Pending => match tokio::time::timeout(timeout, publish).await {
                Ok(outcome) => outcome,
                Err(_) => return Err(NatsError::timed_out("publish", Some(&subject), timeout)),
            },
        };
        outcome.map_err(|err| match err.kind() {
            PublishErrorKind::Send => NatsError::closed("publish", Some(&subject)),
            _ => NatsError::rejected("publish", Some(&subject), err),
        })
    }

    /// Wait until everything queued so far is written to the connection, within
    /// [`publish_timeout`](NatsConfig::publish_timeout).
    ///
    /// # Errors
    ///
    /// [`NatsErrorKind::TimedOut`](crate::NatsErrorKind::TimedOut) past the timeout (the server
    /// is down or unreachable), [`Closed`](crate::NatsErrorKind::Closed) if the client is
    /// closed for good.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it only stops the wait.
    pub async fn flush_bounded(&self) -> Result<(), NatsError> {
        let timeout = self.inner.publish_timeout;
        match tokio::time::timeout(timeout, self.inner.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(match err.kind() {
                FlushErrorKind::SendError | FlushErrorKind::FlushError => {
                    NatsError::closed("flush", None)
                }
            }),
            Err(_) => Err(NatsError::timed_out("flush", None, timeout)),
        }
    }

    /// A round trip to the server, within [`check_timeout`](NatsConfig::check_timeout): a
    /// request to `<health_subject_prefix>.<unique id>`, which nobody serves, answered "no
    /// responders" by the server (any answer counts).
    ///
    /// # Errors
    ///
    /// [`NatsErrorKind::TimedOut`](crate::NatsErrorKind::TimedOut) without an answer in time
    /// (the server is down, unreachable, or the client is reconnecting),
    /// [`Closed`](crate::NatsErrorKind::Closed) if the client is closed for good,
    /// [`Rejected`](crate::NatsErrorKind::Rejected) if the request could not be sent (the
    /// account may not publish to the health subject).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping it only stops the wait.
    pub async fn ping(&self) -> Result<(), NatsError> {
        if self.is_closed() {
            return Err(NatsError::closed("ping", None));
        }
        let inbox = self.inner.client.new_inbox();
        let unique = inbox.rsplit('.').next().unwrap_or(&inbox);
        let subject = format!("{}.{unique}", self.inner.health_subject_prefix);
        let timeout = self.inner.check_timeout;
        let request = Request::new().timeout(Some(timeout));
        match tokio::time::timeout(
            timeout,
            self.inner.client.send_request(subject.clone(), request),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => match err.kind() {
                RequestErrorKind::NoResponders => Ok(()),
                RequestErrorKind::TimedOut => {
                    Err(NatsError::timed_out("ping", Some(&subject), timeout))
                }
                _ if self.is_closed() => Err(NatsError::closed("ping", Some(&subject))),
                _ => Err(NatsError::rejected("ping", Some(&subject), err)),
            },
            Err(_) => Err(NatsError::timed_out("ping", Some(&subject), timeout)),
        }
    }

    /// The health check: a [`ping`](Self::ping), skipped while the client reconnects (see
    /// [`Nats`]).
    async fn health_round_trip(&self) -> Result<(), NatsError> {
        if self.is_closed() {
            return Err(NatsError::closed("health check", None));
        }
        if self.inner.client.connection_state() != State::Connected {
            return Ok(());
        }
        match self.ping().await {
            // The connection dropped meanwhile: reconnecting, which `degraded` reports.
            Err(_)
                if self.inner.client.connection_state() != State::Connected
                    && !self.is_closed() =>
            {
                Ok(())
            }
            outcome => outcome,
        }
    }

    /// Mark retired, wait for the other handles to go (half the budget at most), then flush,
    /// drain and wait for `Closed`, all within `drain_timeout`.
    async fn retire(self) {
        let link = Arc::clone(&self.inner.link);
        link.retired.store(true, Ordering::Release);
        let started = Instant::now();
        let deadline = started + self.inner.drain_timeout;
        let handles_deadline = started + self.inner.drain_timeout / 2;
        while Arc::strong_count(&self.inner) > 1 && Instant::now() < handles_deadline {
            if link.closed.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if link.closed.load(Ordering::Acquire) {
            return;
        }
        let drained = tokio::time::timeout_at(deadline, async {
            // Written out first: the drain stops taking commands as soon as it is processed.
            if self.inner.client.flush().await.is_ok() && self.inner.client.drain().await.is_ok() {
                link.wait_closed().await;
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                waited = ?started.elapsed(),
                "nats client not closed within drain_timeout; dropped (it closes once it has no handles left)"
            );
        }
    }
}

impl Deref for NatsClient {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.inner.client
    }
}

impl fmt::Debug for NatsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsClient")
            .field("state", &self.inner.client.connection_state())
            .field("closed", &self.is_closed())
            .field("retired", &self.inner.link.retired.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_start_at_zero_and_are_capped() {
        let max = Duration::from_millis(500);
        assert_eq!(reconnect_delay(0, max), Duration::ZERO);
        assert_eq!(reconnect_delay(1, max), Duration::ZERO);
        assert_eq!(reconnect_delay(2, max), Duration::from_millis(10));
        assert_eq!(reconnect_delay(3, max), Duration::from_millis(20));
        assert_eq!(reconnect_delay(7, max), Duration::from_millis(320));
        assert_eq!(reconnect_delay(8, max), max);
        assert_eq!(reconnect_delay(usize::MAX, max), max);
    }

    #[tokio::test]
    async fn the_link_closes_when_its_watcher_is_dropped() {
        tokio::time::pause();
        let link = Arc::new(Link::default());
        let watcher = Watcher(Arc::clone(&link));
        watcher.0.observe(&Event::Disconnected);
        assert!(!link.closed.load(Ordering::Acquire));
        let waiting = tokio::spawn({
            let link = Arc::clone(&link);
            async move { link.wait_closed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(watcher);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken")
            .expect("joined");
        assert!(link.closed.load(Ordering::Acquire));
    }

    #[test]
    fn closed_and_out_of_reconnects_close_the_link() {
        for event in [
            Event::Closed,
            Event::ClientError(ClientError::MaxReconnects),
        ] {
            let link = Link::default();
            link.observe(&event);
            assert!(link.closed.load(Ordering::Acquire), "{event}");
        }
        let link = Link::default();
        link.observe(&Event::Draining);
        link.observe(&Event::LameDuckMode);
        assert!(!link.closed.load(Ordering::Acquire));
    }
}
