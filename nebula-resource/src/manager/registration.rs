//! One registered resource: its pool (or resident instance), its phase, and the type-erased face
//! the manager drives it through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::time::Instant;

use crate::context::{Context, TenantId};
use crate::error::{Error, ErrorKind};
use crate::guard::Guard;
use crate::health::HealthReport;
use crate::hooks::validate_config;
use crate::pool::resident::Resident;
use crate::pool::{Pool, PoolConfig, PoolStats};
use crate::resilience::BreakerStatus;
use crate::resource::{Resource, Topology};
use crate::scope::{Scope, ScopedPools, drain_all};
use crate::status::Phase;
use crate::tenancy::{TenantPools, TenantStatus};

pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub(crate) enum Backend<R: Resource> {
    Pooled(Arc<Pool<R>>),
    Resident(Arc<Resident<R>>),
    PerTenant(Arc<TenantPools<R>>),
    Scoped(Arc<ScopedPools<R>>),
}

/// A registration of resource `R`.
pub(crate) struct Registration<R: Resource> {
    pub(crate) name: Option<Arc<str>>,
    pub(crate) backend: Backend<R>,
    phase: AtomicU8,
}

impl<R: Resource> Registration<R> {
    pub(crate) fn new(name: Option<Arc<str>>, backend: Backend<R>) -> Self {
        Self {
            name,
            backend,
            phase: AtomicU8::new(Phase::Pending as u8),
        }
    }

    /// Acquire, waiting no later than `limit` (and no longer than `acquire_timeout`).
    pub(crate) async fn acquire(&self, limit: Option<Instant>) -> Result<Guard<R>, Error> {
        match &self.backend {
            Backend::Pooled(pool) => {
                let acquired = pool.acquire(limit).await?;
                Ok(Guard::pooled(Arc::clone(pool), acquired))
            }
            Backend::Resident(resident) => {
                let shared = resident.acquire(limit).await?;
                Ok(Guard::resident(shared))
            }
            Backend::PerTenant(_) => Err(Error::other(
                ErrorKind::TenantRejected,
                "registered per tenant: acquire it in a tenant context (`acquire_in`)",
            )
            .in_resource(R::KEY, self.name.as_deref())),
            Backend::Scoped(scoped) => Err(Error::other(
                ErrorKind::ScopeRequired,
                format!(
                    "registered at {} scope: acquire it in a context naming the scope (`acquire_in`)",
                    scoped.scope().as_str()
                ),
            )
            .in_resource(R::KEY, self.name.as_deref())),
        }
    }

    /// Acquire in `ctx`: from the tenant's own pool for a per-tenant registration; otherwise
    /// the tenant id is validated and the shared pool serves it. Never past `ctx`'s deadline.
    pub(crate) async fn acquire_in(&self, ctx: &Context) -> Result<Guard<R>, Error> {
        let limit = ctx.deadline();
        match (&self.backend, ctx.tenant_id()) {
            (Backend::Scoped(scoped), _) => {
                let (pool, acquired) = scoped.acquire(ctx).await?;
                Ok(Guard::pooled(pool, acquired))
            }
            (Backend::PerTenant(tenants), Some(tenant)) => {
                let (pool, acquired) = tenants.acquire(tenant, limit).await?;
                Ok(Guard::pooled(pool, acquired))
            }
            (_, Some(tenant)) => {
                TenantId::validate(tenant).map_err(|err| {
                    err.in_resource(R::KEY, self.name.as_deref())
                        .for_tenant(Some(tenant))
                })?;
                self.acquire(limit).await
            }
            (_, None) => self.acquire(limit).await,
        }
    }

    /// Fetch the credentials again (every tenant pool's, for a per-tenant registration); where
    /// they changed, a new generation starts. Returns how many pools rotated.
    pub(crate) async fn rotate_credentials(&self) -> Result<usize, Error> {
        match &self.backend {
            Backend::Pooled(pool) => Ok(usize::from(pool.rotate_credentials().await?)),
            Backend::Resident(resident) => Ok(usize::from(resident.rotate_credentials().await?)),
            Backend::PerTenant(tenants) => tenants.rotate_credentials().await,
            Backend::Scoped(scoped) => scoped.rotate_credentials().await,
        }
    }

    /// Replace the config of a shared registration: a new generation starts.
    pub(crate) fn reconfigure(&self, config: R::Config) -> Result<(), Error> {
        validate_config(&config).map_err(|err| err.in_resource(R::KEY, self.name.as_deref()))?;
        match &self.backend {
            Backend::Pooled(pool) => pool.reconfigure(config),
            Backend::Resident(resident) => resident.reconfigure(config),
            Backend::Scoped(scoped) => scoped.reconfigure(config),
            Backend::PerTenant(_) => {
                return Err(Error::config(
                    "config",
                    "a per-tenant registration has one config per tenant: use `reconfigure_tenant`",
                )
                .in_resource(R::KEY, self.name.as_deref()));
            }
        }
        Ok(())
    }

    /// Replace one tenant's config (its pool is created if it does not exist).
    pub(crate) fn reconfigure_tenant(&self, tenant: &str, config: R::Config) -> Result<(), Error> {
        let attribute = |err: Error| {
            err.in_resource(R::KEY, self.name.as_deref())
                .for_tenant(Some(tenant))
        };
        validate_config(&config).map_err(attribute)?;
        match &self.backend {
            Backend::PerTenant(tenants) => tenants.reconfigure(tenant, config),
            _ => Err(attribute(Error::config(
                "tenant",
                "not a per-tenant registration: use `reconfigure`",
            ))),
        }
    }

    /// Change the pool size of a shared pooled registration live.
    pub(crate) fn resize(&self, max_size: usize, min_idle: usize) -> Result<(), Error> {
        let attribute = |err: Error| err.in_resource(R::KEY, self.name.as_deref());
        check_size(max_size, min_idle).map_err(attribute)?;
        match &self.backend {
            Backend::Pooled(pool) => pool.resize(max_size, min_idle),
            Backend::Resident(_) => Err(attribute(Error::config(
                "pool.max_size",
                "a resident resource has one shared instance: there is no pool to resize",
            ))),
            Backend::PerTenant(_) => Err(attribute(Error::config(
                "pool.max_size",
                "a per-tenant registration has a pool per tenant: use `resize_tenant`",
            ))),
            Backend::Scoped(_) => Err(attribute(Error::config(
                "pool.max_size",
                "a scoped registration has a pool per scope, sized by its policy",
            ))),
        }
    }

    /// Change one tenant's pool size live (its pool is created if it does not exist).
    pub(crate) fn resize_tenant(
        &self,
        tenant: &str,
        max_size: usize,
        min_idle: usize,
    ) -> Result<(), Error> {
        let attribute = |err: Error| {
            err.in_resource(R::KEY, self.name.as_deref())
                .for_tenant(Some(tenant))
        };
        check_size(max_size, min_idle).map_err(attribute)?;
        match &self.backend {
            Backend::PerTenant(tenants) => tenants.resize(tenant, max_size, min_idle),
            _ => Err(attribute(Error::config(
                "tenant",
                "not a per-tenant registration: use `resize`",
            ))),
        }
    }

    /// The tenant pools of a per-tenant registration, each with its counts.
    pub(crate) fn tenants(&self) -> Vec<TenantStatus> {
        match &self.backend {
            Backend::PerTenant(tenants) => tenants.tenants(),
            _ => Vec::new(),
        }
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }
}

/// The rules of `PoolConfig::max_size` and `min_idle`, for a live resize.
fn check_size(max_size: usize, min_idle: usize) -> Result<(), Error> {
    PoolConfig::default()
        .max_size(max_size)
        .min_idle(min_idle)
        .validate()
}

/// What the manager needs of any registration, whatever its resource type.
pub(crate) trait Erased: Send + Sync {
    fn key(&self) -> &'static str;
    fn name(&self) -> Option<&str>;
    fn topology(&self) -> Topology;
    fn phase(&self) -> Phase;
    fn set_phase(&self, phase: Phase);
    fn stats(&self) -> PoolStats;
    fn health(&self) -> HealthReport;
    fn breaker(&self) -> BreakerStatus;
    /// One health round (every tenant pool's, for a per-tenant registration).
    fn health_round(self: Arc<Self>) -> BoxFuture<'static, ()>;
    /// When the next round is due after one ends; `None` when health checks are disabled.
    fn health_delay(&self) -> Option<std::time::Duration>;
    /// A dependency turned Unhealthy (`Some(label)`), or none is any longer: report Degraded
    /// (or stop), publishing the change.
    fn set_dependency_health(&self, dependency: Option<&str>);
    fn tenants(&self) -> Vec<TenantStatus>;
    fn scope(&self) -> Scope;
    /// How many scopes have a pool now (scoped registrations).
    fn scopes(&self) -> usize;
    /// Close the pools of the scope `ctx` names; the future waits until they are drained or
    /// `deadline`.
    fn end_scope(
        &self,
        ctx: &Context,
        deadline: Instant,
    ) -> Result<BoxFuture<'static, Result<(), PoolStats>>, Error>;
    fn counters(&self) -> Vec<(&'static str, u64)>;
    fn init(&self) -> BoxFuture<'_, Result<(), Error>>;
    fn maintain(&self);
    fn maintenance_interval(&self) -> Option<std::time::Duration>;
    fn close(&self);
    fn drained(&self, deadline: Instant) -> BoxFuture<'_, Result<(), PoolStats>>;
}

impl<R: Resource> Erased for Registration<R> {
    fn key(&self) -> &'static str {
        R::KEY
    }

    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn topology(&self) -> Topology {
        match self.backend {
            Backend::Pooled(_) => Topology::Pooled,
            Backend::Resident(_) => Topology::Resident,
            Backend::PerTenant(_) | Backend::Scoped(_) => Topology::Pooled,
        }
    }

    fn scope(&self) -> Scope {
        match &self.backend {
            Backend::Scoped(scoped) => scoped.scope(),
            _ => Scope::Global,
        }
    }

    fn scopes(&self) -> usize {
        match &self.backend {
            Backend::Scoped(scoped) => scoped.scopes(),
            _ => 0,
        }
    }

    fn end_scope(
        &self,
        ctx: &Context,
        deadline: Instant,
    ) -> Result<BoxFuture<'static, Result<(), PoolStats>>, Error> {
        let closed = match &self.backend {
            Backend::Scoped(scoped) => scoped.end(ctx)?,
            _ => Vec::new(),
        };
        Ok(Box::pin(drain_all(closed, deadline)))
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn set_phase(&self, phase: Phase) {
        Registration::set_phase(self, phase);
    }

    fn stats(&self) -> PoolStats {
        match &self.backend {
            Backend::Pooled(pool) => pool.stats(),
            Backend::Resident(resident) => resident.stats(),
            Backend::PerTenant(tenants) => tenants.stats(),
            Backend::Scoped(scoped) => scoped.stats(),
        }
    }

    fn tenants(&self) -> Vec<TenantStatus> {
        Registration::tenants(self)
    }

    fn health(&self) -> HealthReport {
        match &self.backend {
            Backend::Pooled(pool) => pool.life.watch.report(),
            Backend::Resident(resident) => resident.life.watch.report(),
            Backend::PerTenant(tenants) => tenants.health(),
            Backend::Scoped(scoped) => scoped.health(),
        }
    }

    fn breaker(&self) -> BreakerStatus {
        match &self.backend {
            Backend::Pooled(pool) => pool.breaker_status(),
            Backend::Resident(resident) => resident.breaker_status(),
            Backend::PerTenant(tenants) => tenants.breaker(),
            Backend::Scoped(scoped) => scoped.breaker(),
        }
    }

    fn health_round(self: Arc<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            match &self.backend {
                Backend::Pooled(pool) => pool.health_round().await,
                Backend::Resident(resident) => resident.health_round().await,
                Backend::PerTenant(tenants) => tenants.health_round().await,
                // Scope pools live briefly: no health rounds.
                Backend::Scoped(_) => {}
            }
        })
    }

    fn set_dependency_health(&self, dependency: Option<&str>) {
        match &self.backend {
            Backend::Pooled(pool) => pool.life.set_dependency_health(dependency),
            Backend::Resident(resident) => resident.life.set_dependency_health(dependency),
            Backend::PerTenant(tenants) => tenants.set_dependency_health(dependency),
            Backend::Scoped(scoped) => scoped.set_dependency_health(dependency),
        }
    }

    fn health_delay(&self) -> Option<std::time::Duration> {
        match &self.backend {
            Backend::Pooled(pool) => pool
                .life
                .watch
                .config
                .enabled
                .then(|| pool.life.watch.next_delay()),
            Backend::Resident(resident) => resident
                .life
                .watch
                .config
                .enabled
                .then(|| resident.life.watch.next_delay()),
            Backend::PerTenant(tenants) => tenants.health_delay(),
            Backend::Scoped(_) => None,
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        match &self.backend {
            Backend::Pooled(pool) => crate::hooks::counters(&*pool.life.resource),
            Backend::Resident(resident) => crate::hooks::counters(&*resident.life.resource),
            Backend::PerTenant(tenants) => crate::hooks::counters(tenants.resource()),
            Backend::Scoped(scoped) => crate::hooks::counters(scoped.resource()),
        }
    }

    fn init(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            match &self.backend {
                Backend::Pooled(pool) => pool.warm_up().await,
                Backend::Resident(resident) => resident.init().await,
                // Tenant and scope pools are created on first use.
                Backend::PerTenant(_) | Backend::Scoped(_) => Ok(()),
            }
        })
    }

    fn maintain(&self) {
        match &self.backend {
            Backend::Pooled(pool) => pool.maintain(),
            Backend::PerTenant(tenants) => tenants.maintain(),
            Backend::Scoped(scoped) => scoped.maintain(),
            Backend::Resident(_) => {}
        }
    }

    fn maintenance_interval(&self) -> Option<std::time::Duration> {
        match &self.backend {
            Backend::Pooled(pool) => Some(pool.life.settings.maintenance_interval),
            Backend::PerTenant(tenants) => Some(tenants.maintenance_interval()),
            Backend::Scoped(scoped) => Some(scoped.maintenance_interval()),
            Backend::Resident(_) => None,
        }
    }

    fn close(&self) {
        match &self.backend {
            Backend::Pooled(pool) => pool.close(),
            Backend::Resident(resident) => resident.close(),
            Backend::PerTenant(tenants) => tenants.close(),
            Backend::Scoped(scoped) => scoped.close(),
        }
    }

    fn drained(&self, deadline: Instant) -> BoxFuture<'_, Result<(), PoolStats>> {
        Box::pin(async move {
            match &self.backend {
                Backend::Pooled(pool) => pool.drained(deadline).await,
                Backend::Resident(resident) => resident.drained(deadline).await,
                Backend::PerTenant(tenants) => tenants.drained(deadline).await,
                Backend::Scoped(scoped) => scoped.drained(deadline).await,
            }
        })
    }
}
