//! [`Guard`]: the RAII handle an acquire returns.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::pool::resident::{Lane, Shared};
use crate::pool::{Acquired, Pool, Slot};
use crate::resource::Resource;

enum Held<R: Resource> {
    Pooled {
        pool: Arc<Pool<R>>,
        slot: Slot<R>,
        leak_key: Option<usize>,
    },
    Resident {
        lane: Arc<Lane<R>>,
        instance: R::Instance,
        generation: u64,
    },
}

/// An acquired instance. Derefs to `R::Instance`; dropping it gives the instance back.
///
/// Dropping never blocks and needs no `.await`: a pooled instance is checked with
/// `Resource::is_broken`, reset with `Resource::recycle` (finished on the manager's release worker
/// if it does not complete at once) and handed to the next waiter or the idle store. A resident
/// handle is simply released.
#[must_use = "dropping a guard at once returns the instance"]
pub struct Guard<R: Resource> {
    held: Option<Held<R>>,
    acquired_at: Instant,
}

impl<R: Resource> Guard<R> {
    pub(crate) fn pooled(pool: Arc<Pool<R>>, acquired: Acquired<R>) -> Self {
        Self {
            held: Some(Held::Pooled {
                pool,
                slot: acquired.slot,
                leak_key: acquired.leak_key,
            }),
            acquired_at: acquired.at,
        }
    }

    pub(crate) fn resident(shared: Shared<R>) -> Self {
        Self {
            held: Some(Held::Resident {
                lane: shared.lane,
                instance: shared.instance,
                generation: shared.generation,
            }),
            acquired_at: Instant::now(),
        }
    }

    /// How long this guard has been held.
    pub fn hold_duration(&self) -> Duration {
        self.acquired_at.elapsed()
    }

    /// Destroy the instance instead of returning it (it is known bad: a protocol error, a
    /// poisoned session). For a resident resource, the shared instance is replaced.
    /// Counts as a failure for the resource's health.
    pub fn taint(mut self) {
        if let Some(held) = self.held.take() {
            self.give_back(held, true);
        }
    }

    /// Take the instance out of the pool for good; its place is freed for a new one.
    /// For a resident resource, this is the caller's own handle.
    pub fn detach(mut self) -> R::Instance {
        match self.held.take() {
            Some(Held::Pooled {
                pool,
                slot,
                leak_key,
            }) => {
                pool.forget(leak_key);
                slot.instance
            }
            Some(Held::Resident {
                lane,
                instance,
                generation,
            }) => {
                lane.release(generation, false);
                instance
            }
            None => unreachable!("a guard holds its instance until it is consumed"),
        }
    }

    fn give_back(&self, held: Held<R>, tainted: bool) {
        match held {
            Held::Pooled {
                pool,
                slot,
                leak_key,
            } => pool.release(slot, self.acquired_at, leak_key, tainted),
            Held::Resident {
                lane,
                generation,
                instance,
            } => {
                drop(instance);
                lane.release(generation, tainted);
            }
        }
    }

    fn instance(&self) -> &R::Instance {
        match &self.held {
            Some(Held::Pooled { slot, .. }) => &slot.instance,
            Some(Held::Resident { instance, .. }) => instance,
            None => unreachable!("a guard holds its instance until it is consumed"),
        }
    }

    fn instance_mut(&mut self) -> &mut R::Instance {
        match &mut self.held {
            Some(Held::Pooled { slot, .. }) => &mut slot.instance,
            Some(Held::Resident { instance, .. }) => instance,
            None => unreachable!("a guard holds its instance until it is consumed"),
        }
    }
}

impl<R: Resource> Deref for Guard<R> {
    type Target = R::Instance;

    fn deref(&self) -> &R::Instance {
        self.instance()
    }
}

impl<R: Resource> DerefMut for Guard<R> {
    fn deref_mut(&mut self) -> &mut R::Instance {
        self.instance_mut()
    }
}

impl<R: Resource> Drop for Guard<R> {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            self.give_back(held, false);
        }
    }
}

impl<R: Resource> fmt::Debug for Guard<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("resource", &R::KEY)
            .field("held_for", &self.hold_duration())
            .finish_non_exhaustive()
    }
}
