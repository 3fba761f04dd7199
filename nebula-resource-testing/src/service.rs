//! [`Service`]: stop and start a local server by its documented commands, for tests of what a
//! resource does while its server is down, and always start it again.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::OwnedMutexGuard;

/// How long a server may take to stop or to start.
const WAIT: Duration = Duration::from_secs(60);

/// A server on loopback that a test may stop and start again: its name, its port, and the
/// shell commands that stop and start it (those of `services.md` for the built-in ones).
///
/// [`stop`](Self::stop) returns a [`Stopped`] guard that starts the server again when it is
/// dropped — also when the test fails — and waits until the port accepts connections. Only one
/// test of a process holds a service stopped at a time (a lock per service name). Tests that
/// stop a server belong in a test file of their own, so that no other test of the same binary
/// runs against a server that is down.
///
/// ```no_run
/// # async fn demo() {
/// use nebula_resource_testing::Service;
///
/// let nats = Service::nats();
/// let stopped = nats.stop().await;
/// // … acquire: errors, typed and bounded …
/// stopped.start().await;
/// // … acquire: served again …
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Service {
    name: String,
    port: u16,
    stop: String,
    start: String,
}

impl Service {
    /// A server listening on `127.0.0.1:port`, stopped by the shell command `stop` and
    /// started by `start` (each run with `sh -c`; `start` must return once the server is
    /// launched, in the background).
    pub fn new(
        name: impl Into<String>,
        port: u16,
        stop: impl Into<String>,
        start: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            port,
            stop: stop.into(),
            start: start.into(),
        }
    }

    /// PostgreSQL on 5432 (`pg_ctlcluster`, the first cluster version installed).
    pub fn postgres() -> Self {
        let ctl =
            "pg_ctlcluster --skip-systemctl-redirect \"$(ls /etc/postgresql | head -n1)\" main";
        Self::new(
            "PostgreSQL",
            5432,
            format!("{ctl} stop -m fast"),
            format!("{ctl} start"),
        )
    }

    /// MariaDB on 3306.
    pub fn mariadb() -> Self {
        Self::new(
            "MariaDB",
            3306,
            "start-stop-daemon --stop --oknodo --retry 30 --exec /usr/sbin/mariadbd",
            "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
        )
    }

    /// Redis on 6379 (keeps nothing on disk).
    pub fn redis() -> Self {
        Self::new(
            "Redis",
            6379,
            "redis-cli -p 6379 shutdown nosave",
            "redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save '' \
             --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log",
        )
    }

    /// RabbitMQ on 5672: the application is stopped and started (`rabbitmqctl stop_app` /
    /// `start_app`); the node stays up, which is faster than a full restart.
    pub fn rabbitmq() -> Self {
        Self::new(
            "RabbitMQ",
            5672,
            "rabbitmqctl stop_app",
            "rabbitmqctl start_app",
        )
    }

    /// NATS with JetStream on 4222.
    pub fn nats() -> Self {
        Self::new(
            "NATS",
            4222,
            "start-stop-daemon --stop --oknodo --retry 30 --exec /usr/sbin/nats-server",
            "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
             -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log",
        )
    }

    /// tansu, the Kafka-compatible broker, on 9092 with in-memory storage (topics are lost on
    /// restart). The binary is `$NEBULA_TANSU`, else `~/.cache/nebula-tools/bin/tansu`, where
    /// the project's test script installs it; it runs from an empty folder (it reads a `.env`
    /// file from where it starts) and logs to `/tmp/nebula-tansu.log`.
    pub fn tansu() -> Self {
        Self::new(
            "tansu",
            9092,
            // `[t]` so that the pattern does not match the command line of the shell running it.
            "pkill -f '[t]ansu broker'; true",
            "bin=${NEBULA_TANSU:-$HOME/.cache/nebula-tools/bin/tansu}; dir=$(mktemp -d); \
             cd \"$dir\" && nohup \"$bin\" broker --storage-engine memory://tansu/ \
             --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
             >/tmp/nebula-tansu.log 2>&1 &",
        )
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port it listens on, on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the port accepts a connection now.
    pub fn listening(&self) -> bool {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
    }

    /// Stop the server and wait until its port refuses connections. Waits first for any other
    /// test of this process that holds this service stopped.
    ///
    /// # Panics
    ///
    /// If the stop command fails or the port still accepts connections after 60 s: the test
    /// cannot go on.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe once the stop command ran: the server stays down. Do not race it.
    pub async fn stop(&self) -> Stopped {
        let lock = lock_for(&self.name).lock_owned().await;
        let service = self.clone();
        tokio::task::spawn_blocking(move || {
            service.run(&service.stop, "stop");
            service.wait_until("stopped", |s| !s.listening());
            Stopped {
                service: Some(service),
                _lock: lock,
            }
        })
        .await
        .expect("the stop task does not panic")
    }

    /// Stop the server, then start it again and wait until it accepts connections.
    ///
    /// # Panics
    ///
    /// As [`stop`](Self::stop) and [`Stopped::start`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropped while stopped, the server is started again (blocking the thread).
    pub async fn restart(&self) {
        self.stop().await.start().await;
    }

    fn run(&self, command: &str, what: &str) {
        let status = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        match status {
            Ok(status) if status.success() => {}
            Ok(status) => panic!("{} {what}: `{command}` exited with {status}", self.name),
            Err(err) => panic!("{} {what}: `{command}` could not run: {err}", self.name),
        }
    }

    fn wait_until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(self) {
            assert!(
                Instant::now() < deadline,
                "{} on 127.0.0.1:{}: not {what} within {WAIT:?}",
                self.name,
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start_blocking(&self) {
        self.run(&self.start, "start");
        self.wait_until("listening", Self::listening);
    }
}

/// The per-name locks: one test of the process holds a service stopped at a time.
fn lock_for(name: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    Arc::clone(
        LOCKS
            .get_or_init(Default::default)
            .lock()
            .entry(name.to_owned())
            .or_default(),
    )
}

/// A stopped [`Service`]. [`start`](Self::start) starts it again; dropping it does too,
/// blocking the thread until the port accepts connections.
#[derive(Debug)]
#[must_use = "dropping it starts the service again at once"]
pub struct Stopped {
    service: Option<Service>,
    _lock: OwnedMutexGuard<()>,
}

impl Stopped {
    /// Start the service again and wait until its port accepts connections.
    ///
    /// # Panics
    ///
    /// If the start command fails or the port does not accept connections within 60 s.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the start runs on a blocking thread and finishes either way.
    pub async fn start(mut self) {
        if let Some(service) = self.service.take() {
            tokio::task::spawn_blocking(move || service.start_blocking())
                .await
                .expect("the start task does not panic");
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(service) = self.service.take() {
            if std::thread::panicking() {
                // Best effort while a failed test unwinds: a second panic would abort.
                let _ = std::panic::catch_unwind(|| service.start_blocking());
            } else {
                service.start_blocking();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    use super::*;

    /// A stand-in server of this test's own: Python's `http.server` on a free loopback port,
    /// stopped by matching its command line.
    fn fake() -> Service {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        Service::new(
            format!("fake-{port}"),
            port,
            format!("pkill -f '[h]ttp.server {port} --bind 127.0.0.1'; true"),
            format!("nohup python3 -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 &"),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stop_then_start_and_restart() {
        let service = fake();
        service.start_blocking();
        assert!(service.listening());

        let stopped = service.stop().await;
        assert!(!service.listening(), "stopped means the port refuses");
        stopped.start().await;
        assert!(service.listening(), "started again and waited for");

        service.restart().await;
        assert!(service.listening());
        service.run(&service.stop, "clean-up");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_test_still_starts_the_service_again() {
        let service = fake();
        service.start_blocking();
        let stopped = service.stop().await;
        let failed = catch_unwind(AssertUnwindSafe(move || {
            let _stopped = stopped;
            panic!("the test fails while the service is down");
        }));
        assert!(failed.is_err());
        assert!(service.listening(), "the guard started it while unwinding");
        service.run(&service.stop, "clean-up");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_test_at_a_time_holds_a_service_stopped() {
        let service = fake();
        service.start_blocking();
        let stopped = service.stop().await;
        let second = tokio::spawn({
            let service = service.clone();
            async move {
                let stopped = service.stop().await;
                stopped.start().await;
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !second.is_finished(),
            "the second stop waits for the first guard"
        );
        stopped.start().await;
        second.await.expect("the second stop and start");
        assert!(service.listening());
        service.run(&service.stop, "clean-up");
    }
}
