//! The release worker: one task per manager that runs async recycles and destroys, so a guard's
//! `Drop` never blocks and never spawns a task of its own.
//!
//! The worker survives its jobs: each runs under `catch_unwind` (the hooks inside are guarded
//! already; this is the second line), so one job's panic never drops the others. If the worker
//! is gone anyway (its runtime shut down while the manager lives on), the next job starts a new
//! one on the runtime it is submitted from, and says so in the log; with no runtime there, the
//! job is dropped and its drop ticket settles the counts.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use crate::error::panic_message;

/// A unit of release work. Every job carries its own accounting in a drop ticket, so a job that
/// is dropped unfinished (runtime shut down) still leaves the pool's counts exact.
pub(crate) type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Sends jobs to the worker.
#[derive(Debug)]
pub(crate) struct ReleaseWorker {
    jobs: Mutex<mpsc::UnboundedSender<Job>>,
}

impl ReleaseWorker {
    /// Start the worker on `runtime`. It ends when every sender is gone and its jobs are done.
    pub(crate) fn spawn(runtime: &tokio::runtime::Handle) -> Self {
        Self {
            jobs: Mutex::new(start(runtime)),
        }
    }

    /// Hand `job` to the worker, restarting the worker on the current runtime if it is gone.
    pub(crate) fn submit(&self, job: Job) {
        let mut jobs = self.jobs.lock();
        let Err(rejected) = jobs.send(job) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to run it on: dropped here, its ticket settles the counts.
            drop(rejected.0);
            return;
        };
        tracing::warn!(
            "the release worker is gone (its runtime shut down); restarting it on the current runtime"
        );
        *jobs = start(&runtime);
        if let Err(rejected) = jobs.send(rejected.0) {
            drop(rejected.0);
        }
    }
}

fn start(runtime: &tokio::runtime::Handle) -> mpsc::UnboundedSender<Job> {
    let (jobs, queue) = mpsc::unbounded_channel();
    drop(runtime.spawn(run(queue)));
    jobs
}

async fn run(mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(done) = running.next(), if !running.is_empty() => report(done),
            job = queue.recv() => match job {
                Some(job) => running.push(AssertUnwindSafe(job).catch_unwind()),
                None => break,
            },
        }
    }
    while let Some(done) = running.next().await {
        report(done);
    }
}

fn report(done: std::thread::Result<()>) {
    if let Err(panic) = done {
        let panic = panic_message(&*panic);
        tracing::error!(%panic, "a release job panicked; the worker goes on");
    }
}
