//! Server restart: Redis is stopped (`redis-cli shutdown nosave`) and started again
//! (`redis-server --daemonize yes …`); both resources fail while it is down and work again after,
//! without rebuilding the manager.
//!
//! This file is its own test binary, and its tests hold one lock, so no other test of this crate
//! runs while the server is down. Whatever happens, a guard starts the server again when a test
//! ends, and waits until it answers.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{config, eventually, prefix};
use nebula_resource::{Policy, PoolConfig, ResourceManager};
use nebula_resource_redis::redis::{self, AsyncCommands, ConnectionAddr, IntoConnectionInfo};
use nebula_resource_redis::{Redis, RedisDedicated};
use tokio::sync::Mutex;

/// One restart at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// How long the server may take to stop or to start.
const SERVER_WAIT: Duration = Duration::from_secs(20);

/// The local server under test, which this test may stop and start.
struct Server {
    address: SocketAddr,
    port: u16,
}

impl Server {
    fn under_test() -> Self {
        let url = common::redis_url();
        let info = url
            .as_str()
            .into_connection_info()
            .expect("NEBULA_TEST_REDIS_URL is a Redis URL");
        let ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
            panic!("the restart tests need a TCP server on loopback, not {url}");
        };
        let address = (host.as_str(), port)
            .to_socket_addrs()
            .expect("resolve the Redis host")
            .next()
            .expect("an address for the Redis host");
        assert!(
            address.ip().is_loopback(),
            "the restart tests stop and start the server: it must be on loopback, not {address}"
        );
        Self { address, port }
    }

    /// Whether the server answers `PING` with `PONG`.
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.address, Duration::from_millis(200))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0_u8; 7];
        stream.write_all(b"*1\r\n$4\r\nPING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    fn accepts(&self) -> bool {
        TcpStream::connect_timeout(&self.address, Duration::from_millis(200)).is_ok()
    }

    fn wait_until(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + SERVER_WAIT;
        while !condition(self) {
            assert!(
                Instant::now() < deadline,
                "Redis on port {}: {what} not within {SERVER_WAIT:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&self) {
        let status = Command::new("redis-cli")
            .args(["-p", &self.port.to_string(), "shutdown", "nosave"])
            .status()
            .expect("run redis-cli");
        assert!(status.success(), "redis-cli shutdown failed: {status}");
        self.wait_until("stopped", |server| !server.accepts());
    }

    fn start(&self) {
        let status = Command::new("redis-server")
            .args([
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "-::1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                "/var/lib/redis",
                "--logfile",
                "/var/log/redis/ci.log",
            ])
            .status()
            .expect("run redis-server");
        assert!(status.success(), "redis-server failed to start: {status}");
        self.wait_until("answering PING", Self::answers);
    }
}

/// Stops the server now; starts it again when dropped, if it is not running, however the test
/// ends.
struct Outage {
    server: Server,
}

impl Outage {
    fn begin() -> Self {
        let server = Server::under_test();
        assert!(server.answers(), "Redis must be running before the outage");
        let outage = Self { server };
        outage.server.stop();
        outage
    }

    fn end(&self) {
        self.server.start();
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if !self.server.answers() {
            self.server.start();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_resources_work_again_after_a_server_restart() {
    let _serial = SERIAL.lock().await;
    let manager = ResourceManager::builder()
        .register(
            Redis,
            config()
                .client_name("nebula-restart-test")
                .reconnect_max_delay(Duration::from_millis(500)),
        )
        .register_with(
            RedisDedicated,
            config(),
            Policy::default().pool(
                PoolConfig::default()
                    .max_size(2)
                    .acquire_timeout(Duration::from_secs(5))
                    .validate_after_idle(Duration::from_millis(1)),
            ),
        )
        .build()
        .await
        .unwrap();
    let key = format!("{}after", prefix("restart"));

    let mut shared = manager.acquire::<Redis>().await.unwrap();
    let _: String = redis::cmd("PING").query_async(&mut *shared).await.unwrap();
    drop(shared);
    let mut held = manager.acquire::<RedisDedicated>().await.unwrap();
    let idle = manager.acquire::<RedisDedicated>().await.unwrap();
    drop(idle);

    let outage = Outage::begin();

    // Down: the shared connection's commands fail; the held dedicated connection is closed and
    // fails; the idle one is not handed out, and no new one can be made.
    let mut shared = manager.acquire::<Redis>().await.unwrap();
    assert!(
        redis::cmd("PING")
            .query_async::<String>(&mut *shared)
            .await
            .is_err()
    );
    drop(shared);
    assert!(
        redis::cmd("PING")
            .query_async::<String>(&mut *held)
            .await
            .is_err()
    );
    eventually(
        Duration::from_secs(5),
        "the held connection reports closed",
        || {
            let closed = held.is_closed();
            async move { closed }
        },
    )
    .await;
    drop(held);
    // The idle connection's socket closed when the server exited; its driver task may not have
    // run since. Idle longer than `validate_after_idle`, it is checked (`PING`) before it could
    // be handed out, so whichever notices first, it is not.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let err = manager.acquire::<RedisDedicated>().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");

    outage.end();

    // Up again: the dedicated pool makes a new connection on the first acquire.
    let mut own = manager.acquire::<RedisDedicated>().await.unwrap();
    own.set::<_, _, ()>(&key, "back").await.unwrap();
    drop(own);

    // The shared connection reconnects by itself (a command may fail while it does), with its
    // client name; the pool never replaced it.
    eventually(
        Duration::from_secs(20),
        "the resident connection is back",
        || {
            let manager = manager.clone();
            async move {
                let mut shared = manager.acquire::<Redis>().await.unwrap();
                redis::cmd("PING")
                    .query_async::<String>(&mut *shared)
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    let mut shared = manager.acquire::<Redis>().await.unwrap();
    assert_eq!(shared.get::<_, String>(&key).await.unwrap(), "back");
    let name: Option<String> = redis::cmd("CLIENT")
        .arg("GETNAME")
        .query_async(&mut *shared)
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("nebula-restart-test"));
    let _: () = shared.del(&key).await.unwrap();
    drop(shared);

    let status = manager.status();
    let resident = status.resource("redis").unwrap().pool;
    assert_eq!((resident.created, resident.destroyed), (1, 0));
    let pool = status.resource("redis-dedicated").unwrap().pool;
    assert_eq!(pool.destroyed, 2, "both pre-restart connections: {pool:?}");
    assert!(pool.create_errors >= 1, "{pool:?}");
    assert_eq!((pool.size, pool.in_use), (1, 0), "{pool:?}");
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_dedicated_connection_fails_over_a_restart_and_is_replaced() {
    let _serial = SERIAL.lock().await;
    let manager = ResourceManager::builder()
        .register_with(
            RedisDedicated,
            config(),
            Policy::default().pool(PoolConfig::default().max_size(1)),
        )
        .build()
        .await
        .unwrap();
    let queue = format!("{}queue", prefix("restart-blocked"));

    let mut blocked = manager.acquire::<RedisDedicated>().await.unwrap();
    let id = common::client_id(&mut *blocked).await;
    let pop = tokio::spawn(async move {
        let popped = blocked
            .blpop::<_, Option<(String, String)>>(&queue, 30.0)
            .await;
        (popped, blocked)
    });
    // Let the pop reach the server before the outage.
    eventually(
        Duration::from_secs(5),
        "the pop is blocked server-side",
        || async move {
            let client: String = redis::cmd("CLIENT")
                .arg("LIST")
                .arg("ID")
                .arg(id)
                .query_async(&mut common::admin().await)
                .await
                .unwrap();
            client.contains("cmd=blpop")
        },
    )
    .await;

    let outage = Outage::begin();
    let (popped, blocked) = tokio::time::timeout(Duration::from_secs(5), pop)
        .await
        .expect("the blocked pop fails when the server goes away")
        .unwrap();
    assert!(popped.is_err(), "{popped:?}");
    drop(blocked);
    outage.end();

    let mut next = manager.acquire::<RedisDedicated>().await.unwrap();
    assert_eq!(
        redis::cmd("PING")
            .query_async::<String>(&mut *next)
            .await
            .unwrap(),
        "PONG"
    );
    drop(next);
    let pool = manager.status().resource("redis-dedicated").unwrap().pool;
    assert_eq!((pool.created, pool.destroyed), (2, 1), "{pool:?}");
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}
