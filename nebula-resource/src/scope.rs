//! Workflow- and execution-scoped registrations: a pool per scope, created on the scope's first
//! acquire and ended by [`ResourceManager::end_scope`](crate::ResourceManager::end_scope).
//!
//! A workflow engine registers, say, a transaction-holding connection or a scratch directory at
//! [`Scope::Execution`]: every acquire in `Context::tenant(t).with_workflow(w).with_execution(e)`
//! is served from that execution's own pool, and `end_scope` destroys its instances, dependents
//! before their dependencies. A scope that is never ended does not leak: maintenance ends a
//! scope whose pool has had nothing in use and no acquire for the pool's `idle_timeout`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::context::{Context, CreateContext, DependencyMap, TenantId};
use crate::error::{Error, ErrorKind};
use crate::events::Source;
use crate::health::HealthReport;
use crate::policy::Policy;
pub use crate::policy::Scope;
use crate::pool::retired::Retired;
use crate::pool::{Acquired, Pool, PoolStats, millis_since};
use crate::resilience::{BreakerStatus, Watch, emit_transition, furthest_from_closed};
use crate::resource::Resource;
use crate::runtime::Runtime;

/// Which scope a pool serves: the tenant (if any), the workflow and, at execution scope, the
/// execution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ScopeKey {
    tenant: Option<TenantId>,
    workflow: Arc<str>,
    execution: Option<Arc<str>>,
}

impl ScopeKey {
    /// Whether ending the scope `ended` ends this one: the same scope, or (for a workflow) one
    /// of its executions.
    fn within(&self, ended: &ScopeKey) -> bool {
        self.tenant == ended.tenant
            && self.workflow == ended.workflow
            && (ended.execution.is_none() || self.execution == ended.execution)
    }
}

/// The pools of one scoped registration.
pub(crate) struct ScopedPools<R: Resource> {
    scope: Scope,
    resource: Arc<R>,
    config: ArcSwap<R::Config>,
    policy: Policy,
    name: Option<Arc<str>>,
    dependencies: Arc<DependencyMap>,
    runtime: Arc<Runtime>,
    pools: Mutex<HashMap<ScopeKey, Arc<Pool<R>>>>,
    /// Ended pools whose instances are not all destroyed yet, with their scope.
    ending: Retired<R, ScopeKey>,
    epoch: Instant,
    /// Health as the scope pools' dependencies make it (scope pools have no health rounds).
    watch: Watch,
}

impl<R: Resource> ScopedPools<R> {
    pub(crate) fn new(
        scope: Scope,
        resource: Arc<R>,
        config: R::Config,
        policy: Policy,
        name: Option<Arc<str>>,
        dependencies: Arc<DependencyMap>,
        runtime: Arc<Runtime>,
    ) -> Self {
        Self {
            scope,
            resource,
            config: ArcSwap::from_pointee(config),
            watch: Watch::new(&policy.health, &policy.retry),
            policy,
            name,
            dependencies,
            runtime,
            pools: Mutex::new(HashMap::new()),
            ending: Retired::new(),
            epoch: Instant::now(),
        }
    }

    pub(crate) fn scope(&self) -> Scope {
        self.scope
    }

    pub(crate) fn resource(&self) -> &R {
        &self.resource
    }

    pub(crate) fn maintenance_interval(&self) -> Duration {
        self.policy.pool.maintenance_interval
    }

    fn millis(&self, at: Instant) -> u64 {
        millis_since(self.epoch, at)
    }

    fn attribute(&self, err: Error, ctx: &Context) -> Error {
        err.in_resource(R::KEY, self.name.as_deref())
            .for_tenant(ctx.tenant_id())
    }

    /// The scope `ctx` names at this registration's scope; `ending` accepts a workflow alone
    /// for an execution-scoped registration (it ends all the workflow's executions).
    fn key(&self, ctx: &Context, ending: bool) -> Result<ScopeKey, Error> {
        let tenant = ctx
            .tenant_id()
            .map(TenantId::new)
            .transpose()
            .map_err(|err| self.attribute(err, ctx))?;
        let missing = |what: &str| {
            self.attribute(
                Error::other(
                    ErrorKind::ScopeRequired,
                    format!(
                        "registered at {} scope: the context needs {what}",
                        self.scope.as_str()
                    ),
                ),
                ctx,
            )
        };
        let workflow = ctx
            .workflow_arc()
            .ok_or_else(|| missing("a workflow id (`Context::with_workflow`)"))?;
        let execution = match self.scope {
            Scope::Execution if !ending => Some(
                ctx.execution_arc()
                    .ok_or_else(|| missing("an execution id (`Context::with_execution`)"))?,
            ),
            Scope::Execution => ctx.execution_arc(),
            Scope::Workflow | Scope::Global => None,
        };
        Ok(ScopeKey {
            tenant,
            workflow,
            execution,
        })
    }

    /// Acquire from the pool of `ctx`'s scope, creating it on first use.
    pub(crate) async fn acquire(
        &self,
        ctx: &Context,
    ) -> Result<(Arc<Pool<R>>, Acquired<R>), Error> {
        let key = self.key(ctx, false)?;
        if self.runtime.is_shutting_down() {
            return Err(self.attribute(Error::shutting_down(), ctx));
        }
        let pool = {
            let mut pools = self.pools.lock();
            match pools.get(&key) {
                Some(pool) => Arc::clone(pool),
                None => {
                    let pool = self.new_pool(&key);
                    pool.touch(self.millis(Instant::now()));
                    pools.insert(key, Arc::clone(&pool));
                    pool
                }
            }
        };
        let acquired = pool.acquire(ctx.deadline()).await?;
        pool.touch(self.millis(acquired.at));
        Ok((pool, acquired))
    }

    fn new_pool(&self, key: &ScopeKey) -> Arc<Pool<R>> {
        let ctx = CreateContext::new(
            R::KEY,
            self.name.clone(),
            key.tenant.clone(),
            Arc::clone(&self.dependencies),
        )
        .in_scope(Arc::clone(&key.workflow), key.execution.clone());
        tracing::debug!(resource = R::KEY, tenant = ?key.tenant, workflow = %key.workflow, execution = ?key.execution, "scope pool created");
        Pool::new(
            Arc::clone(&self.resource),
            (*self.config.load_full()).clone(),
            &self.policy,
            ctx,
            Arc::clone(&self.runtime),
            None,
        )
    }

    /// Close the pools of the scope `ctx` names (and, for a workflow, of its executions); they
    /// are kept until drained. Returns them, with those of the scope ended before and not yet
    /// drained.
    pub(crate) fn end(&self, ctx: &Context) -> Result<Vec<Arc<Pool<R>>>, Error> {
        let ended = self.key(ctx, true)?;
        let closed = {
            let mut pools = self.pools.lock();
            let keys: Vec<ScopeKey> = pools.keys().filter(|k| k.within(&ended)).cloned().collect();
            keys.into_iter()
                .filter_map(|k| pools.remove(&k).map(|pool| (k, pool)))
                .collect()
        };
        self.retire(closed);
        Ok(self.ending.draining(|key| key.within(&ended)))
    }

    /// Close `closed` and keep those not yet drained.
    fn retire(&self, closed: Vec<(ScopeKey, Arc<Pool<R>>)>) {
        for (_, pool) in &closed {
            pool.close();
        }
        self.ending.add(closed);
    }

    fn live(&self) -> Vec<Arc<Pool<R>>> {
        self.pools.lock().values().cloned().collect()
    }

    /// Health: Degraded while a dependency is Unhealthy.
    pub(crate) fn health(&self) -> HealthReport {
        self.watch.report()
    }

    pub(crate) fn set_dependency_health(&self, dependency: Option<&str>) {
        let transition = self.watch.set_dependency(dependency);
        let source = Source {
            key: R::KEY,
            name: self.name.clone(),
            tenant: None,
        };
        emit_transition(&self.runtime, &source, transition);
    }

    /// The breaker of the scope pool furthest from closed.
    pub(crate) fn breaker(&self) -> BreakerStatus {
        furthest_from_closed(
            self.live().iter().map(|pool| pool.breaker_status()),
            &self.policy.breaker,
        )
    }

    /// Fetch every live scope pool's credentials again; returns how many rotated.
    pub(crate) async fn rotate_credentials(&self) -> Result<usize, Error> {
        Pool::rotate_all(self.live()).await
    }

    /// Replace the config: of the scopes started from now on, and of the live ones (a new
    /// generation each).
    pub(crate) fn reconfigure(&self, config: R::Config) {
        self.config.store(Arc::new(config.clone()));
        for pool in self.live() {
            pool.reconfigure(config.clone());
        }
    }

    /// How many scopes have a pool now.
    pub(crate) fn scopes(&self) -> usize {
        self.pools.lock().len()
    }

    /// The sum of every scope pool's counts, with the ended ones' (their lifetime counts stay).
    pub(crate) fn stats(&self) -> PoolStats {
        let mut total = PoolStats {
            max_size: self.policy.pool.get_max_size(),
            ..PoolStats::default()
        };
        for pool in self.live() {
            total.add(&pool.stats());
        }
        self.ending.add_stats(&mut total);
        total
    }

    /// Maintenance pass: end the scopes abandoned for `idle_timeout` (nothing in use, waited
    /// for or being created, and no acquire), then maintain every live scope pool.
    pub(crate) fn maintain(&self) {
        if let Some(idle_timeout) = self.policy.pool.idle_timeout {
            let now = self.millis(Instant::now());
            let limit = u64::try_from(idle_timeout.as_millis()).unwrap_or(u64::MAX);
            let abandoned: Vec<(ScopeKey, Arc<Pool<R>>)> = {
                let mut pools = self.pools.lock();
                let keys: Vec<ScopeKey> = pools
                    .iter()
                    .filter(|(_, pool)| pool.idle_for(now, limit))
                    .map(|(k, _)| k.clone())
                    .collect();
                keys.into_iter()
                    .filter_map(|k| pools.remove(&k).map(|pool| (k, pool)))
                    .collect()
            };
            if !abandoned.is_empty() {
                tracing::info!(
                    resource = R::KEY,
                    scopes = abandoned.len(),
                    "scopes never ended and idle past idle_timeout; ended"
                );
                self.retire(abandoned);
            }
        }
        for pool in self.live() {
            pool.maintain();
        }
        self.ending.prune();
    }

    /// Close every scope's pool (manager shutdown).
    pub(crate) fn close(&self) {
        let live: Vec<(ScopeKey, Arc<Pool<R>>)> = self.pools.lock().drain().collect();
        self.retire(live);
    }

    /// Wait until every closed pool is drained, or `deadline`.
    pub(crate) async fn drained(&self, deadline: Instant) -> Result<(), PoolStats> {
        drain_all(self.ending.draining(|_| true), deadline).await
    }
}

/// Wait until each of `pools` is drained, or `deadline`; the counts of those that are not.
pub(crate) async fn drain_all<R: Resource>(
    pools: Vec<Arc<Pool<R>>>,
    deadline: Instant,
) -> Result<(), PoolStats> {
    let mut stuck = PoolStats::default();
    let mut failed = false;
    for pool in pools {
        if let Err(stats) = pool.drained(deadline).await {
            failed = true;
            stuck.add(&stats);
        }
    }
    if failed { Err(stuck) } else { Ok(()) }
}
