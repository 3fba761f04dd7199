//! [`ResourceManager`]: the typed registry of resources, the entry point for acquiring them, and
//! the owner of their lifecycle from `build()` to `shutdown()`.

mod builder;
mod dag;
mod maintenance;
mod registration;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::{Notify, broadcast};
use tokio::time::Instant;

pub use self::builder::ResourceManagerBuilder;
use self::registration::Erased;
pub(crate) use self::registration::Registration;
use crate::context::{Context, CreateContext};
use crate::error::{Error, ErrorKind, TimeoutPhase};
use crate::events::Event;
use crate::guard::Guard;
use crate::pool::PoolStats;
use crate::resource::Resource;
use crate::runtime::Runtime;
use crate::scope::Scope;
use crate::status::{Phase, ResourceStatus, Status};

/// Unnamed registrations by type. A linear scan of a few `TypeId`s is cheaper than hashing
/// one on every acquire, for any registry of realistic size.
type TypeMap = Vec<(TypeId, usize)>;

/// One registration as the manager holds it.
struct Node {
    erased: Arc<dyn Erased>,
    any: Arc<dyn Any + Send + Sync>,
    dependencies: Vec<usize>,
    label: String,
}

struct ManagerInner {
    nodes: Vec<Node>,
    layers: Vec<Vec<usize>>,
    by_type: TypeMap,
    by_name: HashMap<TypeId, HashMap<Arc<str>, usize>>,
    runtime: Arc<Runtime>,
    maintenance: Arc<Notify>,
    health_stop: Arc<Notify>,
    shutdown: tokio::sync::Mutex<bool>,
}

impl ManagerInner {
    /// Whether `node` depends on `on`, directly or through others.
    fn depends_on(&self, node: usize, on: usize) -> bool {
        let mut stack = vec![node];
        let mut seen = vec![false; self.nodes.len()];
        while let Some(n) = stack.pop() {
            for &d in &self.nodes[n].dependencies {
                if d == on {
                    return true;
                }
                if !seen[d] {
                    seen[d] = true;
                    stack.push(d);
                }
            }
        }
        false
    }

    /// Close and drain every registration, dependents before their dependencies.
    async fn stop(&self, deadline: Instant) -> Result<(), Error> {
        let started = Instant::now();
        self.runtime.begin_shutdown();
        self.maintenance.notify_one();
        self.health_stop.notify_one();
        let mut stuck = Vec::new();
        for layer in self.layers.iter().rev() {
            for &i in layer {
                self.nodes[i].erased.set_phase(Phase::Draining);
                self.nodes[i].erased.close();
            }
            let drained = join_all(
                layer
                    .iter()
                    .map(|&i| self.nodes[i].erased.drained(deadline)),
            )
            .await;
            for (&i, result) in layer.iter().zip(drained) {
                match result {
                    Ok(()) => self.nodes[i].erased.set_phase(Phase::Stopped),
                    Err(stats) => stuck.push((i, stats)),
                }
            }
        }
        self.timed_out(stuck, started, "still in use at the deadline")
    }

    /// `Ok` when nothing is `stuck`; otherwise a shutdown timeout naming each registration with
    /// instances left.
    fn timed_out(
        &self,
        stuck: Vec<(usize, PoolStats)>,
        started: Instant,
        what: &str,
    ) -> Result<(), Error> {
        let Some(&(first, stats)) = stuck.first() else {
            return Ok(());
        };
        let names: Vec<String> = stuck
            .iter()
            .map(|(i, stats)| {
                format!(
                    "{} ({} in use, {} not yet destroyed)",
                    self.nodes[*i].label, stats.in_use, stats.size
                )
            })
            .collect();
        let node = &self.nodes[first].erased;
        Err(
            Error::timeout(TimeoutPhase::Shutdown, started.elapsed(), Some(stats), None)
                .in_resource(node.key(), node.name())
                .with_note(format!("{what}: {}", names.join(", "))),
        )
    }
}

/// Holds typed resources and hands out [`Guard`]s; see the [crate docs](crate) for a tour.
///
/// Cheap to clone: clones share the same resources.
#[derive(Clone)]
pub struct ResourceManager {
    inner: Arc<ManagerInner>,
}

impl fmt::Debug for ResourceManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let labels: Vec<&str> = self.inner.nodes.iter().map(|n| n.label.as_str()).collect();
        f.debug_struct("ResourceManager")
            .field("resources", &labels)
            .field("shutting_down", &self.inner.runtime.is_shutting_down())
            .finish()
    }
}

impl ResourceManager {
    /// Start registering resources.
    pub fn builder() -> ResourceManagerBuilder {
        ResourceManagerBuilder::default()
    }

    fn index_of<R: Resource>(&self, name: Option<&str>) -> Option<usize> {
        match name {
            None => {
                let wanted = TypeId::of::<R>();
                self.inner
                    .by_type
                    .iter()
                    .find_map(|&(type_id, i)| (type_id == wanted).then_some(i))
            }
            Some(name) => self
                .inner
                .by_name
                .get(&TypeId::of::<R>())
                .and_then(|names| names.get(name))
                .copied(),
        }
    }

    fn registration<R: Resource>(&self, name: Option<&str>) -> Result<&Registration<R>, Error> {
        self.index_of::<R>(name)
            .and_then(|i| self.inner.nodes[i].any.downcast_ref::<Registration<R>>())
            .ok_or_else(|| not_registered::<R>(name))
    }

    /// Acquire an instance of the unnamed registration of `R`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotRegistered`]; [`ErrorKind::Timeout`] after `acquire_timeout` (naming the
    /// phase, the pool's counts and the last create error); the create error of the instance
    /// made for this acquire; [`ErrorKind::ShuttingDown`] once shutdown has begun.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future at any await point loses no instance and no place in
    /// the pool. An instance being created for it goes to the next waiter or the idle store; an
    /// instance being checked for it is destroyed.
    pub async fn acquire<R: Resource>(&self) -> Result<Guard<R>, Error> {
        self.registration::<R>(None)?.acquire(None).await
    }

    /// Acquire an instance of the registration of `R` named `name`.
    ///
    /// # Errors
    ///
    /// As [`acquire`](Self::acquire).
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    pub async fn acquire_named<R: Resource>(&self, name: &str) -> Result<Guard<R>, Error> {
        self.registration::<R>(Some(name))?.acquire(None).await
    }

    /// Acquire in a [`Context`]: its tenant id is validated, and the wait never goes past its
    /// deadline.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TenantRejected`] naming the tenant for an invalid tenant id; otherwise as
    /// [`acquire`](Self::acquire).
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    pub async fn acquire_in<R: Resource>(&self, ctx: &Context) -> Result<Guard<R>, Error> {
        self.registration::<R>(None)?.acquire_in(ctx).await
    }

    /// Fetch the credentials of the unnamed registration of `R` again from its
    /// [`CredentialProvider`](crate::CredentialProvider) (every tenant pool's, for a per-tenant
    /// registration). Where they changed, a new generation starts: new instances use the new
    /// credentials, idle old ones are destroyed at once, in-use old ones when their guards drop.
    /// No acquire fails because of it. Returns how many pools rotated.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotRegistered`]; the provider's error (nothing changes then).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before the fetch finishes changes nothing.
    pub async fn rotate_credentials<R: Resource>(&self) -> Result<usize, Error> {
        self.registration::<R>(None)?.rotate_credentials().await
    }

    /// Replace the config of the unnamed registration of `R`, validated first. A new generation
    /// starts: new instances use the new config, idle old ones are destroyed at once, in-use
    /// old ones when their guards drop. No guard in use is touched and no acquire fails.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotRegistered`]; [`ErrorKind::Config`] naming the resource and field if the
    /// config is invalid, or if `R` is registered per tenant (use
    /// [`reconfigure_tenant`](Self::reconfigure_tenant)).
    pub fn reconfigure<R: Resource>(&self, config: R::Config) -> Result<(), Error> {
        self.registration::<R>(None)?.reconfigure(config)
    }

    /// Replace one tenant's config in the per-tenant registration of `R`, as
    /// [`reconfigure`](Self::reconfigure) does for a shared one.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotRegistered`]; [`ErrorKind::TenantRejected`] for an invalid tenant id;
    /// [`ErrorKind::Config`] for an invalid config or a registration that is not per tenant.
    pub fn reconfigure_tenant<R: Resource>(
        &self,
        tenant: &str,
        config: R::Config,
    ) -> Result<(), Error> {
        self.registration::<R>(None)?
            .reconfigure_tenant(tenant, config)
    }

    /// Change the pool size of the unnamed registration of `R` while it serves. Growing lets
    /// waiters be served at once. Shrinking destroys surplus idle instances now, surplus in-use
    /// ones when their guards drop and surplus new ones when their create ends: no guard is
    /// taken away, so until they come back the pool may hold more than the new `max_size`.
    /// Maintenance refills a larger `min_idle`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotRegistered`]; [`ErrorKind::ShuttingDown`] once the pool is closed;
    /// [`ErrorKind::Config`] naming the resource and
    /// `pool.max_size` or `pool.min_idle` when out of range (the rules of
    /// [`PoolConfig`](crate::PoolConfig)), or when `R` is resident or registered per tenant (use
    /// [`resize_tenant`](Self::resize_tenant)).
    pub fn resize<R: Resource>(&self, max_size: usize, min_idle: usize) -> Result<(), Error> {
        self.registration::<R>(None)?.resize(max_size, min_idle)
    }

    /// [`resize`](Self::resize) one tenant's pool of the per-tenant registration of `R` (its
    /// pool is created if it does not exist yet).
    ///
    /// # Errors
    ///
    /// As [`resize`](Self::resize); [`ErrorKind::TenantRejected`] for an invalid tenant id or a
    /// tenant its resolver rejects; [`ErrorKind::Config`] if `R` is not registered per tenant.
    pub fn resize_tenant<R: Resource>(
        &self,
        tenant: &str,
        max_size: usize,
        min_idle: usize,
    ) -> Result<(), Error> {
        self.registration::<R>(None)?
            .resize_tenant(tenant, max_size, min_idle)
    }

    /// A typed handle to the unnamed registration of `R`: cheap to clone, no lookup per acquire.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotRegistered`].
    pub fn handle<R: Resource>(&self) -> Result<Handle<R>, Error> {
        self.handle_for::<R>(None)
    }

    /// A typed handle to the registration of `R` named `name`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotRegistered`].
    pub fn handle_named<R: Resource>(&self, name: &str) -> Result<Handle<R>, Error> {
        self.handle_for::<R>(Some(name))
    }

    fn handle_for<R: Resource>(&self, name: Option<&str>) -> Result<Handle<R>, Error> {
        self.index_of::<R>(name)
            .and_then(|i| {
                Arc::clone(&self.inner.nodes[i].any)
                    .downcast::<Registration<R>>()
                    .ok()
            })
            .map(Handle::from_registration)
            .ok_or_else(|| not_registered::<R>(name))
    }

    /// Every registration's phase, topology, dependencies and pool counts, in initialization
    /// order.
    pub fn status(&self) -> Status {
        let resources = self
            .inner
            .layers
            .iter()
            .flatten()
            .map(|&i| {
                let node = &self.inner.nodes[i];
                ResourceStatus {
                    key: node.erased.key(),
                    name: node.erased.name().map(Arc::from),
                    topology: node.erased.topology(),
                    phase: node.erased.phase(),
                    dependencies: node
                        .dependencies
                        .iter()
                        .map(|&d| self.inner.nodes[d].label.clone())
                        .collect(),
                    pool: node.erased.stats(),
                    counters: node.erased.counters(),
                    tenants: node.erased.tenants(),
                    health: node.erased.health(),
                    breaker: node.erased.breaker(),
                    scope: node.erased.scope(),
                    scopes: node.erased.scopes(),
                }
            })
            .collect();
        Status {
            resources,
            shutting_down: self.inner.runtime.is_shutting_down(),
        }
    }

    /// End the workflow or execution scope `ctx` names: the pools of the registrations at that
    /// scope are closed and their instances destroyed, dependents before their dependencies —
    /// each layer of the DAG waits for the instances of the layer that depends on it. Ending a
    /// workflow (a context with a workflow id and no execution id) ends its executions too.
    /// Guards still held are not taken away: their instances are destroyed when they drop, and
    /// `end_scope` waits for them until `ctx`'s deadline (with none, until they drop). A later
    /// acquire in the same scope starts it again.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::ScopeRequired`] if `ctx` names no workflow;
    /// [`ErrorKind::TenantRejected`] for an invalid tenant id; [`ErrorKind::Timeout`] (phase
    /// [`TimeoutPhase::Shutdown`]) if instances were still in use at `ctx`'s deadline, naming
    /// the resources.
    ///
    /// # Cancel safety
    ///
    /// The pools of the layers reached are closed at once; dropping the future stops the
    /// waiting, and the layers not yet reached stay open. Call `end_scope` again to finish.
    pub async fn end_scope(&self, ctx: &Context) -> Result<(), Error> {
        if ctx.workflow_id().is_none() {
            return Err(Error::other(
                ErrorKind::ScopeRequired,
                "end_scope needs a context naming a workflow (and, for one execution, its id)",
            ));
        }
        let started = Instant::now();
        let deadline = ctx
            .deadline()
            .unwrap_or_else(|| started + crate::pool::MAX_DURATION);
        let ends = |scope: Scope| match scope {
            Scope::Global => false,
            Scope::Workflow => ctx.execution_id().is_none(),
            Scope::Execution => true,
        };
        let mut stuck = Vec::new();
        for layer in self.inner.layers.iter().rev() {
            let mut draining = Vec::new();
            for &i in layer {
                let node = &self.inner.nodes[i];
                if ends(node.erased.scope()) {
                    draining.push((i, node.erased.end_scope(ctx, deadline)?));
                }
            }
            let (nodes, drains): (Vec<usize>, Vec<_>) = draining.into_iter().unzip();
            for (i, drained) in nodes.into_iter().zip(join_all(drains).await) {
                if let Err(stats) = drained {
                    stuck.push((i, stats));
                }
            }
        }
        self.inner
            .timed_out(stuck, started, "still in use at the scope's deadline")
    }

    /// Lifecycle events from now on. A receiver that falls more than 1024 events behind gets
    /// `RecvError::Lagged`.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.inner.runtime.subscribe()
    }

    /// Shut down in reverse dependency order: each registration stops serving (every waiting
    /// and later acquire gets [`ErrorKind::ShuttingDown`]), waits for its guards in use to be
    /// dropped, destroys its instances, and only then are its dependencies shut down.
    /// Returns when every instance is destroyed or `deadline` has passed. Calling it again after
    /// it finished returns `Ok` at once.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Timeout`] (phase [`TimeoutPhase::Shutdown`]) if guards were still held at the
    /// deadline, naming the resources and how many instances each had in use. Those instances
    /// are destroyed when their guards drop.
    ///
    /// # Cancel safety
    ///
    /// Shutdown has begun once the future is first polled; dropping it stops the waiting, not
    /// the shutdown. Calling `shutdown` again resumes the waiting.
    pub async fn shutdown(&self, deadline: Duration) -> Result<(), Error> {
        let mut done = self.inner.shutdown.lock().await;
        if *done {
            return Ok(());
        }
        self.inner.runtime.emit(Event::ShutdownStarted);
        let stopped = self.inner.stop(Instant::now() + deadline).await;
        *done = true;
        self.inner.runtime.emit(Event::ShutdownCompleted);
        stopped
    }
}

fn not_registered<R: Resource>(name: Option<&str>) -> Error {
    let what = match name {
        Some(name) => format!(
            "no registration of {} named `{name}`",
            std::any::type_name::<R>()
        ),
        None => format!("no registration of {}", std::any::type_name::<R>()),
    };
    Error::other(ErrorKind::NotRegistered, what).in_resource(R::KEY, name)
}

/// A typed handle to one registration: acquire without a registry lookup. Cheap to clone.
pub struct Handle<R: Resource> {
    registration: Arc<Registration<R>>,
}

impl<R: Resource> Clone for Handle<R> {
    fn clone(&self) -> Self {
        Self {
            registration: Arc::clone(&self.registration),
        }
    }
}

impl<R: Resource> fmt::Debug for Handle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handle")
            .field("key", &R::KEY)
            .field("name", &self.registration.name)
            .finish()
    }
}

/// Dependencies are looked up here, where [`Handle`] lives, so that the context (which every
/// pool holds) does not depend on the manager.
impl CreateContext {
    /// A handle to the unnamed registration of `D`, which must be a declared dependency.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::MissingDependency`] if `D` was not declared in
    /// [`Resource::dependencies`].
    pub fn dependency<D: Resource>(&self) -> Result<Handle<D>, Error> {
        self.lookup::<D>(None)
    }

    /// A handle to the registration of `D` named `name`, which must be a declared dependency.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::MissingDependency`] if it was not declared.
    pub fn dependency_named<D: Resource>(&self, name: &'static str) -> Result<Handle<D>, Error> {
        self.lookup::<D>(Some(name))
    }

    fn lookup<D: Resource>(&self, name: Option<&'static str>) -> Result<Handle<D>, Error> {
        self.declared(TypeId::of::<D>(), name)
            .and_then(|any| Arc::clone(any).downcast::<Registration<D>>().ok())
            .map(Handle::from_registration)
            .ok_or_else(|| {
                let what = match name {
                    Some(name) => format!("`{}` named `{name}`", D::KEY),
                    None => format!("`{}`", D::KEY),
                };
                Error::other(
                    ErrorKind::MissingDependency,
                    format!("{what} is not a declared dependency; add it to `dependencies()`"),
                )
                .in_resource(self.key(), self.name())
            })
    }
}

impl<R: Resource> Handle<R> {
    pub(crate) fn from_registration(registration: Arc<Registration<R>>) -> Self {
        Self { registration }
    }

    /// Acquire an instance.
    ///
    /// # Errors
    ///
    /// As [`ResourceManager::acquire`].
    ///
    /// # Cancel safety
    ///
    /// As [`ResourceManager::acquire`].
    pub async fn acquire(&self) -> Result<Guard<R>, Error> {
        self.registration.acquire(None).await
    }

    /// Acquire in a [`Context`], as [`ResourceManager::acquire_in`].
    ///
    /// # Errors
    ///
    /// As [`ResourceManager::acquire_in`].
    ///
    /// # Cancel safety
    ///
    /// As [`ResourceManager::acquire`].
    pub async fn acquire_in(&self, ctx: &Context) -> Result<Guard<R>, Error> {
        self.registration.acquire_in(ctx).await
    }

    /// The registration name, if any.
    pub fn name(&self) -> Option<&str> {
        self.registration.name.as_deref()
    }

    /// The pool's counts now.
    pub fn stats(&self) -> crate::pool::PoolStats {
        Erased::stats(&*self.registration)
    }
}
