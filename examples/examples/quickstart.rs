//! Quickstart: a user directory over a SQL database with a read-through cache, three resources
//! in a dependency DAG.
//!
//! - the database: SQLite in memory by default, PostgreSQL when `DATABASE_URL` is set;
//! - the cache: in-process (moka) by default, Redis when `REDIS_URL` is set;
//! - `Users`: a repository that depends on both, created after them.
//!
//! ```text
//! cargo run -p nebula-resource-examples --example quickstart
//! DATABASE_URL=postgres://postgres@127.0.0.1/test REDIS_URL=redis://127.0.0.1 \
//!     cargo run -p nebula-resource-examples --example quickstart
//! ```
#![allow(clippy::print_stdout, reason = "an example prints what it does")]

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use nebula_resource::{
    Config, CreateContext, Dependencies, Error, Handle, Policy, PoolConfig, Resource,
    ResourceManager, redact_url,
};
use nebula_resource_cache::{Cache, CacheConfig};
use nebula_resource_postgres::{Postgres, PostgresConfig};
use nebula_resource_redis::redis::AsyncCommands;
use nebula_resource_redis::{Redis, RedisConfig};
use nebula_resource_sqlite::sqlx;
use nebula_resource_sqlite::{Sqlite, SqliteConfig};

/// The users every run starts with.
const SEED: [(i64, &str); 3] = [(1, "ada"), (2, "grace"), (3, "barbara")];

/// What the repository needs of a SQL database resource.
trait Database: Resource {
    fn seed(conn: &mut Self::Instance) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    fn name(
        conn: &mut Self::Instance,
        id: i64,
    ) -> impl Future<Output = Result<Option<String>, sqlx::Error>> + Send;
}

impl Database for Sqlite {
    async fn seed(conn: &mut Self::Instance) -> Result<(), sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS quickstart_users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        for (id, name) in SEED {
            sqlx::query("INSERT OR IGNORE INTO quickstart_users (id, name) VALUES (?, ?)")
                .bind(id)
                .bind(name)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    async fn name(conn: &mut Self::Instance, id: i64) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT name FROM quickstart_users WHERE id = ?")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
    }
}

impl Database for Postgres {
    async fn seed(conn: &mut Self::Instance) -> Result<(), sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS quickstart_users (id BIGINT PRIMARY KEY, name TEXT NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
        for (id, name) in SEED {
            sqlx::query(
                "INSERT INTO quickstart_users (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
            )
            .bind(id)
            .bind(name)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn name(conn: &mut Self::Instance, id: i64) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT name FROM quickstart_users WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
    }
}

/// What the repository needs of a cache resource.
trait Lookaside: Resource {
    fn get(
        cache: &mut Self::Instance,
        id: i64,
    ) -> impl Future<Output = Result<Option<String>, Error>> + Send;
    fn put(
        cache: &mut Self::Instance,
        id: i64,
        name: String,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

impl Lookaside for Cache<i64, String> {
    async fn get(cache: &mut Self::Instance, id: i64) -> Result<Option<String>, Error> {
        Ok(cache.get(&id).await)
    }

    async fn put(cache: &mut Self::Instance, id: i64, name: String) -> Result<(), Error> {
        cache.insert(id, name).await;
        Ok(())
    }
}

impl Lookaside for Redis {
    async fn get(cache: &mut Self::Instance, id: i64) -> Result<Option<String>, Error> {
        cache
            .get(format!("quickstart:user:{id}"))
            .await
            .map_err(Error::check)
    }

    async fn put(cache: &mut Self::Instance, id: i64, name: String) -> Result<(), Error> {
        cache
            .set_ex(format!("quickstart:user:{id}"), name, 60)
            .await
            .map_err(Error::check)
    }
}

/// A repository over the database, with a read-through cache.
struct UserRepo<D: Resource, C: Resource> {
    db: Handle<D>,
    cache: Handle<C>,
}

impl<D: Database, C: Lookaside> UserRepo<D, C> {
    async fn name(&self, id: i64) -> Result<Option<String>, Error> {
        let mut cache = self.cache.acquire().await?;
        if let Some(hit) = C::get(&mut cache, id).await? {
            return Ok(Some(hit));
        }
        let mut conn = self.db.acquire().await?;
        let found = D::name(&mut conn, id).await.map_err(Error::check)?;
        drop(conn);
        if let Some(name) = &found {
            C::put(&mut cache, id, name.clone()).await?;
        }
        Ok(found)
    }
}

#[derive(Clone, Default)]
struct UsersConfig;

impl Config for UsersConfig {}

/// The repository resource: created once both its dependencies are ready.
struct Users<D, C>(PhantomData<fn() -> (D, C)>);

impl<D: Database, C: Lookaside> Resource for Users<D, C> {
    type Config = UsersConfig;
    type Instance = UserRepo<D, C>;
    const KEY: &'static str = "users";

    fn dependencies() -> Dependencies {
        Dependencies::none().on::<D>().on::<C>()
    }

    async fn create(
        &self,
        _config: &UsersConfig,
        ctx: &CreateContext,
    ) -> Result<UserRepo<D, C>, Error> {
        let db = ctx.dependency::<D>()?;
        let mut conn = db.acquire().await?;
        D::seed(&mut conn).await.map_err(Error::create)?;
        drop(conn);
        Ok(UserRepo {
            db,
            cache: ctx.dependency::<C>()?,
        })
    }
}

async fn run<D: Database, C: Lookaside>(
    database: D,
    database_config: D::Config,
    cache: C,
    cache_config: C::Config,
) -> Result<(), Error> {
    let manager = ResourceManager::builder()
        .register(Users::<D, C>(PhantomData), UsersConfig)
        .register_with(
            database,
            database_config,
            Policy::default().pool(
                PoolConfig::default()
                    .max_size(4)
                    .min_idle(1)
                    .acquire_timeout(Duration::from_secs(2)),
            ),
        )
        .register(cache, cache_config)
        .build()
        .await?;

    let users = manager.handle::<Users<D, C>>()?;
    let repo = users.acquire().await?;
    for id in [1, 2, 1, 3, 4] {
        match repo.name(id).await? {
            Some(name) => println!("user {id}: {name}"),
            None => println!("user {id}: not found"),
        }
    }
    drop(repo);

    println!();
    println!(
        "{:<16} {:<9} {:<8} {:<9} {:>4} {:>4} {:>6}  counters",
        "resource", "topology", "phase", "health", "size", "idle", "in use"
    );
    for resource in manager.status().resources {
        let counters: Vec<String> = resource
            .counters
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        println!(
            "{:<16} {:<9} {:<8} {:<9} {:>4} {:>4} {:>6}  {}",
            resource.key,
            format!("{:?}", resource.topology),
            format!("{:?}", resource.phase),
            resource.health.health.to_string(),
            resource.pool.size,
            resource.pool.idle,
            resource.pool.in_use,
            counters.join(" ")
        );
    }

    manager.shutdown(Duration::from_secs(5)).await?;
    println!("\nshut down: dependents first, every instance destroyed");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    let database_url = std::env::var("DATABASE_URL").ok();
    let redis_url = std::env::var("REDIS_URL").ok();
    println!(
        "database: {}; cache: {}\n",
        database_url
            .as_deref()
            .map_or_else(|| "SQLite in memory".to_owned(), redact_url),
        redis_url
            .as_deref()
            .map_or_else(|| "in-process (moka)".to_owned(), redact_url),
    );
    let local_cache = || (Cache::<i64, String>::new(), CacheConfig::new(10_000));
    match (database_url, redis_url) {
        (None, None) => {
            let (cache, config) = local_cache();
            run(Sqlite, SqliteConfig::in_memory(), cache, config).await
        }
        (None, Some(redis)) => {
            run(
                Sqlite,
                SqliteConfig::in_memory(),
                Redis,
                RedisConfig::new(redis),
            )
            .await
        }
        (Some(database), None) => {
            let (cache, config) = local_cache();
            run(Postgres, PostgresConfig::new(database), cache, config).await
        }
        (Some(database), Some(redis)) => {
            run(
                Postgres,
                PostgresConfig::new(database),
                Redis,
                RedisConfig::new(redis),
            )
            .await
        }
    }
}
