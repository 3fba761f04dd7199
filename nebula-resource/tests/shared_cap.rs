//! The cap on instances shared by every tenant pool of a registration
//! (`Tenancy::max_total_instances`), its fair sharing between tenants, and per-tenant pool
//! settings from the resolver (`TenantSetup`).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Probe, TestConfig, TestResource, settle};
use nebula_resource::{
    BreakerConfig, Context, ErrorKind, HealthConfig, Policy, PoolConfig, ResourceManager,
    RetryPolicy, Tenancy, TenantId, TenantSetup,
};

fn policy(pool: PoolConfig) -> Policy {
    Policy::default()
        .pool(pool)
        .retry(RetryPolicy::none())
        .breaker(BreakerConfig::disabled())
        .health(HealthConfig::disabled())
}

async fn capped(probe: &Arc<Probe>, cap: usize, pool: PoolConfig) -> ResourceManager {
    ResourceManager::builder()
        .register_per_tenant_with(
            TestResource::new(probe),
            |_: &TenantId| Ok(TestConfig::default()),
            policy(pool),
            Tenancy::default().max_total_instances(cap),
        )
        .build()
        .await
        .expect("build")
}

fn tenant_size(manager: &ResourceManager, tenant: &str) -> usize {
    manager
        .status()
        .resource("test")
        .expect("registered")
        .tenants
        .iter()
        .find(|t| t.tenant.as_str() == tenant)
        .map_or(0, |t| t.pool.size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cap_holds_across_tenants_under_load_and_every_tenant_is_served() {
    let probe = Probe::new();
    let cap = 6;
    let manager = capped(
        &probe,
        cap,
        PoolConfig::default()
            .max_size(4)
            .acquire_timeout(Duration::from_secs(10)),
    )
    .await;
    let mut tasks = Vec::new();
    for tenant in 0..8 {
        for _ in 0..8 {
            let manager = manager.clone();
            tasks.push(tokio::spawn(async move {
                let ctx = Context::tenant(format!("tenant-{tenant}"));
                for _ in 0..100 {
                    let guard = manager
                        .acquire_in::<TestResource>(&ctx)
                        .await
                        .expect("acquire under the cap");
                    tokio::task::yield_now().await;
                    drop(guard);
                }
            }));
        }
    }
    for task in tasks {
        task.await.expect("task");
    }
    let max_alive = probe.max_alive.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        max_alive <= cap,
        "{max_alive} instances alive at once, cap {cap}"
    );
    let status = manager.status();
    let test = status.resource("test").expect("registered");
    assert!(test.pool.size <= cap, "{:?}", test.pool);
    assert_eq!(test.pool.max_size, cap);
    assert_eq!(test.pool.in_use, 0);
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    assert_eq!(probe.alive(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_quiet_tenant_gets_a_place_from_a_busy_tenants_idle_instances() {
    let probe = Probe::new();
    let manager = capped(&probe, 4, PoolConfig::default().max_size(4)).await;
    let busy = Context::tenant("busy");
    let guards: Vec<_> =
        futures_util::future::join_all((0..4).map(|_| manager.acquire_in::<TestResource>(&busy)))
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .expect("busy takes the whole cap");
    drop(guards);
    settle().await;
    assert_eq!(tenant_size(&manager, "busy"), 4, "kept idle");

    let started = tokio::time::Instant::now();
    let quiet = manager
        .acquire_in::<TestResource>(&Context::tenant("quiet"))
        .await
        .expect("quiet is served");
    assert!(started.elapsed() < Duration::from_millis(100));
    settle().await;
    assert_eq!(
        tenant_size(&manager, "busy"),
        3,
        "busy shed one idle instance"
    );
    assert_eq!(tenant_size(&manager, "quiet"), 1);
    assert!(probe.alive() <= 4);
    drop(quiet);
}

#[tokio::test(start_paused = true)]
async fn a_tenant_above_its_fair_share_gives_back_an_instance_when_its_guard_drops() {
    let probe = Probe::new();
    let manager = capped(&probe, 4, PoolConfig::default().max_size(8)).await;
    let busy = Context::tenant("busy");
    let mut guards = Vec::new();
    for _ in 0..4 {
        guards.push(
            manager
                .acquire_in::<TestResource>(&busy)
                .await
                .expect("busy"),
        );
    }
    // Cap full, everything in use: the quiet tenant waits...
    let waiting = {
        let manager = manager.clone();
        tokio::spawn(async move {
            manager
                .acquire_in::<TestResource>(&Context::tenant("quiet"))
                .await
                .map(|guard| guard.id)
        })
    };
    settle().await;
    assert!(!waiting.is_finished());
    // ...and a busy waiter that arrives later stays behind it.
    let busy_waiter = {
        let manager = manager.clone();
        let busy = busy.clone();
        tokio::spawn(async move {
            manager
                .acquire_in::<TestResource>(&busy)
                .await
                .map(|guard| guard.id)
        })
    };
    settle().await;
    // The busy tenant (4 of a fair share of 2) gives up the instance it releases.
    drop(guards.pop());
    settle().await;
    assert!(waiting.is_finished(), "the quiet tenant was served first");
    waiting.await.expect("task").expect("quiet served");
    // The quiet tenant dropped its guard at once: with no waiter of its own, its instance
    // would only sit idle, so the place goes on to the busy tenant's waiter.
    settle().await;
    assert!(busy_waiter.is_finished());
    busy_waiter.await.expect("task").expect("busy served next");
    assert!(probe.alive() <= 4, "{} alive", probe.alive());
    drop(guards);
    settle().await;
    assert!(probe.max_alive.load(std::sync::atomic::Ordering::SeqCst) <= 4);
}

#[tokio::test(start_paused = true)]
async fn each_tenant_gets_the_pool_settings_its_resolver_gives() {
    let probe = Probe::new();
    let manager = ResourceManager::builder()
        .register_per_tenant_setup(
            TestResource::new(&probe),
            |tenant: &TenantId| {
                let size = if tenant.as_str() == "big" { 5 } else { 1 };
                Ok(TenantSetup::new(TestConfig::default()).pool(
                    PoolConfig::default()
                        .max_size(size)
                        .acquire_timeout(Duration::from_millis(50)),
                ))
            },
            policy(PoolConfig::default()),
            Tenancy::default(),
        )
        .build()
        .await
        .expect("build");
    let big = Context::tenant("big");
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(manager.acquire_in::<TestResource>(&big).await.expect("big"));
    }
    let small = Context::tenant("small");
    let first = manager
        .acquire_in::<TestResource>(&small)
        .await
        .expect("small");
    let err = manager
        .acquire_in::<TestResource>(&small)
        .await
        .expect_err("small holds one");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(err.pool_stats().map(|s| s.max_size), Some(1));
    let status = manager.status();
    let tenants = &status.resource("test").expect("registered").tenants;
    let sizes: Vec<(&str, usize)> = tenants
        .iter()
        .map(|t| (t.tenant.as_str(), t.pool.max_size))
        .collect();
    assert_eq!(sizes, [("big", 5), ("small", 1)]);
    drop((held, first));
}

#[tokio::test]
async fn bad_tenant_pool_settings_and_caps_are_rejected_with_the_field_named() {
    let probe = Probe::new();
    let manager = ResourceManager::builder()
        .register_per_tenant_setup(
            TestResource::new(&probe),
            |_: &TenantId| {
                Ok(TenantSetup::new(TestConfig::default()).pool(PoolConfig::default().max_size(0)))
            },
            Policy::default(),
            Tenancy::default(),
        )
        .build()
        .await
        .expect("build");
    let err = manager
        .acquire_in::<TestResource>(&Context::tenant("acme"))
        .await
        .expect_err("max_size 0");
    assert_eq!(err.kind(), ErrorKind::TenantRejected);
    assert_eq!(err.tenant(), Some("acme"));
    assert!(err.to_string().contains("pool.max_size"), "{err}");

    for cap in [0, nebula_resource::pool::MAX_POOL_SIZE + 1] {
        let err = ResourceManager::builder()
            .register_per_tenant_with(
                TestResource::new(&probe),
                |_: &TenantId| Ok(TestConfig::default()),
                Policy::default(),
                Tenancy::default().max_total_instances(cap),
            )
            .build()
            .await
            .expect_err("cap out of range");
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.field(), Some("tenancy.max_total_instances"));
        assert_eq!(err.resource_key(), Some("test"));
    }
}
