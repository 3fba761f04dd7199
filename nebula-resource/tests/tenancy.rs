//! Per-tenant pools: isolation, bounds, eviction with a graceful drain, and rejection of bad
//! tenants.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nebula_resource::{
    Config, Context, CreateContext, Error, ErrorKind, Event, Policy, PoolConfig, Resource,
    ResourceManager, Tenancy, TenantId, Topology,
};

#[derive(Clone)]
struct DbConfig {
    database: String,
}

impl Config for DbConfig {
    fn validate(&self) -> Result<(), Error> {
        if self.database.is_empty() {
            return Err(Error::config("database", "must not be empty"));
        }
        Ok(())
    }
}

/// Counts its instances alive, so a test can see every one destroyed.
#[derive(Debug)]
struct Alive(Arc<AtomicUsize>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct Conn {
    database: String,
    tenant: Option<TenantId>,
    _alive: Alive,
}

#[derive(Clone, Default)]
struct TenantDb {
    alive: Arc<AtomicUsize>,
    created: Arc<AtomicUsize>,
}

impl Resource for TenantDb {
    type Config = DbConfig;
    type Instance = Conn;
    const KEY: &'static str = "tenant-db";

    async fn create(&self, config: &DbConfig, ctx: &CreateContext) -> Result<Conn, Error> {
        self.alive.fetch_add(1, Ordering::SeqCst);
        self.created.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        Ok(Conn {
            database: config.database.clone(),
            tenant: ctx.tenant().cloned(),
            _alive: Alive(Arc::clone(&self.alive)),
        })
    }
}

fn database_of(tenant: &TenantId) -> Result<DbConfig, Error> {
    Ok(DbConfig {
        database: format!("db_{}", tenant.as_str()),
    })
}

async fn manager_with(db: &TenantDb, policy: Policy, tenancy: Tenancy) -> ResourceManager {
    ResourceManager::builder()
        .register_per_tenant_with(db.clone(), database_of, policy, tenancy)
        .build()
        .await
        .expect("build")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_is_served_only_from_its_own_pool_under_concurrent_load() {
    let db = TenantDb::default();
    let manager = manager_with(
        &db,
        Policy::default().pool(PoolConfig::default().max_size(4)),
        Tenancy::default(),
    )
    .await;
    let tasks: Vec<_> = (0..64)
        .map(|task| {
            let manager = manager.clone();
            tokio::spawn(async move {
                for round in 0..50 {
                    let tenant = format!("t{}", (task + round) % 16);
                    let conn = manager
                        .acquire_in::<TenantDb>(&Context::tenant(tenant.clone()))
                        .await
                        .expect("acquire");
                    assert_eq!(conn.database, format!("db_{tenant}"));
                    assert_eq!(conn.tenant.as_ref().map(TenantId::as_str), Some(&*tenant));
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task");
    }
    let status = manager.status();
    let entry = status.resource("tenant-db").expect("status");
    assert_eq!(entry.tenants.len(), 16);
    for tenant in &entry.tenants {
        assert!(tenant.pool.size <= 4, "{tenant:?}");
        assert_eq!(tenant.pool.in_use, 0);
    }
    assert_eq!(entry.pool.size, db.alive.load(Ordering::SeqCst));
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    assert_eq!(db.alive.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tenants_stay_within_max_tenants() {
    let db = TenantDb::default();
    let max_tenants = 100;
    let manager = manager_with(
        &db,
        Policy::default().pool(PoolConfig::default().max_size(2)),
        Tenancy::default().max_tenants(max_tenants),
    )
    .await;
    for i in 0..10_000 {
        let ctx = Context::tenant(format!("tenant-{i}"));
        drop(manager.acquire_in::<TenantDb>(&ctx).await.expect("acquire"));
    }
    let status = manager.status();
    let entry = status.resource("tenant-db").expect("status");
    assert_eq!(db.created.load(Ordering::SeqCst), 10_000);
    let live = entry.tenants.len() as u64;
    assert!(live <= max_tenants, "{live} tenant pools kept");
    // Evicted pools destroyed their instances: what is alive is what the kept pools hold.
    let alive = db.alive.load(Ordering::SeqCst);
    assert!(alive <= 2 * max_tenants as usize, "{alive} instances alive");
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    assert_eq!(db.alive.load(Ordering::SeqCst), 0);
}

/// A guard held past `tenant_idle_ttl` keeps its tenant's pool: evicting it would start a new
/// pool beside the instance in use. Once nothing is in use, the pool is evicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tenant_pool_is_evicted_once_its_guards_are_dropped() {
    let db = TenantDb::default();
    let manager = manager_with(
        &db,
        Policy::default().pool(
            PoolConfig::default()
                .max_size(2)
                .maintenance_interval(Duration::from_millis(20)),
        ),
        Tenancy::default().tenant_idle_ttl(Duration::from_millis(150)),
    )
    .await;
    let mut events = manager.events();
    let ctx = Context::tenant("acme");
    let held = manager.acquire_in::<TenantDb>(&ctx).await.expect("acquire");
    let idle = manager.acquire_in::<TenantDb>(&ctx).await.expect("acquire");
    drop(idle);
    assert_eq!(db.alive.load(Ordering::SeqCst), 2);

    // No acquire for over twice the idle TTL, but a guard is held: the pool stays.
    tokio::time::sleep(Duration::from_millis(400)).await;
    while let Ok(event) = events.try_recv() {
        assert!(
            !matches!(event, Event::TenantPoolEvicted { .. }),
            "a pool with a guard in use was evicted"
        );
    }
    assert_eq!(
        manager
            .status()
            .resource("tenant-db")
            .expect("status")
            .tenants
            .len(),
        1
    );
    assert_eq!(held.database, "db_acme");

    // Nothing in use: the pool is evicted by maintenance and its instances destroyed.
    drop(held);
    let evicted = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match events.recv().await.expect("events") {
                Event::TenantPoolEvicted { source } => return source,
                _ => continue,
            }
        }
    })
    .await
    .expect("eviction within 5 s");
    assert_eq!(evicted.tenant.as_ref().map(TenantId::as_str), Some("acme"));
    assert_eq!(evicted.key, "tenant-db");
    wait_until(|| db.alive.load(Ordering::SeqCst) == 0).await;
    assert!(
        manager
            .status()
            .resource("tenant-db")
            .expect("status")
            .tenants
            .is_empty()
    );

    // The tenant comes back to a new pool; the evicted pool's lifetime counts still count.
    let again = manager.acquire_in::<TenantDb>(&ctx).await.expect("acquire");
    assert_eq!(again.database, "db_acme");
    drop(again);
    let pool = || manager.status().resource("tenant-db").expect("status").pool;
    wait_until(|| pool().destroyed == 2).await;
    assert_eq!((pool().created, pool().size), (3, 1), "{:?}", pool());
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    assert_eq!(db.alive.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn bad_tenants_and_resolver_failures_are_rejected_naming_the_tenant() {
    let db = TenantDb::default();
    let manager = ResourceManager::builder()
        .register_per_tenant(db.clone(), |tenant: &TenantId| match tenant.as_str() {
            "unknown" => Err(Error::config("tenant", "no such tenant in the directory")),
            "panics" => panic!("resolver bug"),
            "empty" => Ok(DbConfig {
                database: String::new(),
            }),
            _ => database_of(tenant),
        })
        .build()
        .await
        .expect("build");

    for (tenant, needle) in [
        ("", "tenant id is empty"),
        ("acme;drop", "';'"),
        ("a\nb", "'\\n'"),
        ("host=evil", "'='"),
        ("unknown", "no such tenant in the directory"),
        ("panics", "resolver bug"),
        ("empty", "database"),
    ] {
        let err = manager
            .acquire_in::<TenantDb>(&Context::tenant(tenant))
            .await
            .err()
            .unwrap_or_else(|| panic!("{tenant:?} accepted"));
        assert_eq!(err.kind(), ErrorKind::TenantRejected, "{tenant:?}: {err}");
        let text = err.to_string();
        assert!(text.contains("tenant-db"), "{text}");
        assert!(text.contains(needle), "{tenant:?}: {text}");
        if !tenant.is_empty() && tenant.chars().all(|c| c.is_ascii_alphanumeric()) {
            assert!(text.contains(tenant), "{text}");
        }
    }

    let err = manager.acquire::<TenantDb>().await.expect_err("no tenant");
    assert_eq!(err.kind(), ErrorKind::TenantRejected);
    assert!(err.to_string().contains("tenant context"), "{err}");

    // Rejected tenants left no pool behind; a good tenant still works.
    let conn = manager
        .acquire_in::<TenantDb>(&Context::tenant("good"))
        .await
        .expect("acquire");
    assert_eq!(conn.database, "db_good");
    drop(conn);
    let entry = manager
        .status()
        .resource("tenant-db")
        .cloned()
        .expect("status");
    let tenants: Vec<&str> = entry.tenants.iter().map(|t| t.tenant.as_str()).collect();
    assert_eq!(tenants, ["good"]);
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

#[derive(Clone)]
struct SharedClient;

impl Resource for SharedClient {
    type Config = DbConfig;
    type Instance = String;
    const KEY: &'static str = "shared-client";
    const TOPOLOGY: Topology = Topology::Resident;

    async fn create(&self, config: &DbConfig, _ctx: &CreateContext) -> Result<String, Error> {
        Ok(config.database.clone())
    }

    fn share(&self, instance: &String) -> Option<String> {
        Some(instance.clone())
    }
}

#[tokio::test]
async fn tenancy_settings_and_topology_are_validated_at_build() {
    let err = ResourceManager::builder()
        .register_per_tenant(SharedClient, database_of)
        .build()
        .await
        .expect_err("resident per tenant");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("shared-client"), "{err}");
    assert!(err.to_string().contains("topology"), "{err}");

    let err = ResourceManager::builder()
        .register_per_tenant_with(
            TenantDb::default(),
            database_of,
            Policy::default(),
            Tenancy::default().max_tenants(0),
        )
        .build()
        .await
        .expect_err("zero tenants");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("tenancy.max_tenants"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_tenant_guards_in_use() {
    let db = TenantDb::default();
    let manager = manager_with(&db, Policy::default(), Tenancy::default()).await;
    let held = manager
        .acquire_in::<TenantDb>(&Context::tenant("acme"))
        .await
        .expect("acquire");
    let shutdown = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.shutdown(Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown returned with a guard in use"
    );
    let err = manager
        .acquire_in::<TenantDb>(&Context::tenant("other"))
        .await
        .expect_err("after shutdown began");
    assert_eq!(err.kind(), ErrorKind::ShuttingDown);
    drop(held);
    shutdown.await.expect("join").expect("shutdown");
    assert_eq!(db.alive.load(Ordering::SeqCst), 0);
}

async fn wait_until(mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(Duration::from_secs(5), async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("condition within 5 s");
}

/// Regression (faults #12): tenant idle-TTL eviction treated a saturated tenant with queued
/// waiters as idle: the waiters moved to a new pool beside the old in-use instance (alive 2 for
/// a tenant with max_size 1).
#[tokio::test(start_paused = true)]
async fn a_tenant_with_waiters_queued_is_not_evicted_as_idle() {
    let db = TenantDb::default();
    let manager = manager_with(
        &db,
        Policy::default()
            .retry(nebula_resource::RetryPolicy::none())
            .breaker(nebula_resource::BreakerConfig::disabled())
            .health(nebula_resource::HealthConfig::disabled())
            .pool(
                PoolConfig::default()
                    .max_size(1)
                    .acquire_timeout(Duration::from_secs(10))
                    .maintenance_interval(Duration::from_millis(20)),
            ),
        Tenancy::default().tenant_idle_ttl(Duration::from_millis(150)),
    )
    .await;
    let ctx = Context::tenant("acme");
    let held = manager.acquire_in::<TenantDb>(&ctx).await.expect("acquire");
    let waiter = {
        let manager = manager.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            manager
                .acquire_in::<TenantDb>(&ctx)
                .await
                .map(|conn| conn.database.clone())
        })
    };
    // Past the idle TTL several times over, with the waiter queued the whole time.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        (
            db.alive.load(Ordering::SeqCst),
            db.created.load(Ordering::SeqCst)
        ),
        (1, 1),
        "a tenant with max_size 1 has one instance"
    );
    assert!(!waiter.is_finished(), "the waiter was failed or served");
    let entry = manager.status().resource("tenant-db").cloned().unwrap();
    assert_eq!(entry.tenants.len(), 1, "the busy tenant was evicted");

    drop(held);
    let served = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter finishes")
        .unwrap()
        .expect("the waiter is served with the released instance");
    assert_eq!(served, "db_acme");
    assert_eq!(db.created.load(Ordering::SeqCst), 1);
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
    assert_eq!(db.alive.load(Ordering::SeqCst), 0);
}
