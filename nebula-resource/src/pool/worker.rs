//! The release worker: one task per manager that runs async recycles and destroys, so a guard's
//! `Drop` never blocks and never spawns a task of its own.

use std::future::Future;
use std::pin::Pin;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;

/// A unit of release work. Every job carries its own accounting in a drop ticket, so a job that
/// is dropped unfinished (runtime shut down) still leaves the pool's counts exact.
pub(crate) type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Sends jobs to the worker; cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct ReleaseWorker {
    jobs: mpsc::UnboundedSender<Job>,
}

impl ReleaseWorker {
    /// Start the worker on `runtime`. It ends when every sender is gone and its jobs are done.
    pub(crate) fn spawn(runtime: &tokio::runtime::Handle) -> Self {
        let (jobs, queue) = mpsc::unbounded_channel();
        runtime.spawn(run(queue));
        Self { jobs }
    }

    /// Hand `job` to the worker. If the worker is gone (its runtime shut down), the job is
    /// dropped here, and its drop ticket settles the counts.
    pub(crate) fn submit(&self, job: Job) {
        if let Err(rejected) = self.jobs.send(job) {
            drop(rejected.0);
        }
    }
}

async fn run(mut queue: mpsc::UnboundedReceiver<Job>) {
    let mut running = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = running.next(), if !running.is_empty() => {}
            job = queue.recv() => match job {
                Some(job) => running.push(job),
                None => break,
            },
        }
    }
    while running.next().await.is_some() {}
}
