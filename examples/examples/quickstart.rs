//! Quickstart: three resources in a dependency DAG, no server needed.
//!
//! - `Store`: a pooled session to an in-process key-value store (the stand-in for a database);
//! - `Cache`: one resident cache shared by every acquirer;
//! - `Users`: a repository that depends on both, created after them.
//!
//! Run it with `cargo run -p nebula-resource-examples --example quickstart`.
#![allow(clippy::print_stdout, reason = "an example prints what it does")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nebula_resource::{
    Config, CreateContext, Dependencies, Error, Handle, Policy, PoolConfig, Resource,
    ResourceManager,
};

/// The in-process "database" every `Store` session talks to.
type Table = Arc<Mutex<HashMap<u32, String>>>;

#[derive(Clone)]
struct StoreConfig {
    table: Table,
}

impl Config for StoreConfig {}

/// A session to the store: exclusive while checked out, like a database connection.
struct Session {
    id: u64,
    table: Table,
}

impl Session {
    fn get(&self, key: u32) -> Option<String> {
        self.table.lock().ok()?.get(&key).cloned()
    }
}

struct Store {
    sessions: std::sync::atomic::AtomicU64,
}

impl Resource for Store {
    type Config = StoreConfig;
    type Instance = Session;
    const KEY: &'static str = "store";

    async fn create(&self, config: &StoreConfig, _ctx: &CreateContext) -> Result<Session, Error> {
        // A real driver would connect here; we pretend it takes a moment.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let id = self
            .sessions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Session {
            id,
            table: Arc::clone(&config.table),
        })
    }

    async fn check(&self, session: &mut Session) -> Result<(), Error> {
        session
            .table
            .lock()
            .map(drop)
            .map_err(|_| Error::check("store table poisoned"))
    }
}

#[derive(Clone)]
struct CacheConfig {
    capacity: usize,
}

impl Config for CacheConfig {
    fn validate(&self) -> Result<(), Error> {
        if self.capacity == 0 {
            return Err(Error::config("capacity", "must be at least 1"));
        }
        Ok(())
    }
}

/// A shared cache: every acquirer gets a clone of the same handle.
#[derive(Clone)]
struct CacheHandle {
    entries: Arc<Mutex<HashMap<u32, String>>>,
    capacity: usize,
}

struct Cache;

impl Resource for Cache {
    type Config = CacheConfig;
    type Instance = CacheHandle;
    const KEY: &'static str = "cache";
    const TOPOLOGY: nebula_resource::Topology = nebula_resource::Topology::Resident;

    async fn create(
        &self,
        config: &CacheConfig,
        _ctx: &CreateContext,
    ) -> Result<CacheHandle, Error> {
        Ok(CacheHandle {
            entries: Arc::default(),
            capacity: config.capacity,
        })
    }

    fn share(&self, cache: &CacheHandle) -> Option<CacheHandle> {
        Some(cache.clone())
    }
}

#[derive(Clone)]
struct UsersConfig;

impl Config for UsersConfig {}

/// A repository over the store, with a read-through cache.
struct UserRepo {
    store: Handle<Store>,
    cache: Handle<Cache>,
}

impl UserRepo {
    async fn name(&self, user: u32) -> Result<Option<String>, Error> {
        let cache = self.cache.acquire().await?;
        if let Some(hit) = cache
            .entries
            .lock()
            .ok()
            .and_then(|e| e.get(&user).cloned())
        {
            return Ok(Some(hit));
        }
        let session = self.store.acquire().await?;
        let found = session.get(user);
        if let (Some(name), Ok(mut entries)) = (&found, cache.entries.lock())
            && entries.len() < cache.capacity
        {
            entries.insert(user, name.clone());
        }
        Ok(found)
    }
}

struct Users;

impl Resource for Users {
    type Config = UsersConfig;
    type Instance = UserRepo;
    const KEY: &'static str = "users";

    fn dependencies() -> Dependencies {
        Dependencies::none().on::<Store>().on::<Cache>()
    }

    async fn create(&self, _config: &UsersConfig, ctx: &CreateContext) -> Result<UserRepo, Error> {
        Ok(UserRepo {
            store: ctx.dependency::<Store>()?,
            cache: ctx.dependency::<Cache>()?,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let table: Table = Arc::new(Mutex::new(
        [
            (1, "ada".to_owned()),
            (2, "grace".to_owned()),
            (3, "barbara".to_owned()),
        ]
        .into(),
    ));
    let manager = ResourceManager::builder()
        .register(Users, UsersConfig)
        .register_with(
            Store {
                sessions: Default::default(),
            },
            StoreConfig { table },
            Policy::default().pool(
                PoolConfig::default()
                    .max_size(4)
                    .min_idle(2)
                    .acquire_timeout(Duration::from_secs(2)),
            ),
        )
        .register(Cache, CacheConfig { capacity: 1024 })
        .build()
        .await?;
    println!("built: store and cache first, then users");

    // Sixteen concurrent "requests", each borrowing a repository and looking up users.
    let requests: Vec<_> = (0..16u32)
        .map(|i| {
            let users = manager.clone();
            tokio::spawn(async move {
                let repo = users.acquire::<Users>().await?;
                repo.name(i % 4 + 1).await
            })
        })
        .collect();
    let mut found = 0;
    for request in requests {
        if request
            .await
            .map_err(|e| Error::create(e.to_string()))??
            .is_some()
        {
            found += 1;
        }
    }
    println!("16 requests, {found} users found");

    let session = manager.acquire::<Store>().await?;
    println!(
        "holding store session {} for {:?}",
        session.id,
        session.hold_duration()
    );
    drop(session);

    println!(
        "\n{:<8} {:<9} {:<6} {:>5} {:>5} {:>7} {:>8} depends on",
        "resource", "topology", "phase", "size", "idle", "in use", "created"
    );
    for r in manager.status().resources {
        println!(
            "{:<8} {:<9} {:<6} {:>5} {:>5} {:>7} {:>8} {}",
            r.key,
            format!("{:?}", r.topology),
            format!("{:?}", r.phase),
            r.pool.size,
            r.pool.idle,
            r.pool.in_use,
            r.pool.created,
            r.dependencies.join(", ")
        );
    }

    manager.shutdown(Duration::from_secs(5)).await?;
    println!("\nshut down: users first, then store and cache");
    Ok(())
}
