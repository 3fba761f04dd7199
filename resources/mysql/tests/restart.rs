//! Server restart: MariaDB is stopped (`mariadb-admin shutdown`) and started again
//! (`start-stop-daemon --start … --exec /usr/sbin/mariadbd`); the pool fails while it is down
//! and works again after, without rebuilding the manager, and no connection from before the
//! restart is handed out again.
//!
//! This file is its own test binary, and its tests hold one lock, so no other test of this crate
//! runs while the server is down. Whatever happens, a guard starts the server again when a test
//! ends, and waits until it answers.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{config, connection_id, manager, settled};
use nebula_resource::{ErrorKind, PoolConfig};
use nebula_resource_mysql::{MySql, is_fatal, sqlx};
use tokio::sync::Mutex;

/// One restart at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

/// How long the server may take to stop or to start.
const SERVER_WAIT: Duration = Duration::from_secs(60);

/// The local server under test, which this test may stop and start.
struct Server {
    address: SocketAddr,
    user: String,
    password: Option<String>,
    /// The server's pid file (`@@pid_file`), to wait for the old process to exit.
    pid_file: PathBuf,
}

impl Server {
    async fn under_test() -> Self {
        let options = config().connect_options().expect("a valid test URL");
        let address = (options.get_host(), options.get_port())
            .to_socket_addrs()
            .expect("resolve the MySQL host")
            .next()
            .expect("an address for the MySQL host");
        assert!(
            address.ip().is_loopback(),
            "the restart tests stop and start the server: it must be on loopback, not {address}"
        );
        let url = common::mysql_url();
        let password = url
            .split_once("://")
            .and_then(|(_, rest)| rest.rsplit_once('@'))
            .and_then(|(userinfo, _)| userinfo.split_once(':'))
            .map(|(_, password)| password.to_owned());
        let (pid_file, datadir): (String, String) = sqlx::query_as("SELECT @@pid_file, @@datadir")
            .fetch_one(&mut common::admin().await)
            .await
            .expect("ask the server for its pid file");
        Self {
            address,
            user: options.get_username().to_owned(),
            password,
            // A relative pid file is relative to the data directory.
            pid_file: PathBuf::from(datadir).join(pid_file),
        }
    }

    /// Whether the server sends its greeting (protocol version 10) on a new connection.
    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.address, Duration::from_millis(200))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut greeting = [0_u8; 5];
        stream.read_exact(&mut greeting).is_ok() && greeting[4] == 10
    }

    fn accepts(&self) -> bool {
        TcpStream::connect_timeout(&self.address, Duration::from_millis(200)).is_ok()
    }

    fn wait_until(&self, what: &str, condition: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + SERVER_WAIT;
        while !condition(self) {
            assert!(
                Instant::now() < deadline,
                "MariaDB on {}: {what} not within {SERVER_WAIT:?}",
                self.address
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server process's id, from its pid file.
    fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn stop(&self) {
        let pid = self.pid();
        let mut admin = Command::new("mariadb-admin");
        admin
            .arg("--protocol=TCP")
            .arg(format!("--host={}", self.address.ip()))
            .arg(format!("--port={}", self.address.port()))
            .arg(format!("--user={}", self.user));
        if let Some(password) = &self.password {
            admin.arg(format!("--password={password}"));
        }
        let status = admin.arg("shutdown").status().expect("run mariadb-admin");
        assert!(status.success(), "mariadb-admin shutdown failed: {status}");
        self.wait_until("stopped listening", |server| !server.accepts());
        // `start-stop-daemon --oknodo` does nothing while the old process lives: wait for it.
        if let Some(pid) = pid {
            let process = PathBuf::from(format!("/proc/{pid}"));
            self.wait_until("process exited", |_| !process.exists());
        }
    }

    fn start(&self) {
        let status = Command::new("start-stop-daemon")
            .args([
                "--start",
                "--oknodo",
                "--background",
                "--exec",
                "/usr/sbin/mariadbd",
            ])
            .status()
            .expect("run start-stop-daemon");
        assert!(status.success(), "start-stop-daemon failed: {status}");
        self.wait_until("answering", Self::answers);
    }
}

/// Stops the server now; starts it again when dropped, if it is not running, however the test
/// ends.
struct Outage {
    server: Server,
}

impl Outage {
    async fn begin() -> Self {
        let server = Server::under_test().await;
        assert!(
            server.answers(),
            "MariaDB must be running before the outage"
        );
        let outage = Self { server };
        tokio::task::block_in_place(|| outage.server.stop());
        outage
    }

    fn end(&self) {
        tokio::task::block_in_place(|| self.server.start());
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if !self.server.answers() {
            self.server.start();
        }
    }
}

fn restart_pool() -> PoolConfig {
    common::pool(4)
        .acquire_timeout(Duration::from_secs(3))
        .create_timeout(Duration::from_secs(2))
        .validate_after_idle(Duration::from_millis(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_recovers_after_a_server_restart() {
    let _serial = SERIAL.lock().await;
    let manager = manager(
        config().connect_timeout(Duration::from_secs(1)),
        restart_pool(),
    )
    .await;

    let mut held = manager.acquire::<MySql>().await.unwrap();
    let mut idle = manager.acquire::<MySql>().await.unwrap();
    let before = [
        connection_id(&mut *held).await,
        connection_id(&mut *idle).await,
    ];
    drop(idle);

    let outage = Outage::begin().await;

    // The guard held across the shutdown finds its connection gone, and it is not reused.
    let err = sqlx::query("SELECT 1")
        .execute(&mut *held)
        .await
        .expect_err("the server is down");
    assert!(is_fatal(&err), "{err}");
    assert!(held.is_broken());
    drop(held);

    // While the server is down, acquiring fails (the idle connection fails its check, and new
    // ones cannot connect) with an error that says why.
    let err = manager
        .acquire::<MySql>()
        .await
        .expect_err("the server is down");
    assert!(
        matches!(err.kind(), ErrorKind::Create | ErrorKind::Timeout),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("resource `mysql`"), "{text}");

    outage.end();

    // After the restart the same manager serves working connections, none from before.
    let mut conns = Vec::new();
    for _ in 0..4 {
        let mut conn = manager
            .acquire::<MySql>()
            .await
            .expect("acquire after restart");
        let id = connection_id(&mut *conn).await;
        assert!(
            !before.contains(&id),
            "connection {id} is from before the restart"
        );
        conns.push(conn);
    }
    drop(conns);
    let after = settled(&manager).await;
    assert!(after.size <= 4, "{after:?}");
    assert_eq!(after.in_use, 0, "{after:?}");
    assert_eq!(
        after.created - after.destroyed,
        after.size as u64,
        "{after:?}"
    );
    drop(outage);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_replaced_without_an_error_after_a_restart() {
    let _serial = SERIAL.lock().await;
    let manager = manager(config(), restart_pool()).await;

    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(manager.acquire::<MySql>().await.unwrap());
    }
    drop(conns);
    assert_eq!(settled(&manager).await.idle, 3);

    let outage = Outage::begin().await;
    outage.end();

    // Every idle connection died with the old server; each acquire checks its connection
    // (idle longer than `validate_after_idle`), destroys the dead one and opens a new one —
    // the user sees no error.
    let mut conns = Vec::new();
    for _ in 0..3 {
        let mut conn = manager
            .acquire::<MySql>()
            .await
            .expect("no error after restart");
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut *conn)
            .await
            .expect("a working connection");
        assert_eq!(one, 1);
        conns.push(conn);
    }
    drop(conns);
    let after = settled(&manager).await;
    assert_eq!(after.destroyed, 3, "the three dead connections: {after:?}");
    assert_eq!(
        after.created - after.destroyed,
        after.size as u64,
        "{after:?}"
    );
    drop(outage);
}
