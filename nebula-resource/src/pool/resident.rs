//! [`Topology::Resident`](crate::Topology::Resident): one long-lived instance, a handle made by
//! `Resource::share` for every acquirer. A broken or tainted instance is replaced by one
//! creation at a time, however many acquirers notice it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures_util::FutureExt;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::context::CreateContext;
use crate::error::{Error, ErrorKind, TimeoutPhase};
use crate::events::{Event, Source};
use crate::pool::{PoolConfig, PoolStats, create_instance};
use crate::resource::Resource;
use crate::runtime::Runtime;

struct Current<R: Resource> {
    instance: R::Instance,
    generation: u64,
}

#[derive(Default)]
struct Counts {
    generation: u64,
    created: u64,
    destroyed: u64,
    create_errors: u64,
    timeouts: u64,
    creating: usize,
    last_create_error: Option<String>,
}

/// The shared part of a resident registration.
pub(crate) struct Resident<R: Resource> {
    pub(crate) resource: Arc<R>,
    config: R::Config,
    settings: PoolConfig,
    ctx: CreateContext,
    source: Source,
    current: Mutex<Option<Current<R>>>,
    counts: Mutex<Counts>,
    recreate: Arc<tokio::sync::Mutex<()>>,
    in_use: AtomicUsize,
    closed: AtomicBool,
    drained: Notify,
    runtime: Arc<Runtime>,
}

impl<R: Resource> Resident<R> {
    pub(crate) fn new(
        resource: Arc<R>,
        config: R::Config,
        settings: PoolConfig,
        ctx: CreateContext,
        runtime: Arc<Runtime>,
    ) -> Self {
        let source = ctx.source();
        Self {
            resource,
            config,
            settings,
            ctx,
            source,
            current: Mutex::new(None),
            counts: Mutex::new(Counts::default()),
            recreate: Arc::new(tokio::sync::Mutex::new(())),
            in_use: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            drained: Notify::new(),
            runtime,
        }
    }

    fn error(&self, err: Error) -> Error {
        self.ctx.attribute(err)
    }

    /// A handle to the resident instance, and its generation; creates it if there is none.
    pub(crate) async fn acquire(
        self: &Arc<Self>,
        deadline: Option<Instant>,
    ) -> Result<(R::Instance, u64), Error> {
        let started = Instant::now();
        let timeout = started + self.settings.acquire_timeout;
        let deadline = deadline.map_or(timeout, |limit| limit.min(timeout));
        loop {
            if self.closed.load(Ordering::Acquire) || self.runtime.is_shutting_down() {
                return Err(self.error(Error::shutting_down()));
            }
            if let Some(handle) = self.share_current()? {
                return Ok(handle);
            }
            let Ok(permit) =
                tokio::time::timeout_at(deadline, Arc::clone(&self.recreate).lock_owned()).await
            else {
                return Err(self.timeout(started));
            };
            if self.current.lock().is_some() {
                continue;
            }
            // The create runs in a task of its own and holds the permit, so an acquirer that
            // gives up neither abandons the connection nor lets a second create start.
            let this = Arc::clone(self);
            let task = tokio::spawn(async move {
                let created = this.create().await;
                drop(permit);
                created
            });
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(err))) => return Err(err),
                Ok(Err(join)) => {
                    return Err(self.error(Error::other(
                        ErrorKind::Create,
                        format!("create task failed: {join}"),
                    )));
                }
                Err(_) => return Err(self.timeout(started)),
            }
        }
    }

    fn timeout(&self, started: Instant) -> Error {
        let last = {
            let mut counts = self.counts.lock();
            counts.timeouts += 1;
            counts.last_create_error.clone()
        };
        self.error(Error::timeout(
            TimeoutPhase::Permit,
            started.elapsed(),
            Some(self.stats()),
            last,
        ))
    }

    /// Share the current instance, retiring it first if it is broken.
    fn share_current(&self) -> Result<Option<(R::Instance, u64)>, Error> {
        let mut current = self.current.lock();
        let Some(live) = current.as_ref() else {
            return Ok(None);
        };
        let broken =
            std::panic::catch_unwind(AssertUnwindSafe(|| self.resource.is_broken(&live.instance)))
                .unwrap_or(true);
        if broken {
            if let Some(old) = current.take() {
                drop(current);
                self.retire(old.instance);
            }
            return Ok(None);
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.resource.share(&live.instance))) {
            Ok(Some(handle)) => {
                self.in_use.fetch_add(1, Ordering::AcqRel);
                Ok(Some((handle, live.generation)))
            }
            Ok(None) => Err(self.error(not_shareable::<R>())),
            Err(panic) => Err(self.error(Error::panicked(ErrorKind::Create, "share", &*panic))),
        }
    }

    async fn create(self: &Arc<Self>) -> Result<(), Error> {
        self.counts.lock().creating += 1;
        let created = create_instance(
            &*self.resource,
            &self.config,
            &self.ctx,
            self.settings.create_timeout,
        )
        .await;
        let mut counts = self.counts.lock();
        counts.creating -= 1;
        match created {
            Ok(instance) => {
                counts.created += 1;
                counts.generation += 1;
                let generation = counts.generation;
                drop(counts);
                if std::panic::catch_unwind(AssertUnwindSafe(|| self.resource.share(&instance)))
                    .ok()
                    .flatten()
                    .is_none()
                {
                    self.retire(instance);
                    return Err(self.error(not_shareable::<R>()));
                }
                let replaced = self.current.lock().replace(Current {
                    instance,
                    generation,
                });
                if let Some(old) = replaced {
                    self.retire(old.instance);
                }
                self.runtime
                    .emit(Event::InstanceCreated(self.source.clone()));
                Ok(())
            }
            Err(err) => {
                let err = self.error(err);
                counts.create_errors += 1;
                counts.last_create_error = Some(err.to_string());
                drop(counts);
                tracing::warn!(resource = R::KEY, error = %err, "resident instance creation failed");
                self.runtime.emit(Event::CreateFailed {
                    source: self.source.clone(),
                    error: err.to_string(),
                });
                Err(err)
            }
        }
    }

    /// Create the instance during `build()`.
    pub(crate) async fn init(self: &Arc<Self>) -> Result<(), Error> {
        self.create().await
    }

    /// A handle was released; a tainted one retires its generation.
    pub(crate) fn release(&self, generation: u64, tainted: bool) {
        if tainted {
            let mut current = self.current.lock();
            if current.as_ref().is_some_and(|c| c.generation == generation)
                && let Some(old) = current.take()
            {
                drop(current);
                self.retire(old.instance);
            }
        }
        if self.in_use.fetch_sub(1, Ordering::AcqRel) == 1 && self.closed.load(Ordering::Acquire) {
            self.drained.notify_waiters();
        }
    }

    /// Destroy a retired instance on the release worker.
    fn retire(&self, instance: R::Instance) {
        let resource = Arc::clone(&self.resource);
        let limit = self.settings.recycle_timeout;
        self.counts.lock().destroyed += 1;
        self.runtime
            .emit(Event::InstanceDestroyed(self.source.clone()));
        self.runtime.release(Box::pin(async move {
            let destroy = AssertUnwindSafe(resource.destroy(instance)).catch_unwind();
            if tokio::time::timeout(limit, destroy).await.is_err() {
                tracing::warn!(resource = R::KEY, "destroy timed out; instance dropped");
            }
        }));
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let counts = self.counts.lock();
        let live = usize::from(self.current.lock().is_some());
        PoolStats {
            size: live + counts.creating,
            max_size: 1,
            idle: 0,
            in_use: self.in_use.load(Ordering::Acquire),
            waiters: 0,
            creating: counts.creating,
            releasing: 0,
            created: counts.created,
            destroyed: counts.destroyed,
            create_errors: counts.create_errors,
            timeouts: counts.timeouts,
        }
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Wait for every handle to be released (or `deadline`), then destroy the instance.
    pub(crate) async fn drained(&self, deadline: Instant) -> Result<(), PoolStats> {
        loop {
            let notified = self.drained.notified();
            if self.in_use.load(Ordering::Acquire) == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(self.stats());
            }
        }
        let retired = self.current.lock().take();
        if let Some(old) = retired {
            self.counts.lock().destroyed += 1;
            let destroy = AssertUnwindSafe(self.resource.destroy(old.instance)).catch_unwind();
            if tokio::time::timeout_at(deadline, destroy).await.is_err() {
                tracing::warn!(
                    resource = R::KEY,
                    "destroy did not finish before the shutdown deadline"
                );
            }
            self.runtime
                .emit(Event::InstanceDestroyed(self.source.clone()));
        }
        Ok(())
    }
}

pub(crate) fn not_shareable<R: Resource>() -> Error {
    Error::config(
        "topology",
        format!(
            "`{}` declares Topology::Resident but `Resource::share` returned None; implement it as `Some(instance.clone())`",
            R::KEY
        ),
    )
}
