//! Shared harness for the `nebula-resource` contention benchmarks.
//!
//! The `pool_overhead` bench (in `benches/pool_overhead.rs`) compares the
//! acquire/release overhead of `nebula-resource`'s pool against `deadpool`,
//! `bb8` and `qp`. This library holds the pieces that are independent of any
//! particular pool:
//!
//! - [`Settings`]: the knobs, read from `BENCH_*` environment variables;
//! - [`Contender`] and [`run_sample`]: spawning `tasks` tasks that together
//!   perform a fixed number of acquire/release cycles, under a watchdog;
//! - [`median`], [`Row`], [`Cell`] and [`render_table`]: turning samples into
//!   the printed report;
//! - [`latency`]: throughput, p99 and round-paired ratios for the real-backend
//!   benches (`postgres`, `redis`).
//!
//! Run the bench with
//!
//! ```text
//! cargo bench -p nebula-resource-benches --bench pool_overhead
//! ```
//!
//! or, for a quick smoke run,
//!
//! ```text
//! BENCH_OPS=20000 BENCH_SAMPLES=3 cargo bench -p nebula-resource-benches --bench pool_overhead
//! ```

pub mod latency;

use std::fmt::Write as _;
use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

/// Maximum pool size used for every contender.
pub const POOL_SIZE: usize = 16;

/// Number of tokio worker threads the bench runtime uses.
pub const WORKER_THREADS: usize = 2;

/// Default task counts, one table block per entry.
pub const DEFAULT_TASKS: [usize; 4] = [1, 16, 64, 256];

/// How long a task keeps an acquired instance before releasing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Acquire, then release at once.
    Immediate,
    /// Acquire, `tokio::task::yield_now().await` once, then release.
    Yield,
}

impl Hold {
    /// Every hold mode, in table order.
    pub const ALL: [Self; 2] = [Self::Immediate, Self::Yield];

    /// Short label used in the table.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Immediate => "immediate",
            Self::Yield => "yield",
        }
    }

    /// Performs the hold phase; call it while the guard is alive.
    pub async fn hold(self) {
        if self == Self::Yield {
            tokio::task::yield_now().await;
        }
    }
}

/// A pool under test.
///
/// Implementations are cheap handles (an `Arc` inside) that every spawned
/// task clones.
pub trait Contender: Clone + Send + Sync + 'static {
    /// Acquires one instance, performs `hold` while holding it, releases it.
    ///
    /// Implementations panic if the pool reports an error: the bench pools
    /// have infallible managers, so an error is a bug worth stopping for.
    fn cycle(&self, hold: Hold) -> impl Future<Output = ()> + Send;
}

/// Bench knobs, read from `BENCH_*` environment variables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Acquire/release cycles per measured sample, summed over all tasks
    /// (`BENCH_OPS`, default 200000).
    pub ops: u64,
    /// Measured samples per contender and cell (`BENCH_SAMPLES`, default 7).
    pub samples: usize,
    /// Cycles in the unmeasured warm-up sample that precedes each cell
    /// (`BENCH_WARMUP_OPS`, default `ops / 4`).
    pub warmup_ops: u64,
    /// Task counts to run (`BENCH_TASKS`, comma separated, default `1,16,64,256`).
    pub tasks: Vec<usize>,
    /// qp's watchdog is `qp_timeout_factor` times the slowest other
    /// contender's time for the same sample (`BENCH_QP_TIMEOUT_FACTOR`, default 10) ...
    pub qp_timeout_factor: u32,
    /// ... but never less than this (`BENCH_QP_TIMEOUT_MS`, default 2000).
    pub qp_timeout_floor: Duration,
    /// Safety watchdog for the other contenders, so that a hang anywhere is
    /// reported instead of stalling the bench (`BENCH_TIMEOUT_MS`, default 60000).
    pub timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ops: 200_000,
            samples: 7,
            warmup_ops: 50_000,
            tasks: DEFAULT_TASKS.to_vec(),
            qp_timeout_factor: 10,
            qp_timeout_floor: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
        }
    }
}

impl Settings {
    /// Reads the settings from the process environment.
    ///
    /// # Errors
    ///
    /// Returns a message naming the variable if a value does not parse or is
    /// out of range.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup` (a stand-in for the environment).
    ///
    /// # Errors
    ///
    /// Returns a message naming the variable if a value does not parse or is
    /// out of range.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let defaults = Self::default();
        let ops: u64 = parse_var(&lookup, "BENCH_OPS", defaults.ops)?;
        let samples: usize = parse_var(&lookup, "BENCH_SAMPLES", defaults.samples)?;
        let warmup_ops: u64 = parse_var(&lookup, "BENCH_WARMUP_OPS", ops / 4)?;
        let qp_timeout_factor: u32 = parse_var(
            &lookup,
            "BENCH_QP_TIMEOUT_FACTOR",
            defaults.qp_timeout_factor,
        )?;
        let qp_floor_ms: u64 = parse_var(&lookup, "BENCH_QP_TIMEOUT_MS", 2_000)?;
        let timeout_ms: u64 = parse_var(&lookup, "BENCH_TIMEOUT_MS", 60_000)?;
        let tasks = match lookup("BENCH_TASKS") {
            None => defaults.tasks,
            Some(raw) => raw
                .split(',')
                .map(str::trim)
                .filter(|part| !part.is_empty())
                .map(|part| {
                    part.parse::<usize>()
                        .map_err(|err| format!("BENCH_TASKS: {part:?}: {err}"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        if ops == 0 {
            return Err("BENCH_OPS must be at least 1".to_owned());
        }
        if samples == 0 {
            return Err("BENCH_SAMPLES must be at least 1".to_owned());
        }
        if qp_timeout_factor == 0 {
            return Err("BENCH_QP_TIMEOUT_FACTOR must be at least 1".to_owned());
        }
        if tasks.is_empty() || tasks.contains(&0) {
            return Err("BENCH_TASKS must list task counts of at least 1".to_owned());
        }
        Ok(Self {
            ops,
            samples,
            warmup_ops,
            tasks,
            qp_timeout_factor,
            qp_timeout_floor: Duration::from_millis(qp_floor_ms),
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    /// The qp watchdog for a sample whose slowest other contender took
    /// `slowest_other` (if any of them finished).
    #[must_use]
    pub fn qp_timeout(&self, slowest_other: Option<Duration>) -> Duration {
        slowest_other
            .map_or(Duration::ZERO, |slowest| slowest * self.qp_timeout_factor)
            .max(self.qp_timeout_floor)
    }
}

fn parse_var<T>(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> Result<T, String>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match lookup(name) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .replace('_', "")
            .parse()
            .map_err(|err| format!("{name}: {raw:?}: {err}")),
    }
}

/// Splits `total` cycles over `tasks` tasks as evenly as possible.
///
/// The first `total % tasks` tasks get one extra cycle; the parts always sum
/// to `total`.
///
/// # Panics
///
/// Panics if `tasks` is zero.
#[must_use]
pub fn split_ops(total: u64, tasks: usize) -> Vec<u64> {
    assert!(tasks > 0, "split_ops needs at least one task");
    let tasks_u64 = u64::try_from(tasks).expect("task count fits in u64");
    let base = total / tasks_u64;
    let extra = total % tasks_u64;
    (0..tasks_u64)
        .map(|index| base + u64::from(index < extra))
        .collect()
}

/// Runs one sample: spawns `tasks` tasks that together perform `total_ops`
/// acquire/release cycles on `contender`, and times the whole batch.
///
/// Returns the wall time from the first spawn until the last task finished,
/// or `None` if the batch did not finish within `limit`; in that case every
/// task of the batch has been aborted (and reaped) before this returns.
///
/// Call it from a task that is *not* one of the runtime's workers (e.g. the
/// future given to `Runtime::block_on`), so the timer does not compete with
/// the tasks it times.
///
/// # Panics
///
/// Panics (re-raising the task's panic) if a task panicked, e.g. because the
/// pool returned an error.
pub async fn run_sample<C: Contender>(
    contender: &C,
    tasks: usize,
    total_ops: u64,
    hold: Hold,
    limit: Duration,
) -> Option<Duration> {
    let mut set = JoinSet::new();
    let start = Instant::now();
    for ops in split_ops(total_ops, tasks) {
        let contender = contender.clone();
        set.spawn(async move {
            for _ in 0..ops {
                contender.cycle(hold).await;
            }
        });
    }
    join_within(set, limit).await.map(|_| start.elapsed())
}

/// Wait until `limit` for every task of `set`, and return their outputs in the order they
/// finished; `None` if they did not all finish in time, after aborting and reaping every task.
///
/// # Panics
///
/// Panics (re-raising the task's panic) if a task panicked, or if one was cancelled.
pub async fn join_within<T: 'static>(mut set: JoinSet<T>, limit: Duration) -> Option<Vec<T>> {
    let joined = tokio::time::timeout(limit, async {
        let mut outputs = Vec::with_capacity(set.len());
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(output) => outputs.push(output),
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                Err(err) => panic!("bench task failed: {err}"),
            }
        }
        outputs
    })
    .await;
    if joined.is_err() {
        set.abort_all();
        while set.join_next().await.is_some() {}
    }
    joined.ok()
}

/// Nanoseconds per cycle for a sample of `ops` cycles that took `elapsed`.
#[must_use]
#[expect(
    clippy::cast_precision_loss,
    reason = "bench figures are far below 2^52"
)]
pub fn ns_per_op(elapsed: Duration, ops: u64) -> f64 {
    elapsed.as_nanos() as f64 / ops.max(1) as f64
}

/// Median of `values`, or `None` when empty (mean of the middle two for an
/// even count).
#[must_use]
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let len = sorted.len();
    match len {
        0 => None,
        _ if len % 2 == 1 => Some(sorted[len / 2]),
        _ => Some(f64::midpoint(sorted[len / 2 - 1], sorted[len / 2])),
    }
}

/// One contender's results in one table cell.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cell {
    /// ns/op of every sample that finished.
    pub samples: Vec<f64>,
    /// Number of samples that hit the watchdog.
    pub hung: usize,
}

impl Cell {
    /// Records one sample's outcome (`None` = watchdog fired).
    pub fn record(&mut self, elapsed: Option<Duration>, ops: u64) {
        match elapsed {
            Some(elapsed) => self.samples.push(ns_per_op(elapsed, ops)),
            None => self.hung += 1,
        }
    }

    /// Median ns/op, or `None` if any sample hung (or none was taken).
    #[must_use]
    pub fn value(&self) -> Option<f64> {
        if self.hung > 0 {
            None
        } else {
            median(&self.samples)
        }
    }

    /// The ns/op column text: the median, or `hang`.
    #[must_use]
    pub fn display(&self) -> String {
        match self.value() {
            Some(value) => format!("{value:.1}"),
            None if self.hung > 0 => "hang".to_owned(),
            None => "-".to_owned(),
        }
    }
}

/// One table row: a (tasks, hold) combination with every contender's cell.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Number of concurrent tasks.
    pub tasks: usize,
    /// Hold mode.
    pub hold: Hold,
    /// `nebula-resource` through `ResourceManager`.
    pub ours: Cell,
    /// `deadpool` managed pool.
    pub deadpool: Cell,
    /// `bb8` pool.
    pub bb8: Cell,
    /// `qp` pool.
    pub qp: Cell,
}

fn ratio(ours: &Cell, peer: &Cell) -> String {
    match (ours.value(), peer.value()) {
        (Some(ours), Some(peer)) if peer > 0.0 => format!("{:.2}", ours / peer),
        _ => "-".to_owned(),
    }
}

/// How to read the table printed by [`render_table`].
pub const HOW_TO_READ: &str = "\
How to read this table:
  * Each cell is the median wall-clock time per acquire+release cycle (ns/op) over
    all measured samples; lower is better. `tasks` tasks share a fixed number of
    cycles, so ns/op is throughput-based: it includes scheduling and contention.
  * hold = immediate: acquire, then release at once. hold = yield: acquire,
    tokio::task::yield_now().await, release (the guard is held across a
    scheduling point, so with tasks > pool size tasks really wait for instances).
  * ours/<peer> = ours ns/op divided by the peer's: < 1.00 means nebula-resource is
    faster, > 1.00 means it is slower (1.25 = 25% more time per op).
  * `hang` = at least one sample did not finish before its watchdog (for qp: a
    multiple of the slowest other contender's time in the same round, with a floor;
    see the settings line), its tasks were aborted and no median is reported.
    `-` in a ratio means there is nothing to compare with.
  * Contenders are sampled round-robin (ours, deadpool, bb8, qp, then again) so
    machine noise hits them all alike; every pool has max size 16 and otherwise
    its library's defaults.";

/// The settings of the bench `bench`: the environment's `BENCH_*` variables over the bench's
/// own `defaults`, over [`Settings::default`]. A bad value ends the process with status 2 and a
/// message naming the bench and the variable.
#[must_use]
pub fn settings_or_exit(bench: &str, defaults: fn(&str) -> Option<String>) -> Settings {
    Settings::from_lookup(|name| std::env::var(name).ok().or_else(|| defaults(name)))
        .unwrap_or_else(|message| {
            eprintln!("{bench}: bad setting: {message}");
            std::process::exit(2);
        })
}

/// The runtime every real-backend bench runs on: multi-thread, [`WORKER_THREADS`] workers.
///
/// # Panics
///
/// If tokio cannot build it (no threads, no I/O driver).
#[must_use]
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .enable_all()
        .build()
        .expect("build tokio runtime")
}

/// Say on stderr that `what` did not finish within the watchdog (when `hung`).
pub fn report_hang(what: &str, settings: &Settings, hung: bool) {
    if hung {
        eprintln!(
            "    {what}: no finish within {:?}; aborted its tasks",
            settings.timeout
        );
    }
}

/// Renders the result table.
#[must_use]
pub fn render_table(rows: &[Row]) -> String {
    const HEADERS: [&str; 9] = [
        "tasks",
        "hold",
        "ours ns/op",
        "deadpool",
        "bb8",
        "qp",
        "ours/deadpool",
        "ours/bb8",
        "ours/qp",
    ];
    let body: Vec<[String; 9]> = rows
        .iter()
        .map(|row| {
            [
                row.tasks.to_string(),
                row.hold.label().to_owned(),
                row.ours.display(),
                row.deadpool.display(),
                row.bb8.display(),
                row.qp.display(),
                ratio(&row.ours, &row.deadpool),
                ratio(&row.ours, &row.bb8),
                ratio(&row.ours, &row.qp),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for line in &body {
        for (width, text) in widths.iter_mut().zip(line) {
            *width = (*width).max(text.len());
        }
    }
    let mut out = String::new();
    let mut push_line = |cells: &[&str]| {
        let mut line = String::new();
        for (index, (text, width)) in cells.iter().zip(widths).enumerate() {
            if index > 0 {
                line.push_str(" | ");
            }
            if index == 1 {
                let _ = write!(line, "{text:<width$}");
            } else {
                let _ = write!(line, "{text:>width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_line(&HEADERS);
    let rule: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
    push_line(&rule.iter().map(String::as_str).collect::<Vec<_>>());
    for line in &body {
        push_line(&line.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_ops_sums_to_total() {
        assert_eq!(split_ops(10, 3), vec![4, 3, 3]);
        assert_eq!(split_ops(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(split_ops(200_000, 256).iter().sum::<u64>(), 200_000);
    }

    #[test]
    fn median_handles_odd_even_and_empty() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn settings_parse_and_validate() {
        let settings = Settings::from_lookup(|name| match name {
            "BENCH_OPS" => Some("20_000".to_owned()),
            "BENCH_SAMPLES" => Some("3".to_owned()),
            "BENCH_TASKS" => Some("1, 64".to_owned()),
            _ => None,
        })
        .expect("valid settings");
        assert_eq!(settings.ops, 20_000);
        assert_eq!(settings.samples, 3);
        assert_eq!(settings.warmup_ops, 5_000);
        assert_eq!(settings.tasks, vec![1, 64]);
        assert_eq!(Settings::from_lookup(|_| None), Ok(Settings::default()));
        assert!(
            Settings::from_lookup(|name| (name == "BENCH_OPS").then(|| "x".to_owned())).is_err()
        );
        assert!(
            Settings::from_lookup(|name| (name == "BENCH_TASKS").then(|| "0".to_owned())).is_err()
        );
    }

    #[test]
    fn qp_timeout_has_floor_and_factor() {
        let settings = Settings::default();
        assert_eq!(settings.qp_timeout(None), Duration::from_secs(2));
        assert_eq!(
            settings.qp_timeout(Some(Duration::from_millis(10))),
            Duration::from_secs(2)
        );
        assert_eq!(
            settings.qp_timeout(Some(Duration::from_secs(1))),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn table_shows_hang_and_ratios() {
        let cell = |samples: &[f64], hung| Cell {
            samples: samples.to_vec(),
            hung,
        };
        let rows = [Row {
            tasks: 64,
            hold: Hold::Yield,
            ours: cell(&[100.0, 120.0, 110.0], 0),
            deadpool: cell(&[200.0], 0),
            bb8: cell(&[55.0], 0),
            qp: cell(&[90.0], 1),
        }];
        let table = render_table(&rows);
        let last = table.lines().last().expect("a row");
        assert!(last.contains("110.0"), "{table}");
        assert!(last.contains("hang"), "{table}");
        assert!(last.contains("0.55"), "{table}");
        assert!(last.contains("2.00"), "{table}");
        assert!(last.trim_end().ends_with('-'), "{table}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn run_sample_times_out_and_aborts() {
        #[derive(Clone)]
        struct Stuck;
        impl Contender for Stuck {
            async fn cycle(&self, _hold: Hold) {
                std::future::pending::<()>().await;
            }
        }
        #[derive(Clone)]
        struct Ready;
        impl Contender for Ready {
            async fn cycle(&self, hold: Hold) {
                hold.hold().await;
            }
        }
        let limit = Duration::from_millis(50);
        assert_eq!(run_sample(&Stuck, 4, 8, Hold::Immediate, limit).await, None);
        assert!(
            run_sample(&Ready, 4, 100, Hold::Yield, Duration::from_secs(10))
                .await
                .is_some()
        );
    }
}
