//! Per-tenant pools: one ordinary pool per tenant, created on first use from the tenant's
//! own config, kept in a map bounded by [`Tenancy::max_tenants`] (least recently used evicted
//! first) and evicted after [`Tenancy::tenant_idle_ttl`] without acquires.
//!
//! The map is copy-on-write behind an `ArcSwap`: an acquire finds its tenant's pool with one
//! atomic load and one hash lookup, and marks the pool used with one relaxed store, at most once
//! per millisecond. Creating or evicting a pool (rare) copies the map. A moka cache was measured
//! first: its lookup (with read recording for TTI and LRU) cost ~100–170 ns per acquire, twice a
//! whole global-pool acquire.
//!
//! An evicted pool is closed and drains gracefully: its idle instances are destroyed at once, and
//! instances in use are destroyed when their guards drop. An acquire that raced with the eviction
//! (it took the pool just before it closed) is retried on the tenant's new pool, so eviction never
//! fails an acquire.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::context::{CreateContext, DependencyMap, TenantId};
use crate::error::{Error, ErrorKind};
use crate::events::{Event, Source};
use crate::health::HealthReport;
use crate::hooks::validate_config;
use crate::policy::Policy;
use crate::pool::cap::SharedCap;
use crate::pool::retired::Retired;
use crate::pool::{Acquired, MAX_POOL_SIZE, Pool, PoolConfig, PoolStats, millis_since};
use crate::resilience::{BreakerStatus, Watch, furthest_from_closed};
use crate::resource::Resource;
use crate::runtime::Runtime;
use crate::scope::drain_all;

/// Largest accepted [`Tenancy::max_tenants`].
pub const MAX_TENANTS: u64 = 10_000_000;

/// Maps a tenant to its config (its connection string, credentials, database) and, optionally,
/// its own pool settings.
pub(crate) type Resolver<R> = dyn Fn(&TenantId) -> Result<TenantSetup<<R as Resource>::Config>, Error>
    + Send
    + Sync
    + 'static;

/// What a tenant resolver registered with
/// [`register_per_tenant_setup`](crate::ResourceManagerBuilder::register_per_tenant_setup)
/// returns: the tenant's config and, optionally, pool settings of its own (a bigger pool for a
/// bigger customer). Without them the tenant's pool uses the registration's [`Policy`] pool.
///
/// ```
/// use nebula_resource::PoolConfig;
/// use nebula_resource::tenancy::TenantSetup;
/// let setup = TenantSetup::new("postgres://127.0.0.1/acme").pool(PoolConfig::default().max_size(4));
/// assert_eq!(setup.pool_config().map(PoolConfig::get_max_size), Some(4));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TenantSetup<C> {
    /// The tenant's config.
    pub config: C,
    pool: Option<PoolConfig>,
}

impl<C> TenantSetup<C> {
    /// The tenant's config, with the registration's pool settings.
    pub fn new(config: C) -> Self {
        Self { config, pool: None }
    }

    /// Pool settings of this tenant's own (validated when its pool is created; an invalid one
    /// rejects the tenant). Default: the registration's [`Policy`] pool settings.
    #[must_use]
    pub fn pool(mut self, pool: PoolConfig) -> Self {
        self.pool = Some(pool);
        self
    }

    /// The tenant's own pool settings, if any.
    pub fn pool_config(&self) -> Option<&PoolConfig> {
        self.pool.as_ref()
    }
}

/// Settings of a per-tenant registration, built by value from [`Tenancy::default`]:
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::Tenancy;
/// let tenancy = Tenancy::default()
///     .max_tenants(500)
///     .tenant_idle_ttl(Duration::from_secs(300));
/// assert_eq!(tenancy.get_max_tenants(), 500);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tenancy {
    max_tenants: u64,
    tenant_idle_ttl: Duration,
    max_total_instances: Option<usize>,
}

impl Default for Tenancy {
    fn default() -> Self {
        Self {
            max_tenants: 1_000,
            tenant_idle_ttl: Duration::from_secs(600),
            max_total_instances: None,
        }
    }
}

impl Tenancy {
    /// Most tenant pools kept at once; beyond it the least recently used pool is evicted (and
    /// drains gracefully). Default 1000; 1 to [`MAX_TENANTS`].
    #[must_use]
    pub fn max_tenants(mut self, max_tenants: u64) -> Self {
        self.max_tenants = max_tenants;
        self
    }

    /// A tenant pool without an acquire for this long is evicted (and drains gracefully).
    /// Default 10 minutes; at least 1 ms.
    #[must_use]
    pub fn tenant_idle_ttl(mut self, ttl: Duration) -> Self {
        self.tenant_idle_ttl = ttl;
        self
    }

    /// Most instances alive at once across all tenant pools of the registration (a database's
    /// `max_connections` less what other clients need), shared fairly: a tenant that waits while
    /// the cap is full is first in line for the next freed place, and tenants above their fair
    /// share (`cap / tenants holding or wanting instances`) give instances up — idle ones at
    /// once, in-use ones when their guards drop. Each tenant pool's own `max_size` still
    /// applies. Default `None` (no shared cap); 1 to [`MAX_POOL_SIZE`].
    #[must_use]
    pub fn max_total_instances(mut self, cap: impl Into<Option<usize>>) -> Self {
        self.max_total_instances = cap.into();
        self
    }

    /// The configured [`max_total_instances`](Self::max_total_instances).
    pub fn get_max_total_instances(&self) -> Option<usize> {
        self.max_total_instances
    }

    /// The configured [`max_tenants`](Self::max_tenants).
    pub fn get_max_tenants(&self) -> u64 {
        self.max_tenants
    }

    /// The configured [`tenant_idle_ttl`](Self::tenant_idle_ttl).
    pub fn get_tenant_idle_ttl(&self) -> Duration {
        self.tenant_idle_ttl
    }

    /// Check the settings.
    ///
    /// # Errors
    ///
    /// A [`Config`](ErrorKind::Config) error naming `tenancy.max_tenants`,
    /// `tenancy.tenant_idle_ttl` or `tenancy.max_total_instances` when out of range.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(cap) = self.max_total_instances
            && (cap == 0 || cap > MAX_POOL_SIZE)
        {
            return Err(Error::config(
                "tenancy.max_total_instances",
                format!("must be in 1..={MAX_POOL_SIZE} (got {cap})"),
            ));
        }
        if self.max_tenants == 0 || self.max_tenants > MAX_TENANTS {
            return Err(Error::config(
                "tenancy.max_tenants",
                format!(
                    "must be between 1 and {MAX_TENANTS}, got {}",
                    self.max_tenants
                ),
            ));
        }
        if self.tenant_idle_ttl < Duration::from_millis(1) {
            return Err(Error::config(
                "tenancy.tenant_idle_ttl",
                format!("must be at least 1ms, got {:?}", self.tenant_idle_ttl),
            ));
        }
        Ok(())
    }
}

/// One tenant's pool in a [`Status`](crate::Status).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TenantStatus {
    /// The tenant.
    pub tenant: TenantId,
    /// Its pool's counts now.
    pub pool: PoolStats,
    /// Its pool's health.
    pub health: HealthReport,
    /// Its pool's circuit breaker.
    pub breaker: BreakerStatus,
}

/// The tenants' pools (each knows when it was last acquired from: [`Pool::last_used`]).
/// foldhash, seeded per map: a lookup hashes the tenant id on every acquire, and SipHash costs
/// as much as the rest of the lookup.
type Map<R> = HashMap<TenantId, Arc<Pool<R>>, foldhash::fast::RandomState>;

/// The pools of one per-tenant registration.
pub(crate) struct TenantPools<R: Resource> {
    resource: Arc<R>,
    resolver: Box<Resolver<R>>,
    policy: Policy,
    tenancy: Tenancy,
    name: Option<Arc<str>>,
    dependencies: Arc<DependencyMap>,
    runtime: Arc<Runtime>,
    pools: ArcSwap<Map<R>>,
    epoch: Instant,
    /// Evicted pools whose instances are not all destroyed yet.
    draining: Retired<R, ()>,
    /// Serializes changes of the map (a new tenant's pool, with its resolver call; evictions).
    writing: Mutex<()>,
    /// Reports "healthy" while no tenant pool exists.
    idle_watch: Watch,
    /// [`Tenancy::max_total_instances`], shared by every tenant pool.
    cap: Option<Arc<SharedCap<R>>>,
}

impl<R: Resource> TenantPools<R> {
    pub(crate) fn new(
        resource: Arc<R>,
        resolver: Box<Resolver<R>>,
        policy: Policy,
        tenancy: &Tenancy,
        name: Option<Arc<str>>,
        dependencies: Arc<DependencyMap>,
        runtime: Arc<Runtime>,
    ) -> Self {
        let idle_watch = Watch::new(&policy.health, &policy.retry);
        Self {
            resource,
            resolver,
            policy,
            tenancy: tenancy.clone(),
            name,
            dependencies,
            runtime,
            pools: ArcSwap::from_pointee(Map::default()),
            epoch: Instant::now(),
            draining: Retired::new(),
            writing: Mutex::new(()),
            idle_watch,
            cap: tenancy
                .max_total_instances
                .map(|limit| Arc::new(SharedCap::new(limit))),
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        millis_since(self.epoch, at)
    }

    /// Close an evicted pool and keep it until its instances are destroyed.
    fn retire(&self, tenant: &TenantId, pool: Arc<Pool<R>>, why: &str) {
        tracing::debug!(resource = R::KEY, tenant = %tenant, why, "tenant pool evicted; draining");
        pool.close();
        self.runtime.emit(Event::TenantPoolEvicted {
            source: self.source(tenant),
        });
        self.draining.add([((), pool)]);
    }

    fn source(&self, tenant: &TenantId) -> Source {
        Source {
            key: R::KEY,
            name: self.name.clone(),
            tenant: Some(tenant.clone()),
        }
    }

    /// The tenant's pool, created (config resolved and validated) on first use.
    fn pool(&self, tenant: &str) -> Result<Arc<Pool<R>>, Error> {
        if let Some(pool) = self.pools.load().get(tenant) {
            return Ok(Arc::clone(pool));
        }
        let reject = |err: Error| {
            Error::other(ErrorKind::TenantRejected, err.to_string())
                .in_resource(R::KEY, self.name.as_deref())
                .for_tenant(Some(tenant))
        };
        let id = TenantId::new(tenant).map_err(|err| {
            err.in_resource(R::KEY, self.name.as_deref())
                .for_tenant(Some(tenant))
        })?;
        // One resolver call per new tenant, however many acquires race for it.
        let _writing = self.writing.lock();
        if let Some(pool) = self.pools.load().get(tenant) {
            return Ok(Arc::clone(pool));
        }
        let resolved =
            crate::hooks::guarded_sync(|| (self.resolver)(&id)).unwrap_or_else(|panic| {
                Err(Error::panicked(
                    ErrorKind::TenantRejected,
                    "the tenant resolver",
                    &*panic,
                ))
            });
        let setup = resolved.map_err(reject)?;
        validate_config(&setup.config).map_err(reject)?;
        let policy = match setup.pool {
            Some(pool) => {
                pool.validate().map_err(reject)?;
                self.policy.clone().pool(pool)
            }
            None => self.policy.clone(),
        };
        let ctx = CreateContext::new(
            R::KEY,
            self.name.clone(),
            Some(id.clone()),
            Arc::clone(&self.dependencies),
        );
        let pool = Pool::new(
            Arc::clone(&self.resource),
            setup.config,
            &policy,
            ctx,
            Arc::clone(&self.runtime),
            self.cap.as_ref(),
        );
        pool.touch(self.millis(Instant::now()));
        let mut map: Map<R> = (**self.pools.load()).clone();
        // Full: evict the least recently used pools to make room.
        let mut evicted = Vec::new();
        while map.len() as u64 >= self.tenancy.max_tenants {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, pool)| pool.last_used())
                .map(|(t, _)| t.clone())
            else {
                break;
            };
            if let Some(old) = map.remove(&oldest) {
                evicted.push((oldest, old));
            }
        }
        map.insert(id.clone(), Arc::clone(&pool));
        self.pools.store(Arc::new(map));
        for (tenant, pool) in evicted {
            self.retire(&tenant, pool, "max_tenants reached");
        }
        tracing::debug!(resource = R::KEY, tenant = %id, "tenant pool created");
        self.runtime.emit(Event::TenantPoolCreated {
            source: self.source(&id),
        });
        Ok(pool)
    }

    /// Acquire from `tenant`'s pool, creating it on first use.
    pub(crate) async fn acquire(
        &self,
        tenant: &str,
        limit: Option<Instant>,
    ) -> Result<(Arc<Pool<R>>, Acquired<R>), Error> {
        // Each retry follows an eviction of this tenant's pool, which needs a full idle TTL or
        // a burst of other tenants: a handful of rounds is already pathological.
        for _ in 0..8 {
            if self.runtime.is_shutting_down() {
                return Err(Error::shutting_down()
                    .in_resource(R::KEY, self.name.as_deref())
                    .for_tenant(Some(tenant)));
            }
            let pool = self.pool(tenant)?;
            match pool.acquire(limit).await {
                Ok(acquired) => {
                    pool.touch(self.millis(acquired.at));
                    return Ok((pool, acquired));
                }
                // The pool was evicted under this acquire: take the tenant's new one.
                Err(err)
                    if err.kind() == ErrorKind::ShuttingDown
                        && !self.runtime.is_shutting_down() =>
                {
                    tracing::debug!(
                        resource = R::KEY,
                        tenant,
                        "tenant pool evicted during an acquire; retrying"
                    );
                }
                Err(err) => return Err(err),
            }
        }
        Err(Error::other(
            ErrorKind::Unavailable,
            "the tenant's pool was evicted during eight acquires in a row",
        )
        .in_resource(R::KEY, self.name.as_deref())
        .for_tenant(Some(tenant)))
    }

    /// Every live tenant pool with its tenant.
    fn live(&self) -> Vec<(TenantId, Arc<Pool<R>>)> {
        self.pools
            .load()
            .iter()
            .map(|(tenant, pool)| (tenant.clone(), Arc::clone(pool)))
            .collect()
    }

    pub(crate) fn tenants(&self) -> Vec<TenantStatus> {
        let mut tenants: Vec<TenantStatus> = self
            .live()
            .into_iter()
            .map(|(tenant, pool)| TenantStatus {
                tenant,
                pool: pool.stats(),
                health: pool.life.watch.report(),
                breaker: pool.breaker_status(),
            })
            .collect();
        tenants.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        tenants
    }

    /// The sum of every tenant pool's counts, with the evicted ones' (their lifetime counts
    /// stay).
    pub(crate) fn stats(&self) -> PoolStats {
        let mut total = PoolStats {
            max_size: self
                .cap
                .as_ref()
                .map_or(self.policy.pool.get_max_size(), |cap| cap.limit()),
            ..PoolStats::default()
        };
        for (_, pool) in self.live() {
            total.add(&pool.stats());
        }
        self.draining.add_stats(&mut total);
        total
    }

    /// The worst health among the tenant pools (a registration with no tenant pool yet is
    /// healthy); each tenant's own is in [`TenantStatus`].
    pub(crate) fn health(&self) -> HealthReport {
        self.live()
            .into_iter()
            .map(|(_, pool)| pool.life.watch.report())
            .max_by_key(|report| report.health)
            .unwrap_or_else(|| self.idle_watch.report())
    }

    /// The breaker of the tenant pool furthest from closed (closed when there is none).
    pub(crate) fn breaker(&self) -> BreakerStatus {
        furthest_from_closed(
            self.live()
                .into_iter()
                .map(|(_, pool)| pool.breaker_status()),
            &self.policy.breaker,
        )
    }

    /// A health round of every live tenant pool, concurrently.
    pub(crate) async fn health_round(&self) {
        let pools: Vec<Arc<Pool<R>>> = self.live().into_iter().map(|(_, p)| p).collect();
        futures_util::future::join_all(pools.iter().map(|pool| pool.health_round())).await;
    }

    pub(crate) fn set_dependency_health(&self, dependency: Option<&str>) {
        for (_, pool) in self.live() {
            pool.life.set_dependency_health(dependency);
        }
    }

    pub(crate) fn health_delay(&self) -> Option<Duration> {
        self.policy
            .health
            .enabled
            .then_some(self.policy.health.interval)
    }

    /// Fetch every live tenant pool's credentials again; returns how many rotated.
    pub(crate) async fn rotate_credentials(&self) -> Result<usize, Error> {
        Pool::rotate_all(self.live().into_iter().map(|(_, pool)| pool)).await
    }

    /// Replace one tenant's config, creating its pool if needed.
    pub(crate) fn reconfigure(&self, tenant: &str, config: R::Config) -> Result<(), Error> {
        self.pool(tenant)?.reconfigure(config);
        Ok(())
    }

    /// Resize one tenant's pool, creating it if needed.
    pub(crate) fn resize(
        &self,
        tenant: &str,
        max_size: usize,
        min_idle: usize,
    ) -> Result<(), Error> {
        self.pool(tenant)?.resize(max_size, min_idle)
    }

    pub(crate) fn resource(&self) -> &R {
        &self.resource
    }

    pub(crate) fn maintenance_interval(&self) -> Duration {
        self.policy.pool.maintenance_interval
    }

    /// Maintenance pass: evict the pools idle past `tenant_idle_ttl` (untouched for that long,
    /// and nothing in use, waited for or being created), then maintain every live pool.
    pub(crate) fn maintain(&self) {
        let now = self.millis(Instant::now());
        let ttl = u64::try_from(self.tenancy.tenant_idle_ttl.as_millis()).unwrap_or(u64::MAX);
        let idle_too_long = |pool: &Pool<R>| pool.idle_for(now, ttl);
        if self.pools.load().values().any(|e| idle_too_long(e)) {
            let writing = self.writing.lock();
            let mut map: Map<R> = (**self.pools.load()).clone();
            let expired: Vec<TenantId> = map
                .iter()
                .filter(|(_, e)| idle_too_long(e))
                .map(|(t, _)| t.clone())
                .collect();
            let mut evicted = Vec::new();
            for tenant in expired {
                if let Some(pool) = map.remove(&tenant) {
                    evicted.push((tenant, pool));
                }
            }
            self.pools.store(Arc::new(map));
            drop(writing);
            for (tenant, pool) in evicted {
                self.retire(&tenant, pool, "idle past tenant_idle_ttl");
            }
        }
        for (_, pool) in self.live() {
            pool.maintain();
        }
        self.draining.prune();
    }

    pub(crate) fn close(&self) {
        let _writing = self.writing.lock();
        let live = self.live();
        self.pools.store(Arc::new(Map::default()));
        for (_, pool) in &live {
            pool.close();
        }
        self.draining
            .add(live.into_iter().map(|(_, pool)| ((), pool)));
    }

    pub(crate) async fn drained(&self, deadline: Instant) -> Result<(), PoolStats> {
        drain_all(self.draining.draining(|()| true), deadline).await
    }
}
