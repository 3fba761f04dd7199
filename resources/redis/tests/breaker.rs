//! Redis stopped, then started again: the breaker opens, acquires fail fast while it is open, and
//! a half-open probe closes it once the server is back. The test stops the machine's Redis, so it
//! lives in a binary of its own and always starts the server again, pass or fail.

use std::process::Command;
use std::time::Duration;

use nebula_resource::{
    BreakerConfig, BreakerState, ErrorKind, Event, HealthConfig, Policy, PoolConfig,
    ResourceManager, RetryPolicy,
};
use nebula_resource_redis::{RedisConfig, RedisDedicated, redis};
use tokio::time::Instant;

fn url() -> String {
    std::env::var("NEBULA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn listening() -> bool {
    std::net::TcpStream::connect_timeout(
        &"127.0.0.1:6379".parse().expect("address"),
        Duration::from_millis(200),
    )
    .is_ok()
}

fn start() {
    let status = Command::new("redis-server")
        .args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        ])
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "redis-server did not start"
    );
    wait_until(listening, "Redis to listen");
}

fn stop() {
    let status = Command::new("redis-cli")
        .args(["-p", "6379", "shutdown", "nosave"])
        .status();
    assert!(status.is_ok(), "redis-cli shutdown did not run");
    wait_until(|| !listening(), "Redis to stop");
}

fn wait_until(mut condition: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts Redis again when dropped, however the test ends.
struct StartOnDrop;

impl Drop for StartOnDrop {
    fn drop(&mut self) {
        if !listening() {
            start();
        }
    }
}

async fn ping(manager: &ResourceManager) -> Result<(), nebula_resource::Error> {
    let mut conn = manager.acquire::<RedisDedicated>().await?;
    let pong: Result<String, _> = redis::cmd("PING").query_async(&mut *conn).await;
    if pong.is_err() {
        conn.taint();
        return Err(nebula_resource::Error::check("PING failed"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_while_redis_is_down_fails_fast_and_a_probe_closes_it() {
    let _restart = StartOnDrop;
    let open_wait = Duration::from_millis(500);
    let manager = ResourceManager::builder()
        .register_with(
            RedisDedicated,
            RedisConfig::new(url()).connect_timeout(Duration::from_millis(300)),
            Policy::default()
                .pool(
                    PoolConfig::default()
                        .max_size(4)
                        .acquire_timeout(Duration::from_secs(1)),
                )
                .retry(RetryPolicy::none())
                .health(HealthConfig::disabled())
                .breaker(
                    BreakerConfig::default()
                        .window(10)
                        .minimum_calls(4)
                        .open_wait(open_wait)
                        .half_open_calls(1),
                ),
        )
        .build()
        .await
        .expect("Redis must be reachable");
    ping(&manager).await.expect("Redis up");
    let mut events = manager.events();

    stop();
    // Failures (dead connections, refused connects) until the breaker opens.
    let mut attempts = 0;
    let retry_after = loop {
        attempts += 1;
        assert!(attempts <= 20, "the breaker never opened");
        let started = Instant::now();
        let result = ping(&manager).await;
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "an acquire hung"
        );
        match result {
            Err(err) if err.kind() == ErrorKind::CircuitOpen => {
                break err.retry_after().expect("retry_after");
            }
            Err(_) => {}
            Ok(()) => panic!("PING succeeded with Redis stopped"),
        }
    };
    assert!(retry_after <= open_wait, "{retry_after:?}");
    assert!(matches!(
        manager
            .status()
            .resource("redis-dedicated")
            .unwrap()
            .breaker
            .state,
        BreakerState::Open
    ));

    // Open: fails fast, without connecting.
    let started = Instant::now();
    for _ in 0..100 {
        let err = ping(&manager).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CircuitOpen, "{err}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "100 rejected acquires took {:?}",
        started.elapsed()
    );

    start();
    tokio::time::sleep(open_wait).await;
    // The half-open probe reconnects and closes the breaker.
    ping(&manager)
        .await
        .expect("the probe succeeds once Redis is back");
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(Event::CircuitClosed(source)) = events.recv().await {
                return source;
            }
        }
    })
    .await
    .expect("CircuitClosed within 2 s");
    assert_eq!(closed.key, "redis-dedicated");
    for _ in 0..10 {
        ping(&manager).await.expect("closed breaker serves");
    }
    let stats = manager.handle::<RedisDedicated>().unwrap().stats();
    assert_eq!(stats.in_use, 0, "{stats:?}");
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}
