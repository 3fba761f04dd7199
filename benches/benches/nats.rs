//! NATS publish throughput and latency: nebula-resource-nats against the raw async-nats client,
//! on a real server.
//!
//! Contenders, every one talking to the same server with async-nats's defaults:
//!
//! - `ours`: the resident [`Nats`] resource — each operation is `manager.acquire::<Nats>()`,
//!   one `publish` through the guard (the driver's publish), drop the guard;
//! - `bounded`: the same with [`NatsClient::publish_bounded`](nebula_resource_nats::NatsClient),
//!   the publish that never waits past `publish_timeout`;
//! - `raw`: an `async_nats::Client` of its own, shared by the tasks — each operation publishes
//!   through it (no clone: the cheapest way to use the driver, the strictest baseline);
//! - `raw-same`: the `async_nats::Client` inside our resource's instance, used the same way. It
//!   shares `ours`'s connection and driver task, so `ours / raw-same` is our overhead alone; it
//!   is measured in an interleaved sample per round (each task runs pairs of operations, one
//!   through ours and one through raw-same in a pseudo-random order, timing them apart), as the
//!   Redis bench does;
//! - `control`: raw-same interleaved with itself, in a sample of its own per round, measured
//!   exactly as ours/raw-same. Nothing differs between its two halves, so how far its ratio
//!   strays from 1 is the noise of the method, printed next to ours/raw-same with the spread
//!   of the rounds;
//! - `raw-same-b`: raw-same sampled once more in the round-robin, in a turn of its own: `sep
//!   control` (raw-same-b / raw-same) is the noise of comparing whole samples, next to `sep
//!   ours/raw-same`.
//!
//! What the figures say (this machine, 2 cores shared with the server). A publish only queues
//! the message in the driver's channel: about 300 ns. Acquiring and releasing the resident
//! guard costs about 60 ns through a typed `Handle` and 80 ns through `manager.acquire` (its
//! registry lookup is the difference); of that, this crate's `share` (one `Arc` clone) is 3–4
//! ns and the rest is the core's acquire path, including one clock read (about 24 ns) in
//! `Guard::resident`. At 1 task the publisher is the bottleneck and that cost shows in full:
//! ours/raw-same is about 0.8 interleaved, below the control's spread. From 16 tasks on the
//! queue is full and the publishers wait for the driver's connection task: interleaved, ours
//! and raw-same wait alike and the ratio sits within the control's spread, but whole samples
//! mostly show ours at 0.75–0.85 of raw-same at 64 and 256 tasks with the sep control near
//! 1.0 (whole samples are noisy at 256 tasks: that control ranged from 0.90 to 1.13), because the extra CPU per publish is taken from the connection task and the server
//! on the same 2 cores: raw-same with 75 ns of busy work added to each publish, and no
//! acquire, measured the same as ours. With 50000 operations per sample (about 15 ms) the
//! interleaved control ranged from 0.35 to 2.15 at 16 tasks:
//! hence the longer default sample.
//!
//! An operation publishes 64 bytes to a subject nobody subscribes to (the server discards it).
//! A publish returns once the message is queued in the client; each sample ends with a flush,
//! inside its wall time, so a sample's backlog is not left to the next one. For each task count
//! (1, 16, 64, 256), `tasks` tasks share a fixed number of operations on a 2-worker
//! multi-thread tokio runtime. Every round connects the contenders afresh, warms each up, then
//! samples each once, round-robin from a rotating start; a cell's figures are medians over its
//! rounds, and a ratio is the median of the per-round ratios.
//!
//! ```text
//! cargo bench -p nebula-resource-benches --bench nats
//! BENCH_OPS=20000 BENCH_SAMPLES=3 BENCH_TASKS=1,64 cargo bench -p nebula-resource-benches --bench nats
//! ```
//!
//! Knobs (environment variables, see `nebula_resource_benches::Settings`): `BENCH_OPS`
//! (operations per sample, default 200000 here), `BENCH_SAMPLES` (default 7 here),
//! `BENCH_WARMUP_OPS` (default `ops / 4`), `BENCH_TASKS` (default `1,16,64,256`),
//! `BENCH_TIMEOUT_MS` (watchdog per sample); and `NEBULA_BENCH_NATS_URL` (default
//! `nats://127.0.0.1:4222`).

#![allow(
    clippy::print_stdout,
    reason = "a harness = false bench reports on stdout"
)]

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Subject;
use nebula_resource::ResourceManager;
use nebula_resource_benches::latency::{
    Cell, Sample, aligned, meets, p99_micros, ratios, show_ratio,
};
use nebula_resource_benches::{
    Settings, WORKER_THREADS, bench_runtime, join_within, median, report_hang, settings_or_exit,
    split_ops,
};
use nebula_resource_nats::{Nats, NatsConfig};
use tokio::task::JoinSet;

/// What this bench uses where the shared settings' defaults are sized for the in-memory pool
/// bench.
fn bench_default(name: &str) -> Option<String> {
    match name {
        "BENCH_OPS" => Some("200000".to_owned()),
        "BENCH_SAMPLES" => Some("7".to_owned()),
        _ => None,
    }
}

/// The payload of every publish.
const PAYLOAD: &[u8; 64] = b"nebula-resource-nats-bench-payload-0123456789abcdefghijklmnopqrs";

/// One NATS client under test.
trait Contender: Send + Sync + 'static {
    /// Publish one message to `subject`.
    fn op(&self, subject: &Subject) -> impl Future<Output = ()> + Send;
    /// Wait until everything published is written out.
    fn flush(&self) -> impl Future<Output = ()> + Send;
}

struct Ours(ResourceManager);

impl Contender for Ours {
    async fn op(&self, subject: &Subject) {
        let nats = self.0.acquire::<Nats>().await.expect("acquire Nats");
        nats.publish(subject.clone(), PAYLOAD[..].into())
            .await
            .expect("publish");
    }

    async fn flush(&self) {
        let nats = self.0.acquire::<Nats>().await.expect("acquire Nats");
        nats.flush().await.expect("flush");
    }
}

struct Bounded(ResourceManager);

impl Contender for Bounded {
    async fn op(&self, subject: &Subject) {
        let nats = self.0.acquire::<Nats>().await.expect("acquire Nats");
        nats.publish_bounded(subject.clone(), PAYLOAD[..].into())
            .await
            .expect("publish_bounded");
    }

    async fn flush(&self) {
        let nats = self.0.acquire::<Nats>().await.expect("acquire Nats");
        nats.flush_bounded().await.expect("flush_bounded");
    }
}

struct Raw(async_nats::Client);

impl Contender for Raw {
    async fn op(&self, subject: &Subject) {
        self.0
            .publish(subject.clone(), PAYLOAD[..].into())
            .await
            .expect("publish");
    }

    async fn flush(&self) {
        self.0.flush().await.expect("flush");
    }
}

/// The contenders, in table order.
const NAMES: [&str; 5] = ["ours", "bounded", "raw", "raw-same", "raw-same-b"];

struct Clients {
    ours: Arc<Ours>,
    bounded: Arc<Bounded>,
    raw: Arc<Raw>,
    raw_same: Arc<Raw>,
}

impl Clients {
    /// Connect every contender, our manager first on even rounds and the raw client first on
    /// odd ones.
    async fn connect(url: &str, round: usize) -> Self {
        let ours = async {
            ResourceManager::builder()
                .register(Nats, NatsConfig::new(url))
                .build()
                .await
                .unwrap_or_else(|err| panic!("connect to NATS at {url}: {err}"))
        };
        let raw = async {
            async_nats::connect(url)
                .await
                .unwrap_or_else(|err| panic!("connect to NATS at {url}: {err}"))
        };
        let (manager, raw) = if round.is_multiple_of(2) {
            let manager = ours.await;
            (manager, raw.await)
        } else {
            let raw = raw.await;
            (ours.await, raw)
        };
        let same = manager
            .acquire::<Nats>()
            .await
            .expect("acquire Nats")
            .client()
            .clone();
        Self {
            ours: Arc::new(Ours(manager.clone())),
            bounded: Arc::new(Bounded(manager)),
            raw: Arc::new(Raw(raw)),
            raw_same: Arc::new(Raw(same)),
        }
    }

    async fn close(self) {
        self.ours
            .0
            .shutdown(Duration::from_secs(5))
            .await
            .expect("shut down");
        self.raw.0.drain().await.expect("drain the raw client");
    }

    /// One sample of contender `index` (in [`NAMES`] order).
    async fn sample(
        &self,
        index: usize,
        subject: &Subject,
        tasks: usize,
        ops: u64,
        limit: Duration,
    ) -> Option<Sample> {
        match index {
            0 => run_sample(&self.ours, subject, tasks, ops, limit).await,
            1 => run_sample(&self.bounded, subject, tasks, ops, limit).await,
            2 => run_sample(&self.raw, subject, tasks, ops, limit).await,
            // raw-same-b is raw-same again, sampled in its own turn of the round-robin.
            _ => run_sample(&self.raw_same, subject, tasks, ops, limit).await,
        }
    }
}

/// Spawn `tasks` tasks that together run `ops` publishes on `contender`, timing each, then
/// flush; `None` (after aborting and reaping the tasks) if they did not finish within `limit`.
async fn run_sample<C: Contender>(
    contender: &Arc<C>,
    subject: &Subject,
    tasks: usize,
    ops: u64,
    limit: Duration,
) -> Option<Sample> {
    let mut set = JoinSet::new();
    let start = Instant::now();
    for count in split_ops(ops, tasks) {
        let contender = Arc::clone(contender);
        let subject = subject.clone();
        set.spawn(async move {
            let mut latencies =
                Vec::with_capacity(usize::try_from(count).expect("ops fit in usize"));
            for _ in 0..count {
                let began = Instant::now();
                contender.op(&subject).await;
                latencies.push(began.elapsed());
            }
            latencies
        });
    }
    let tasks = join_within(set, limit).await?;
    tokio::time::timeout(limit, contender.flush()).await.ok()?;
    let elapsed = start.elapsed();
    Some(Sample {
        elapsed,
        latencies: tasks.into_iter().flatten().collect(),
    })
}

/// Each of `tasks` tasks runs pairs of operations, one through `a` and one through `b` in a
/// pseudo-random order, `ops` in all; returns `a / b` as (throughput, p99), or `None` if the
/// tasks did not finish within `limit` (they are aborted then). `flush` ends the sample.
async fn run_interleaved<A: Contender, B: Contender>(
    a: &Arc<A>,
    b: &Arc<B>,
    subject: &Subject,
    tasks: usize,
    ops: u64,
    limit: Duration,
) -> Option<(f64, f64)> {
    let mut set = JoinSet::new();
    for count in split_ops(ops, tasks) {
        let (a, b) = (Arc::clone(a), Arc::clone(b));
        let subject = subject.clone();
        set.spawn(async move {
            let mut latencies = (Vec::new(), Vec::new());
            // Pairs in a pseudo-random order: tokio's cooperative budget makes every 128th send
            // of a task yield, and with a fixed alternation that yield would always fall on the
            // same contender.
            let mut order: u32 = 0x9e37_79b9;
            for _ in 0..count / 2 {
                order ^= order << 13;
                order ^= order >> 17;
                order ^= order << 5;
                for a_turn in [order & 1 == 0, order & 1 == 1] {
                    let began = Instant::now();
                    if a_turn {
                        a.op(&subject).await;
                        latencies.0.push(began.elapsed());
                    } else {
                        b.op(&subject).await;
                        latencies.1.push(began.elapsed());
                    }
                }
            }
            latencies
        });
    }
    let (a_latencies, b_latencies): (Vec<_>, Vec<_>) =
        join_within(set, limit).await?.into_iter().unzip();
    tokio::time::timeout(limit, b.flush()).await.ok()?;
    let (mut a_latencies, mut b_latencies): (Vec<Duration>, Vec<Duration>) = (
        a_latencies.into_iter().flatten().collect(),
        b_latencies.into_iter().flatten().collect(),
    );
    let mean = |latencies: &[Duration]| {
        latencies.iter().sum::<Duration>().as_secs_f64()
            / f64::from(u32::try_from(latencies.len()).expect("latencies fit in u32"))
    };
    let throughput = mean(&b_latencies) / mean(&a_latencies);
    let p99 = p99_micros(&mut a_latencies) / p99_micros(&mut b_latencies);
    Some((throughput, p99))
}

/// Per-round ratios of one interleaved comparison, and their medians and spread.
#[derive(Default)]
struct Paired(Vec<(f64, f64)>);

impl Paired {
    /// The medians of the rounds' (throughput, p99) ratios.
    fn medians(&self) -> (Option<f64>, Option<f64>) {
        let (ops, p99): (Vec<f64>, Vec<f64>) = self.0.iter().copied().unzip();
        (median(&ops), median(&p99))
    }

    /// The lowest and highest throughput ratio over the rounds.
    fn spread(&self) -> Option<(f64, f64)> {
        let mut ops = self.0.iter().map(|&(ops, _)| ops);
        let first = ops.next()?;
        Some(ops.fold((first, first), |(low, high), ops| {
            (low.min(ops), high.max(ops))
        }))
    }
}

struct Row {
    tasks: usize,
    cells: [Cell; 5],
    /// `ours / raw-same`, interleaved, per round.
    same: Paired,
    /// `raw-same / raw-same`, interleaved the same way, per round: the control, whose distance
    /// to 1 is what the method reads as a difference where there is none.
    control: Paired,
}

/// One row: `samples` rounds, each with fresh clients, a warm-up of every contender, one
/// measured sample of each (round-robin from a rotating start), then the interleaved samples:
/// ours against raw-same and the control, raw-same against itself, in a rotating order.
async fn run_row(url: &str, subject: &Subject, settings: &Settings, tasks: usize) -> Row {
    let mut cells: [Cell; 5] = Default::default();
    let (mut same, mut control) = (Paired::default(), Paired::default());
    for round in 0..settings.samples {
        let clients = Clients::connect(url, round).await;
        for step in 0..NAMES.len() {
            let index = (round + step) % NAMES.len();
            if settings.warmup_ops > 0 {
                let warm = clients
                    .sample(index, subject, tasks, settings.warmup_ops, settings.timeout)
                    .await;
                report_hang(NAMES[index], settings, warm.is_none());
            }
        }
        for step in 0..NAMES.len() {
            let index = (round + step) % NAMES.len();
            let outcome = clients
                .sample(index, subject, tasks, settings.ops, settings.timeout)
                .await;
            report_hang(NAMES[index], settings, outcome.is_none());
            cells[index].record(outcome);
        }
        for step in 0..2 {
            let (ops, timeout) = (settings.ops, settings.timeout);
            if (round + step) % 2 == 0 {
                let paired = run_interleaved(
                    &clients.ours,
                    &clients.raw_same,
                    subject,
                    tasks,
                    ops,
                    timeout,
                )
                .await;
                report_hang("ours/raw-same interleaved", settings, paired.is_none());
                same.0.extend(paired);
            } else {
                let paired = run_interleaved(
                    &clients.raw_same,
                    &clients.raw_same,
                    subject,
                    tasks,
                    ops,
                    timeout,
                )
                .await;
                report_hang("control interleaved", settings, paired.is_none());
                control.0.extend(paired);
            }
        }
        clients.close().await;
    }
    Row {
        tasks,
        cells,
        same,
        control,
    }
}

fn render(rows: &[Row]) -> String {
    const HEADERS: [&str; 21] = [
        "tasks",
        "ours ops/s",
        "p99 µs",
        "bounded ops/s",
        "p99 µs",
        "raw-same ops/s",
        "p99 µs",
        "raw ops/s",
        "p99 µs",
        "ours/raw-same ops",
        "ours/raw-same p99",
        "control ops",
        "control p99",
        "sep ours/raw-same ops",
        "sep ours/raw-same p99",
        "sep control ops",
        "sep control p99",
        "ours/raw ops",
        "ours/raw p99",
        "bounded/raw ops",
        "bounded/raw p99",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let [ours, bounded, raw, same, same_b] = &row.cells;
            let mut line = vec![row.tasks.to_string()];
            for cell in [ours, bounded, same, raw] {
                line.push(cell.show_ops());
                line.push(cell.show_p99());
            }
            let pairs = [
                row.same.medians(),
                row.control.medians(),
                ratios(ours, same),
                ratios(same_b, same),
                ratios(ours, raw),
                ratios(bounded, raw),
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

/// The verdict against the targets: ours ≥ 0.97× the raw client's throughput and p99 ≤ 1.1×.
fn verdict(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        let [ours, _, raw, same_cell, same_b] = &row.cells;
        let spread = |paired: &Paired| {
            paired
                .spread()
                .map_or_else(String::new, |(low, high)| format!(" {low:.3}..{high:.3}"))
        };
        let same = match row.same.medians() {
            (Some(throughput), Some(latency)) => format!(
                "{} raw-same (throughput {throughput:.3}x [rounds{}], p99 {latency:.3}x)",
                meets(throughput, latency),
                spread(&row.same),
            ),
            _ => "no figures for raw-same".to_owned(),
        };
        let control = match row.control.medians() {
            (Some(throughput), Some(latency)) => format!(
                "control {throughput:.3}x [rounds{}], p99 {latency:.3}x",
                spread(&row.control),
            ),
            _ => "no control figures".to_owned(),
        };
        let separate = match (ratios(ours, same_cell), ratios(same_b, same_cell)) {
            ((Some(throughput), Some(latency)), (Some(control), _)) => format!(
                "separate samples: {} raw-same (throughput {throughput:.3}x, p99 {latency:.3}x), \
                 control {control:.3}x",
                meets(throughput, latency)
            ),
            _ => "no separate figures for raw-same".to_owned(),
        };
        let own = match ratios(ours, raw) {
            (Some(throughput), Some(latency)) => format!(
                "{} raw (throughput {throughput:.3}x, p99 {latency:.3}x)",
                meets(throughput, latency)
            ),
            _ => "no figures for raw".to_owned(),
        };
        let _ = writeln!(
            out,
            "  tasks={:<4} interleaved: {same}; {control}\n             {separate}; {own}",
            row.tasks
        );
    }
    out
}

const HOW_TO_READ: &str = "\
How to read this table:
  * ops/s: publishes per second of wall time, all tasks together, the closing flush included;
    higher is better. p99 µs: 99th percentile of one operation's latency (acquire, publish,
    release; the publish returns once queued in the client), in microseconds; lower is better.
    Each figure is the median over the samples of the cell.
  * ours/<peer> ops = our throughput divided by the peer's (> 1.000: we are faster);
    ours/<peer> p99 = our p99 divided by the peer's (< 1.000: our tail is shorter). A ratio is
    the median of the per-round ratios.
  * bounded is ours with publish_bounded (a timeout around the publish).
  * raw-same is the async-nats client inside our resource, used raw: same connection, same
    driver task, so ours/raw-same is our overhead alone; its ratios come from one interleaved
    sample per round (every task runs pairs of the two in a random order, timing each). raw
    has a connection of its own, so ours/raw also carries the difference between two
    connections.
  * control is raw-same interleaved with itself, measured exactly like ours/raw-same: there is
    no difference to find, so its distance to 1.000 (and the spread of its rounds) is the noise
    of the method. An ours/raw-same figure within the control's spread is not a difference.
  * Interleaved, both halves wait in the same queue once it is full, so CPU that ours spends
    (and takes from the driver's connection task and the server, on the same 2 cores) slows
    both alike and hardly shows. The sep(arate) columns compare whole samples instead: sep
    ours/raw-same is ours's throughput over raw-same's, each sampled alone in the round-robin,
    and sep control is raw-same-b (raw-same sampled once more, in its own turn) over raw-same,
    the noise of that comparison.
  * The server runs on the same 2 cores as the 2-worker runtime: absolute figures are the
    machine's, the ratios are the point.";

fn main() {
    let settings = settings_or_exit("nats", bench_default);
    let url = std::env::var("NEBULA_BENCH_NATS_URL")
        .unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let runtime = bench_runtime();

    println!(
        "nats: publish 64 bytes against {url}, tokio multi-thread runtime with {WORKER_THREADS} workers"
    );
    println!(
        "settings: ops/sample={} samples={} warmup ops={} tasks={:?} watchdog={:?}",
        settings.ops, settings.samples, settings.warmup_ops, settings.tasks, settings.timeout,
    );

    let subject = Subject::from(format!("nebula.bench.{}", std::process::id()));
    let rows = runtime.block_on(async {
        let mut rows = Vec::with_capacity(settings.tasks.len());
        for (index, &tasks) in settings.tasks.iter().enumerate() {
            eprintln!("[{}/{}] tasks={tasks}", index + 1, settings.tasks.len());
            rows.push(run_row(&url, &subject, &settings, tasks).await);
        }
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
