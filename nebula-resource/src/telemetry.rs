//! Metrics through the `metrics` facade. Handles are registered once per pool, so recording is a
//! method call on a handle — a no-op when no recorder is installed.

use std::time::Duration;

use metrics::{Counter, Histogram, IntoF64, counter, histogram};
use tokio::time::Instant;

/// The metric handles of one pool.
#[derive(Debug)]
pub(crate) struct PoolMetrics {
    acquired: Counter,
    wait: Histogram,
    hold: Histogram,
    created: Counter,
    create_time: Histogram,
    destroyed: Counter,
}

impl PoolMetrics {
    pub(crate) fn new(key: &'static str, name: Option<&str>, tenant: Option<&str>) -> Self {
        let labels = [
            ("resource", key.to_owned()),
            ("name", name.unwrap_or("").to_owned()),
            ("tenant", tenant.unwrap_or("").to_owned()),
        ];
        Self {
            acquired: counter!("nebula_resource_acquired_total", &labels),
            wait: histogram!("nebula_resource_acquire_wait_seconds", &labels),
            hold: histogram!("nebula_resource_hold_seconds", &labels),
            created: counter!("nebula_resource_created_total", &labels),
            create_time: histogram!("nebula_resource_create_seconds", &labels),
            destroyed: counter!("nebula_resource_destroyed_total", &labels),
        }
    }

    pub(crate) fn acquired(&self) {
        self.acquired.increment(1);
    }

    pub(crate) fn waited(&self, wait: Duration) {
        self.wait.record(wait);
    }

    /// A guard acquired at `since` was dropped at `now`. The hold time is only computed when a
    /// recorder takes it: with none installed, a release does no time arithmetic for it.
    pub(crate) fn held(&self, since: Instant, now: Instant) {
        self.hold.record(Elapsed { since, now });
    }

    pub(crate) fn created(&self, took: Duration) {
        self.created.increment(1);
        self.create_time.record(took);
    }

    pub(crate) fn destroyed(&self) {
        self.destroyed.increment(1);
    }
}

/// The time from `since` to `now`, in seconds when a histogram asks for it.
struct Elapsed {
    since: Instant,
    now: Instant,
}

impl IntoF64 for Elapsed {
    fn into_f64(self) -> f64 {
        self.now.saturating_duration_since(self.since).as_secs_f64()
    }
}
