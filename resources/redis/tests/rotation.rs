//! Credential rotation against the real server with a Redis ACL user: a second password is added
//! (`ACL SETUSER … >new`), the provider's answer changed and the pool rotated while 32 tasks run
//! commands, then the old password is removed (`<old`). No acquire or command fails, and once the
//! guards are back no connection opened with the old password remains.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nebula_resource::{Credentials, Policy, PoolConfig, ResourceManager, StaticCredentials};
use nebula_resource_redis::redis::{self, AsyncCommands};
use nebula_resource_redis::{RedisConfig, RedisDedicated};

fn url() -> String {
    std::env::var("NEBULA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|err| panic!("Redis at {} must be reachable: {err}", url()))
}

async fn acl(admin: &mut redis::aio::MultiplexedConnection, args: &[&str]) {
    let mut cmd = redis::cmd("ACL");
    for arg in args {
        cmd.arg(*arg);
    }
    cmd.query_async::<()>(admin).await.expect("ACL");
}

/// Client ids of the connections authenticated as `user`.
async fn clients_of(admin: &mut redis::aio::MultiplexedConnection, user: &str) -> HashSet<u64> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(admin)
        .await
        .expect("CLIENT LIST");
    list.lines()
        .filter(|line| line.split(' ').any(|field| field == format!("user={user}")))
        .filter_map(|line| {
            line.split(' ')
                .find_map(|field| field.strip_prefix("id="))
                .and_then(|id| id.parse().ok())
        })
        .collect()
}

/// Deletes the ACL user however the test ends.
struct DropUser(String);

impl Drop for DropUser {
    fn drop(&mut self) {
        if let Ok(client) = redis::Client::open(url())
            && let Ok(mut conn) = client.get_connection()
        {
            let _: redis::RedisResult<()> = redis::cmd("ACL")
                .arg("DELUSER")
                .arg(&self.0)
                .query(&mut conn);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_password_rotation_under_load_fails_nothing_and_leaves_no_old_connection() {
    let user = format!("nebula_rotation_{}", std::process::id());
    let _cleanup = DropUser(user.clone());
    let key = format!("nebula-test:rotation:{}", std::process::id());
    let mut admin = admin().await;
    acl(
        &mut admin,
        &["SETUSER", &user, "reset", "on", ">first-pw", "~*", "+@all"],
    )
    .await;

    let provider = Arc::new(StaticCredentials::new(
        Credentials::new("first-pw").username(user.clone()),
    ));
    let manager = ResourceManager::builder()
        .register_with(
            RedisDedicated,
            RedisConfig::new(url()),
            Policy::default()
                .pool(PoolConfig::default().max_size(8).min_idle(8))
                .credentials_shared(Arc::clone(&provider) as _),
        )
        .build()
        .await
        .expect("build with the first password");

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let manager = manager.clone();
            let stop = Arc::clone(&stop);
            let failures = Arc::clone(&failures);
            let key = key.clone();
            tokio::spawn(async move {
                let mut done = 0_usize;
                while !stop.load(Ordering::Relaxed) {
                    match manager.acquire::<RedisDedicated>().await {
                        Ok(mut conn) => {
                            let incremented: redis::RedisResult<i64> = conn.incr(&key, 1).await;
                            if incremented.is_err() {
                                failures.fetch_add(1, Ordering::Relaxed);
                            }
                            done += 1;
                        }
                        Err(err) => {
                            eprintln!("acquire failed: {err}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                done
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = clients_of(&mut admin, &user).await;
    assert!(
        !before.is_empty(),
        "the pool's connections use the ACL user"
    );

    // Rotate: a second password on the server, the provider's answer, the pool, then the old
    // password goes.
    acl(&mut admin, &["SETUSER", &user, ">second-pw"]).await;
    provider.set(Credentials::new("second-pw").username(user.clone()));
    assert_eq!(
        manager
            .rotate_credentials::<RedisDedicated>()
            .await
            .unwrap(),
        1
    );
    acl(&mut admin, &["SETUSER", &user, "<first-pw"]).await;
    tokio::time::sleep(Duration::from_millis(700)).await;

    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("load task");
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "failed acquisitions or commands"
    );
    assert!(total > 500, "only {total} commands");

    let now = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let now = clients_of(&mut admin, &user).await;
            if now.is_disjoint(&before) && !now.is_empty() {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("old-password connections closed");
    assert!(now.len() <= 8, "{now:?}");
    // The old password no longer authenticates.
    let old = redis::Client::open(format!("redis://{user}:first-pw@127.0.0.1:6379"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await;
    assert!(old.is_err(), "the old password still works");

    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    let _: () = admin.del(&key).await.expect("cleanup");
}
