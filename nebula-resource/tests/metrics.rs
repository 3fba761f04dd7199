//! Metrics through the `metrics` facade, seen by a recorder installed for this test binary:
//! acquires, creations and destructions are counted, and hold and wait times are recorded.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Probe, settle};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use nebula_resource::PoolConfig;
use parking_lot::Mutex;

/// One metric's values: a counter's total, or every value a histogram recorded.
#[derive(Default)]
struct Values {
    total: Mutex<u64>,
    recorded: Mutex<Vec<f64>>,
}

impl CounterFn for Values {
    fn increment(&self, value: u64) {
        *self.total.lock() += value;
    }

    fn absolute(&self, value: u64) {
        let mut total = self.total.lock();
        *total = (*total).max(value);
    }
}

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        self.recorded.lock().push(value);
    }
}

/// Keeps every metric by name (this test has one pool, so labels can be ignored).
#[derive(Clone, Default)]
struct Collect(Arc<Mutex<HashMap<String, Arc<Values>>>>);

impl Collect {
    fn values(&self, name: &str) -> Arc<Values> {
        Arc::clone(self.0.lock().entry(name.to_owned()).or_default())
    }
}

impl Recorder for Collect {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.values(key.name()))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.values(key.name()))
    }
}

#[tokio::test(start_paused = true)]
async fn acquires_creates_hold_and_wait_times_are_recorded() {
    let collect = Collect::default();
    metrics::set_global_recorder(collect.clone()).expect("the only recorder of this binary");
    let probe = Probe::new();
    let manager = common::pool_manager(&probe, PoolConfig::default().max_size(1)).await;

    let guard = manager
        .acquire::<common::TestResource>()
        .await
        .expect("acquire");
    let waiter = {
        let manager = manager.clone();
        tokio::spawn(async move {
            let guard = manager.acquire::<common::TestResource>().await;
            drop(guard);
        })
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    drop(guard);
    waiter.await.expect("waiter");
    settle().await;

    assert_eq!(
        *collect
            .values("nebula_resource_acquired_total")
            .total
            .lock(),
        2
    );
    assert_eq!(
        *collect.values("nebula_resource_created_total").total.lock(),
        1
    );
    let held = collect
        .values("nebula_resource_hold_seconds")
        .recorded
        .lock()
        .clone();
    assert_eq!(held.len(), 2, "{held:?}");
    assert!(
        (held[0] - 0.25).abs() < 0.01,
        "the first guard was held 250 ms: {held:?}"
    );
    let waited = collect
        .values("nebula_resource_acquire_wait_seconds")
        .recorded
        .lock()
        .clone();
    // The first acquire waited for its instance's creation (no time, here), the second for
    // the first guard.
    assert_eq!(waited.len(), 2, "{waited:?}");
    assert!(
        waited[0] < 0.01 && (waited[1] - 0.25).abs() < 0.01,
        "{waited:?}"
    );

    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    assert_eq!(
        *collect
            .values("nebula_resource_destroyed_total")
            .total
            .lock(),
        1
    );
}
