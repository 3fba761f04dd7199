//! RabbitMQ publish-with-confirm throughput and latency: nebula-resource-rabbitmq against raw
//! lapin, on a real broker.
//!
//! Contenders, all publishing a 64-byte message to the default exchange with a routing key no
//! queue is bound to (the broker confirms and drops it, so nothing piles up), each publish
//! awaiting its confirm:
//!
//! Every contender has `channels = max(16, tasks)` channels in confirm mode, so that every task
//! has one to itself (a channel per task is what lapin code does when it publishes with
//! confirms from many tasks):
//!
//! - `ours`: the pooled [`RabbitMqChannel`] resource (max size `channels`, confirms on) — each
//!   operation is `manager.acquire::<RabbitMqChannel>()`, `publish` (which awaits the confirm
//!   within its deadline), drop the guard;
//! - `raw`: a lapin connection of its own with `channels` channels — task `t` publishes on
//!   channel `t` and awaits the confirm;
//! - `raw-same`: as raw, with the channels opened on our resource's own connection (same
//!   socket, same lapin I/O thread), so `ours / raw-same` is our overhead alone.
//!
//! The ratios the target is judged on come from interleaved samples, one per round and peer:
//! each task alternates an operation through ours and one through the peer (which goes first
//! alternates with the task), timing them apart, so both see the same machine at the same
//! moment. Every contender is also sampled alone, for its absolute figures. A control, raw-same
//! interleaved with itself, shows how far such a ratio strays from 1 when nothing differs.
//!
//! lapin's I/O loop looks at every channel of a connection for each frame it sends, so a
//! connection's channel count sets its speed. `ours` and `raw` are therefore sampled (alone
//! and interleaved) while each of their connections carries exactly `channels` channels; the
//! raw-same channels are opened on our connection only afterwards, for the raw-same sample and
//! the ours/raw-same interleaved one (where our connection carries `2 × channels`, for both
//! contenders alike).
//!
//! For each task count (1, 16, 64, 256), `tasks` tasks share a fixed number of operations on a
//! 2-worker multi-thread tokio runtime. Every round connects `ours` and `raw` afresh, warms
//! each up and samples each alone, in an order that rotates with the round, then interleaved;
//! then raw-same is opened, warmed up, sampled alone, interleaved with ours, and interleaved
//! with itself (the control). A cell's
//! figures are medians over its rounds, and a ratio is the median of the per-round ratios.
//!
//! ```text
//! cargo bench -p nebula-resource-benches --bench rabbitmq
//! BENCH_OPS=2000 BENCH_SAMPLES=3 BENCH_TASKS=1,64 cargo bench -p nebula-resource-benches --bench rabbitmq
//! ```
//!
//! Knobs (environment variables, see `nebula_resource_benches::Settings`): `BENCH_OPS`
//! (operations per sample, default 8000 here), `BENCH_SAMPLES` (default 5 here),
//! `BENCH_WARMUP_OPS` (default `ops / 4`), `BENCH_TASKS` (default `1,16,64,256`),
//! `BENCH_TIMEOUT_MS` (watchdog per sample); and `NEBULA_BENCH_AMQP_URL` (default
//! `amqp://127.0.0.1:5672/%2f`).

#![allow(
    clippy::print_stdout,
    reason = "a harness = false bench reports on stdout"
)]

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use nebula_resource::{Policy, PoolConfig, ResourceManager};
use nebula_resource_benches::latency::{
    Cell, Sample, aligned, judged, median_ratios, p99_micros, ratios, show_ratio,
};
use nebula_resource_benches::{
    POOL_SIZE, Settings, WORKER_THREADS, bench_runtime, join_within, report_hang, settings_or_exit,
    split_ops,
};
use nebula_resource_rabbitmq::{RabbitMq, RabbitMqChannel, RabbitMqChannelConfig, RabbitMqConfig};
use tokio::task::JoinSet;

/// The message published.
const PAYLOAD: &[u8; 64] = b"nebula-resource-rabbitmq-bench-payload-0123456789abcdefghijklmno";

/// Where messages go: the default exchange, a key no queue is bound to.
const ROUTING_KEY: &str = "nebula-bench-nowhere";

fn bench_default(name: &str) -> Option<String> {
    match name {
        "BENCH_OPS" => Some("8000".to_owned()),
        "BENCH_SAMPLES" => Some("5".to_owned()),
        _ => None,
    }
}

/// One publisher under test.
trait Contender: Send + Sync + 'static {
    /// Publish one message as task `task` and await its confirm.
    fn op(&self, task: usize) -> impl Future<Output = ()> + Send;
}

struct Ours(ResourceManager);

impl Contender for Ours {
    async fn op(&self, _task: usize) {
        let channel = self
            .0
            .acquire::<RabbitMqChannel>()
            .await
            .expect("acquire a channel");
        channel
            .publish("", ROUTING_KEY, PAYLOAD, BasicProperties::default())
            .await
            .expect("publish confirmed");
    }
}

/// lapin used directly: channels in confirm mode, task `t` on channel `t % channels`.
struct Raw {
    channels: Vec<Channel>,
    /// Keeps a connection of its own open (`None` for raw-same, which borrows ours).
    _connection: Option<Connection>,
}

impl Raw {
    async fn open(connection: &Connection, count: usize) -> Vec<Channel> {
        let mut channels = Vec::with_capacity(count);
        for _ in 0..count {
            let channel = connection.create_channel().await.expect("open a channel");
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .expect("confirm.select");
            channels.push(channel);
        }
        channels
    }

    async fn connect(url: &str, count: usize) -> Self {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("raw lapin connection");
        Self {
            channels: Self::open(&connection, count).await,
            _connection: Some(connection),
        }
    }
}

impl Contender for Raw {
    async fn op(&self, task: usize) {
        let channel = &self.channels[task % self.channels.len()];
        let confirm = channel
            .basic_publish(
                "".into(),
                ROUTING_KEY.into(),
                BasicPublishOptions::default(),
                PAYLOAD,
                BasicProperties::default(),
            )
            .await
            .expect("publish");
        assert!(confirm.await.expect("confirm").is_ack(), "nacked");
    }
}

const NAMES: [&str; 3] = ["ours", "raw", "raw-same"];

/// `ours` and `raw`, each on a connection of its own with `count` channels.
struct Clients {
    ours: Arc<Ours>,
    raw: Arc<Raw>,
}

impl Clients {
    /// Connect `ours` and `raw` with `count` channels each, starting with contender `first`.
    async fn connect(url: &str, first: usize, count: usize) -> Self {
        let (mut ours, mut raw) = (None, None);
        for step in 0..2 {
            if (first + step).is_multiple_of(2) {
                let manager = ResourceManager::builder()
                    .register(RabbitMq, RabbitMqConfig::new(url))
                    .register_with(
                        RabbitMqChannel,
                        RabbitMqChannelConfig::default(),
                        Policy::default().pool(PoolConfig::default().max_size(count)),
                    )
                    .build()
                    .await
                    .unwrap_or_else(|err| panic!("connect to RabbitMQ at {url}: {err}"));
                ours = Some(Ours(manager));
            } else {
                raw = Some(Raw::connect(url, count).await);
            }
        }
        Self {
            ours: Arc::new(ours.expect("connected")),
            raw: Arc::new(raw.expect("connected")),
        }
    }

    /// `raw-same`: `count` lapin channels opened on our resource's own connection. Opened only
    /// after `ours` and `raw` were sampled: lapin's I/O loop looks at every channel of its
    /// connection for each frame it sends, so extra channels on our connection would slow
    /// `ours` down against `raw`.
    async fn same(&self, count: usize) -> Arc<Raw> {
        let connection = self
            .ours
            .0
            .acquire::<RabbitMq>()
            .await
            .expect("acquire RabbitMq");
        Arc::new(Raw {
            channels: Raw::open(&connection, count).await,
            _connection: None,
        })
    }

    async fn close(self, same: Arc<Raw>) {
        for channel in &same.channels {
            let _ = channel.close(200, "OK".into()).await;
        }
        drop(same);
        self.ours
            .0
            .shutdown(Duration::from_secs(5))
            .await
            .expect("shut down");
    }

    /// A sample of `ours` (`index` 0) or `raw` (1).
    async fn sample(
        &self,
        index: usize,
        tasks: usize,
        ops: u64,
        limit: Duration,
    ) -> Option<Sample> {
        if index == 0 {
            run_sample(&self.ours, tasks, ops, limit).await
        } else {
            run_sample(&self.raw, tasks, ops, limit).await
        }
    }
}

async fn run_sample<C: Contender>(
    contender: &Arc<C>,
    tasks: usize,
    ops: u64,
    limit: Duration,
) -> Option<Sample> {
    let mut set = JoinSet::new();
    let start = Instant::now();
    for (task, count) in split_ops(ops, tasks).into_iter().enumerate() {
        let contender = Arc::clone(contender);
        set.spawn(async move {
            let mut latencies =
                Vec::with_capacity(usize::try_from(count).expect("ops fit in usize"));
            for _ in 0..count {
                let began = Instant::now();
                contender.op(task).await;
                latencies.push(began.elapsed());
            }
            latencies
        });
    }
    let tasks = join_within(set, limit).await?;
    Some(Sample {
        elapsed: start.elapsed(),
        latencies: tasks.into_iter().flatten().collect(),
    })
}

/// Each task alternates an operation through `ours` and one through `peer` (which of the two
/// goes first alternates with the task), timing them apart; returns `ours / peer` as
/// (throughput, p99). With the same contender on both sides it measures the method's noise.
async fn run_interleaved<A: Contender, B: Contender>(
    ours: &Arc<A>,
    peer: &Arc<B>,
    tasks: usize,
    ops: u64,
    limit: Duration,
) -> Option<(f64, f64)> {
    let mut set = JoinSet::new();
    for (task, count) in split_ops(ops, tasks).into_iter().enumerate() {
        let ours = Arc::clone(ours);
        let peer = Arc::clone(peer);
        set.spawn(async move {
            let mut latencies = (Vec::new(), Vec::new());
            for i in 0..count {
                let began = Instant::now();
                if (i + u64::try_from(task).expect("task fits in u64")).is_multiple_of(2) {
                    ours.op(task).await;
                    latencies.0.push(began.elapsed());
                } else {
                    peer.op(task).await;
                    latencies.1.push(began.elapsed());
                }
            }
            latencies
        });
    }
    let (ours, peer): (Vec<_>, Vec<_>) = join_within(set, limit).await?.into_iter().unzip();
    let (mut ours, mut peer): (Vec<Duration>, Vec<Duration>) = (
        ours.into_iter().flatten().collect(),
        peer.into_iter().flatten().collect(),
    );
    let mean = |latencies: &[Duration]| {
        latencies.iter().sum::<Duration>().as_secs_f64()
            / f64::from(u32::try_from(latencies.len()).expect("latencies fit in u32"))
    };
    Some((
        mean(&peer) / mean(&ours),
        p99_micros(&mut ours) / p99_micros(&mut peer),
    ))
}

struct Row {
    tasks: usize,
    cells: [Cell; 3],
    /// Per round, `ours / raw` from an interleaved sample: (throughput, p99).
    versus_raw: Vec<(f64, f64)>,
    /// Per round, `ours / raw-same` from an interleaved sample.
    versus_same: Vec<(f64, f64)>,
    /// Per round, raw-same interleaved with itself: how far a ratio strays from 1 when
    /// nothing differs between its two halves.
    control: Vec<(f64, f64)>,
}

async fn run_row(url: &str, settings: &Settings, tasks: usize) -> Row {
    let mut cells: [Cell; 3] = Default::default();
    let (mut versus_raw, mut versus_same, mut control) = (Vec::new(), Vec::new(), Vec::new());
    let count = tasks.max(POOL_SIZE);
    for round in 0..settings.samples {
        // `ours` and `raw`, each on its own connection with `count` channels, warmed up and
        // sampled alone in an order that rotates with the round, then interleaved.
        let clients = Clients::connect(url, round, count).await;
        for (ops, recorded) in [(settings.warmup_ops, false), (settings.ops, true)] {
            if ops == 0 {
                continue;
            }
            for step in 0..2 {
                let index = (round + step) % 2;
                let outcome = clients.sample(index, tasks, ops, settings.timeout).await;
                report_hang(NAMES[index], settings, outcome.is_none());
                if recorded {
                    cells[index].record(outcome);
                }
            }
        }
        let paired = run_interleaved(
            &clients.ours,
            &clients.raw,
            tasks,
            settings.ops,
            settings.timeout,
        )
        .await;
        report_hang("ours/raw interleaved", settings, paired.is_none());
        versus_raw.extend(paired);
        // Then `raw-same` on our connection (which now carries twice the channels), alone and
        // interleaved with `ours`.
        let same = clients.same(count).await;
        if settings.warmup_ops > 0 {
            let warm = run_sample(&same, tasks, settings.warmup_ops, settings.timeout).await;
            report_hang(NAMES[2], settings, warm.is_none());
        }
        let outcome = run_sample(&same, tasks, settings.ops, settings.timeout).await;
        report_hang(NAMES[2], settings, outcome.is_none());
        cells[2].record(outcome);
        let paired =
            run_interleaved(&clients.ours, &same, tasks, settings.ops, settings.timeout).await;
        report_hang("ours/raw-same interleaved", settings, paired.is_none());
        versus_same.extend(paired);
        let paired = run_interleaved(&same, &same, tasks, settings.ops, settings.timeout).await;
        report_hang("control interleaved", settings, paired.is_none());
        control.extend(paired);
        clients.close(same).await;
    }
    Row {
        tasks,
        cells,
        versus_raw,
        versus_same,
        control,
    }
}

fn render(rows: &[Row]) -> String {
    const HEADERS: [&str; 15] = [
        "tasks",
        "ours ops/s",
        "p99 µs",
        "raw ops/s",
        "p99 µs",
        "raw-same ops/s",
        "p99 µs",
        "ours/raw ops",
        "ours/raw p99",
        "ours/raw-same ops",
        "ours/raw-same p99",
        "control ops",
        "control p99",
        "alone: ours/raw ops",
        "alone: ours/raw p99",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let [ours, raw, same] = &row.cells;
            let mut line = vec![row.tasks.to_string()];
            for cell in [ours, raw, same] {
                line.push(cell.show_ops());
                line.push(cell.show_p99());
            }
            for (ops, p99) in [
                median_ratios(&row.versus_raw),
                median_ratios(&row.versus_same),
                median_ratios(&row.control),
                ratios(ours, raw),
            ] {
                line.push(show_ratio(ops));
                line.push(show_ratio(p99));
            }
            line
        })
        .collect();
    aligned(&HEADERS, &body)
}

fn verdict(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        let control = match median_ratios(&row.control) {
            (Some(throughput), Some(p99)) => {
                format!("control {throughput:.3}x, p99 {p99:.3}x")
            }
            _ => "no control figures".to_owned(),
        };
        let _ = writeln!(
            out,
            "  tasks={:<4} {}; {} ({control})",
            row.tasks,
            judged("raw", median_ratios(&row.versus_raw)),
            judged("raw-same", median_ratios(&row.versus_same))
        );
    }
    out
}

const HOW_TO_READ: &str = "\
How to read this table:
  * ops/s: confirmed publishes per second of wall time, all tasks together, each contender
    sampled alone; higher is better. p99 µs: 99th percentile of one operation's latency
    (acquire, publish, confirm, release for ours; publish and confirm for raw), in
    microseconds; lower is better. Medians over rounds.
  * ours/<peer> ops = our throughput divided by the peer's (> 1.000: we are faster), from
    interleaved samples: every task alternates an operation through ours and one through the
    peer, so both see the same machine at the same moment. ours/<peer> p99 = our p99 divided
    by the peer's (< 1.000: our tail is shorter). A ratio is the median of the per-round
    ratios. The target is judged on these.
  * raw is lapin on a connection of its own; raw-same is lapin channels on our resource's own
    connection, so ours/raw-same is our overhead alone.
  * control is raw-same interleaved with itself, measured exactly as ours/raw-same: nothing
    differs between its halves, so how far it strays from 1.000 is the method's noise.
  * alone: the same ratios from the samples taken alone, one contender after the other: on a
    shared machine these swing with whatever else runs between two samples.
  * ours and raw have max(16, tasks) channels each on their connection; raw-same's channels
    double that count on our connection, which slows lapin's I/O loop (it looks at every
    channel per frame sent): its ops/s column is not comparable with raw's.
  * The broker runs on the same 2 cores as the 2-worker runtime: absolute figures are the
    machine's, the ratios are the point.";

fn main() {
    let settings = settings_or_exit("rabbitmq", bench_default);
    let url = std::env::var("NEBULA_BENCH_AMQP_URL")
        .unwrap_or_else(|_| "amqp://127.0.0.1:5672/%2f".to_owned());
    let runtime = bench_runtime();

    println!(
        "rabbitmq: publish with confirm against {url}, max({POOL_SIZE}, tasks) channels per \
         contender, tokio multi-thread runtime with {WORKER_THREADS} workers"
    );
    println!(
        "settings: ops/sample={} samples={} warmup ops={} tasks={:?} watchdog={:?}",
        settings.ops, settings.samples, settings.warmup_ops, settings.tasks, settings.timeout,
    );
    let rows = runtime.block_on(async {
        let mut rows = Vec::with_capacity(settings.tasks.len());
        for (index, &tasks) in settings.tasks.iter().enumerate() {
            eprintln!("[{}/{}] tasks={tasks}", index + 1, settings.tasks.len());
            rows.push(run_row(&url, &settings, tasks).await);
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
