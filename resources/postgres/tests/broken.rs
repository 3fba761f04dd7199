//! Connections whose backend is killed server-side (`pg_terminate_backend`) are recognised as
//! broken and never handed out again, whichever way they are found out: by the check of an idle
//! connection, by a watched statement's fatal error, or by the reset of a raw-used one.

mod common;

use std::time::Duration;

use common::{admin, destroyed, manager, server_pid, terminate};
use nebula_resource::PoolConfig;
use nebula_resource_postgres::sqlx;
use nebula_resource_postgres::{Postgres, is_fatal};

#[tokio::test]
async fn killed_while_idle_is_replaced_by_the_check_on_acquire() {
    let manager = manager(
        PoolConfig::default()
            .max_size(1)
            .validate_after_idle(Duration::from_millis(1)),
    )
    .await;
    let mut events = manager.events();
    let mut admin = admin().await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let dead = server_pid(&mut conn).await;
    drop(conn);
    terminate(&mut admin, dead).await;

    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    assert_ne!(
        conn.backend_pid(),
        dead,
        "the killed connection was not handed out"
    );
    assert_eq!(server_pid(&mut conn).await, conn.backend_pid());
    destroyed(&mut events).await;
    let stats = manager.handle::<Postgres>().unwrap().stats();
    assert_eq!((stats.created, stats.destroyed, stats.size), (2, 1, 1));
}

#[tokio::test]
async fn killed_while_in_use_is_destroyed_when_released() {
    // No check on acquire: only the fatal error seen by the statement protects the next user.
    let manager = manager(PoolConfig::default().max_size(1).validate_after_idle(None)).await;
    let mut events = manager.events();
    let mut admin = admin().await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let dead = conn.backend_pid();
    terminate(&mut admin, dead).await;

    let err = sqlx::query("SELECT 1")
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert!(is_fatal(&err), "{err:?}");
    assert!(conn.is_broken());
    drop(conn);
    destroyed(&mut events).await;

    for _ in 0..3 {
        let mut conn = manager.acquire::<Postgres>().await.unwrap();
        assert_ne!(conn.backend_pid(), dead);
        sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
    }
    let stats = manager.handle::<Postgres>().unwrap().stats();
    assert_eq!((stats.created, stats.destroyed, stats.size), (2, 1, 1));
}

#[tokio::test]
async fn killed_while_idle_without_a_check_is_handed_out_at_most_once() {
    let manager = manager(PoolConfig::default().max_size(2).validate_after_idle(None)).await;
    let mut events = manager.events();
    let mut admin = admin().await;
    let first = manager.acquire::<Postgres>().await.unwrap();
    let second = manager.acquire::<Postgres>().await.unwrap();
    let dead = [first.backend_pid(), second.backend_pid()];
    drop((first, second));
    for pid in dead {
        terminate(&mut admin, pid).await;
    }

    // Without a check on acquire, each dead connection reaches one user, whose statement fails
    // fatally; after that it is gone.
    let mut handed_out = Vec::new();
    let mut failures = 0;
    for _ in 0..6 {
        let mut conn = manager.acquire::<Postgres>().await.unwrap();
        let pid = conn.backend_pid();
        handed_out.push(pid);
        match sqlx::query("SELECT 1").execute(&mut *conn).await {
            Ok(_) => assert!(!dead.contains(&pid)),
            Err(err) => {
                assert!(is_fatal(&err), "{err:?}");
                assert!(dead.contains(&pid));
                failures += 1;
                drop(conn);
                destroyed(&mut events).await;
            }
        }
    }
    assert_eq!(failures, 2);
    for pid in dead {
        assert_eq!(
            handed_out.iter().filter(|&&p| p == pid).count(),
            1,
            "dead connection {pid} handed out once: {handed_out:?}"
        );
    }
}

#[tokio::test]
async fn killed_under_the_raw_connection_is_caught_by_the_reset() {
    let manager = manager(PoolConfig::default().max_size(1).validate_after_idle(None)).await;
    let mut events = manager.events();
    let mut admin = admin().await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let dead = conn.backend_pid();
    terminate(&mut admin, dead).await;
    // The raw connection's statements are not watched: the fatal error goes unseen here...
    sqlx::query("SELECT 1")
        .execute(&mut **conn)
        .await
        .unwrap_err();
    assert!(!conn.is_broken());
    // ...but the reset its use calls for fails, and the connection is destroyed.
    drop(conn);
    destroyed(&mut events).await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    assert_ne!(conn.backend_pid(), dead);
    sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
}

#[tokio::test]
async fn killed_inside_a_transaction_is_destroyed_when_released() {
    let manager = manager(PoolConfig::default().max_size(1).validate_after_idle(None)).await;
    let mut events = manager.events();
    let mut admin = admin().await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    let dead = conn.backend_pid();
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT 1").execute(&mut tx).await.unwrap();
    terminate(&mut admin, dead).await;
    let err = sqlx::query("SELECT 2").execute(&mut tx).await.unwrap_err();
    assert!(is_fatal(&err), "{err:?}");
    assert!(tx.commit().await.is_err());
    assert!(conn.is_broken());
    drop(conn);
    destroyed(&mut events).await;
    let mut conn = manager.acquire::<Postgres>().await.unwrap();
    assert_ne!(conn.backend_pid(), dead);
    sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
}
