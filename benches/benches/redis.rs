//! Redis GET/SET throughput and latency: nebula-resource-redis against the raw driver and
//! deadpool-redis, on a real server.
//!
//! Contenders, every one talking to the same server with the same connection settings
//! (`TCP_NODELAY`, no password):
//!
//! - `ours`: the resident [`Redis`] resource — each operation is `manager.acquire::<Redis>()`,
//!   one command, drop the guard;
//! - `raw`: `redis::aio::ConnectionManager` — each operation clones the manager (what a
//!   request handler does) and sends one command;
//! - `deadpool`: `deadpool-redis` 0.23 with max size 16 — each operation is `pool.get()`, one
//!   command, drop (deadpool-redis sends `UNWATCH` + `PING` when it hands out a pooled
//!   connection: that is its default behaviour, and part of what is measured);
//! - `ours-pool`: the pooled [`RedisDedicated`] resource with max size 16, for the pool-to-pool
//!   comparison with deadpool;
//! - `raw-b`: a second `raw` client, the control: its distance to `raw` is the noise floor of
//!   this machine, printed under the table next to our ratio to `raw`;
//! - `raw-same`: the driver's `ConnectionManager` inside our resource's instance, used raw —
//!   each operation clones it and sends one command. It shares `ours`'s socket and driver task,
//!   so `ours / raw-same` is our overhead alone: which worker a connection's driver task lands
//!   on, the largest difference between two separately connected clients here, is the same
//!   for both. It is compared with ours operation by operation: after its round-robin, every
//!   round runs one interleaved sample in which each task alternates an operation through ours
//!   and one through raw-same, timing them apart, so both see the same tasks, placement and
//!   moment. The throughput ratio is raw-same's mean latency over ours (each task's rate is
//!   the inverse of its mean latency), the p99 ratio ours's p99 over raw-same's; the table and
//!   the verdict give the medians over the rounds. (Timing them in samples of their own, even
//!   back to back, made ours look 4–11 % slower at 1 task, where each sample's fresh task lands
//!   near the connection's driver task or not; interleaved, the gap was under 2 %.)
//!
//! An operation alternates `SET key <64 bytes>` and `GET key` over 16 keys per contender. For
//! each task count (1, 16, 64, 256), `tasks` tasks share a fixed number of operations on a
//! 2-worker multi-thread tokio runtime; each sample reports throughput (operations per second,
//! wall clock) and the 99th percentile of per-operation latency. Every round connects all
//! contenders afresh (in a rotating order), warms each up, then samples each once, round-robin
//! from a rotating start, so machine noise and where each connection's driver task happens to
//! run hit them alike; a cell's figures are medians over its rounds, and a ratio is the median
//! of the per-round ratios.
//!
//! ```text
//! cargo bench -p nebula-resource-benches --bench redis
//! BENCH_OPS=5000 BENCH_SAMPLES=3 BENCH_TASKS=1,64 cargo bench -p nebula-resource-benches --bench redis
//! ```
//!
//! Knobs (environment variables, see `nebula_resource_benches::Settings`): `BENCH_OPS`
//! (operations per sample, default 20000 here), `BENCH_SAMPLES` (default 11 here),
//! `BENCH_WARMUP_OPS` (default `ops / 4`), `BENCH_TASKS` (default `1,16,64,256`),
//! `BENCH_TIMEOUT_MS` (watchdog per sample); and `NEBULA_BENCH_REDIS_URL` (default
//! `redis://127.0.0.1:6379`).

#![allow(
    clippy::print_stdout,
    reason = "a harness = false bench reports on stdout"
)]

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nebula_resource::{Policy, PoolConfig, ResourceManager};
use nebula_resource_benches::latency::{
    Cell, Sample, aligned, meets, p99_micros, ratios, show_ratio,
};
use nebula_resource_benches::{
    POOL_SIZE, Settings, WORKER_THREADS, bench_runtime, join_within, median, report_hang,
    settings_or_exit, split_ops,
};
use nebula_resource_redis::{Redis, RedisConfig, RedisDedicated};
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{ConnectionInfo, IntoConnectionInfo};
use tokio::task::JoinSet;

/// Keys per contender; task `t` uses key `t % KEYS`.
const KEYS: usize = 16;

/// The value written by `SET`.
const VALUE: &str = "nebula-resource-redis-bench-value-0123456789abcdefghijklmnopqrstuv";

/// What this bench uses where the shared settings' defaults are sized for the in-memory pool
/// bench: a Redis round trip costs tens of microseconds, not tens of nanoseconds.
fn bench_default(name: &str) -> Option<String> {
    match name {
        "BENCH_OPS" => Some("20000".to_owned()),
        "BENCH_SAMPLES" => Some("11".to_owned()),
        _ => None,
    }
}

/// The response timeout every contender that has one gets.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// One Redis client under test.
trait Contender: Send + Sync + 'static {
    /// Run one command on `key`: `SET` when `set`, `GET` otherwise.
    fn op(&self, key: &str, set: bool) -> impl Future<Output = ()> + Send;
}

/// Send `SET` or `GET` on any connection.
async fn command(connection: &mut impl AsyncCommands, key: &str, set: bool) {
    if set {
        connection.set::<_, _, ()>(key, VALUE).await.expect("SET");
    } else {
        let value: Option<String> = connection.get(key).await.expect("GET");
        std::hint::black_box(value);
    }
}

struct Ours(ResourceManager);

impl Contender for Ours {
    async fn op(&self, key: &str, set: bool) {
        let mut redis = self.0.acquire::<Redis>().await.expect("acquire Redis");
        command(&mut *redis, key, set).await;
    }
}

struct OursPool(ResourceManager);

impl Contender for OursPool {
    async fn op(&self, key: &str, set: bool) {
        let mut conn = self
            .0
            .acquire::<RedisDedicated>()
            .await
            .expect("acquire RedisDedicated");
        command(&mut *conn, key, set).await;
    }
}

struct Raw(ConnectionManager);

impl Raw {
    async fn connect(url: &str) -> Self {
        let manager = ConnectionManager::new_with_config(
            redis::Client::open(connection_info(url)).expect("a Redis URL"),
            ConnectionManagerConfig::new()
                .set_response_timeout(Some(RESPONSE_TIMEOUT))
                .set_connection_timeout(Some(Duration::from_secs(5))),
        )
        .await
        .expect("raw ConnectionManager");
        Self(manager)
    }
}

impl Contender for Raw {
    async fn op(&self, key: &str, set: bool) {
        let mut conn = self.0.clone();
        command(&mut conn, key, set).await;
    }
}

struct Deadpool(deadpool_redis::Pool);

impl Contender for Deadpool {
    async fn op(&self, key: &str, set: bool) {
        let mut conn = self.0.get().await.expect("deadpool-redis get");
        command(&mut *conn, key, set).await;
    }
}

/// The contenders, in table order. `raw-b` is a second, identical raw client: how far it is
/// from `raw` is how far two equal clients drift apart on this machine, the noise floor against
/// which `ours / raw` is read. `raw-same` is the connection manager inside `ours`, used raw.
const NAMES: [&str; 6] = ["ours", "raw", "deadpool", "ours-pool", "raw-b", "raw-same"];

struct Clients {
    ours: Arc<Ours>,
    raw: Arc<Raw>,
    deadpool: Arc<Deadpool>,
    ours_pool: Arc<OursPool>,
    raw_b: Arc<Raw>,
    raw_same: Arc<Raw>,
}

impl Clients {
    /// Connect every contender, starting with contender `first` (in [`NAMES`] order): where a
    /// connection's driver task lands among the workers depends a little on when it is made.
    async fn connect(url: &str, first: usize) -> Self {
        let config = RedisConfig::new(url).response_timeout(RESPONSE_TIMEOUT);
        let (mut ours, mut raw, mut deadpool, mut ours_pool, mut raw_b) =
            (None, None, None, None, None);
        for step in 0..NAMES.len() {
            match (first + step) % NAMES.len() {
                0 => {
                    let manager = ResourceManager::builder()
                        .register(Redis, config.clone())
                        .build()
                        .await
                        .unwrap_or_else(|err| panic!("connect to Redis at {url}: {err}"));
                    ours = Some(Ours(manager));
                }
                1 => raw = Some(Raw::connect(url).await),

                2 => {
                    let pool = deadpool_redis::Pool::builder(
                        deadpool_redis::Manager::new(connection_info(url))
                            .expect("deadpool-redis manager"),
                    )
                    .max_size(POOL_SIZE)
                    .runtime(deadpool_redis::Runtime::Tokio1)
                    .build()
                    .expect("deadpool-redis pool");
                    deadpool = Some(Deadpool(pool));
                }
                3 => {
                    let manager = ResourceManager::builder()
                        .register_with(
                            RedisDedicated,
                            config.clone(),
                            Policy::default().pool(PoolConfig::default().max_size(POOL_SIZE)),
                        )
                        .build()
                        .await
                        .expect("build the dedicated pool");
                    ours_pool = Some(OursPool(manager));
                }
                4 => raw_b = Some(Raw::connect(url).await),
                // `raw-same` is made from `ours` below.
                _ => {}
            }
        }
        let ours = ours.expect("connected");
        let raw_same = {
            let mut connection = ours.0.acquire::<Redis>().await.expect("acquire Redis");
            Raw(connection.manager().clone())
        };
        Self {
            ours: Arc::new(ours),
            raw: Arc::new(raw.expect("connected")),
            deadpool: Arc::new(deadpool.expect("connected")),
            ours_pool: Arc::new(ours_pool.expect("connected")),
            raw_b: Arc::new(raw_b.expect("connected")),
            raw_same: Arc::new(raw_same),
        }
    }

    async fn close(self) {
        for manager in [&self.ours.0, &self.ours_pool.0] {
            manager
                .shutdown(Duration::from_secs(5))
                .await
                .expect("shut down");
        }
        self.deadpool.0.close();
    }

    /// One sample of contender `index` (in [`NAMES`] order).
    async fn sample(
        &self,
        index: usize,
        keys: &Keys,
        tasks: usize,
        ops: u64,
        limit: Duration,
    ) -> Option<Sample> {
        let keys = keys.of(index);
        match index {
            0 => run_sample(&self.ours, keys, tasks, ops, limit).await,
            1 => run_sample(&self.raw, keys, tasks, ops, limit).await,
            2 => run_sample(&self.deadpool, keys, tasks, ops, limit).await,
            3 => run_sample(&self.ours_pool, keys, tasks, ops, limit).await,
            4 => run_sample(&self.raw_b, keys, tasks, ops, limit).await,
            _ => run_sample(&self.raw_same, keys, tasks, ops, limit).await,
        }
    }
}

/// The server's connection settings, as every contender gets them.
fn connection_info(url: &str) -> ConnectionInfo {
    url.into_connection_info()
        .expect("a Redis URL")
        .set_tcp_settings(TcpSettings::default().set_nodelay(true))
}

/// The keys of every contender: `nebula-bench:<pid>:<contender>:<n>`.
struct Keys(Vec<Arc<[String]>>);

impl Keys {
    fn new() -> Self {
        let pid = std::process::id();
        Self(
            NAMES
                .iter()
                .map(|name| {
                    (0..KEYS)
                        .map(|n| format!("nebula-bench:{pid}:{name}:{n}"))
                        .collect()
                })
                .collect(),
        )
    }

    fn of(&self, index: usize) -> Arc<[String]> {
        Arc::clone(&self.0[index])
    }

    fn all(&self) -> Vec<String> {
        self.0
            .iter()
            .flat_map(|keys| keys.iter().cloned())
            .collect()
    }
}

/// Spawn `tasks` tasks that together run `ops` operations on `contender`, timing each.
///
/// Returns `None` (after aborting and reaping the tasks) if they did not finish within `limit`.
/// Call it from outside the runtime's workers (the `block_on` future) so the timer does not
/// compete with the tasks it times.
async fn run_sample<C: Contender>(
    contender: &Arc<C>,
    keys: Arc<[String]>,
    tasks: usize,
    ops: u64,
    limit: Duration,
) -> Option<Sample> {
    let mut set = JoinSet::new();
    let start = Instant::now();
    for (task, count) in split_ops(ops, tasks).into_iter().enumerate() {
        let contender = Arc::clone(contender);
        let keys = Arc::clone(&keys);
        set.spawn(async move {
            let key = &keys[task % keys.len()];
            let mut latencies =
                Vec::with_capacity(usize::try_from(count).expect("ops fit in usize"));
            for i in 0..count {
                let began = Instant::now();
                contender.op(key, i % 2 == 0).await;
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
    cells: [Cell; 6],
    /// `ours / raw-same` throughput and p99 of each round's interleaved sample.
    interleaved: Vec<(f64, f64)>,
}

impl Row {
    /// The medians of the interleaved samples' `ours / raw-same` throughput and p99 ratios.
    fn same_ratios(&self) -> (Option<f64>, Option<f64>) {
        let (ops, p99): (Vec<f64>, Vec<f64>) = self.interleaved.iter().copied().unzip();
        (median(&ops), median(&p99))
    }
}

/// Each of `tasks` tasks alternates an operation through ours and one through raw-same, `ops`
/// in all; returns `ours / raw-same` as (throughput, p99), or `None` if the tasks did not finish
/// within `limit` (they are aborted then).
async fn run_interleaved(
    clients: &Clients,
    keys: &Keys,
    tasks: usize,
    ops: u64,
    limit: Duration,
) -> Option<(f64, f64)> {
    let mut set = JoinSet::new();
    for (task, count) in split_ops(ops, tasks).into_iter().enumerate() {
        let ours = Arc::clone(&clients.ours);
        let same = Arc::clone(&clients.raw_same);
        let [ours_keys, same_keys] = [keys.of(0), keys.of(5)];
        set.spawn(async move {
            let (ours_key, same_key) = (
                &ours_keys[task % ours_keys.len()],
                &same_keys[task % same_keys.len()],
            );
            let mut latencies = (Vec::new(), Vec::new());
            for i in 0..count {
                let write = i % 4 < 2;
                if i % 2 == 0 {
                    let began = Instant::now();
                    ours.op(ours_key, write).await;
                    latencies.0.push(began.elapsed());
                } else {
                    let began = Instant::now();
                    same.op(same_key, write).await;
                    latencies.1.push(began.elapsed());
                }
            }
            latencies
        });
    }
    let (ours, same): (Vec<_>, Vec<_>) = join_within(set, limit).await?.into_iter().unzip();
    let (mut ours, mut same): (Vec<Duration>, Vec<Duration>) = (
        ours.into_iter().flatten().collect(),
        same.into_iter().flatten().collect(),
    );
    let mean = |latencies: &[Duration]| {
        latencies.iter().sum::<Duration>().as_secs_f64()
            / f64::from(u32::try_from(latencies.len()).expect("latencies fit in u32"))
    };
    let throughput = mean(&same) / mean(&ours);
    let p99 = p99_micros(&mut ours) / p99_micros(&mut same);
    Some((throughput, p99))
}

/// One row: `samples` rounds, each with fresh clients (made in a rotating order), a warm-up of
/// every contender (pools fill up), then one measured sample of each, round-robin from a
/// rotating start.
async fn run_row(url: &str, keys: &Keys, settings: &Settings, tasks: usize) -> Row {
    let mut cells: [Cell; 6] = Default::default();
    let mut interleaved = Vec::new();
    for round in 0..settings.samples {
        let clients = Clients::connect(url, round).await;
        for step in 0..NAMES.len() {
            let index = (round + step) % NAMES.len();
            if settings.warmup_ops > 0 {
                let warm = clients
                    .sample(index, keys, tasks, settings.warmup_ops, settings.timeout)
                    .await;
                report_hang(NAMES[index], settings, warm.is_none());
            }
        }
        for step in 0..NAMES.len() {
            let index = (round + step) % NAMES.len();
            let outcome = clients
                .sample(index, keys, tasks, settings.ops, settings.timeout)
                .await;
            report_hang(NAMES[index], settings, outcome.is_none());
            cells[index].record(outcome);
        }
        let paired = run_interleaved(&clients, keys, tasks, settings.ops, settings.timeout).await;
        if paired.is_none() {
            eprintln!(
                "    ours/raw-same interleaved: no finish within {:?}; aborted its tasks",
                settings.timeout
            );
        }
        interleaved.extend(paired);
        clients.close().await;
    }
    Row {
        tasks,
        cells,
        interleaved,
    }
}

fn render(rows: &[Row]) -> String {
    const HEADERS: [&str; 19] = [
        "tasks",
        "ours ops/s",
        "p99 µs",
        "raw-same ops/s",
        "p99 µs",
        "raw ops/s",
        "p99 µs",
        "deadpool ops/s",
        "p99 µs",
        "ours-pool ops/s",
        "p99 µs",
        "ours/raw-same ops",
        "ours/raw-same p99",
        "ours/raw ops",
        "ours/raw p99",
        "ours/deadpool ops",
        "ours/deadpool p99",
        "pool/deadpool ops",
        "pool/deadpool p99",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let [ours, raw, deadpool, pool, _, same] = &row.cells;
            let mut line = vec![row.tasks.to_string()];
            for cell in [ours, same, raw, deadpool, pool] {
                line.push(cell.show_ops());
                line.push(cell.show_p99());
            }
            let pairs = [
                row.same_ratios(),
                ratios(ours, raw),
                ratios(ours, deadpool),
                ratios(pool, deadpool),
            ];
            line.extend(
                pairs
                    .into_iter()
                    .flat_map(|(ops, p99)| [show_ratio(ops), show_ratio(p99)]),
            );
            line
        })
        .collect();
    aligned(&HEADERS, &body)
}

/// The verdict against the targets: ours ≥ 0.97× the raw driver's throughput and p99 ≤ 1.1×,
/// against the driver on our own connection (`raw-same`) and on a connection of its own (`raw`,
/// with the noise floor `raw-b / raw`).
fn verdict(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        let [ours, raw, _, _, raw_b, _] = &row.cells;
        let same = match row.same_ratios() {
            (Some(throughput), Some(latency)) => format!(
                "{} raw-same (throughput {throughput:.3}x, p99 {latency:.3}x)",
                meets(throughput, latency)
            ),
            _ => "no figures for raw-same".to_owned(),
        };
        let own = match (ratios(ours, raw), ratios(raw_b, raw)) {
            ((Some(throughput), Some(latency)), (Some(floor_ops), Some(floor_p99))) => format!(
                "{} raw (throughput {throughput:.3}x, p99 {latency:.3}x; noise floor: an \
                 identical second raw client measured {floor_ops:.3}x, p99 {floor_p99:.3}x)",
                meets(throughput, latency)
            ),
            _ => "no figures for raw".to_owned(),
        };
        let _ = writeln!(out, "  tasks={:<4} {same}; {own}", row.tasks);
    }
    out
}

const HOW_TO_READ: &str = "\
How to read this table:
  * ops/s: operations (one SET or one GET, alternating) per second of wall time, all tasks
    together; higher is better. p99 µs: 99th percentile of one operation's latency (acquire,
    command, release), in microseconds; lower is better. Each figure is the median over the
    samples of the cell.
  * ours/<peer> ops = our throughput divided by the peer's (> 1.000: we are faster);
    ours/<peer> p99 = our p99 divided by the peer's (< 1.000: our tail is shorter). A ratio is
    the median of the per-round ratios (every round samples all contenders back to back), so
    it can differ from the ratio of the two medians shown.
    pool/deadpool compares our dedicated-connection pool with deadpool-redis (both pools of 16).
  * raw-same is the driver's ConnectionManager inside our resource, used raw: same socket, same
    driver task, so ours/raw-same is our overhead alone. Its ratios come from one interleaved
    sample per round (every task alternates the two, timing each), not from the columns shown.
    raw has a connection of its own.
  * The noise floor under the table: `raw-b`, a second raw client identical to `raw`, sampled
    like the others; its ratio to `raw` shows how far two equal clients drift apart here.
  * The server runs on the same 2 cores as the 2-worker runtime: absolute figures are the
    machine's, the ratios are the point.";

fn main() {
    let settings = settings_or_exit("redis", bench_default);
    let url = std::env::var("NEBULA_BENCH_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let runtime = bench_runtime();

    println!(
        "redis: GET/SET against {url}, pools of {POOL_SIZE}, tokio multi-thread runtime with \
         {WORKER_THREADS} workers"
    );
    println!(
        "settings: ops/sample={} samples={} warmup ops={} tasks={:?} watchdog={:?}",
        settings.ops, settings.samples, settings.warmup_ops, settings.tasks, settings.timeout,
    );

    let rows = runtime.block_on(async {
        let keys = Keys::new();
        let mut rows = Vec::with_capacity(settings.tasks.len());
        for (index, &tasks) in settings.tasks.iter().enumerate() {
            eprintln!("[{}/{}] tasks={tasks}", index + 1, settings.tasks.len());
            rows.push(run_row(&url, &keys, &settings, tasks).await);
        }
        let mut cleanup = redis::Client::open(connection_info(&url))
            .expect("a Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect for cleanup");
        let _: () = cleanup
            .del(keys.all())
            .await
            .expect("delete the bench keys");
        rows
    });

    println!();
    print!("{}", render(&rows));
    println!();
    println!("Target: ours >= 0.97x raw throughput and p99 <= 1.1x raw, at every task count:");
    print!("{}", verdict(&rows));
    println!();
    println!("{HOW_TO_READ}");
    runtime.shutdown_timeout(Duration::from_secs(1));
}
