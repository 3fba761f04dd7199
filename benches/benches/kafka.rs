//! Kafka produce throughput and latency: nebula-resource-kafka against the raw rdkafka
//! `FutureProducer`, on a real broker (tansu, or any Kafka-protocol broker).
//!
//! Contenders, every one a librdkafka producer with the same settings:
//!
//! - `ours`: the resident [`KafkaProducer`] resource — each operation is
//!   `manager.acquire::<KafkaProducer>()`, one `send` through the guard (the driver's
//!   `FutureProducer::send`), awaited until the broker acknowledged, then the guard dropped;
//! - `raw`: a `FutureProducer` of its own, shared by the tasks — each operation sends through
//!   it and awaits the acknowledgement (the cheapest way to use the driver, the strictest
//!   baseline);
//! - `raw-same`: the `FutureProducer` inside our resource's instance (a clone of it), used the
//!   same way. It shares `ours`'s librdkafka producer, connections and threads, so
//!   `ours / raw-same` is our overhead alone.
//!
//! An operation produces 64 bytes to one partition and ends when the broker acknowledged it,
//! so its time is mostly the broker round trip and librdkafka's batching, which depend on
//! everything else the machine does at that moment. Figures from samples run one after
//! another swing by tens of percent from one sample to the next on this machine, far more than
//! our overhead; the ratios are therefore measured **interleaved**: in one sample, each task
//! runs pairs of operations — one through ours and one through the peer, in a pseudo-random
//! order — timing them apart, so both see the same broker, load and moment. There is one such
//! sample per round for each peer (`ours` with `raw`, `ours` with `raw-same`). Each contender
//! also gets a sample of its own per round, for the absolute figures.
//!
//! `linger.ms` is 0 for every contender (`BENCH_KAFKA_LINGER_MS` to change it). For each task
//! count (1, 16, 64, 256), `tasks` tasks share a fixed number of operations on a 2-worker
//! multi-thread tokio runtime. Every round makes the contenders afresh on a topic of its own,
//! warms each up, samples each alone (round-robin from a rotating start), then runs the two
//! interleaved samples in an order that alternates by round; a cell's figures are medians over
//! its rounds, and a ratio is the median of the per-round ratios.
//!
//! ```text
//! cargo bench -p nebula-resource-benches --bench kafka
//! BENCH_OPS=5000 BENCH_SAMPLES=3 BENCH_TASKS=1,64 cargo bench -p nebula-resource-benches --bench kafka
//! ```
//!
//! Knobs (environment variables, see `nebula_resource_benches::Settings`): `BENCH_OPS`
//! (operations per sample, default 20000 here), `BENCH_SAMPLES` (default 5 here),
//! `BENCH_WARMUP_OPS` (default `ops / 4`), `BENCH_TASKS` (default `1,16,64,256`),
//! `BENCH_TIMEOUT_MS` (watchdog per sample); `NEBULA_BENCH_KAFKA_BROKERS` (default
//! `127.0.0.1:9092`) and `BENCH_KAFKA_LINGER_MS` (default 0).

#![allow(
    clippy::print_stdout,
    reason = "a harness = false bench reports on stdout"
)]

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nebula_resource::ResourceManager;
use nebula_resource_benches::latency::{
    Cell, Sample, aligned, judged, median_ratios, p99_micros, ratios, show_ratio,
};
use nebula_resource_benches::{
    Settings, WORKER_THREADS, bench_runtime, join_within, report_hang, settings_or_exit, split_ops,
};
use nebula_resource_kafka::{KafkaConfig, KafkaContext, KafkaProducer};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::task::JoinSet;

/// What this bench uses where the shared settings' defaults are sized for the in-memory pool
/// bench.
fn bench_default(name: &str) -> Option<String> {
    match name {
        "BENCH_OPS" => Some("20000".to_owned()),
        "BENCH_SAMPLES" => Some("5".to_owned()),
        _ => None,
    }
}

/// The payload of every message.
const PAYLOAD: &[u8; 64] = b"nebula-resource-kafka-bench-payload-0123456789abcdefghijklmnopqr";

/// How long a send may wait for room in librdkafka's queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// One producer under test.
trait Contender: Send + Sync + 'static {
    /// Produce one message to `topic` and wait for its acknowledgement.
    fn op(&self, topic: &str) -> impl Future<Output = ()> + Send;
}

struct Ours(ResourceManager);

impl Contender for Ours {
    async fn op(&self, topic: &str) {
        let producer = self.0.acquire::<KafkaProducer>().await.expect("acquire");
        producer
            .send(
                FutureRecord::<(), _>::to(topic).payload(&PAYLOAD[..]),
                QUEUE_TIMEOUT,
            )
            .await
            .unwrap_or_else(|(err, _)| panic!("send through ours: {err}"));
    }
}

struct Raw<C: ClientContext + 'static>(FutureProducer<C>);

impl<C: ClientContext + 'static> Contender for Raw<C> {
    async fn op(&self, topic: &str) {
        self.0
            .send(
                FutureRecord::<(), _>::to(topic).payload(&PAYLOAD[..]),
                QUEUE_TIMEOUT,
            )
            .await
            .unwrap_or_else(|(err, _)| panic!("send through the raw producer: {err}"));
    }
}

/// The contenders, in table order.
const NAMES: [&str; 3] = ["ours", "raw", "raw-same"];

/// The librdkafka settings every contender shares.
struct Setup {
    brokers: String,
    linger_ms: String,
}

impl Setup {
    fn ours(&self) -> KafkaConfig {
        KafkaConfig::new(&self.brokers)
            .client_id("nebula-bench-ours")
            .set("linger.ms", &self.linger_ms)
    }

    fn raw(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", "nebula-bench-raw")
            .set("linger.ms", &self.linger_ms)
            .set("message.timeout.ms", "30000")
            .create()
            .unwrap_or_else(|err| panic!("make the raw producer: {err}"))
    }
}

struct Clients {
    ours: Arc<Ours>,
    raw: Arc<Raw<DefaultClientContext>>,
    raw_same: Arc<Raw<KafkaContext>>,
}

impl Clients {
    /// Make every contender, our manager first on even rounds and the raw producer first on
    /// odd ones.
    async fn connect(setup: &Setup, round: usize) -> Self {
        let ours = async {
            ResourceManager::builder()
                .register(KafkaProducer::new(), setup.ours())
                .build()
                .await
                .unwrap_or_else(|err| panic!("make our producer for {}: {err}", setup.brokers))
        };
        let (manager, raw) = if round.is_multiple_of(2) {
            let manager = ours.await;
            (manager, setup.raw())
        } else {
            let raw = setup.raw();
            (ours.await, raw)
        };
        let guard = manager.acquire::<KafkaProducer>().await.expect("acquire");
        let same: FutureProducer<KafkaContext> = FutureProducer::clone(&guard);
        drop(guard);
        Self {
            ours: Arc::new(Ours(manager)),
            raw: Arc::new(Raw(raw)),
            raw_same: Arc::new(Raw(same)),
        }
    }

    async fn close(self) {
        let Self {
            ours,
            raw,
            raw_same,
        } = self;
        drop(raw_same);
        ours.0
            .shutdown(Duration::from_secs(10))
            .await
            .expect("shut down");
        // Flushing and dropping a librdkafka producer blocks: off the runtime's workers.
        tokio::task::spawn_blocking(move || {
            raw.0
                .flush(Duration::from_secs(10))
                .expect("flush the raw producer");
            drop(raw);
        })
        .await
        .expect("close the raw producer");
    }

    /// One sample of contender `index` (in [`NAMES`] order).
    async fn sample(
        &self,
        index: usize,
        topic: &Arc<str>,
        tasks: usize,
        ops: u64,
        limit: Duration,
    ) -> Option<Sample> {
        match index {
            0 => run_sample(&self.ours, topic, tasks, ops, limit).await,
            1 => run_sample(&self.raw, topic, tasks, ops, limit).await,
            _ => run_sample(&self.raw_same, topic, tasks, ops, limit).await,
        }
    }
}

/// Spawn `tasks` tasks that together run `ops` sends on `contender`, timing each; `None` (after
/// aborting and reaping the tasks) if they did not finish within `limit`.
async fn run_sample<C: Contender>(
    contender: &Arc<C>,
    topic: &Arc<str>,
    tasks: usize,
    ops: u64,
    limit: Duration,
) -> Option<Sample> {
    let mut set = JoinSet::new();
    let start = Instant::now();
    for count in split_ops(ops, tasks) {
        let contender = Arc::clone(contender);
        let topic = Arc::clone(topic);
        set.spawn(async move {
            let mut latencies =
                Vec::with_capacity(usize::try_from(count).expect("ops fit in usize"));
            for _ in 0..count {
                let began = Instant::now();
                contender.op(&topic).await;
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

/// Each of `tasks` tasks alternates a send through `ours` and one through `peer`, `ops` in
/// all; returns `ours / peer` as (throughput, p99), or `None` if the tasks did not finish
/// within `limit` (they are aborted then).
async fn run_interleaved<A: Contender, B: Contender>(
    ours: &Arc<A>,
    peer: &Arc<B>,
    topic: &Arc<str>,
    tasks: usize,
    ops: u64,
    limit: Duration,
) -> Option<(f64, f64)> {
    let mut set = JoinSet::new();
    for count in split_ops(ops, tasks) {
        let ours = Arc::clone(ours);
        let peer = Arc::clone(peer);
        let topic = Arc::clone(topic);
        set.spawn(async move {
            let mut latencies = (Vec::new(), Vec::new());
            // Pairs in a pseudo-random order, so that neither contender always goes first
            // (and always finds the batch librdkafka is filling in the same state).
            let mut order: u32 = 0x9e37_79b9;
            for _ in 0..count.div_ceil(2) {
                order ^= order << 13;
                order ^= order >> 17;
                order ^= order << 5;
                for ours_turn in [order & 1 == 0, order & 1 == 1] {
                    let began = Instant::now();
                    if ours_turn {
                        ours.op(&topic).await;
                        latencies.0.push(began.elapsed());
                    } else {
                        peer.op(&topic).await;
                        latencies.1.push(began.elapsed());
                    }
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
    let throughput = mean(&peer) / mean(&ours);
    let p99 = p99_micros(&mut ours) / p99_micros(&mut peer);
    Some((throughput, p99))
}

struct Row {
    tasks: usize,
    cells: [Cell; 3],
    /// `ours / raw` throughput and p99 of each round's interleaved sample.
    with_raw: Vec<(f64, f64)>,
    /// `ours / raw-same` throughput and p99 of each round's interleaved sample.
    with_same: Vec<(f64, f64)>,
}

/// One row: `samples` rounds, each with fresh producers and a topic of its own, a warm-up of
/// every contender, one measured sample of each (round-robin from a rotating start) and the
/// two interleaved samples.
async fn run_row(setup: &Setup, settings: &Settings, tasks: usize) -> Row {
    let mut cells: [Cell; 3] = Default::default();
    let (mut with_raw, mut with_same) = (Vec::new(), Vec::new());
    for round in 0..settings.samples {
        let topic: Arc<str> = Arc::from(format!(
            "nebula-bench-{}-{tasks}-{round}",
            std::process::id()
        ));
        create_topic(&setup.brokers, &topic).await;
        let clients = Clients::connect(setup, round).await;
        for step in 0..NAMES.len() {
            let index = (round + step) % NAMES.len();
            if settings.warmup_ops > 0 {
                let warm = clients
                    .sample(index, &topic, tasks, settings.warmup_ops, settings.timeout)
                    .await;
                report_hang(NAMES[index], settings, warm.is_none());
            }
        }
        for step in 0..NAMES.len() {
            let index = (round + step) % NAMES.len();
            let outcome = clients
                .sample(index, &topic, tasks, settings.ops, settings.timeout)
                .await;
            report_hang(NAMES[index], settings, outcome.is_none());
            cells[index].record(outcome);
        }
        for raw_first in [round.is_multiple_of(2), !round.is_multiple_of(2)] {
            let (ops, limit) = (settings.ops, settings.timeout);
            if raw_first {
                let paired =
                    run_interleaved(&clients.ours, &clients.raw, &topic, tasks, ops, limit).await;
                report_hang("ours/raw interleaved", settings, paired.is_none());
                with_raw.extend(paired);
            } else {
                let paired =
                    run_interleaved(&clients.ours, &clients.raw_same, &topic, tasks, ops, limit)
                        .await;
                report_hang("ours/raw-same interleaved", settings, paired.is_none());
                with_same.extend(paired);
            }
        }
        clients.close().await;
    }
    Row {
        tasks,
        cells,
        with_raw,
        with_same,
    }
}

fn render(rows: &[Row]) -> String {
    const HEADERS: [&str; 13] = [
        "tasks",
        "ours ops/s",
        "p99 µs",
        "raw-same ops/s",
        "p99 µs",
        "raw ops/s",
        "p99 µs",
        "ours/raw ops",
        "ours/raw p99",
        "ours/raw-same ops",
        "ours/raw-same p99",
        "alone: ours/raw ops",
        "alone: ours/raw p99",
    ];
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let [ours, raw, same] = &row.cells;
            let mut line = vec![row.tasks.to_string()];
            for cell in [ours, same, raw] {
                line.push(cell.show_ops());
                line.push(cell.show_p99());
            }
            let pairs = [
                median_ratios(&row.with_raw),
                median_ratios(&row.with_same),
                ratios(ours, raw),
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

/// The verdict against the targets: ours ≥ 0.97× the raw producer's throughput and p99 ≤ 1.1×.
fn verdict(rows: &[Row]) -> String {
    let mut out = String::new();
    for row in rows {
        let _ = writeln!(
            out,
            "  tasks={:<4} {}; {}",
            row.tasks,
            judged("raw", median_ratios(&row.with_raw)),
            judged("raw-same", median_ratios(&row.with_same))
        );
    }
    out
}

const HOW_TO_READ: &str = "\
How to read this table:
  * ops/s: acknowledged messages per second of wall time, all tasks together; higher is
    better. p99 µs: 99th percentile of one operation's latency (acquire, send, wait for the
    broker's acknowledgement, release), in microseconds; lower is better. Each figure is the
    median over the samples of the cell.
  * ours/<peer> ops = our throughput divided by the peer's (> 1.000: we are faster);
    ours/<peer> p99 = our p99 divided by the peer's (< 1.000: our tail is shorter). A ratio is
    the median of the per-round ratios.
  * ours/raw and ours/raw-same come from interleaved samples (every task runs pairs of the
    two in a random order, timing each), so both sides see the same broker and moment; the
    target is judged on these. \"alone\" ratios compare samples run one after another: they
    carry the broker's swings from one sample to the next, shown for reference only.
  * raw-same is the FutureProducer inside our resource, used raw: same librdkafka producer,
    same connections, so ours/raw-same is our overhead alone. raw is a producer of its own,
    so ours/raw also carries the difference between two librdkafka producers.
  * The broker runs on the same 2 cores as the 2-worker runtime and librdkafka's threads:
    absolute figures are the machine's, the ratios are the point.";

/// Create `topic` (one partition) on `brokers`.
async fn create_topic(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap_or_else(|err| panic!("admin client for {brokers}: {err}"));
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, 1, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap_or_else(|err| panic!("create the bench topic on {brokers}: {err}"));
    for result in results {
        if let Err((name, code)) = result {
            panic!("create topic {name} on {brokers}: {code}");
        }
    }
}

fn main() {
    let settings = settings_or_exit("kafka", bench_default);
    let setup = Setup {
        brokers: std::env::var("NEBULA_BENCH_KAFKA_BROKERS")
            .unwrap_or_else(|_| "127.0.0.1:9092".to_owned()),
        linger_ms: std::env::var("BENCH_KAFKA_LINGER_MS").unwrap_or_else(|_| "0".to_owned()),
    };
    let runtime = bench_runtime();

    println!(
        "kafka: produce 64 bytes to {} and await the acknowledgement, linger.ms={}, tokio \
         multi-thread runtime with {WORKER_THREADS} workers",
        setup.brokers, setup.linger_ms
    );
    println!(
        "settings: ops/sample={} samples={} warmup ops={} tasks={:?} watchdog={:?}",
        settings.ops, settings.samples, settings.warmup_ops, settings.tasks, settings.timeout,
    );

    let rows = runtime.block_on(async {
        let mut rows = Vec::with_capacity(settings.tasks.len());
        for (index, &tasks) in settings.tasks.iter().enumerate() {
            eprintln!("[{}/{}] tasks={tasks}", index + 1, settings.tasks.len());
            rows.push(run_row(&setup, &settings, tasks).await);
        }
        rows
    });

    println!();
    print!("{}", render(&rows));
    println!();
    println!(
        "Target: ours >= 0.97x raw throughput and p99 <= 1.1x raw, at every task count (interleaved):"
    );
    print!("{}", verdict(&rows));
    println!();
    println!("{HOW_TO_READ}");
    runtime.shutdown_timeout(Duration::from_secs(1));
}
