//! A manager that outlives the runtime it was built on (a static manager shared by several
//! runtimes, as several `#[tokio::test]`s do): tasks and release jobs it hands to the dead
//! runtime are dropped before their first poll, and must still settle what they hold.

mod common;

use std::time::Duration;

use common::{Probe, TestResource};
use nebula_resource::{ErrorKind, PoolConfig, ResourceManager};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Regression (faults #3): drop tickets were built inside the futures they guard, so a sweeper
/// task or a release job dropped unpolled by a dead runtime settled nothing: a waiting acquire
/// ignored `acquire_timeout` and hung, and a tainted instance's place leaked.
#[test]
fn a_manager_used_after_its_runtime_shut_down_still_times_out_waiters_and_settles_releases() {
    let probe = Probe::new();
    let first = runtime();
    let (manager, held): (ResourceManager, _) = first.block_on(async {
        let manager = common::pool_manager(
            &probe,
            PoolConfig::default()
                .max_size(1)
                .acquire_timeout(Duration::from_millis(100)),
        )
        .await;
        let held = manager.acquire::<TestResource>().await.unwrap();
        (manager, held)
    });
    drop(first);

    let second = runtime();
    second.block_on(async {
        // The one place is held: this acquire waits, and must time out at acquire_timeout.
        let waited =
            tokio::time::timeout(Duration::from_secs(2), manager.acquire::<TestResource>()).await;
        let err = waited
            .expect("the acquire ignored its 100 ms acquire_timeout and hung")
            .map(drop)
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");

        // Destroying the held instance: its release job cannot run on the dead runtime's
        // worker, and must settle its place all the same.
        held.taint();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let stats = manager.handle::<TestResource>().unwrap().stats();
        assert_eq!(
            (stats.size, stats.in_use, stats.releasing, stats.destroyed),
            (0, 0, 0, 1),
            "{stats:?}"
        );
        assert_eq!(probe.alive(), 0);
    });
}
