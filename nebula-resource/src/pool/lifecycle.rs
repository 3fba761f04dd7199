//! What both topologies share over their instances' lives, written once: the config and the
//! generation it belongs to, the credentials, one create attempt and the retries around it,
//! the health watch, and close.
//!
//! A [`Pool`](super::Pool) and a [`Resident`](super::resident::Resident) each own one
//! [`Lifecycle`] and add only what differs between them: where instances live (an idle store
//! and waiters, or one shared instance), and where the breaker and the quarantine are kept (under
//! the pool's lock, which its hot path already holds; behind the resident's `tripped` flag, which
//! its lock-free hot path reads).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::PoolConfig;
use crate::context::CreateContext;
use crate::credentials::{CredentialProvider, REFRESH_BEFORE_EXPIRY};
use crate::error::{Error, ErrorKind, TimeoutPhase};
use crate::events::{Event, Source};
use crate::hooks;
use crate::policy::Policy;
use crate::resilience::breaker::Outcome;
use crate::resilience::retry::retry;
use crate::resilience::{RetryPolicy, Watch, emit_transition};
use crate::resource::Resource;
use crate::runtime::Runtime;

/// The shared life of one registration's (or tenant's, or scope's) instances.
pub(crate) struct Lifecycle<R: Resource> {
    pub(crate) resource: Arc<R>,
    config: ArcSwap<R::Config>,
    pub(crate) settings: PoolConfig,
    pub(crate) ctx: CreateContext,
    pub(crate) source: Source,
    pub(crate) runtime: Arc<Runtime>,
    retry: RetryPolicy,
    pub(crate) watch: Watch,
    credentials: CredentialSource,
    /// The config and credentials generation: bumped by a reconfiguration or a rotation. Only
    /// instances of the current one are kept.
    generation: AtomicU32,
    /// A rotation for near expiry is under way.
    pub(super) rotating: AtomicBool,
    closed: AtomicBool,
    /// Woken when the owner closes: a create waiting out a retry delay gives up.
    closing: Notify,
}

impl<R: Resource> Lifecycle<R> {
    pub(crate) fn new(
        resource: Arc<R>,
        config: R::Config,
        policy: &Policy,
        ctx: CreateContext,
        runtime: Arc<Runtime>,
    ) -> Self {
        Self {
            resource,
            config: ArcSwap::from_pointee(config),
            settings: policy.pool.clone(),
            source: ctx.source(),
            ctx,
            runtime,
            retry: policy.retry.clone(),
            watch: Watch::new(&policy.health, &policy.retry),
            credentials: CredentialSource::new(policy.credentials.clone()),
            generation: AtomicU32::new(0),
            rotating: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            closing: Notify::new(),
        }
    }

    /// `err`, naming the resource (and tenant).
    pub(crate) fn error(&self, err: Error) -> Error {
        self.ctx.attribute(err)
    }

    /// The current config and credentials generation.
    pub(crate) fn generation(&self) -> u32 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Replace the config and start a new generation; `retire` (the owner's) retires the old
    /// one before the change is announced, so whoever reacts to the event finds no old instance
    /// idle.
    pub(crate) fn reconfigure(&self, config: R::Config, retire: impl FnOnce()) {
        self.config.store(Arc::new(config));
        self.generation.fetch_add(1, Ordering::SeqCst);
        retire();
        tracing::info!(resource = R::KEY, name = ?self.source.name, tenant = ?self.source.tenant, "reconfigured; new generation");
        self.runtime.emit(Event::Reconfigured(self.source.clone()));
    }

    /// Fetch the credentials again, within `create_timeout`; if they changed, start a new
    /// generation and retire the old one with `retire` (the owner's) before the rotation is
    /// announced. Returns whether they changed.
    pub(crate) async fn rotate(&self, retire: impl FnOnce()) -> Result<bool, Error> {
        let changed = self
            .credentials
            .refresh(&self.ctx, self.settings.create_timeout)
            .await
            .map_err(|err| self.error(err))?;
        if changed {
            self.generation.fetch_add(1, Ordering::SeqCst);
            retire();
            tracing::info!(resource = R::KEY, name = ?self.source.name, tenant = ?self.source.tenant, "credentials rotated; new generation");
            self.runtime
                .emit(Event::CredentialsRotated(self.source.clone()));
        }
        Ok(changed)
    }

    /// Whether the credentials expire soon and no rotation is under way; if so, the caller owns
    /// the rotation until it clears [`rotating`](Self::rotating).
    pub(super) fn should_rotate(&self) -> bool {
        CredentialSource::expiring(&self.ctx) && !self.rotating.swap(true, Ordering::AcqRel)
    }

    /// Create an instance with the retry policy, each attempt recorded by `record` (the owner's
    /// breaker). Gives up when the owner closes, even between two attempts. Returns the instance
    /// and the generation it was made in.
    pub(crate) async fn create(
        &self,
        record: impl Fn(Outcome, Duration),
    ) -> Result<(R::Instance, u32), Error> {
        let attempts = retry(
            &self.retry,
            |_| self.attempt(self.settings.create_timeout, &record),
            |attempt, err, delay| {
                tracing::debug!(resource = R::KEY, attempt, error = %err, ?delay, "create failed; retrying");
            },
        );
        let created = tokio::select! {
            biased;
            created = attempts => created,
            () = self.until_closed() => Err(Error::shutting_down()),
        };
        created.map_err(|err| self.error(err))
    }

    /// One create attempt within `timeout`, the credentials fetched first if need be, its
    /// outcome given to `record`. An instance that is broken as soon as it is made is destroyed
    /// and the attempt fails: the retry policy's backoff and the breaker apply to it like to any
    /// failed create, so an always-broken backend cannot drive a create storm.
    pub(crate) async fn attempt(
        &self,
        timeout: Duration,
        record: impl Fn(Outcome, Duration),
    ) -> Result<(R::Instance, u32), Error> {
        let started = Instant::now();
        let created = async {
            self.credentials
                .ensure(&self.ctx, timeout)
                .await
                .map_err(|err| self.error(err))?;
            // Read before the config: a reconfiguration in between makes this instance look
            // older than it is (it is retired), never newer.
            let generation = self.generation();
            let config = self.config.load_full();
            let instance = hooks::create(&*self.resource, &config, &self.ctx, timeout).await?;
            if hooks::is_broken(&*self.resource, &instance) {
                hooks::destroy(&*self.resource, instance, self.settings.recycle_timeout).await;
                return Err(Error::create(
                    "the new instance was broken at once (`is_broken` returned true)",
                ));
            }
            Ok((instance, generation))
        }
        .await;
        let outcome = if created.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        record(outcome, started.elapsed());
        created
    }

    pub(crate) fn set_dependency_health(&self, dependency: Option<&str>) {
        let transition = self.watch.set_dependency(dependency);
        emit_transition(&self.runtime, &self.source, transition);
    }

    /// Mark the owner closed and stop the creates waiting between attempts.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.closing.notify_waiters();
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Resolves once the owner is closed.
    async fn until_closed(&self) {
        let closing = self.closing.notified();
        tokio::pin!(closing);
        // Registered before the flag is read: a close in between still wakes it.
        closing.as_mut().enable();
        if self.is_closed() {
            return;
        }
        closing.await;
    }
}

/// Where one pool (or resident) gets its credentials, with one fetch at a time.
struct CredentialSource {
    provider: Option<Arc<dyn CredentialProvider>>,
    fetching: tokio::sync::Mutex<()>,
}

impl CredentialSource {
    fn new(provider: Option<Arc<dyn CredentialProvider>>) -> Self {
        Self {
            provider,
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// Fetch the credentials into `ctx` unless it has them. The wait for a fetch already under
    /// way and the fetch itself are bounded by `timeout` together: a hung provider holds no
    /// lock past it, so the next create tries again.
    async fn ensure(&self, ctx: &CreateContext, timeout: Duration) -> Result<(), Error> {
        let Some(provider) = &self.provider else {
            return Ok(());
        };
        if ctx.credentials().is_some() {
            return Ok(());
        }
        Self::bounded(timeout, async {
            let _fetching = self.fetching.lock().await;
            if ctx.credentials().is_some() {
                return Ok(());
            }
            let credentials = provider.fetch(ctx.tenant()).await?;
            ctx.set_credentials(credentials);
            Ok(())
        })
        .await
    }

    /// Fetch again, within `timeout`; `Ok(true)` if the credentials changed (and are now in
    /// `ctx`).
    async fn refresh(&self, ctx: &CreateContext, timeout: Duration) -> Result<bool, Error> {
        let Some(provider) = &self.provider else {
            return Ok(false);
        };
        Self::bounded(timeout, async {
            let _fetching = self.fetching.lock().await;
            let fresh = provider.fetch(ctx.tenant()).await?;
            if ctx.credentials().as_deref() == Some(&fresh) {
                return Ok(false);
            }
            ctx.set_credentials(fresh);
            Ok(true)
        })
        .await
    }

    /// A fetch (and the wait for the one under way) through the hook helper: bounded by
    /// `timeout`, a panic in the provider a `Create` error, the error noted as fetching
    /// credentials.
    async fn bounded<T>(
        timeout: Duration,
        fetch: impl Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        hooks::fallible(
            ErrorKind::Create,
            "CredentialProvider::fetch",
            TimeoutPhase::Create,
            timeout,
            || fetch,
        )
        .await
        .map_err(|err| err.with_note("fetching credentials".to_owned()))
    }

    /// Whether the credentials in `ctx` expire within [`REFRESH_BEFORE_EXPIRY`].
    fn expiring(ctx: &CreateContext) -> bool {
        ctx.credentials()
            .and_then(|c| c.get_expires_at())
            .is_some_and(|at| {
                at.duration_since(SystemTime::now())
                    .map_or(true, |left| left <= REFRESH_BEFORE_EXPIRY)
            })
    }
}
