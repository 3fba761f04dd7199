//! Pool overhead under contention: nebula-resource vs deadpool, bb8 and qp.
//!
//! Every contender manages a trivial `u64` instance whose creation is
//! instantly `Ok`, with a pool of max size 16, so what is measured is the
//! pool's own acquire/release machinery. For each task count (1, 16, 64, 256)
//! and hold mode (release immediately / across one `yield_now`), `tasks` tasks
//! share a fixed number of acquire/release cycles on a 2-worker multi-thread
//! tokio runtime, and the wall time is reported as ns/op.
//!
//! Contenders are sampled round-robin so machine noise affects all of them
//! alike; the reported figure is the median over the samples. qp is known to
//! lose wake-ups under contention, so each qp sample runs under a watchdog
//! and a timed-out cell is reported as `hang`.
//!
//! ```text
//! cargo bench -p nebula-resource-benches --bench pool_overhead
//! BENCH_OPS=20000 BENCH_SAMPLES=3 cargo bench -p nebula-resource-benches --bench pool_overhead
//! ```
//!
//! Knobs (environment variables): `BENCH_OPS`, `BENCH_SAMPLES`,
//! `BENCH_WARMUP_OPS`, `BENCH_TASKS`, `BENCH_QP_TIMEOUT_FACTOR`,
//! `BENCH_QP_TIMEOUT_MS`, `BENCH_TIMEOUT_MS`; see
//! `nebula_resource_benches::Settings`.

#![allow(
    clippy::print_stdout,
    reason = "a harness = false bench reports on stdout"
)]

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use nebula_resource::{
    Config, CreateContext, Error, Guard, Policy, PoolConfig, Resource, ResourceManager,
};
use nebula_resource_benches::{
    Cell, Contender, HOW_TO_READ, Hold, POOL_SIZE, Row, Settings, WORKER_THREADS, render_table,
    run_sample,
};

// ---------------------------------------------------------------------------
// nebula-resource
// ---------------------------------------------------------------------------

#[derive(Clone, Default)]
struct BenchConfig;

impl Config for BenchConfig {}

/// Trivial resource: `create` is instantly `Ok`; check / is_broken / recycle /
/// destroy keep their defaults (what users get out of the box).
struct BenchResource;

impl Resource for BenchResource {
    type Config = BenchConfig;
    type Instance = u64;
    const KEY: &'static str = "bench";

    async fn create(&self, _config: &BenchConfig, _ctx: &CreateContext) -> Result<u64, Error> {
        Ok(0)
    }
}

#[derive(Clone)]
struct Ours(ResourceManager);

impl Ours {
    async fn new() -> Self {
        let manager = ResourceManager::builder()
            .register_with(
                BenchResource,
                BenchConfig,
                Policy::default().pool(PoolConfig::default().max_size(POOL_SIZE)),
            )
            .build()
            .await
            .expect("build nebula-resource manager");
        Self(manager)
    }

    async fn shutdown(self) {
        self.0
            .shutdown(Duration::from_secs(5))
            .await
            .expect("shut down nebula-resource manager");
    }
}

impl Contender for Ours {
    async fn cycle(&self, hold: Hold) {
        let guard: Guard<BenchResource> = self
            .0
            .acquire::<BenchResource>()
            .await
            .expect("nebula-resource acquire");
        black_box(*guard);
        hold.hold().await;
        drop(guard);
    }
}

// ---------------------------------------------------------------------------
// deadpool 0.13 (managed)
// ---------------------------------------------------------------------------

struct DeadpoolManager;

impl deadpool::managed::Manager for DeadpoolManager {
    type Type = u64;
    type Error = Infallible;

    async fn create(&self) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn recycle(
        &self,
        _obj: &mut u64,
        _metrics: &deadpool::managed::Metrics,
    ) -> deadpool::managed::RecycleResult<Infallible> {
        Ok(())
    }
}

#[derive(Clone)]
struct Deadpool(deadpool::managed::Pool<DeadpoolManager>);

impl Deadpool {
    fn new() -> Self {
        let pool = deadpool::managed::Pool::builder(DeadpoolManager)
            .max_size(POOL_SIZE)
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .expect("build deadpool pool");
        Self(pool)
    }
}

impl Contender for Deadpool {
    async fn cycle(&self, hold: Hold) {
        let object = self.0.get().await.expect("deadpool get");
        black_box(*object);
        hold.hold().await;
        drop(object);
    }
}

// ---------------------------------------------------------------------------
// bb8 0.9
// ---------------------------------------------------------------------------

struct Bb8Manager;

impl bb8::ManageConnection for Bb8Manager {
    type Connection = u64;
    type Error = Infallible;

    async fn connect(&self) -> Result<u64, Infallible> {
        Ok(0)
    }

    async fn is_valid(&self, _conn: &mut u64) -> Result<(), Infallible> {
        Ok(())
    }

    fn has_broken(&self, _conn: &mut u64) -> bool {
        false
    }
}

#[derive(Clone)]
struct Bb8(bb8::Pool<Bb8Manager>);

impl Bb8 {
    async fn new() -> Self {
        let pool = bb8::Pool::builder()
            .max_size(u32::try_from(POOL_SIZE).expect("pool size fits in u32"))
            .build(Bb8Manager)
            .await
            .expect("build bb8 pool");
        Self(pool)
    }
}

impl Contender for Bb8 {
    async fn cycle(&self, hold: Hold) {
        let conn = self.0.get().await.expect("bb8 get");
        black_box(*conn);
        hold.hold().await;
        drop(conn);
    }
}

// ---------------------------------------------------------------------------
// qp 0.2
// ---------------------------------------------------------------------------

struct QpManager;

#[qp::async_trait]
impl qp::resource::Manage for QpManager {
    type Output = u64;
    type Error = Infallible;

    async fn try_create(&self) -> Result<u64, Infallible> {
        Ok(0)
    }
}

#[derive(Clone)]
struct Qp(qp::Pool<QpManager>);

impl Qp {
    fn new() -> Self {
        Self(qp::Pool::new(QpManager, POOL_SIZE))
    }
}

impl Contender for Qp {
    async fn cycle(&self, hold: Hold) {
        let pooled = self.0.acquire().await.expect("qp acquire");
        black_box(*pooled);
        hold.hold().await;
        drop(pooled);
    }
}

// ---------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------

/// Fresh pools for one (tasks, hold) cell.
struct Pools {
    ours: Ours,
    deadpool: Deadpool,
    bb8: Bb8,
    qp: Qp,
}

impl Pools {
    async fn new() -> Self {
        Self {
            ours: Ours::new().await,
            deadpool: Deadpool::new(),
            bb8: Bb8::new().await,
            qp: Qp::new(),
        }
    }

    async fn close(self) {
        self.ours.shutdown().await;
        self.deadpool.0.close();
    }
}

/// One round: one sample of each contender, in table order, qp last so its
/// watchdog can scale with the others' times in the same round.
///
/// Returns the four outcomes (`None` = watchdog fired). A qp pool that hung is
/// replaced, since its aborted waiters may have left stale wakers behind.
async fn round(
    pools: &mut Pools,
    settings: &Settings,
    tasks: usize,
    ops: u64,
    hold: Hold,
    label: &str,
) -> [Option<Duration>; 4] {
    let ours = run_sample(&pools.ours, tasks, ops, hold, settings.timeout).await;
    let deadpool = run_sample(&pools.deadpool, tasks, ops, hold, settings.timeout).await;
    let bb8 = run_sample(&pools.bb8, tasks, ops, hold, settings.timeout).await;
    let slowest = [ours, deadpool, bb8].into_iter().flatten().max();
    let qp_limit = settings.qp_timeout(slowest);
    let qp = run_sample(&pools.qp, tasks, ops, hold, qp_limit).await;
    if qp.is_none() {
        eprintln!("    {label}: qp did not finish within {qp_limit:?}; aborted its tasks");
        pools.qp = Qp::new();
    }
    for (name, outcome) in [("ours", ours), ("deadpool", deadpool), ("bb8", bb8)] {
        if outcome.is_none() {
            eprintln!(
                "    {label}: {name} did not finish within {:?}; aborted its tasks",
                settings.timeout
            );
        }
    }
    [ours, deadpool, bb8, qp]
}

async fn run_cell(settings: &Settings, tasks: usize, hold: Hold) -> Row {
    let mut pools = Pools::new().await;
    if settings.warmup_ops > 0 {
        round(
            &mut pools,
            settings,
            tasks,
            settings.warmup_ops,
            hold,
            "warm-up",
        )
        .await;
    }
    let mut cells: [Cell; 4] = Default::default();
    for sample in 1..=settings.samples {
        let label = format!("sample {sample}/{}", settings.samples);
        let outcomes = round(&mut pools, settings, tasks, settings.ops, hold, &label).await;
        for (cell, outcome) in cells.iter_mut().zip(outcomes) {
            cell.record(outcome, settings.ops);
        }
    }
    pools.close().await;
    let [ours, deadpool, bb8, qp] = cells;
    Row {
        tasks,
        hold,
        ours,
        deadpool,
        bb8,
        qp,
    }
}

fn main() {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(message) => {
            eprintln!("pool_overhead: bad setting: {message}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .expect("build tokio runtime");

    println!(
        "pool_overhead: pool max size {POOL_SIZE}, trivial u64 instance, tokio multi-thread \
         runtime with {WORKER_THREADS} workers"
    );
    println!(
        "settings: ops/sample={} samples={} warmup ops={} tasks={:?} qp watchdog={}x slowest \
         other (min {:?}) other watchdog={:?}",
        settings.ops,
        settings.samples,
        settings.warmup_ops,
        settings.tasks,
        settings.qp_timeout_factor,
        settings.qp_timeout_floor,
        settings.timeout,
    );

    let cells: Vec<(usize, Hold)> = settings
        .tasks
        .iter()
        .flat_map(|&tasks| Hold::ALL.map(|hold| (tasks, hold)))
        .collect();
    let rows: Vec<Row> = runtime.block_on(async {
        let mut rows = Vec::with_capacity(cells.len());
        for (index, &(tasks, hold)) in cells.iter().enumerate() {
            eprintln!(
                "[{}/{}] tasks={tasks} hold={}",
                index + 1,
                cells.len(),
                hold.label()
            );
            rows.push(run_cell(&settings, tasks, hold).await);
        }
        rows
    });

    println!();
    print!("{}", render_table(&rows));
    for row in &rows {
        for (name, cell) in [
            ("ours", &row.ours),
            ("deadpool", &row.deadpool),
            ("bb8", &row.bb8),
            ("qp", &row.qp),
        ] {
            if cell.hung > 0 {
                let completed = nebula_resource_benches::median(&cell.samples)
                    .map_or_else(|| "none".to_owned(), |value| format!("{value:.1} ns/op"));
                println!(
                    "note: {name} hung in {}/{} samples at tasks={} hold={} (median of the \
                     completed ones: {completed})",
                    cell.hung,
                    cell.hung + cell.samples.len(),
                    row.tasks,
                    row.hold.label(),
                );
            }
        }
    }
    println!();
    println!("{HOW_TO_READ}");

    // Aborted qp tasks are gone, but don't let a stuck pool task delay exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
}
