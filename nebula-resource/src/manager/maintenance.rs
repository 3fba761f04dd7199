//! Background maintenance: one task per manager, driven by a timer queue of pools, so the cost
//! does not grow with a task per pool or per instance.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::time::Instant;

use super::ManagerInner;
use super::registration::Erased;
use crate::error::panic_message;
use crate::health::Health;
use crate::hooks;

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
                // Hooks are guarded where they are called; this keeps the task alive whatever
                // else a pass runs into.
                if let Err(panic) = hooks::guarded_sync(|| pool.maintain()) {
                    let panic = panic_message(&*panic);
                    tracing::error!(resource = pool.key(), %panic, "a maintenance pass panicked; maintenance goes on");
                }
                due.push(Reverse((Instant::now() + *every, i)));
            }
        }
    });
}

/// Start the health scheduler: one task per manager with a timer queue of registrations. Each
/// due registration's round runs inside this task (a `FuturesUnordered`), one round per
/// registration at a time, so a slow check delays no other registration and costs no task of
/// its own. The next round is scheduled when a round ends: after the health interval, or after
/// the recovery backoff while the registration is quarantined. Ends when shutdown begins or the
/// manager is dropped.
pub(super) fn spawn_health(inner: &Arc<ManagerInner>) {
    let targets: Vec<(Weak<dyn Erased>, Duration)> = inner
        .nodes
        .iter()
        .filter_map(|node| {
            node.erased
                .health_delay()
                .map(|first| (Arc::downgrade(&node.erased), first))
        })
        .collect();
    if targets.is_empty() {
        return;
    }
    let graph = DependencyHealth::new(inner);
    let stop = Arc::clone(&inner.health_stop);
    inner.runtime.spawn(async move {
        let now = Instant::now();
        let mut due: BinaryHeap<Reverse<(Instant, usize)>> = targets
            .iter()
            .enumerate()
            .map(|(i, (_, first))| Reverse((now + *first, i)))
            .collect();
        let mut running = FuturesUnordered::new();
        loop {
            let next = due.peek().map(|&Reverse((at, _))| at);
            tokio::select! {
                () = stop.notified() => return,
                () = sleep_until_some(next) => {
                    let Some(Reverse((_, i))) = due.pop() else { continue };
                    if let Some(target) = targets[i].0.upgrade() {
                        let key = target.key();
                        running.push(async move {
                            // Hooks are guarded where they are called; this keeps the scheduler
                            // alive whatever else a round runs into.
                            if let Err(panic) = hooks::guarded(|| target.health_round()).await {
                                let panic = panic_message(&*panic);
                                tracing::error!(resource = key, %panic, "a health round panicked; the scheduler goes on");
                            }
                            i
                        });
                    }
                }
                Some(i) = running.next(), if !running.is_empty() => {
                    if let Some(target) = targets[i].0.upgrade() {
                        graph.propagate();
                        if let Some(delay) = target.health_delay() {
                            due.push(Reverse((Instant::now() + delay, i)));
                        }
                    }
                }
            }
            if due.is_empty() && running.is_empty() {
                return;
            }
        }
    });
}

/// Sleep until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Which registrations are Unhealthy, and who depends on them: after each round, every
/// registration learns the first of its dependencies (direct or not) that is Unhealthy, if any,
/// and reports Degraded because of it.
struct DependencyHealth {
    nodes: Vec<(Weak<dyn Erased>, String)>,
    /// For each node, every node it depends on, directly or through others.
    closure: Vec<Vec<usize>>,
    unhealthy: parking_lot::Mutex<Vec<bool>>,
}

impl DependencyHealth {
    fn new(inner: &ManagerInner) -> Self {
        let n = inner.nodes.len();
        let closure = (0..n)
            .map(|node| (0..n).filter(|&d| inner.depends_on(node, d)).collect())
            .collect();
        Self {
            nodes: inner
                .nodes
                .iter()
                .map(|node| (Arc::downgrade(&node.erased), node.label.clone()))
                .collect(),
            closure,
            unhealthy: parking_lot::Mutex::new(vec![false; n]),
        }
    }

    fn propagate(&self) {
        let now: Vec<bool> = self
            .nodes
            .iter()
            .map(|(node, _)| {
                node.upgrade()
                    .is_some_and(|node| node.health().health == Health::Unhealthy)
            })
            .collect();
        {
            let mut before = self.unhealthy.lock();
            if *before == now {
                return;
            }
            before.clone_from(&now);
        }
        for (node, dependencies) in self.closure.iter().enumerate() {
            let sick = dependencies
                .iter()
                .find(|&&d| now[d])
                .map(|&d| self.nodes[d].1.as_str());
            if let Some(erased) = self.nodes[node].0.upgrade() {
                erased.set_dependency_health(sick);
            }
        }
    }
}
