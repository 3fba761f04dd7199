//! Latency bookkeeping shared by the real-backend benches (`postgres`, `redis`, `rabbitmq`,
//! `kafka`, `nats`): one sample's throughput and p99, a contender's samples in a row, ratios
//! paired round by round, their verdict against the targets, and the tables the benches print.

use std::time::Duration;

use crate::median;

/// One sample: wall time and every operation's latency.
pub struct Sample {
    /// Wall time of the whole sample.
    pub elapsed: Duration,
    /// Each operation's latency.
    pub latencies: Vec<Duration>,
}

impl Sample {
    /// Operations per second of wall time.
    #[must_use]
    #[expect(
        clippy::cast_precision_loss,
        reason = "bench figures are far below 2^52"
    )]
    pub fn ops_per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    /// The 99th percentile latency in microseconds (nearest rank).
    pub fn p99_micros(&mut self) -> f64 {
        p99_micros(&mut self.latencies)
    }
}

/// The 99th percentile of `latencies` in microseconds (nearest rank), sorting them.
///
/// # Panics
///
/// Panics if `latencies` is empty.
#[expect(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "a rank within a vector of at most a few million latencies"
)]
pub fn p99_micros(latencies: &mut [Duration]) -> f64 {
    latencies.sort_unstable();
    let rank = ((latencies.len() as f64) * 0.99).ceil() as usize;
    let index = rank.clamp(1, latencies.len()) - 1;
    latencies[index].as_secs_f64() * 1e6
}

/// One contender's samples in one row.
#[derive(Default)]
pub struct Cell {
    /// Throughput of each sample.
    pub ops_per_sec: Vec<f64>,
    /// p99 latency of each sample, in microseconds.
    pub p99_micros: Vec<f64>,
    /// Samples that did not finish before their watchdog.
    pub hung: usize,
}

impl Cell {
    /// Add one sample (`None`: it hung).
    pub fn record(&mut self, sample: Option<Sample>) {
        match sample {
            Some(mut sample) => {
                self.ops_per_sec.push(sample.ops_per_sec());
                self.p99_micros.push(sample.p99_micros());
            }
            None => self.hung += 1,
        }
    }

    /// Median throughput, unless a sample hung.
    #[must_use]
    pub fn ops(&self) -> Option<f64> {
        (self.hung == 0)
            .then(|| median(&self.ops_per_sec))
            .flatten()
    }

    /// Median p99 in microseconds, unless a sample hung.
    #[must_use]
    pub fn p99(&self) -> Option<f64> {
        (self.hung == 0).then(|| median(&self.p99_micros)).flatten()
    }

    /// The throughput for the table (`hang` or `-` when there is none).
    #[must_use]
    pub fn show_ops(&self) -> String {
        self.ops()
            .map_or_else(|| self.missing(), |ops| format!("{:.1}k", ops / 1e3))
    }

    /// The p99 for the table (`hang` or `-` when there is none).
    #[must_use]
    pub fn show_p99(&self) -> String {
        self.p99()
            .map_or_else(|| self.missing(), |p99| format!("{p99:.0}"))
    }

    /// What the table shows instead of a figure.
    #[must_use]
    pub fn missing(&self) -> String {
        if self.hung > 0 { "hang" } else { "-" }.to_owned()
    }
}

/// The median of the per-round ratios `ours[i] / peer[i]`: each round samples every contender
/// back to back, so a ratio within a round cancels the machine's slower drifts.
#[must_use]
pub fn paired_ratio(ours: &[f64], peer: &[f64]) -> Option<f64> {
    let ratios: Vec<f64> = ours
        .iter()
        .zip(peer)
        .filter(|&(_, &peer)| peer > 0.0)
        .map(|(ours, peer)| ours / peer)
        .collect();
    median(&ratios)
}

/// `ours / peer` for throughput (higher is better for us) and p99 (lower is better for us).
#[must_use]
pub fn ratios(ours: &Cell, peer: &Cell) -> (Option<f64>, Option<f64>) {
    if ours.hung > 0 || peer.hung > 0 {
        return (None, None);
    }
    (
        paired_ratio(&ours.ops_per_sec, &peer.ops_per_sec),
        paired_ratio(&ours.p99_micros, &peer.p99_micros),
    )
}

/// A ratio for the table (`-` when there is none).
#[must_use]
pub fn show_ratio(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_owned(), |ratio| format!("{ratio:.3}"))
}

/// The medians of interleaved samples' (throughput, p99) ratios, one pair per round.
#[must_use]
pub fn median_ratios(pairs: &[(f64, f64)]) -> (Option<f64>, Option<f64>) {
    let (ops, p99): (Vec<f64>, Vec<f64>) = pairs.iter().copied().unzip();
    (median(&ops), median(&p99))
}

/// The lowest throughput ratio to the raw driver the real-backend benches accept.
pub const TARGET_THROUGHPUT: f64 = 0.97;

/// The highest p99 ratio to the raw driver the real-backend benches accept.
pub const TARGET_P99: f64 = 1.1;

/// `meets` when a throughput ratio and a p99 ratio are both within the targets, else `MISSES`.
#[must_use]
pub fn meets(throughput: f64, p99: f64) -> &'static str {
    if throughput >= TARGET_THROUGHPUT && p99 <= TARGET_P99 {
        "meets"
    } else {
        "MISSES"
    }
}

/// `ours / peer` judged against [`TARGET_THROUGHPUT`] and [`TARGET_P99`]: `meets raw (throughput
/// 0.991x, p99 1.020x)`, `MISSES …`, or `no figures for raw`.
#[must_use]
pub fn judged(peer: &str, (throughput, p99): (Option<f64>, Option<f64>)) -> String {
    match (throughput, p99) {
        (Some(throughput), Some(p99)) => format!(
            "{} {peer} (throughput {throughput:.3}x, p99 {p99:.3}x)",
            meets(throughput, p99)
        ),
        _ => format!("no figures for {peer}"),
    }
}

/// `body` under `headers` and a rule, each column right-aligned to its widest cell, cells
/// joined by ` | `.
#[must_use]
pub fn aligned(headers: &[&str], body: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for line in body {
        for (width, text) in widths.iter_mut().zip(line) {
            *width = (*width).max(text.chars().count());
        }
    }
    let rule: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
    let lines = std::iter::once(headers.iter().map(|text| (*text).to_owned()).collect())
        .chain(std::iter::once(rule))
        .chain(body.iter().cloned());
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(text, width)| format!("{text:>width$}"))
            .collect();
        out.push_str(cells.join(" | ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_pads_every_column_to_its_widest_cell() {
        let table = aligned(
            &["tasks", "ops/s"],
            &[
                vec!["1".to_owned(), "4.7k".to_owned()],
                vec!["256".to_owned(), "33.7k".to_owned()],
            ],
        );
        assert_eq!(
            table,
            "tasks | ops/s\n----- | -----\n    1 |  4.7k\n  256 | 33.7k\n"
        );
    }

    #[test]
    fn judged_applies_both_targets() {
        assert_eq!(
            judged("raw", (Some(0.97), Some(1.1))),
            "meets raw (throughput 0.970x, p99 1.100x)"
        );
        assert!(judged("raw", (Some(0.969), Some(1.0))).starts_with("MISSES"));
        assert!(judged("raw", (Some(1.0), Some(1.101))).starts_with("MISSES"));
        assert_eq!(judged("raw", (None, Some(1.0))), "no figures for raw");
        assert_eq!(
            median_ratios(&[(1.0, 2.0), (3.0, 1.0), (2.0, 3.0)]),
            (Some(2.0), Some(2.0))
        );
    }
}
