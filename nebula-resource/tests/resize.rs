//! Live pool resize: growing serves waiters at once, shrinking never takes a guard away.

mod common;

use std::time::Duration;

use common::{Probe, TestConfig, TestResource, settle};
use nebula_resource::{Context, ErrorKind, Policy, PoolConfig, ResourceManager, Tenancy, TenantId};

#[tokio::test(start_paused = true)]
async fn growing_serves_a_waiter_at_once() {
    let probe = Probe::new();
    let manager = common::pool_manager(&probe, PoolConfig::default().max_size(2)).await;
    let a = manager.acquire::<TestResource>().await.expect("a");
    let b = manager.acquire::<TestResource>().await.expect("b");
    let waiter = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.acquire::<TestResource>().await.map(|g| g.id) })
    };
    settle().await;
    assert!(!waiter.is_finished(), "the pool is full");
    manager.resize::<TestResource>(4, 0).expect("resize");
    settle().await;
    assert!(waiter.is_finished(), "served by the new room");
    waiter.await.expect("task").expect("acquired");
    let stats = manager.handle::<TestResource>().expect("handle").stats();
    assert_eq!(stats.max_size, 4);
    drop((a, b));
}

#[tokio::test(start_paused = true)]
async fn shrinking_destroys_idle_now_and_surplus_in_use_instances_on_release() {
    let probe = Probe::new();
    let manager = common::pool_manager(&probe, PoolConfig::default().max_size(4)).await;
    let mut guards = Vec::new();
    for _ in 0..4 {
        guards.push(manager.acquire::<TestResource>().await.expect("acquire"));
    }
    drop(guards.pop());
    settle().await;
    assert_eq!(probe.alive(), 4);

    manager.resize::<TestResource>(2, 0).expect("resize");
    settle().await;
    assert_eq!(probe.alive(), 3, "the idle instance is destroyed");
    assert_eq!(guards.len(), 3, "no guard is taken away");
    drop(guards.pop());
    settle().await;
    assert_eq!(
        probe.alive(),
        2,
        "a surplus instance is destroyed on release"
    );
    drop(guards);
    settle().await;
    let stats = manager.handle::<TestResource>().expect("handle").stats();
    assert_eq!((stats.size, stats.idle, stats.max_size), (2, 2, 2));
    assert_eq!(probe.alive(), 2);
}

#[tokio::test]
async fn bad_sizes_and_wrong_registrations_are_rejected() {
    let probe = Probe::new();
    let manager = common::pool_manager(&probe, PoolConfig::default()).await;
    let err = manager.resize::<TestResource>(0, 0).expect_err("zero");
    assert_eq!(
        (err.kind(), err.field(), err.resource_key()),
        (ErrorKind::Config, Some("pool.max_size"), Some("test"))
    );
    let err = manager.resize::<TestResource>(2, 3).expect_err("min_idle");
    assert_eq!(err.field(), Some("pool.min_idle"));
    let err = manager
        .resize_tenant::<TestResource>("acme", 2, 0)
        .expect_err("not per tenant");
    assert_eq!(err.kind(), ErrorKind::Config);

    let tenants = ResourceManager::builder()
        .register_per_tenant_with(
            TestResource::new(&probe),
            |_: &TenantId| Ok(TestConfig::default()),
            Policy::default(),
            Tenancy::default(),
        )
        .build()
        .await
        .expect("build");
    let err = tenants
        .resize::<TestResource>(2, 0)
        .expect_err("per tenant");
    assert_eq!(err.kind(), ErrorKind::Config);
    let err = tenants
        .resize_tenant::<TestResource>("a;b", 2, 0)
        .expect_err("bad tenant");
    assert_eq!(err.kind(), ErrorKind::TenantRejected);
    tenants
        .resize_tenant::<TestResource>("acme", 3, 1)
        .expect("resize a tenant");
    let guard = tenants
        .acquire_in::<TestResource>(&Context::tenant("acme"))
        .await
        .expect("acquire");
    let status = tenants.status();
    let acme = &status.resource("test").expect("registered").tenants[0];
    assert_eq!(acme.pool.max_size, 3);
    drop(guard);
    tenants
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}
