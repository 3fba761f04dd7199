//! A deadpool-style gate matrix: every hook (create, check, recycle, destroy) with every outcome
//! (Ok, Err, Slow, Never, Panic), with acquires cancelled mid-way, asserting the pool's exact
//! counts afterwards: nothing lost, nothing leaked, nothing counted twice.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Hook, Outcome, Probe, SLOW, TestResource, settle};
use nebula_resource::{ErrorKind, PoolConfig, PoolStats, ResourceManager, TimeoutPhase};

const HOOKS: [Hook; 4] = [Hook::Create, Hook::Check, Hook::Recycle, Hook::Destroy];
const OUTCOMES: [Outcome; 5] = [
    Outcome::Ok,
    Outcome::Err,
    Outcome::Slow,
    Outcome::Never,
    Outcome::Panic,
];

fn stats(manager: &ResourceManager) -> PoolStats {
    manager.handle::<TestResource>().unwrap().stats()
}

fn assert_consistent(s: &PoolStats, label: &str) {
    assert_eq!(
        s.size,
        s.idle + s.in_use + s.creating + s.releasing,
        "{label}: {s:?}"
    );
    assert!(s.size <= s.max_size, "{label}: {s:?}");
}

/// What an acquire must return when `hook` behaves as `outcome`.
fn expect_acquire(
    hook: Hook,
    outcome: Outcome,
    result: &Result<u64, nebula_resource::Error>,
    label: &str,
) {
    match (hook, outcome) {
        (Hook::Create, Outcome::Err | Outcome::Panic) => {
            assert_eq!(
                result.as_ref().unwrap_err().kind(),
                ErrorKind::Create,
                "{label}"
            );
        }
        (Hook::Create, Outcome::Never) => {
            let err = result.as_ref().unwrap_err();
            assert_eq!(
                err.timeout_phase(),
                Some(TimeoutPhase::Create),
                "{label}: {err}"
            );
        }
        _ => assert!(
            result.is_ok(),
            "{label}: {result:?}",
            result = result.as_ref().map_err(|e| e.to_string())
        ),
    }
}

async fn scenario(hook: Hook, outcome: Outcome) {
    let label = format!("{hook:?}/{outcome:?}");
    let probe = Probe::new();
    probe.set(hook, outcome);
    let manager = common::pool_manager(
        &probe,
        PoolConfig::default()
            .max_size(2)
            .create_timeout(Duration::from_millis(100))
            .recycle_timeout(Duration::from_millis(100))
            .acquire_timeout(Duration::from_millis(300))
            .validate_after_idle(Duration::from_millis(10))
            .maintenance_interval(Duration::from_secs(3600)),
    )
    .await;

    // 1. An acquire cancelled while its instance is being created.
    let cancelled = tokio::time::timeout(SLOW / 5, manager.acquire::<TestResource>()).await;
    if (hook, outcome) == (Hook::Create, Outcome::Slow) {
        assert!(
            cancelled.is_err(),
            "{label}: create is slower than the cancel"
        );
        tokio::time::sleep(SLOW).await;
        settle().await;
        // The create went on in its own task; its instance was kept, not abandoned.
        let s = stats(&manager);
        assert_eq!((s.size, s.idle, s.created), (1, 1, 1), "{label}: {s:?}");
    }
    drop(cancelled);
    settle().await;
    assert_consistent(&stats(&manager), &label);

    // 2. A full acquire, used and dropped.
    let result = manager.acquire::<TestResource>().await.map(|g| g.id);
    expect_acquire(hook, outcome, &result, &label);
    settle().await;
    assert_consistent(&stats(&manager), &label);

    // 3. After idling past validate_after_idle, an acquire cancelled during the check.
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(tokio::time::timeout(SLOW / 5, manager.acquire::<TestResource>()).await);
    settle().await;
    assert_consistent(&stats(&manager), &label);

    // 4. And a full acquire through the check.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let result = manager.acquire::<TestResource>().await.map(|g| g.id);
    expect_acquire(hook, outcome, &result, &label);

    // Let background recycles, destroys and creates finish (hung ones time out).
    tokio::time::sleep(Duration::from_millis(500)).await;
    settle().await;
    let s = stats(&manager);
    assert_consistent(&s, &label);
    assert_eq!(
        (s.in_use, s.waiters, s.creating, s.releasing),
        (0, 0, 0, 0),
        "{label}: {s:?}"
    );
    assert_eq!(
        s.created as usize,
        probe.created.load(Ordering::SeqCst),
        "{label}: {s:?}"
    );
    assert_eq!(s.created - s.destroyed, s.size as u64, "{label}: {s:?}");
    assert_eq!(
        probe.alive(),
        s.size,
        "{label}: every instance alive is in the pool"
    );
    assert!(probe.max_alive.load(Ordering::SeqCst) <= 2, "{label}");

    manager.shutdown(Duration::from_secs(2)).await.unwrap();
    let s = stats(&manager);
    assert_eq!((s.size, s.idle, s.in_use), (0, 0, 0), "{label}: {s:?}");
    assert_eq!(s.created, s.destroyed, "{label}: {s:?}");
    assert_eq!(probe.alive(), 0, "{label}: every instance was dropped");
}

#[tokio::test(start_paused = true)]
async fn every_hook_with_every_outcome_keeps_counts_exact() {
    for hook in HOOKS {
        for outcome in OUTCOMES {
            scenario(hook, outcome).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn waiter_cancelled_after_being_served_passes_the_instance_on() {
    let probe = Probe::new();
    let manager = common::pool_manager(&probe, PoolConfig::default().max_size(1)).await;
    let held = manager.acquire::<TestResource>().await.unwrap();
    let mut first = Box::pin(manager.acquire::<TestResource>());
    let second = tokio::spawn({
        let manager = manager.clone();
        async move { manager.acquire::<TestResource>().await.map(|g| g.id) }
    });
    // Register the first waiter, then the second.
    assert!(futures_poll(&mut first).await.is_none());
    settle().await;
    // The instance is handed to the first waiter, which is dropped before it looks.
    drop(held);
    drop(first);
    // FIFO: the second waiter gets it, nothing is lost.
    assert!(second.await.unwrap().is_ok());
    let s = stats(&manager);
    assert_eq!((s.size, s.idle, s.in_use, s.waiters), (1, 1, 0, 0), "{s:?}");
}

async fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *f).poll(cx) {
        std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    let probe = Probe::new();
    let manager = common::pool_manager(&probe, PoolConfig::default().max_size(1)).await;
    let order = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    let held = manager.acquire::<TestResource>().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..10 {
        let manager = manager.clone();
        let order = std::sync::Arc::clone(&order);
        tasks.push(tokio::spawn(async move {
            let guard = manager.acquire::<TestResource>().await.unwrap();
            order.lock().push(i);
            tokio::time::sleep(Duration::from_millis(1)).await;
            drop(guard);
        }));
        settle().await;
    }
    drop(held);
    // A newcomer arriving now must queue behind all ten.
    let late = manager.acquire::<TestResource>().await.unwrap();
    order.lock().push(99);
    drop(late);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.lock(), vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 99]);
}

/// Regression (faults #14): a waiter handed an instance that turned out broken re-queued at
/// the back, behind waiters that arrived after it: FIFO broken.
#[tokio::test(start_paused = true)]
async fn a_waiter_handed_a_broken_instance_keeps_its_place_at_the_front() {
    let probe = Probe::new();
    let manager = common::pool_manager(&probe, PoolConfig::default().max_size(1)).await;
    let held = manager.acquire::<TestResource>().await.unwrap();
    let served = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
    // Two waiters, in this order; each holds what it gets.
    let mut waiters = Vec::new();
    for label in ["first", "second"] {
        let manager = manager.clone();
        let served = std::sync::Arc::clone(&served);
        waiters.push(tokio::spawn(async move {
            let guard = manager.acquire::<TestResource>().await.unwrap();
            served.lock().push(label);
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(guard);
        }));
        settle().await;
    }
    assert_eq!(stats(&manager).waiters, 2);

    // Returned healthy, handed to the first waiter, and broken before that waiter looks at it.
    let broken = std::sync::Arc::clone(&held.broken);
    drop(held);
    broken.store(true, Ordering::SeqCst);
    settle().await;
    // The broken instance was destroyed and a new one created: it goes to the first waiter.
    assert_eq!(
        *served.lock(),
        ["first"],
        "the waiter handed a broken instance lost its place"
    );
    for waiter in waiters {
        waiter.abort();
    }
}
