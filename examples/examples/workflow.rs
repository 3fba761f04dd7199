//! A workflow engine's use of scopes: every execution gets a step journal of its own, created on
//! the execution's first acquire and flushed into a shared SQLite database when the engine ends
//! the execution's scope. No server needed.
//!
//! - `Sqlite` (global): the engine's database, an in-memory SQLite shared by its pool;
//! - `Journal` (execution scope): one buffer per execution, which depends on the database and
//!   writes its lines there when it is destroyed at `end_scope`.
//!
//! ```text
//! cargo run -p nebula-resource-examples --example workflow
//! ```
#![allow(clippy::print_stdout, reason = "an example prints what it does")]

use std::time::Duration;

use nebula_resource::{
    BoxError, Config, Context, CreateContext, Dependencies, Error, Handle, Policy, PoolConfig,
    Resource, ResourceManager, Scope,
};
use nebula_resource_sqlite::sqlx;
use nebula_resource_sqlite::{Sqlite, SqliteConfig};

#[derive(Clone, Default)]
struct JournalConfig;

impl Config for JournalConfig {}

/// One execution's journal of steps.
struct Journal;

/// The lines of one execution, and where to write them when the execution ends.
struct Entries {
    tenant: String,
    execution: String,
    lines: Vec<String>,
    database: Handle<Sqlite>,
}

impl Resource for Journal {
    type Config = JournalConfig;
    type Instance = Entries;
    const KEY: &'static str = "journal";

    fn dependencies() -> Dependencies {
        Dependencies::none().on::<Sqlite>()
    }

    async fn create(&self, _: &JournalConfig, ctx: &CreateContext) -> Result<Entries, Error> {
        Ok(Entries {
            tenant: ctx.tenant().map_or("-", |t| t.as_str()).to_owned(),
            execution: ctx.execution().unwrap_or("-").to_owned(),
            lines: Vec::new(),
            database: ctx.dependency::<Sqlite>()?,
        })
    }

    /// The execution ended: its lines go to the database in one transaction.
    async fn destroy(&self, entries: Entries) {
        let written = async {
            let mut conn = entries.database.acquire().await?;
            for (step, line) in entries.lines.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO journal (tenant, execution, step, line) VALUES (?, ?, ?, ?)",
                )
                .bind(&entries.tenant)
                .bind(&entries.execution)
                .bind(i64::try_from(step).unwrap_or(i64::MAX))
                .bind(line)
                .execute(&mut *conn)
                .await?;
            }
            Ok::<_, BoxError>(())
        };
        if let Err(err) = written.await {
            eprintln!("journal of {} lost: {err}", entries.execution);
        }
    }
}

/// One execution: three steps, each writing to the execution's own journal.
async fn execute(manager: ResourceManager, ctx: Context) -> Result<(), Error> {
    for step in ["fetch", "transform", "store"] {
        let mut journal = manager.acquire_in::<Journal>(&ctx).await?;
        journal.lines.push(format!("{step} done"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The engine ends the execution: its journal is destroyed, which writes it out.
    manager.end_scope(&ctx).await
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let manager = ResourceManager::builder()
        .register(Sqlite, SqliteConfig::in_memory())
        .register_with(
            Journal,
            JournalConfig,
            // One journal per execution.
            Policy::default()
                .scope(Scope::Execution)
                .pool(PoolConfig::default().max_size(1)),
        )
        .build()
        .await?;
    {
        let mut conn = manager.acquire::<Sqlite>().await?;
        sqlx::query("CREATE TABLE journal (tenant TEXT, execution TEXT, step INTEGER, line TEXT)")
            .execute(&mut *conn)
            .await
            .map_err(Error::create)?;
    }

    let runs: Vec<_> = [("acme", "exec-1"), ("acme", "exec-2"), ("globex", "exec-1")]
        .into_iter()
        .map(|(tenant, execution)| {
            let ctx = Context::tenant(tenant)
                .with_workflow("nightly-import")
                .with_execution(execution);
            tokio::spawn(execute(manager.clone(), ctx))
        })
        .collect();
    for run in runs {
        run.await.map_err(Error::create)??;
    }
    let status = manager.status();
    if let Some(journal) = status.resource("journal") {
        println!(
            "every execution ended: {} journals alive, {} destroyed",
            journal.scopes, journal.pool.destroyed
        );
    }

    let mut conn = manager.acquire::<Sqlite>().await?;
    let rows: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT tenant, execution, step, line FROM journal ORDER BY tenant, execution, step",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(Error::create)?;
    drop(conn);
    for (tenant, execution, step, line) in rows {
        println!("{tenant}/{execution} step {step}: {line}");
    }
    manager.shutdown(Duration::from_secs(5)).await
}
