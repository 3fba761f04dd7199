//! Credential rotation and live reconfiguration: a new generation under load, with no failed
//! acquire and no old-generation instance left once the guards are back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use nebula_resource::{
    Config, CreateContext, Credentials, Error, ErrorKind, Event, Policy, PoolConfig, Resource,
    ResourceManager, StaticCredentials, Topology,
};
use parking_lot::Mutex;

#[derive(Clone, Debug, PartialEq)]
struct DbConfig {
    database: String,
}

impl Config for DbConfig {
    fn validate(&self) -> Result<(), Error> {
        if self.database.is_empty() {
            return Err(Error::config("database", "must not be empty"));
        }
        Ok(())
    }
}

/// Instances alive, by (database, password) they were made with.
type Alive = Arc<Mutex<HashMap<(String, String), usize>>>;

struct Conn {
    database: String,
    password: String,
    alive: Alive,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut alive = self.alive.lock();
        let key = (self.database.clone(), self.password.clone());
        if let Some(n) = alive.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                alive.remove(&key);
            }
        }
    }
}

#[derive(Clone, Default)]
struct Db {
    alive: Alive,
}

impl Db {
    fn alive(&self) -> Vec<(String, String)> {
        let mut keys: Vec<_> = self.alive.lock().keys().cloned().collect();
        keys.sort();
        keys
    }
}

impl Resource for Db {
    type Config = DbConfig;
    type Instance = Conn;
    const KEY: &'static str = "db";

    async fn create(&self, config: &DbConfig, ctx: &CreateContext) -> Result<Conn, Error> {
        let credentials = ctx
            .credentials()
            .ok_or_else(|| Error::create("no credentials"))?;
        let password = credentials.secret().expose().to_owned();
        tokio::task::yield_now().await;
        *self
            .alive
            .lock()
            .entry((config.database.clone(), password.clone()))
            .or_default() += 1;
        Ok(Conn {
            database: config.database.clone(),
            password,
            alive: Arc::clone(&self.alive),
        })
    }
}

async fn build(db: &Db, provider: Arc<StaticCredentials>) -> ResourceManager {
    ResourceManager::builder()
        .register_with(
            db.clone(),
            DbConfig {
                database: "orders".into(),
            },
            Policy::default()
                .pool(PoolConfig::default().max_size(8).min_idle(4))
                .credentials_shared(provider),
        )
        .build()
        .await
        .expect("build")
}

/// 32 tasks acquire and hold across a yield until `stop`; every acquire must succeed.
fn load(manager: &ResourceManager, stop: &Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..32)
        .map(|_| {
            let manager = manager.clone();
            let stop = Arc::clone(stop);
            tokio::spawn(async move {
                let mut done = 0;
                while !stop.load(Ordering::Relaxed) {
                    let conn = manager
                        .acquire::<Db>()
                        .await
                        .expect("no acquire fails during a rotation");
                    tokio::task::yield_now().await;
                    drop(conn);
                    done += 1;
                }
                done
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_fails_no_acquire_and_leaves_no_old_instance() {
    let db = Db::default();
    let provider = Arc::new(StaticCredentials::new(
        Credentials::new("old-password").username("app"),
    ));
    let manager = build(&db, Arc::clone(&provider)).await;
    let mut events = manager.events();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&manager, &stop);
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Same answer: nothing rotates.
    assert_eq!(manager.rotate_credentials::<Db>().await.unwrap(), 0);
    provider.set(Credentials::new("new-password").username("app"));
    assert_eq!(manager.rotate_credentials::<Db>().await.unwrap(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("load task");
    }
    assert!(total > 100, "{total} acquires");

    // Guards are back: every instance alive was made with the new password.
    let alive = db.alive();
    assert!(!alive.is_empty());
    assert!(
        alive.iter().all(|(_, password)| password == "new-password"),
        "{alive:?}"
    );
    let mut rotated = 0;
    while let Ok(event) = events.try_recv() {
        if matches!(event, Event::CredentialsRotated(ref s) if s.key == "db") {
            rotated += 1;
        }
    }
    assert_eq!(rotated, 1);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
    assert!(db.alive().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconfigure_under_load_switches_generation_without_failing_an_acquire() {
    let db = Db::default();
    let provider = Arc::new(StaticCredentials::new(Credentials::new("pw")));
    let manager = build(&db, provider).await;
    let held = manager.acquire::<Db>().await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = load(&manager, &stop);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let err = manager
        .reconfigure::<Db>(DbConfig {
            database: String::new(),
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("database"), "{err}");
    assert!(err.to_string().contains("db"), "{err}");

    manager
        .reconfigure::<Db>(DbConfig {
            database: "orders_v2".into(),
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The guard held across the change still works, with its old database.
    assert_eq!(held.database, "orders");
    drop(held);
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("load task");
    }
    let alive = db.alive();
    assert!(
        alive.iter().all(|(database, _)| database == "orders_v2"),
        "{alive:?}"
    );
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_near_expiry_are_refreshed_by_maintenance() {
    let db = Db::default();
    let soon = SystemTime::now() + Duration::from_secs(5);
    let provider = Arc::new(StaticCredentials::new(
        Credentials::new("expiring").expires_at(soon),
    ));
    let manager = ResourceManager::builder()
        .register_with(
            db.clone(),
            DbConfig {
                database: "orders".into(),
            },
            Policy::default()
                .pool(
                    PoolConfig::default()
                        .min_idle(2)
                        .maintenance_interval(Duration::from_millis(20)),
                )
                .credentials_shared(Arc::clone(&provider) as _),
        )
        .build()
        .await
        .unwrap();
    let mut events = manager.events();
    provider.set(Credentials::new("renewed"));
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::CredentialsRotated(_)) = events.recv().await {
                return;
            }
        }
    })
    .await
    .expect("rotated before expiry");
    let conn = manager.acquire::<Db>().await.unwrap();
    assert_eq!(conn.password, "renewed");
    drop(conn);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

struct Failing;

impl nebula_resource::CredentialProvider for Failing {
    fn fetch<'a>(
        &'a self,
        _tenant: Option<&'a nebula_resource::TenantId>,
    ) -> nebula_resource::CredentialFuture<'a> {
        Box::pin(async { Err(Error::create("vault sealed")) })
    }
}

#[tokio::test]
async fn a_provider_error_fails_the_create_and_says_so() {
    let err = ResourceManager::builder()
        .register_with(
            Db::default(),
            DbConfig {
                database: "orders".into(),
            },
            Policy::default()
                .pool(PoolConfig::default().min_idle(1))
                .retry(nebula_resource::RetryPolicy::none())
                .credentials(Failing),
        )
        .build()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("vault sealed"), "{text}");
    assert!(text.contains("fetching credentials"), "{text}");
    assert!(text.contains("db"), "{text}");
}

#[derive(Clone)]
struct Client;

impl Resource for Client {
    type Config = DbConfig;
    type Instance = String;
    const KEY: &'static str = "client";
    const TOPOLOGY: Topology = Topology::Resident;

    async fn create(&self, config: &DbConfig, _ctx: &CreateContext) -> Result<String, Error> {
        Ok(config.database.clone())
    }

    fn share(&self, instance: &String) -> Option<String> {
        Some(instance.clone())
    }
}

#[tokio::test]
async fn a_resident_is_recreated_with_the_new_config() {
    let manager = ResourceManager::builder()
        .register(
            Client,
            DbConfig {
                database: "one".into(),
            },
        )
        .build()
        .await
        .unwrap();
    let old = manager.acquire::<Client>().await.unwrap();
    manager
        .reconfigure::<Client>(DbConfig {
            database: "two".into(),
        })
        .unwrap();
    assert_eq!(*manager.acquire::<Client>().await.unwrap(), "two");
    assert_eq!(*old, "one", "a handle given out before keeps working");
    drop(old);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// A provider that hangs while `hung` is set, and answers otherwise.
struct HangingProvider {
    hung: AtomicBool,
}

impl nebula_resource::CredentialProvider for HangingProvider {
    fn fetch<'a>(
        &'a self,
        _tenant: Option<&'a nebula_resource::TenantId>,
    ) -> nebula_resource::CredentialFuture<'a> {
        let hung = self.hung.load(Ordering::SeqCst);
        Box::pin(async move {
            if hung {
                std::future::pending::<()>().await;
            }
            Ok(Credentials::new("recovered-password"))
        })
    }
}

/// Regression (faults #4): one hung credential fetch (no timeout, the fetch lock held across
/// it, and the hung create still counted as covering the waiters) wedged the pool: acquires
/// timed out forever after the provider recovered, and shutdown failed.
#[tokio::test(start_paused = true)]
async fn a_hung_credential_fetch_does_not_wedge_the_pool_once_the_provider_recovers() {
    let db = Db::default();
    let provider = Arc::new(HangingProvider {
        hung: AtomicBool::new(true),
    });
    let manager = ResourceManager::builder()
        .register_with(
            db.clone(),
            DbConfig {
                database: "orders".into(),
            },
            Policy::default()
                .pool(
                    PoolConfig::default()
                        .max_size(2)
                        .create_timeout(Duration::from_secs(1))
                        .acquire_timeout(Duration::from_secs(2)),
                )
                .retry(nebula_resource::RetryPolicy::none())
                .breaker(nebula_resource::BreakerConfig::disabled())
                .health(nebula_resource::HealthConfig::disabled())
                .credentials_shared(provider.clone()),
        )
        .build()
        .await
        .expect("build");

    // The provider hangs: this acquire cannot be served.
    let first = tokio::time::timeout(Duration::from_secs(5), manager.acquire::<Db>())
        .await
        .expect("the acquire is bounded by its timeouts");
    assert!(first.is_err());

    // The provider recovers: the pool serves again.
    provider.hung.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let conn = tokio::time::timeout(Duration::from_secs(5), manager.acquire::<Db>())
        .await
        .expect("the acquire is bounded by its timeouts")
        .expect("served once the provider recovered");
    assert_eq!(conn.password, "recovered-password");
    drop(conn);
    manager
        .shutdown(Duration::from_secs(2))
        .await
        .expect("nothing in use: shutdown succeeds");
    assert!(db.alive().is_empty(), "{:?}", db.alive());
}

/// A provider whose `fetch` panics in its body, before it returns its future, on the first call.
struct PanicsOnce(AtomicBool);

impl nebula_resource::CredentialProvider for PanicsOnce {
    fn fetch<'a>(
        &'a self,
        _tenant: Option<&'a nebula_resource::TenantId>,
    ) -> nebula_resource::CredentialFuture<'a> {
        if !self.0.swap(true, Ordering::SeqCst) {
            panic!("vault client bug");
        }
        Box::pin(async { Ok(Credentials::new("s3cret")) })
    }
}

/// A panicking credential provider killed the create task: the waiter it was for waited out its
/// whole `acquire_timeout` with room free. Now the panic is the create's error, at once, and the
/// next acquire is served once the provider works.
#[tokio::test(start_paused = true)]
async fn a_panicking_credential_provider_fails_the_acquire_at_once_and_recovers() {
    let manager = ResourceManager::builder()
        .register_with(
            Db::default(),
            DbConfig {
                database: "orders".into(),
            },
            Policy::default()
                .pool(PoolConfig::default().acquire_timeout(Duration::from_secs(30)))
                .retry(nebula_resource::RetryPolicy::none())
                .credentials(PanicsOnce(AtomicBool::new(false))),
        )
        .build()
        .await
        .expect("build");
    let started = tokio::time::Instant::now();
    let err = match manager.acquire::<Db>().await {
        Ok(_) => panic!("the first fetch panics"),
        Err(err) => err,
    };
    assert_eq!(err.kind(), ErrorKind::Create, "{err}");
    assert!(err.to_string().contains("vault client bug"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    let conn = manager
        .acquire::<Db>()
        .await
        .expect("served once the provider works");
    assert_eq!(conn.password, "s3cret");
    drop(conn);
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}
