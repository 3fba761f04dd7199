//! What every pool of one manager shares: the tokio runtime it was built on, the release worker,
//! the event channel and the shutdown flag.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::broadcast;

use crate::events::Event;
mod worker;

pub(crate) use self::worker::Job;
use self::worker::ReleaseWorker;

/// Capacity of the event channel; a receiver that falls further behind sees `Lagged`.
pub(crate) const EVENT_CAPACITY: usize = 1024;

#[derive(Debug)]
pub(crate) struct Runtime {
    handle: tokio::runtime::Handle,
    worker: ReleaseWorker,
    events: broadcast::Sender<Event>,
    shutting_down: AtomicBool,
}

impl Runtime {
    /// Bind to the current tokio runtime and start the release worker on it.
    pub(crate) fn start() -> Self {
        let handle = tokio::runtime::Handle::current();
        let worker = ReleaseWorker::spawn(&handle);
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Self {
            handle,
            worker,
            events,
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Spawn a task on the manager's runtime, from any thread.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.handle.spawn(task));
    }

    /// Run `job` on the release worker.
    pub(crate) fn release(&self, job: Job) {
        self.worker.submit(job);
    }

    /// Publish an event; no receiver is not an error.
    pub(crate) fn emit(&self, event: Event) {
        if self.events.receiver_count() > 0 {
            drop(self.events.send(event));
        }
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub(crate) fn begin_shutdown(&self) -> bool {
        !self.shutting_down.swap(true, Ordering::AcqRel)
    }
}
