//! A connection killed on the server (`KILL <id>` from another connection) is never handed out
//! again: found broken by the statement that hits the kill, or by the check after idle.

mod common;

use std::time::Duration;

use common::{
    config, connection_id, eventually, kill, manager, pool, server_has_connection, settled, stats,
};
use nebula_resource_mysql::sqlx;
use nebula_resource_mysql::{MySql, is_fatal};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_while_held_is_destroyed_on_release() {
    let manager = manager(config(), pool(2)).await;
    let mut conn = manager.acquire::<MySql>().await.unwrap();
    let killed = connection_id(&mut *conn).await;
    kill(killed).await;
    eventually(
        Duration::from_secs(5),
        "the server drops the killed connection",
        || async move { !server_has_connection(killed).await },
    )
    .await;

    let err = sqlx::query("SELECT 1")
        .execute(&mut *conn)
        .await
        .expect_err("the connection was killed");
    assert!(
        is_fatal(&err),
        "a killed connection's error is fatal: {err}"
    );
    assert!(conn.is_broken());
    drop(conn);

    // Every connection the pool hands out from now on is another one, and works.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = manager.acquire::<MySql>().await.unwrap();
        assert_ne!(connection_id(&mut *conn).await, killed);
        held.push(conn);
    }
    drop(held);
    let after = settled(&manager).await;
    assert_eq!(after.destroyed, 1, "{after:?}");
    assert_eq!(
        after.created - after.destroyed,
        after.size as u64,
        "{after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_killed_while_idle_fails_its_check_and_is_replaced() {
    const VALIDATE_AFTER: Duration = Duration::from_millis(1);
    let manager = manager(config(), pool(2).validate_after_idle(VALIDATE_AFTER)).await;

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    let killed = connection_id(&mut *conn).await;
    drop(conn);
    assert_eq!(stats(&manager).idle, 1);

    kill(killed).await;
    eventually(
        Duration::from_secs(5),
        "the server drops the killed connection",
        || async move { !server_has_connection(killed).await },
    )
    .await;
    // Idle for longer than `validate_after_idle`, so the next acquire checks it (`COM_PING`).
    tokio::time::sleep(VALIDATE_AFTER * 5).await;

    let mut conn = manager.acquire::<MySql>().await.unwrap();
    let id = connection_id(&mut *conn).await;
    assert_ne!(id, killed, "the killed connection was not handed out");
    drop(conn);
    let after = settled(&manager).await;
    assert_eq!((after.created, after.destroyed), (2, 1), "{after:?}");
    assert_eq!(after.size, 1, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_kills_itself_is_not_reused() {
    let manager = manager(config(), pool(1)).await;
    let mut conn = manager.acquire::<MySql>().await.unwrap();
    let id = connection_id(&mut *conn).await;
    let err = sqlx::query("KILL CONNECTION_ID()")
        .execute(&mut *conn)
        .await
        .expect_err("killing its own connection fails it");
    assert!(is_fatal(&err), "{err}");
    drop(conn);
    let mut conn = manager.acquire::<MySql>().await.unwrap();
    assert_ne!(connection_id(&mut *conn).await, id);
    drop(conn);
    let after = settled(&manager).await;
    assert_eq!(
        (after.created, after.destroyed, after.size),
        (2, 1, 1),
        "{after:?}"
    );
}
