//! [`ResourceManagerBuilder`]: collect registrations, then `build()` — validate everything,
//! plan the dependency DAG, and initialize layer by layer.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use super::dag::{self, NodeSpec};
use super::maintenance;
use super::registration::{Backend, Erased, Registration};
use super::{ManagerInner, Node, ResourceManager, TypeMap};
use crate::context::{CreateContext, DependencyMap, TenantId};
use crate::error::Error;
use crate::hooks::validate_config;
use crate::policy::Policy;
use crate::pool::Pool;
use crate::pool::resident::Resident;
use crate::resource::{Resource, Topology};
use crate::runtime::Runtime;
use crate::scope::{Scope, ScopedPools};
use crate::status::Phase;
use crate::tenancy::{Resolver, Tenancy, TenantPools, TenantSetup};

/// How long a failed `build()` waits for what it created to be destroyed.
const FAILED_BUILD_DRAIN: Duration = Duration::from_secs(10);

/// A registration after instantiation: the face the manager drives, and the typed value behind
/// it for downcasting.
type Instantiated = (Arc<dyn Erased>, Arc<dyn Any + Send + Sync>);

/// One registration before `build()`, whatever its resource type.
trait Entry: Send {
    fn spec(&self) -> NodeSpec;
    fn scope(&self) -> Scope;
    fn validate(&self) -> Result<(), Error>;
    fn instantiate(
        self: Box<Self>,
        dependencies: Arc<DependencyMap>,
        runtime: &Arc<Runtime>,
    ) -> Instantiated;
}

struct Typed<R: Resource> {
    resource: R,
    setup: Setup<R>,
    policy: Policy,
    name: Option<Arc<str>>,
}

/// One config for the registration, or one per tenant.
enum Setup<R: Resource> {
    Shared(R::Config),
    PerTenant(Box<Resolver<R>>, Tenancy),
}

impl<R: Resource> Entry for Typed<R> {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            type_id: TypeId::of::<R>(),
            key: R::KEY,
            name: self.name.clone(),
            dependencies: R::dependencies().list,
        }
    }

    fn scope(&self) -> Scope {
        self.policy.scope
    }

    fn validate(&self) -> Result<(), Error> {
        let scoped = self.policy.scope != Scope::Global;
        let validated = match &self.setup {
            Setup::PerTenant(..) if scoped => Err(Error::config(
                "scope",
                "a per-tenant registration lives for the manager's life: register it at \
                 Scope::Global (a scoped registration already gets a pool per tenant's scope)",
            )),
            Setup::Shared(_) if scoped && R::TOPOLOGY == Topology::Resident => Err(Error::config(
                "scope",
                "a scoped registration needs a Pooled resource (a pool of max_size 1 gives \
                 one instance per scope)",
            )),
            Setup::Shared(config) => validate_config(config),
            // Each tenant's config is validated when its pool is created.
            Setup::PerTenant(_, tenancy) if R::TOPOLOGY == Topology::Pooled => tenancy.validate(),
            Setup::PerTenant(..) => Err(Error::config(
                "topology",
                "a per-tenant registration needs a Pooled resource; register a Resident one \
                 once per tenant with `register_named`",
            )),
        };
        validated
            .and_then(|()| self.policy.validate())
            .map_err(|err| err.in_resource(R::KEY, self.name.as_deref()))
    }

    fn instantiate(
        self: Box<Self>,
        dependencies: Arc<DependencyMap>,
        runtime: &Arc<Runtime>,
    ) -> Instantiated {
        let resource = Arc::new(self.resource);
        let backend = match (self.setup, R::TOPOLOGY) {
            (Setup::Shared(config), _) if self.policy.scope != Scope::Global => {
                Backend::Scoped(Arc::new(ScopedPools::new(
                    self.policy.scope,
                    resource,
                    config,
                    self.policy,
                    self.name.clone(),
                    dependencies,
                    Arc::clone(runtime),
                )))
            }
            (Setup::PerTenant(resolver, tenancy), _) => {
                Backend::PerTenant(Arc::new(TenantPools::new(
                    resource,
                    resolver,
                    self.policy,
                    &tenancy,
                    self.name.clone(),
                    dependencies,
                    Arc::clone(runtime),
                )))
            }
            (Setup::Shared(config), Topology::Pooled) => Backend::Pooled(Pool::new(
                resource,
                config,
                &self.policy,
                CreateContext::new(R::KEY, self.name.clone(), None, dependencies),
                Arc::clone(runtime),
                None,
            )),
            (Setup::Shared(config), Topology::Resident) => Backend::Resident(Resident::new(
                resource,
                config,
                &self.policy,
                CreateContext::new(R::KEY, self.name.clone(), None, dependencies),
                Arc::clone(runtime),
            )),
        };
        let registration = Arc::new(Registration::new(self.name, backend));
        (Arc::clone(&registration) as Arc<dyn Erased>, registration)
    }
}

/// Collects registrations; [`build`](Self::build) turns them into a [`ResourceManager`].
#[must_use = "a builder does nothing until build() is awaited"]
#[derive(Default)]
pub struct ResourceManagerBuilder {
    entries: Vec<Box<dyn Entry>>,
}

impl std::fmt::Debug for ResourceManagerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<_> = self.entries.iter().map(|e| e.spec().key).collect();
        f.debug_struct("ResourceManagerBuilder")
            .field("resources", &keys)
            .finish()
    }
}

impl ResourceManagerBuilder {
    /// Register `resource` with `config` and the default [`Policy`].
    pub fn register<R: Resource>(self, resource: R, config: R::Config) -> Self {
        self.push(resource, config, Policy::default(), None)
    }

    /// Register `resource` with `config` and `policy`.
    pub fn register_with<R: Resource>(
        self,
        resource: R,
        config: R::Config,
        policy: Policy,
    ) -> Self {
        self.push(resource, config, policy, None)
    }

    /// Register one more instance of a resource type under `name` (a replica, a second
    /// cluster); acquire it with `acquire_named::<R>(name)`.
    pub fn register_named<R: Resource>(
        self,
        name: impl Into<String>,
        resource: R,
        config: R::Config,
    ) -> Self {
        self.push(resource, config, Policy::default(), Some(name.into()))
    }

    /// [`register_named`](Self::register_named) with a [`Policy`].
    pub fn register_named_with<R: Resource>(
        self,
        name: impl Into<String>,
        resource: R,
        config: R::Config,
        policy: Policy,
    ) -> Self {
        self.push(resource, config, policy, Some(name.into()))
    }

    /// Register `resource` with a pool per tenant: `resolver` maps a tenant to its own config
    /// (its connection string, credentials, database) when the tenant first acquires in a
    /// [`Context::tenant`](crate::Context::tenant) context. Default [`Policy`] (each tenant's
    /// pool gets its `PoolConfig`) and default [`Tenancy`].
    ///
    /// A resolver error, a panic in it, or a config that fails `validate` rejects that tenant's
    /// acquires with [`ErrorKind::TenantRejected`](crate::ErrorKind::TenantRejected) naming the tenant; other tenants are not
    /// affected. Only [`Topology::Pooled`] resources can be registered per tenant.
    ///
    /// ```
    /// # use nebula_resource::{Config, CreateContext, Error, Resource, ResourceManager};
    /// # #[derive(Clone)] struct DbConfig { url: String }
    /// # impl Config for DbConfig {}
    /// # struct Db;
    /// # impl Resource for Db {
    /// #     type Config = DbConfig; type Instance = String; const KEY: &'static str = "db";
    /// #     async fn create(&self, c: &DbConfig, _: &CreateContext) -> Result<String, Error> { Ok(c.url.clone()) }
    /// # }
    /// # async fn run() -> Result<(), Error> {
    /// use nebula_resource::{Context, TenantId};
    /// let manager = ResourceManager::builder()
    ///     .register_per_tenant(Db, |tenant: &TenantId| {
    ///         Ok(DbConfig { url: format!("postgres://127.0.0.1/{}", tenant.as_str()) })
    ///     })
    ///     .build()
    ///     .await?;
    /// let conn = manager.acquire_in::<Db>(&Context::tenant("acme")).await?;
    /// assert_eq!(*conn, "postgres://127.0.0.1/acme");
    /// # Ok(()) }
    /// ```
    pub fn register_per_tenant<R, F>(self, resource: R, resolver: F) -> Self
    where
        R: Resource,
        F: Fn(&TenantId) -> Result<R::Config, Error> + Send + Sync + 'static,
    {
        self.register_per_tenant_with(resource, resolver, Policy::default(), Tenancy::default())
    }

    /// [`register_per_tenant`](Self::register_per_tenant) with a [`Policy`] for every tenant's
    /// pool and [`Tenancy`] bounds (`max_tenants`, `tenant_idle_ttl`, `max_total_instances`).
    pub fn register_per_tenant_with<R, F>(
        self,
        resource: R,
        resolver: F,
        policy: Policy,
        tenancy: Tenancy,
    ) -> Self
    where
        R: Resource,
        F: Fn(&TenantId) -> Result<R::Config, Error> + Send + Sync + 'static,
    {
        self.register_per_tenant_setup(
            resource,
            move |tenant: &TenantId| resolver(tenant).map(TenantSetup::new),
            policy,
            tenancy,
        )
    }

    /// [`register_per_tenant_with`](Self::register_per_tenant_with) whose resolver may also give
    /// a tenant pool settings of its own ([`TenantSetup::pool`]): a bigger pool for a bigger
    /// customer. A tenant whose pool settings fail [`PoolConfig::validate`](crate::PoolConfig::validate)
    /// is rejected with [`ErrorKind::TenantRejected`](crate::ErrorKind::TenantRejected) naming
    /// it and the field.
    ///
    /// ```
    /// # use nebula_resource::{Config, CreateContext, Error, Resource, ResourceManager};
    /// # #[derive(Clone)] struct DbConfig { url: String }
    /// # impl Config for DbConfig {}
    /// # struct Db;
    /// # impl Resource for Db {
    /// #     type Config = DbConfig; type Instance = String; const KEY: &'static str = "db";
    /// #     async fn create(&self, c: &DbConfig, _: &CreateContext) -> Result<String, Error> { Ok(c.url.clone()) }
    /// # }
    /// # async fn run() -> Result<(), Error> {
    /// use nebula_resource::tenancy::TenantSetup;
    /// use nebula_resource::{Context, Policy, PoolConfig, Tenancy, TenantId};
    /// let manager = ResourceManager::builder()
    ///     .register_per_tenant_setup(
    ///         Db,
    ///         |tenant: &TenantId| {
    ///             let config = DbConfig { url: format!("postgres://127.0.0.1/{}", tenant.as_str()) };
    ///             let size = if tenant.as_str() == "big-customer" { 32 } else { 4 };
    ///             Ok(TenantSetup::new(config).pool(PoolConfig::default().max_size(size)))
    ///         },
    ///         Policy::default(),
    ///         Tenancy::default().max_total_instances(100),
    ///     )
    ///     .build()
    ///     .await?;
    /// let conn = manager.acquire_in::<Db>(&Context::tenant("big-customer")).await?;
    /// # Ok(()) }
    /// ```
    pub fn register_per_tenant_setup<R, F>(
        mut self,
        resource: R,
        resolver: F,
        policy: Policy,
        tenancy: Tenancy,
    ) -> Self
    where
        R: Resource,
        F: Fn(&TenantId) -> Result<TenantSetup<R::Config>, Error> + Send + Sync + 'static,
    {
        self.entries.push(Box::new(Typed {
            resource,
            setup: Setup::PerTenant(Box::new(resolver), tenancy),
            policy,
            name: None,
        }));
        self
    }

    fn push<R: Resource>(
        mut self,
        resource: R,
        config: R::Config,
        policy: Policy,
        name: Option<String>,
    ) -> Self {
        self.entries.push(Box::new(Typed {
            resource,
            setup: Setup::Shared(config),
            policy,
            name: name.map(Arc::from),
        }));
        self
    }

    /// Validate every config and policy, reject duplicates, missing dependencies and cycles —
    /// all before anything is created — then initialize layer by layer, the resources of one
    /// layer concurrently (`min_idle` instances of each pool, the instance of each resident).
    ///
    /// Must be called inside a tokio runtime: the manager's background tasks run on it.
    ///
    /// # Errors
    ///
    /// - [`ErrorKind::Config`](crate::ErrorKind::Config) for the first invalid config or policy, naming resource and field;
    /// - [`ErrorKind::Duplicate`](crate::ErrorKind::Duplicate), [`ErrorKind::MissingDependency`](crate::ErrorKind::MissingDependency), [`ErrorKind::Cycle`](crate::ErrorKind::Cycle) (listing
    ///   the whole cycle);
    /// - the error of a resource that failed to initialize, naming it and the dependents that
    ///   were not started; what had been created is shut down first.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes drops what was initialized so far without a
    /// graceful destroy; await it to completion.
    pub async fn build(self) -> Result<ResourceManager, Error> {
        let specs: Vec<NodeSpec> = self.entries.iter().map(|e| e.spec()).collect();
        for entry in &self.entries {
            entry.validate()?;
        }
        let plan = dag::plan(&specs)?;
        check_scopes(&specs, &self.entries, &plan.dependencies)?;

        let runtime = Arc::new(Runtime::start());
        // Instantiate dependencies before dependents so each create context can hold handles.
        let mut slots: Vec<Option<Instantiated>> = (0..specs.len()).map(|_| None).collect();
        let mut entries: Vec<Option<Box<dyn Entry>>> = self.entries.into_iter().map(Some).collect();
        for layer in &plan.layers {
            for &i in layer {
                let mut dependencies = DependencyMap::new();
                for (dep, &target) in specs[i].dependencies.iter().zip(&plan.dependencies[i]) {
                    if let Some((_, any)) = &slots[target] {
                        dependencies.insert((dep.type_id, dep.name), Arc::clone(any));
                    }
                }
                if let Some(entry) = entries[i].take() {
                    slots[i] = Some(entry.instantiate(Arc::new(dependencies), &runtime));
                }
            }
        }
        let nodes: Vec<Node> = slots
            .into_iter()
            .zip(&specs)
            .zip(plan.dependencies)
            .filter_map(|((slot, spec), dependencies)| {
                slot.map(|(erased, any)| Node {
                    erased,
                    any,
                    dependencies,
                    label: match &spec.name {
                        Some(name) => format!("{}({name})", spec.key),
                        None => spec.key.to_owned(),
                    },
                })
            })
            .collect();

        let mut by_type = TypeMap::default();
        let mut by_name = HashMap::new();
        for (i, spec) in specs.iter().enumerate() {
            match &spec.name {
                Some(name) => {
                    by_name
                        .entry(spec.type_id)
                        .or_insert_with(HashMap::new)
                        .insert(Arc::clone(name), i);
                }
                None => {
                    by_type.push((spec.type_id, i));
                }
            }
        }
        let inner = Arc::new(ManagerInner {
            nodes,
            layers: plan.layers,
            by_type,
            by_name,
            runtime,
            maintenance: Arc::default(),
            health_stop: Arc::default(),
            shutdown: tokio::sync::Mutex::new(false),
        });

        initialize(&inner).await?;
        maintenance::spawn(&inner);
        maintenance::spawn_health(&inner);
        Ok(ResourceManager { inner })
    }
}

/// A resource may depend only on resources of its own scope or a wider one: a global pool's
/// instance cannot hold an execution's instance past the execution's end.
fn check_scopes(
    specs: &[NodeSpec],
    entries: &[Box<dyn Entry>],
    dependencies: &[Vec<usize>],
) -> Result<(), Error> {
    let label = |spec: &NodeSpec| match &spec.name {
        Some(name) => format!("{}({name})", spec.key),
        None => spec.key.to_owned(),
    };
    for (i, deps) in dependencies.iter().enumerate() {
        let scope = entries[i].scope();
        if let Some(&d) = deps.iter().find(|&&d| entries[d].scope() > scope) {
            return Err(Error::config(
                "scope",
                format!(
                    "`{}` ({} scope) depends on `{}` ({} scope): a resource can depend only \
                     on resources of its own scope or a wider one",
                    label(&specs[i]),
                    scope.as_str(),
                    label(&specs[d]),
                    entries[d].scope().as_str()
                ),
            )
            .in_resource(specs[i].key, specs[i].name.as_deref()));
        }
    }
    Ok(())
}

/// Initialize layer by layer; on failure shut down what was started and name what was not.
async fn initialize(inner: &Arc<ManagerInner>) -> Result<(), Error> {
    for (depth, layer) in inner.layers.iter().enumerate() {
        for &i in layer {
            inner.nodes[i].erased.set_phase(Phase::Initializing);
        }
        let results = join_all(layer.iter().map(|&i| inner.nodes[i].erased.init())).await;
        let mut failed = Vec::new();
        for (&i, result) in layer.iter().zip(results) {
            let node = &inner.nodes[i];
            match result {
                Ok(()) => node.erased.set_phase(Phase::Ready),
                Err(err) => {
                    node.erased.set_phase(Phase::Failed);
                    failed.push((i, err));
                }
            }
        }
        let Some((first, err)) = failed.into_iter().next() else {
            continue;
        };
        let not_started: Vec<&str> = inner.layers[depth + 1..]
            .iter()
            .flatten()
            .filter(|&&n| inner.depends_on(n, first))
            .map(|&n| inner.nodes[n].label.as_str())
            .collect();
        let stopped = inner.stop(Instant::now() + FAILED_BUILD_DRAIN).await;
        if let Err(stuck) = stopped {
            tracing::warn!(error = %stuck, "resources created before a failed build did not drain in time");
        }
        let note = if not_started.is_empty() {
            format!("initialization of `{}` failed", inner.nodes[first].label)
        } else {
            format!(
                "initialization of `{}` failed; dependents not started: {}",
                inner.nodes[first].label,
                not_started.join(", ")
            )
        };
        return Err(err.with_note(note));
    }
    Ok(())
}
