//! What a resource author implements: [`Resource`] and its [`Config`], the [`Topology`] that
//! says how instances are handed out, and the [`Dependencies`] that order initialization.

use std::any::{TypeId, type_name};
use std::cell::Cell;
use std::future::Future;

use crate::context::CreateContext;
use crate::error::Error;

/// How a resource's instances are handed to acquirers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topology {
    /// Exclusive checkout of one of up to `max_size` instances (database connections).
    /// Dropping the guard returns the instance to the pool.
    Pooled,
    /// One long-lived instance; every acquirer gets its own handle to it, made by
    /// [`Resource::share`] (an HTTP client, a gRPC channel, a multiplexed Redis connection).
    Resident,
}

/// A thing the manager creates, validates, resets and destroys on behalf of its users.
///
/// Only [`create`](Self::create) is required. The hooks run with the pool's timeouts around them,
/// and a panic inside any of them is caught and counted as that hook's failure: the pool's
/// counts stay exact.
///
/// ```
/// use nebula_resource::{Config, CreateContext, Error, Resource};
///
/// #[derive(Clone)]
/// struct EchoConfig { greeting: String }
/// impl Config for EchoConfig {
///     fn validate(&self) -> Result<(), Error> {
///         if self.greeting.is_empty() {
///             return Err(Error::config("greeting", "must not be empty"));
///         }
///         Ok(())
///     }
/// }
///
/// struct Echo;
/// impl Resource for Echo {
///     type Config = EchoConfig;
///     type Instance = String;
///     const KEY: &'static str = "echo";
///
///     async fn create(&self, config: &EchoConfig, _ctx: &CreateContext) -> Result<String, Error> {
///         Ok(config.greeting.clone())
///     }
/// }
/// ```
pub trait Resource: Send + Sync + Sized + 'static {
    /// Validated settings for this resource.
    type Config: Config;
    /// What a guard hands out: a connection, a client.
    type Instance: Send + 'static;
    /// A stable name for logs, metrics and errors, e.g. `"postgres"`.
    const KEY: &'static str;
    /// How instances are handed out. Defaults to [`Topology::Pooled`].
    const TOPOLOGY: Topology = Topology::Pooled;

    /// Resources that must be ready before this one is created. Defaults to none.
    fn dependencies() -> Dependencies {
        Dependencies::none()
    }

    /// Create one instance.
    ///
    /// Runs in a task of its own, so an acquirer that gives up does not abandon a half-open
    /// connection; bounded by `create_timeout`.
    fn create(
        &self,
        config: &Self::Config,
        ctx: &CreateContext,
    ) -> impl Future<Output = Result<Self::Instance, Error>> + Send;

    /// Validate an instance with a round trip (`SELECT 1`, `PING`).
    ///
    /// Called on acquire when the instance has been idle longer than `validate_after_idle`.
    /// An error (or panic) destroys the instance; the acquirer gets another one. Defaults to `Ok`.
    fn check(
        &self,
        instance: &mut Self::Instance,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = instance;
        async { Ok(()) }
    }

    /// Cheap and synchronous: is this instance known to be broken (closed socket, poisoned
    /// state)? Called right after [`create`](Self::create), before an instance is handed out,
    /// and when a guard is dropped. A broken instance is destroyed, never handed out or kept,
    /// and counts as a failure with the circuit breaker; one broken as soon as it is created
    /// fails that create attempt (so the retry policy's backoff applies and the breaker can
    /// open). A panic counts as broken. Defaults to `false`.
    fn is_broken(&self, instance: &Self::Instance) -> bool {
        let _ = instance;
        false
    }

    /// Is the instance working but impaired — a broker's resource alarm, a client reconnecting
    /// under the hood? If so, why.
    ///
    /// Asked by health rounds after a successful [`check`](Self::check): `Some(reason)` reports
    /// the registration [`Degraded`](crate::Health::Degraded) with that reason until a round
    /// finds it `None` again. It is not a failure: the circuit breaker, quarantine and the
    /// failure count are unaffected, and the instance stays in service. Use
    /// [`is_broken`](Self::is_broken) for an instance that must be replaced. A panic reports
    /// Degraded with the panic as the reason. Defaults to `None`.
    fn degraded(&self, instance: &Self::Instance) -> Option<String> {
        let _ = instance;
        None
    }

    /// Reset state before reuse (`ROLLBACK`, `DISCARD ALL`, `UNWATCH`).
    ///
    /// Called when a guard is dropped. The future is polled once in place; if it does not finish
    /// at once it is moved to the manager's release worker and finished there, bounded by
    /// `recycle_timeout`. An error (or panic, or timeout) destroys the instance. Defaults to `Ok`.
    fn recycle(
        &self,
        instance: &mut Self::Instance,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let _ = instance;
        DEFAULT_RECYCLE.set(true);
        async { Ok(()) }
    }

    /// Close an instance gracefully. Runs on the release worker, bounded by `recycle_timeout`.
    /// Defaults to dropping it.
    fn destroy(&self, instance: Self::Instance) -> impl Future<Output = ()> + Send {
        async move { drop(instance) }
    }

    /// [`Topology::Resident`] only: the handle one acquirer gets, made from the resident instance
    /// — write `Some(instance.clone())`.
    ///
    /// A resident keeps a few shared handles of its own (one per thread that acquires, so that
    /// concurrent acquires share no lock) and makes most handles from those, asking
    /// [`is_broken`](Self::is_broken) of them: a handle must see the state of the instance it
    /// was shared from, as clones of one `Arc` do.
    ///
    /// The default, `None`, means "cannot be shared": registering such a resource as `Resident`
    /// fails at `build()` with a [`Config`](crate::ErrorKind::Config) error naming it.
    fn share(&self, instance: &Self::Instance) -> Option<Self::Instance> {
        let _ = instance;
        None
    }

    /// Resource-specific counters shown in [`ResourceStatus::counters`](crate::ResourceStatus)
    /// (a cache's hits and misses, say), read each time `status()` is called. Defaults to none.
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

thread_local! {
    /// Set by the default [`Resource::recycle`], and by nothing else: lets a pool learn, on the
    /// first release, that its resource does not recycle, and skip the call from then on.
    static DEFAULT_RECYCLE: Cell<bool> = const { Cell::new(false) };
}

/// Clear the default-recycle mark before calling `recycle`.
pub(crate) fn reset_default_recycle_mark() {
    DEFAULT_RECYCLE.set(false);
}

/// Whether the `recycle` just called was the default one (and clear the mark).
pub(crate) fn take_default_recycle_mark() -> bool {
    DEFAULT_RECYCLE.replace(false)
}

/// Settings of a resource.
pub trait Config: Clone + Send + Sync + 'static {
    /// Reject bad settings with [`Error::config`], naming the field and the rule.
    /// Called by `build()` before anything is created. Defaults to `Ok`.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error for the first invalid field.
    fn validate(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// One declared dependency.
#[derive(Debug, Clone)]
pub(crate) struct Dependency {
    pub(crate) type_id: TypeId,
    pub(crate) type_name: &'static str,
    pub(crate) key: &'static str,
    pub(crate) name: Option<&'static str>,
}

/// The resources that must be ready before a resource is created.
///
/// ```
/// # use nebula_resource::{Config, CreateContext, Dependencies, Error, Resource};
/// # #[derive(Clone)] struct C; impl Config for C {}
/// # struct Postgres; impl Resource for Postgres { type Config = C; type Instance = (); const KEY: &'static str = "postgres";
/// #   async fn create(&self, _: &C, _: &CreateContext) -> Result<(), Error> { Ok(()) } }
/// # struct Redis; impl Resource for Redis { type Config = C; type Instance = (); const KEY: &'static str = "redis";
/// #   async fn create(&self, _: &C, _: &CreateContext) -> Result<(), Error> { Ok(()) } }
/// let deps = Dependencies::none().on::<Postgres>().on_named::<Redis>("sessions");
/// assert_eq!(deps.len(), 2);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Dependencies {
    pub(crate) list: Vec<Dependency>,
}

impl Dependencies {
    /// No dependencies.
    pub fn none() -> Self {
        Self::default()
    }

    /// Depend on the unnamed registration of `D`.
    #[must_use]
    pub fn on<D: Resource>(self) -> Self {
        self.push::<D>(None)
    }

    /// Depend on the registration of `D` made with `register_named(name, ..)`.
    #[must_use]
    pub fn on_named<D: Resource>(self, name: &'static str) -> Self {
        self.push::<D>(Some(name))
    }

    fn push<D: Resource>(mut self, name: Option<&'static str>) -> Self {
        self.list.push(Dependency {
            type_id: TypeId::of::<D>(),
            type_name: type_name::<D>(),
            key: D::KEY,
            name,
        });
        self
    }

    /// How many dependencies are declared.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether none are declared.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}
