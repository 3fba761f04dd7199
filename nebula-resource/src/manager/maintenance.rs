//! Background maintenance: one task per manager, driven by a timer queue of pools, so the cost
//! does not grow with a task per pool or per instance.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::ManagerInner;
use super::registration::Erased;

/// Start the maintenance task. It ends when shutdown begins or the manager is dropped.
pub(super) fn spawn(inner: &Arc<ManagerInner>) {
    let pools: Vec<(Weak<dyn Erased>, Duration)> = inner
        .nodes
        .iter()
        .filter_map(|node| {
            node.erased
                .maintenance_interval()
                .map(|every| (Arc::downgrade(&node.erased), every))
        })
        .collect();
    if pools.is_empty() {
        return;
    }
    let stop = Arc::clone(&inner.maintenance);
    inner.runtime.spawn(async move {
        let now = Instant::now();
        let mut due: BinaryHeap<Reverse<(Instant, usize)>> = pools
            .iter()
            .enumerate()
            .map(|(i, (_, every))| Reverse((now + *every, i)))
            .collect();
        while let Some(&Reverse((at, i))) = due.peek() {
            tokio::select! {
                () = stop.notified() => return,
                () = tokio::time::sleep_until(at) => {}
            }
            due.pop();
            let (pool, every) = &pools[i];
            if let Some(pool) = pool.upgrade() {
                pool.maintain();
                due.push(Reverse((Instant::now() + *every, i)));
            }
        }
    });
}
