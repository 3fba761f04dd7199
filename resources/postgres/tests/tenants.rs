//! Per-tenant pools against the real server: each tenant is mapped to a database of its own
//! (created by the test), and under concurrent load every connection a tenant gets reports its
//! own `current_database()`.

use std::time::Duration;

use nebula_resource::{Context, Error, Policy, PoolConfig, ResourceManager, Tenancy, TenantId};
use nebula_resource_postgres::sqlx::{self, Connection};
use nebula_resource_postgres::{Postgres, PostgresConfig};

const TENANTS: usize = 6;

fn admin_url() -> String {
    std::env::var("NEBULA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn database_of(tenant: &str) -> String {
    format!(
        "nebula_tenant_{}_{}",
        std::process::id(),
        tenant.replace('-', "_")
    )
}

/// The server part of `admin_url()`, without the database.
fn server() -> String {
    let url = admin_url();
    url.rsplit_once('/')
        .map_or(url.clone(), |(server, _)| server.to_owned())
}

async fn admin() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&admin_url())
        .await
        .unwrap_or_else(|err| panic!("PostgreSQL at {} must be reachable: {err}", admin_url()))
}

/// Drops the tenants' databases however the test ends.
struct DropDatabases(Vec<String>);

impl Drop for DropDatabases {
    fn drop(&mut self) {
        let databases = std::mem::take(&mut self.0);
        let url = admin_url();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&url).await {
                    for database in databases {
                        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
                        )))
                        .execute(&mut admin)
                        .await;
                    }
                }
            });
        })
        .join()
        .expect("drop the tenant databases");
    }
}

/// Create (afresh) a database for each of `tenants`; they are dropped when the returned guard
/// drops.
async fn create_databases(admin: &mut sqlx::PgConnection, tenants: &[String]) -> DropDatabases {
    let databases: Vec<String> = tenants.iter().map(|t| database_of(t)).collect();
    let cleanup = DropDatabases(databases.clone());
    for database in &databases {
        // One statement each: DROP/CREATE DATABASE cannot run in a (multi-statement) block.
        for statement in [
            format!("DROP DATABASE IF EXISTS {database}"),
            format!("CREATE DATABASE {database}"),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut *admin)
                .await
                .expect("create a tenant database");
        }
    }
    cleanup
}

/// 48 tasks, `rounds` acquires each, cycling through `tenants`: every acquire runs `query`
/// (which returns `current_database()`) and checks the database is its tenant's.
async fn load(manager: &ResourceManager, tenants: &[String], rounds: usize, query: &'static str) {
    let tasks: Vec<_> = (0..48)
        .map(|task| {
            let manager = manager.clone();
            let tenants = tenants.to_vec();
            tokio::spawn(async move {
                for round in 0..rounds {
                    let tenant = &tenants[(task + round) % tenants.len()];
                    let mut conn = manager
                        .acquire_in::<Postgres>(&Context::tenant(tenant.clone()))
                        .await
                        .expect("acquire");
                    let database: String = sqlx::query_scalar(query)
                        .fetch_one(&mut *conn)
                        .await
                        .expect("query");
                    assert_eq!(database, database_of(tenant), "tenant {tenant}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a load task failed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_gets_connections_to_its_own_database_under_load() {
    let tenants: Vec<String> = (0..TENANTS).map(|i| format!("t{i}")).collect();
    let mut admin = admin().await;
    let cleanup = create_databases(&mut admin, &tenants).await;
    let databases = cleanup.0.clone();

    let server = server();
    let manager = ResourceManager::builder()
        .register_per_tenant_with(
            Postgres,
            move |tenant: &TenantId| -> Result<PostgresConfig, Error> {
                Ok(PostgresConfig::new(format!(
                    "{server}/{}",
                    database_of(tenant.as_str())
                )))
            },
            Policy::default().pool(PoolConfig::default().max_size(3)),
            Tenancy::default(),
        )
        .build()
        .await
        .expect("build");

    load(&manager, &tenants, 20, "SELECT current_database()").await;

    let status = manager.status();
    let entry = status.resource("postgres").expect("status");
    assert_eq!(entry.tenants.len(), TENANTS);
    for tenant in &entry.tenants {
        assert!(tenant.pool.size <= 3, "{tenant:?}");
        assert_eq!(tenant.pool.in_use, 0, "{tenant:?}");
    }
    // The server agrees: every connection of each tenant database is one of its pool's.
    for database in &databases {
        let connections: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                .bind(database)
                .fetch_one(&mut admin)
                .await
                .expect("pg_stat_activity");
        assert!((1..=3).contains(&connections), "{database}: {connections}");
    }
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
}

/// `Tenancy::max_total_instances` against the server: six tenants whose pools could open 24
/// connections between them share a cap of 8 under a 48-task load. A sampler counts the
/// server's connections of this registration (by `application_name`) all along; every
/// tenant is served and the count never passes the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_cap_bounds_the_servers_connections_under_load() {
    const CAP: usize = 8;
    let tenants: Vec<String> = (0..TENANTS).map(|i| format!("cap{i}")).collect();
    let _cleanup = create_databases(&mut admin().await, &tenants).await;
    let application = format!("nebula_cap_{}", std::process::id());

    let server = server();
    let name = application.clone();
    let manager = ResourceManager::builder()
        .register_per_tenant_with(
            Postgres,
            move |tenant: &TenantId| -> Result<PostgresConfig, Error> {
                Ok(
                    PostgresConfig::new(format!("{server}/{}", database_of(tenant.as_str())))
                        .application_name(name.clone()),
                )
            },
            Policy::default().pool(
                PoolConfig::default()
                    .max_size(4)
                    .acquire_timeout(Duration::from_secs(20)),
            ),
            Tenancy::default().max_total_instances(CAP),
        )
        .build()
        .await
        .expect("build");

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = std::sync::Arc::clone(&done);
        let application = application.clone();
        tokio::spawn(async move {
            let mut observer = admin().await;
            let mut most = 0_i64;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let connections: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                )
                .bind(&application)
                .fetch_one(&mut observer)
                .await
                .expect("pg_stat_activity");
                most = most.max(connections);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            most
        })
    };

    load(
        &manager,
        &tenants,
        15,
        "SELECT current_database() FROM (SELECT pg_sleep(0.002)) AS held",
    )
    .await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let most = sampler.await.expect("sampler");
    assert!(
        (1..=CAP as i64).contains(&most),
        "{most} server connections at once, cap {CAP}"
    );
    let status = manager.status();
    let entry = status.resource("postgres").expect("status");
    assert_eq!(entry.tenants.len(), TENANTS, "every tenant was served");
    assert!(entry.pool.size <= CAP, "{:?}", entry.pool);
    assert_eq!(entry.pool.max_size, CAP);
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    eprintln!("most server connections at once: {most} (cap {CAP})");
}
