//! Acquire through a warm tenant pool vs acquire from a global pool.
//!
//! Both contenders hand out a trivial `u64` from a pool of 16 on a 2-worker runtime; the
//! tenant contender registers the resource per tenant and acquires in `Context::tenant(..)`,
//! spread over 8 tenants whose pools are created before timing. The difference is the cost of
//! validating the tenant id and finding its pool. Target: tenant ≤ 1.3× global.
//!
//! ```text
//! cargo bench -p nebula-resource-benches --bench tenancy
//! ```
//!
//! Knobs: `BENCH_OPS`, `BENCH_SAMPLES`, `BENCH_WARMUP_OPS`, `BENCH_TASKS` (see
//! `nebula_resource_benches::Settings`).

#![allow(
    clippy::print_stdout,
    reason = "a harness = false bench reports on stdout"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nebula_resource::{
    Config, Context, CreateContext, Error, Policy, PoolConfig, Resource, ResourceManager, TenantId,
};
use nebula_resource_benches::{Contender, Hold, POOL_SIZE, Settings, WORKER_THREADS, run_sample};

const TENANTS: usize = 8;

#[derive(Clone, Default)]
struct BenchConfig;

impl Config for BenchConfig {}

struct BenchResource;

impl Resource for BenchResource {
    type Config = BenchConfig;
    type Instance = u64;
    const KEY: &'static str = "bench";

    async fn create(&self, _config: &BenchConfig, _ctx: &CreateContext) -> Result<u64, Error> {
        Ok(0)
    }
}

fn policy() -> Policy {
    Policy::default().pool(PoolConfig::default().max_size(POOL_SIZE))
}

#[derive(Clone)]
struct Global(ResourceManager);

impl Contender for Global {
    async fn cycle(&self, hold: Hold) {
        let guard = self
            .0
            .acquire::<BenchResource>()
            .await
            .expect("global acquire");
        black_box(*guard);
        hold.hold().await;
    }
}

struct PerTenant {
    manager: ResourceManager,
    contexts: Arc<[Context]>,
    /// This clone's tenant: each task gets its own clone, so tasks spread over the tenants.
    pick: usize,
    next: Arc<AtomicUsize>,
}

impl Clone for PerTenant {
    fn clone(&self) -> Self {
        Self {
            manager: self.manager.clone(),
            contexts: Arc::clone(&self.contexts),
            pick: self.next.fetch_add(1, Ordering::Relaxed) % TENANTS,
            next: Arc::clone(&self.next),
        }
    }
}

impl Contender for PerTenant {
    async fn cycle(&self, hold: Hold) {
        let guard = self
            .manager
            .acquire_in::<BenchResource>(&self.contexts[self.pick])
            .await
            .expect("tenant acquire");
        black_box(*guard);
        hold.hold().await;
    }
}

fn main() {
    let settings = Settings::from_env().unwrap_or_else(|err| panic!("{err}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let global = Global(
            ResourceManager::builder()
                .register_with(BenchResource, BenchConfig, policy())
                .build()
                .await
                .expect("build"),
        );
        let manager = ResourceManager::builder()
            .register_per_tenant_with(
                BenchResource,
                |_: &TenantId| Ok(BenchConfig),
                policy(),
                nebula_resource::Tenancy::default(),
            )
            .build()
            .await
            .expect("build");
        let contexts: Arc<[Context]> = (0..TENANTS)
            .map(|i| Context::tenant(format!("tenant-{i}")))
            .collect();
        for ctx in contexts.iter() {
            drop(
                manager
                    .acquire_in::<BenchResource>(ctx)
                    .await
                    .expect("warm"),
            );
        }
        let tenant = PerTenant {
            manager,
            contexts,
            pick: 0,
            next: Arc::default(),
        };
        let limit = Duration::from_secs(120);

        println!("tasks | hold | global ns/op | tenant ns/op | tenant/global");
        println!("---|---|---|---|---");
        for &tasks in &settings.tasks {
            for hold in Hold::ALL {
                run_sample(&global, tasks, settings.warmup_ops, hold, limit).await;
                run_sample(&tenant, tasks, settings.warmup_ops, hold, limit).await;
                let mut g = Vec::new();
                let mut t = Vec::new();
                for _ in 0..settings.samples {
                    let elapsed = run_sample(&global, tasks, settings.ops, hold, limit)
                        .await
                        .expect("global sample");
                    g.push(nebula_resource_benches::ns_per_op(elapsed, settings.ops));
                    let elapsed = run_sample(&tenant, tasks, settings.ops, hold, limit)
                        .await
                        .expect("tenant sample");
                    t.push(nebula_resource_benches::ns_per_op(elapsed, settings.ops));
                }
                let g = nebula_resource_benches::median(&g).unwrap_or(f64::NAN);
                let t = nebula_resource_benches::median(&t).unwrap_or(f64::NAN);
                println!(
                    "{tasks} | {} | {g:.0} | {t:.0} | {:.2}",
                    hold.label(),
                    t / g
                );
            }
        }
        global
            .0
            .shutdown(Duration::from_secs(5))
            .await
            .expect("shutdown");
        tenant
            .manager
            .shutdown(Duration::from_secs(5))
            .await
            .expect("shutdown");
    });
}
