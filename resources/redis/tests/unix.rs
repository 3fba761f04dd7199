//! Both resources over a Unix socket: a server of this test's own (`redis-server --port 0
//! --unixsocket …`), stopped when the test ends.
#![cfg(unix)]

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nebula_resource::ResourceManager;
use nebula_resource_redis::redis::{self, AsyncCommands};
use nebula_resource_redis::{Redis, RedisConfig, RedisDedicated};

/// A `redis-server` child listening only on a Unix socket; killed on drop.
struct SocketServer {
    child: Child,
    path: PathBuf,
}

impl SocketServer {
    fn start() -> Self {
        let path = std::env::temp_dir().join(format!("nebula-redis-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&path)
            .args(["--save", "", "--appendonly", "no", "--databases", "4"])
            .stdout(Stdio::null())
            .spawn()
            .expect("run redis-server (the Redis tests need it installed)");
        let server = Self { child, path };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&server.path).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {}",
                server.path.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_resources_work_over_a_unix_socket() {
    let server = SocketServer::start();
    let url = format!("unix://{}?db=2", server.path.display());
    let config = RedisConfig::new(url).client_name("nebula-unix-test");
    let manager = ResourceManager::builder()
        .register(Redis, config.clone())
        .register(RedisDedicated, config)
        .build()
        .await
        .unwrap();

    let mut shared = manager.acquire::<Redis>().await.unwrap();
    shared
        .set::<_, _, ()>("unix-key", "over a socket")
        .await
        .unwrap();
    let mut own = manager.acquire::<RedisDedicated>().await.unwrap();
    assert_eq!(
        own.get::<_, String>("unix-key").await.unwrap(),
        "over a socket"
    );
    for info in [
        redis::cmd("CLIENT")
            .arg("INFO")
            .query_async::<String>(&mut *shared)
            .await
            .unwrap(),
        redis::cmd("CLIENT")
            .arg("INFO")
            .query_async::<String>(&mut *own)
            .await
            .unwrap(),
    ] {
        assert!(info.contains(" db=2 "), "{info}");
        assert!(info.contains(" name=nebula-unix-test "), "{info}");
        assert!(info.contains(" flags=U "), "a Unix socket client: {info}");
    }
    drop((shared, own));
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}
