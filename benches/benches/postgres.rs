//! PostgreSQL `SELECT 1` throughput and latency: nebula-resource-postgres against sqlx's own
//! pool and deadpool-postgres, on a real server.
//!
//! Contenders, every one a pool of 16 connections to the same server:
//!
//! - `ours`: the [`Postgres`] resource — `handle.acquire()`, `SELECT 1` through `&mut *conn`,
//!   drop the guard (a connection used only for plain statements goes back with no round trip);
//! - `sqlx`: sqlx's `PgPool` with `test_before_acquire(false)` — `pool.acquire()`, `SELECT 1`,
//!   drop (sqlx pings every connection when it is returned);
//! - `sqlx+test`: the same with `test_before_acquire(true)`, sqlx's default (one more ping on
//!   every acquire);
//! - `deadpool`: deadpool-postgres 0.14 with its default `RecyclingMethod::Fast` (no check, no
//!   reset) — `pool.get()`, `prepare_cached("SELECT 1")`, `execute`, drop.
//!
//! Every contender runs the statement as a cached prepared statement. For each task count (1,
//! 16, 64, 256), `tasks` tasks share a fixed number of operations on a 2-worker multi-thread
//! tokio runtime; each sample reports throughput (operations per second, wall clock) and the
//! 99th percentile of per-operation latency (acquire, statement, release). Contenders are
//! sampled round-robin, starting with a different one each round, so machine noise hits them
//! alike; a cell's figures are medians over its samples, and a ratio is the median of the
//! per-round ratios.
//!
//! ```text
//! cargo bench -p nebula-resource-benches --bench postgres
//! BENCH_OPS=5000 BENCH_SAMPLES=3 BENCH_TASKS=1,64 cargo bench -p nebula-resource-benches --bench postgres
//! ```
//!
//! Knobs (environment variables, see `nebula_resource_benches::Settings`): `BENCH_OPS`
//! (operations per sample, default 10000 here), `BENCH_SAMPLES` (default 7 here),
//! `BENCH_WARMUP_OPS` (default `ops / 4`), `BENCH_TASKS` (default `1,16,64,256`),
//! `BENCH_TIMEOUT_MS` (watchdog per sample); and `NEBULA_BENCH_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`).

#![allow(
    clippy::print_stdout,
    reason = "a harness = false bench reports on stdout"
)]

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nebula_resource::{Handle, Policy, PoolConfig, ResourceManager, redact_url};
use nebula_resource_benches::latency::{Cell, Sample, aligned, judged, ratios, show_ratio};
use nebula_resource_benches::{
    POOL_SIZE, Settings, WORKER_THREADS, bench_runtime, join_within, report_hang, settings_or_exit,
    split_ops,
};
use nebula_resource_postgres::{Postgres, PostgresConfig};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::task::JoinSet;

/// What this bench uses where the shared settings' defaults are sized for the in-memory pool
/// bench: a PostgreSQL round trip costs tens of microseconds, not tens of nanoseconds.
fn bench_default(name: &str) -> Option<String> {
    match name {
        "BENCH_OPS" => Some("10000".to_owned()),
        "BENCH_SAMPLES" => Some("7".to_owned()),
        _ => None,
    }
}

/// The statement every contender runs.
const STATEMENT: &str = "SELECT 1";

/// One pool under test.
trait Contender: Send + Sync + 'static {
    /// Acquire a connection, run [`STATEMENT`] on it, release it.
    fn op(&self) -> impl Future<Output = ()> + Send;
}

struct Ours(Handle<Postgres>);

impl Contender for Ours {
    async fn op(&self) {
        let mut conn = self.0.acquire().await.expect("acquire Postgres");
        sqlx::query(STATEMENT)
            .execute(&mut *conn)
            .await
            .expect("SELECT 1 (ours)");
    }
}

struct Sqlx(PgPool);

impl Contender for Sqlx {
    async fn op(&self) {
        let mut conn = self.0.acquire().await.expect("acquire from PgPool");
        sqlx::query(STATEMENT)
            .execute(&mut *conn)
            .await
            .expect("SELECT 1 (sqlx)");
    }
}

struct Deadpool(deadpool_postgres::Pool);

impl Contender for Deadpool {
    async fn op(&self) {
        let client = self.0.get().await.expect("get from deadpool-postgres");
        let statement = client
            .prepare_cached(STATEMENT)
            .await
            .expect("prepare SELECT 1 (deadpool)");
        client
            .execute(&statement, &[])
            .await
            .expect("SELECT 1 (deadpool)");
    }
}

/// The contenders, in table order.
const NAMES: [&str; 4] = ["ours", "sqlx", "sqlx+test", "deadpool"];

struct Pools {
    manager: ResourceManager,
    ours: Arc<Ours>,
    sqlx: Arc<Sqlx>,
    sqlx_tested: Arc<Sqlx>,
    deadpool: Arc<Deadpool>,
}

impl Pools {
    async fn connect(url: &str) -> Self {
        let config = PostgresConfig::new(url);
        let manager = ResourceManager::builder()
            .register_with(
                Postgres,
                config.clone(),
                Policy::default().pool(PoolConfig::default().max_size(POOL_SIZE)),
            )
            .build()
            .await
            .unwrap_or_else(|err| panic!("build the manager: {err}"));
        let ours = Ours(manager.handle::<Postgres>().expect("the Postgres handle"));
        // sqlx gets exactly the connection options our resource connects with.
        let options = config
            .connect_options()
            .unwrap_or_else(|err| panic!("connect options: {err}"));
        let max = u32::try_from(POOL_SIZE).expect("pool size fits in u32");
        let sqlx_pool = |test_before_acquire| {
            PgPoolOptions::new()
                .max_connections(max)
                .test_before_acquire(test_before_acquire)
                .connect_with(options.clone())
        };
        let sqlx = sqlx_pool(false).await.expect("connect a PgPool");
        let sqlx_tested = sqlx_pool(true).await.expect("connect a PgPool");
        let pg_config: tokio_postgres::Config = url.parse().expect("a tokio-postgres URL");
        let deadpool = deadpool_postgres::Pool::builder(deadpool_postgres::Manager::new(
            pg_config,
            tokio_postgres::NoTls,
        ))
        .max_size(POOL_SIZE)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .expect("build the deadpool-postgres pool");
        Self {
            manager,
            ours: Arc::new(ours),
            sqlx: Arc::new(Sqlx(sqlx)),
            sqlx_tested: Arc::new(Sqlx(sqlx_tested)),
            deadpool: Arc::new(Deadpool(deadpool)),
        }
    }

    async fn close(self) {
        self.manager
            .shutdown(Duration::from_secs(5))
            .await
            .expect("shut down the manager");
        self.sqlx.0.close().await;
        self.sqlx_tested.0.close().await;
        self.deadpool.0.close();
    }

    /// One sample of contender `index` (in [`NAMES`] order).
    async fn sample(
        &self,
        index: usize,
        tasks: usize,
        ops: u64,
        limit: Duration,
    ) -> Option<Sample> {
        match index {
            0 => run_sample(&self.ours, tasks, ops, limit).await,
            1 => run_sample(&self.sqlx, tasks, ops, limit).await,
            2 => run_sample(&self.sqlx_tested, tasks, ops, limit).await,
            _ => run_sample(&self.deadpool, tasks, ops, limit).await,
        }
    }
}

/// Spawn `tasks` tasks that together run `ops` operations on `contender`, timing each.
///
/// Returns `None` (after aborting and reaping the tasks) if they did not finish within `limit`.
/// Call it from outside the runtime's workers (the `block_on` future) so the timer does not
/// compete with the tasks it times.
async fn run_sample<C: Contender>(
    contender: &Arc<C>,
    tasks: usize,
    ops: u64,
    limit: Duration,
) -> Option<Sample> {
    let mut set = JoinSet::new();
    let start = Instant::now();
    for count in split_ops(ops, tasks) {
        let contender = Arc::clone(contender);
        set.spawn(async move {
            let mut latencies =
                Vec::with_capacity(usize::try_from(count).expect("ops fit in usize"));
            for _ in 0..count {
                let began = Instant::now();
                contender.op().await;
                latencies.push(began.elapsed());
            }
            latencies
        });
    }
    let tasks = join_within(set, limit).await?;
    let elapsed = start.elapsed();
    Some(Sample {
        elapsed,
        latencies: tasks.into_iter().flatten().collect(),
    })
}

struct Row {
    tasks: usize,
    cells: [Cell; 4],
}

async fn run_row(pools: &Pools, settings: &Settings, tasks: usize) -> Row {
    let mut cells: [Cell; 4] = Default::default();
    let rounds = std::iter::once(None).chain((1..=settings.samples).map(Some));
    for (round, sample) in rounds.enumerate() {
        let ops = if sample.is_some() {
            settings.ops
        } else {
            settings.warmup_ops
        };
        if ops == 0 {
            continue;
        }
        // Round-robin, starting one further each round.
        for step in 0..NAMES.len() {
            let index = (round + step) % NAMES.len();
            let outcome = pools.sample(index, tasks, ops, settings.timeout).await;
            report_hang(NAMES[index], settings, outcome.is_none());
            if sample.is_some() {
                cells[index].record(outcome);
            }
        }
    }
    Row { tasks, cells }
}

/// Render the rows as a table: one block of figures per contender, then our ratios.
fn render(rows: &[Row]) -> String {
    let mut headers = vec!["tasks".to_owned()];
    for name in NAMES {
        headers.push(format!("{name} ops/s"));
        headers.push("p99 µs".to_owned());
    }
    for peer in &NAMES[1..] {
        headers.push(format!("ours/{peer} ops"));
        headers.push(format!("ours/{peer} p99"));
    }
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let mut line = vec![row.tasks.to_string()];
            for cell in &row.cells {
                line.push(cell.show_ops());
                line.push(cell.show_p99());
            }
            let [ours, peers @ ..] = &row.cells;
            for peer in peers {
                let (throughput, latency) = ratios(ours, peer);
                line.push(show_ratio(throughput));
                line.push(show_ratio(latency));
            }
            line
        })
        .collect();
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    aligned(&headers, &body)
}

/// The verdict against the targets: ours ≥ 0.97× the raw driver's throughput and p99 ≤ 1.1×,
/// against sqlx's pool both without and with `test_before_acquire`.
fn verdict(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        let [ours, sqlx, sqlx_tested, _] = &row.cells;
        let mut parts = Vec::new();
        for (name, peer) in [("sqlx", sqlx), ("sqlx+test", sqlx_tested)] {
            parts.push(judged(name, ratios(ours, peer)));
        }
        let _ = writeln!(out, "  tasks={:<4} {}", row.tasks, parts.join("; "));
    }
    out
}

const HOW_TO_READ: &str = "\
How to read this table:
  * ops/s: operations (acquire, SELECT 1, release) per second of wall time, all tasks
    together; higher is better. p99 µs: 99th percentile of one operation's latency, in
    microseconds; lower is better. Each figure is the median over the samples of the cell.
  * ours/<peer> ops = our throughput divided by the peer's (> 1.000: we are faster);
    ours/<peer> p99 = our p99 divided by the peer's (< 1.000: our tail is shorter). A ratio is
    the median of the per-round ratios (every round samples all contenders back to back), so
    it can differ from the ratio of the two medians shown.
  * sqlx's pool pings every connection it gets back (and, with test_before_acquire, every one
    it hands out); deadpool-postgres by default neither checks nor resets; ours resets only a
    session that may have changed, and checks only connections idle for more than 500 ms.
  * The server runs on the same 2 cores as the 2-worker runtime: absolute figures are the
    machine's, the ratios are the point.";

fn main() {
    let settings = settings_or_exit("postgres", bench_default);
    let url = std::env::var("NEBULA_BENCH_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let runtime = bench_runtime();

    println!(
        "postgres: `{STATEMENT}` against {}, pools of {POOL_SIZE}, tokio multi-thread runtime \
         with {WORKER_THREADS} workers",
        redact_url(&url)
    );
    println!(
        "settings: ops/sample={} samples={} warmup ops={} tasks={:?} watchdog={:?}",
        settings.ops, settings.samples, settings.warmup_ops, settings.tasks, settings.timeout,
    );

    let rows = runtime.block_on(async {
        let pools = Pools::connect(&url).await;
        let mut rows = Vec::with_capacity(settings.tasks.len());
        for (index, &tasks) in settings.tasks.iter().enumerate() {
            eprintln!("[{}/{}] tasks={tasks}", index + 1, settings.tasks.len());
            rows.push(run_row(&pools, &settings, tasks).await);
        }
        pools.close().await;
        rows
    });

    println!();
    print!("{}", render(&rows));
    println!();
    println!(
        "Target: ours >= 0.97x the raw driver's (sqlx PgPool) throughput and p99 <= 1.1x, at \
         every task count:"
    );
    print!("{}", verdict(&rows));
    println!();
    println!("{HOW_TO_READ}");
    runtime.shutdown_timeout(Duration::from_secs(1));
}
