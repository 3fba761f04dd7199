//! Credential rotation against a `nats-server` of the test's own (with users, on a free loopback
//! port): the server learns the new user, the provider hands it out and the manager rotates, the
//! server forgets the old user — under load, with no acquire or publish failing and every
//! message delivered. The rotation makes a new instance (the manager's rule for a new
//! generation); the old one drains.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use nebula_resource::{Credentials, HealthConfig, Policy, ResourceManager, StaticCredentials};
use nebula_resource_nats::async_nats;
use nebula_resource_nats::{Nats, NatsConfig};
use tokio::process::{Child, Command};

/// A `nats-server` with an `authorization` block, killed when dropped.
struct AuthServer {
    port: u16,
    dir: PathBuf,
    child: Child,
}

impl AuthServer {
    async fn start(users: &[(&str, &str)]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let dir = std::env::temp_dir().join(common::unique("nebula-nats-auth"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        write_config(&dir, port, users);
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(dir.join("nats.conf"))
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server is installed (Debian package nats-server)");
        let server = Self { port, dir, child };
        server.wait_listening().await;
        server
    }

    /// Rewrite the users and make the server reload its config.
    async fn set_users(&self, users: &[(&str, &str)]) {
        write_config(&self.dir, self.port, users);
        let pid = self.child.id().expect("the server runs").to_string();
        let status = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "reload signal failed: {status}");
        // The reload is applied asynchronously by the server.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    async fn wait_listening(&self) {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        for _ in 0..200 {
            if TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("nats-server (from the nats-server package) did not listen on {address}");
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_config(dir: &std::path::Path, port: u16, users: &[(&str, &str)]) {
    let users: Vec<String> = users
        .iter()
        .map(|(user, password)| format!("    {{ user: \"{user}\", password: \"{password}\" }}"))
        .collect();
    let config = format!(
        "listen: \"127.0.0.1:{port}\"\nauthorization {{\n  users = [\n{}\n  ]\n}}\n",
        users.join(",\n")
    );
    std::fs::write(dir.join("nats.conf"), config).expect("write the server config");
}

const OBSERVER: (&str, &str) = ("observer", "watch-pw");
const BLUE: (&str, &str) = ("app-blue", "blue-pw-1");
const GREEN: (&str, &str) = ("app-green", "green-pw-2");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_under_load_fails_no_acquire_and_loses_no_message() {
    let server = AuthServer::start(&[OBSERVER, BLUE]).await;
    let provider = Arc::new(StaticCredentials::new(
        Credentials::new(BLUE.1).username(BLUE.0),
    ));
    let manager = ResourceManager::builder()
        .register_with(
            Nats,
            NatsConfig::new(server.url()).reconnect_max_delay(Duration::from_millis(50)),
            Policy::default()
                .credentials_shared(provider.clone())
                .health(HealthConfig::default().interval(Duration::from_millis(100))),
        )
        .build()
        .await
        .expect("connects with the blue user");

    // Without credentials the server refuses: it really checks them.
    let anonymous = NatsConfig::new(server.url());
    let refused = ResourceManager::builder()
        .register(Nats, anonymous)
        .build()
        .await
        .expect_err("no credentials, no connection");
    assert!(!refused.to_string().contains(BLUE.1), "{refused}");

    let watcher = async_nats::ConnectOptions::with_user_and_password(
        OBSERVER.0.to_owned(),
        OBSERVER.1.to_owned(),
    )
    .connect(server.url())
    .await
    .expect("the observer connects");
    let subject = common::unique("nebula.rotation");
    let mut inbox = watcher.subscribe(subject.clone()).await.unwrap();
    common::synced(&watcher).await;

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (manager, subject) = (manager.clone(), subject.clone());
        let (stop, published) = (Arc::clone(&stop), Arc::clone(&published));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let nats = manager
                    .acquire::<Nats>()
                    .await
                    .expect("no acquire fails because of a rotation");
                nats.publish_bounded(subject.clone(), "m".into())
                    .await
                    .expect("no publish fails because of a rotation");
                published.fetch_add(1, Ordering::Relaxed);
                drop(nats);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The server learns the new user; the application rotates to it; the server forgets the
    // old one.
    server.set_users(&[OBSERVER, BLUE, GREEN]).await;
    provider.set(Credentials::new(GREEN.1).username(GREEN.0));
    assert_eq!(manager.rotate_credentials::<Nats>().await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.set_users(&[OBSERVER, GREEN]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::Relaxed);
    for task in load {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("no load task hangs")
            .expect("no acquire or publish failed");
    }
    let nats = manager.acquire::<Nats>().await.unwrap();
    nats.flush_bounded()
        .await
        .expect("the new client is connected as the green user");
    drop(nats);

    let published = published.load(Ordering::Relaxed);
    let mut received = 0;
    while received < published {
        match tokio::time::timeout(Duration::from_secs(5), inbox.next()).await {
            Ok(Some(_)) => received += 1,
            _ => break,
        }
    }
    assert_eq!(
        received, published,
        "every message published across the rotation arrived"
    );

    let pool = manager.status().resource("nats").unwrap().pool;
    assert_eq!((pool.created, pool.destroyed), (2, 1), "{pool:?}");
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}
