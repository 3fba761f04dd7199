//! The resident's creates, one at a time and each in a task of its own, installing what they
//! made unless the settings changed or the resident closed meanwhile; and retiring instances.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::lanes::{Current, Drain};
use super::{Counts, Resident};
use crate::error::{Error, ErrorKind};
use crate::events::{Event, Source};
use crate::hooks;
use crate::resilience::breaker::{Call, Outcome};
use crate::resource::Resource;
use crate::runtime::Runtime;

impl<R: Resource> Resident<R> {
    /// Make sure an instance is live: wait for the create under way, or start one. The create
    /// runs in a task of its own on the manager's runtime and holds the `recreate` permit, so
    /// whoever stops waiting (an acquire past its deadline, a health probe past its timeout)
    /// neither abandons the connection nor lets a second create start. `Ok` may still leave no
    /// instance live: one made with settings replaced meanwhile is discarded.
    pub(super) async fn ensure_live(self: &Arc<Self>) -> Result<(), Error> {
        let permit = Arc::clone(&self.recreate).lock_owned().await;
        if self.current.lock().is_some() {
            return Ok(());
        }
        if self.drain.closed.load(Ordering::Acquire) {
            return Err(self.error(Error::shutting_down()));
        }
        // Made before the task: dropped unpolled, the task still settles `creating`.
        let creating = Creating::new(Arc::clone(self));
        let (done, created) = oneshot::channel();
        self.life.runtime.spawn(async move {
            let result = creating.resident.create().await;
            drop(creating);
            drop(permit);
            drop(done.send(result));
        });
        created.await.unwrap_or_else(|_| {
            Err(self.error(Error::other(
                ErrorKind::ShuttingDown,
                "the create task was dropped before it finished: the manager's runtime is shutting down",
            )))
        })
    }
    /// Create an instance (with the retry policy, giving up when the resident closes) and
    /// install it, unless the settings changed or the resident closed meanwhile.
    pub(super) async fn create(self: &Arc<Self>) -> Result<(), Error> {
        let created = self
            .life
            .create(|outcome, took| self.record(Call::Normal, outcome, took))
            .await;
        match created {
            Ok((instance, generation)) => self.install(instance, generation),
            // Stopped by the resident closing: no failure to count or report.
            Err(err) if err.kind() == ErrorKind::ShuttingDown => Err(err),
            Err(err) => {
                {
                    let mut counts = self.counts.lock();
                    counts.create_errors += 1;
                    counts.last_create_error = Some(err.to_string());
                }
                tracing::warn!(resource = R::KEY, error = %err, "resident instance creation failed");
                self.life.runtime.emit(Event::CreateFailed {
                    source: self.life.source.clone(),
                    error: err.to_string(),
                });
                Err(err)
            }
        }
    }
    /// Make `instance` the current one, unless it cannot be shared, the resident closed, or the
    /// settings changed since it was made (then it retires at once).
    pub(super) fn install(&self, instance: R::Instance, settings: u32) -> Result<(), Error> {
        let generation = {
            let mut counts = self.counts.lock();
            counts.created += 1;
            counts.generation += 1;
            counts.generation
        };
        if let Err(err) = hooks::share(&*self.life.resource, &instance) {
            self.retire(instance);
            return Err(self.error(err));
        }
        let installed = {
            let mut current = self.current.lock();
            // Under the lock `retire_current` and `drained` take the current instance with:
            // either they see this one, or this sees their change.
            if self.drain.closed.load(Ordering::SeqCst) || settings != self.life.generation() {
                Err(instance)
            } else {
                self.live.store(generation, Ordering::Release);
                Ok(current.replace(Current {
                    instance,
                    generation,
                }))
            }
        };
        self.life
            .runtime
            .emit(Event::InstanceCreated(self.life.source.clone()));
        match installed {
            Ok(replaced) => {
                if let Some(old) = replaced {
                    self.retire(old.instance);
                }
                Ok(())
            }
            Err(stale) => {
                self.retire(stale);
                if self.drain.closed.load(Ordering::SeqCst) {
                    Err(self.error(Error::shutting_down()))
                } else {
                    tracing::debug!(
                        resource = R::KEY,
                        "settings changed during the create; its instance retired"
                    );
                    Ok(())
                }
            }
        }
    }
    /// Create the instance during `build()`.
    pub(crate) async fn init(self: &Arc<Self>) -> Result<(), Error> {
        loop {
            self.ensure_live().await?;
            if self.current.lock().is_some() {
                return Ok(());
            }
        }
    }
    /// A handle of `generation` was tainted: count a failure and retire the generation.
    pub(super) fn taint(&self, generation: u64) {
        self.record(Call::Normal, Outcome::Failure, Duration::ZERO);
        if let Some(old) = self.take_current(Some(generation)) {
            self.retire(old.instance);
        }
    }
    /// Destroy a retired instance on the release worker, and drop the lanes' handles to it.
    /// Its ticket is made before the job, so the count settles even if the job never runs.
    pub(super) fn retire(&self, instance: R::Instance) {
        self.empty_lanes();
        let ticket = Retiring::new(self);
        let resource = Arc::clone(&self.life.resource);
        let limit = self.life.settings.recycle_timeout;
        self.life.runtime.release(Box::pin(async move {
            hooks::destroy(&*resource, instance, limit).await;
            drop(ticket);
        }));
    }
}

/// A create under way, counted in `creating` from before its task is spawned until it ends,
/// however it ends (done, failed, or the task dropped unpolled by a dying runtime).
struct Creating<R: Resource> {
    resident: Arc<Resident<R>>,
}

impl<R: Resource> Creating<R> {
    fn new(resident: Arc<Resident<R>>) -> Self {
        let mut counts = resident.counts.lock();
        counts.creating += 1;
        debug_assert!(
            counts.creating <= 1,
            "resident `{}`: {} creates at once, under one permit",
            R::KEY,
            counts.creating
        );
        drop(counts);
        Self { resident }
    }
}

impl<R: Resource> Drop for Creating<R> {
    fn drop(&mut self) {
        self.resident.counts.lock().creating -= 1;
    }
}

/// A retired instance on its way to `destroy`, counted in `releasing` until the destroy job
/// ends, however it ends; shutdown waits for these.
struct Retiring {
    counts: Arc<Mutex<Counts>>,
    drain: Arc<Drain>,
    runtime: Arc<Runtime>,
    source: Source,
}

impl Retiring {
    fn new<R: Resource>(resident: &Resident<R>) -> Self {
        resident.counts.lock().releasing += 1;
        Self {
            counts: Arc::clone(&resident.counts),
            drain: Arc::clone(&resident.drain),
            runtime: Arc::clone(&resident.life.runtime),
            source: resident.life.source.clone(),
        }
    }
}

impl Drop for Retiring {
    fn drop(&mut self) {
        {
            let mut counts = self.counts.lock();
            counts.releasing -= 1;
            counts.destroyed += 1;
        }
        self.runtime
            .emit(Event::InstanceDestroyed(self.source.clone()));
        self.drain.released.notify_waiters();
    }
}
