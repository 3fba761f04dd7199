//! Lanes: each thread acquires through a lane of its own (see [the resident](super#lanes)),
//! and the handles a lane gives out.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::Resident;
use crate::resource::Resource;

/// The resident instance (or a handle shared from it), with its instance number.
pub(super) struct Current<R: Resource> {
    pub(super) instance: R::Instance,
    pub(super) generation: u64,
}

/// One thread's way in (see [Lanes](self#lanes)), aligned so that lanes never share a cache
/// line. A guard holds its lane, not the resident: releasing touches only the lane.
#[repr(align(128))]
pub(crate) struct Lane<R: Resource> {
    /// A handle shared from the current instance, and its generation.
    pub(super) cached: Mutex<Option<Current<R>>>,
    /// Handles acquired through this lane and not yet released.
    pub(super) in_use: AtomicUsize,
    /// What a release needs to know of shutdown.
    pub(super) drain: Arc<Drain>,
    /// The resident, for a tainted release.
    pub(super) resident: Weak<Resident<R>>,
}

/// Shutdown as a release sees it.
pub(super) struct Drain {
    pub(super) closed: AtomicBool,
    /// Woken by every release once `closed` is set.
    pub(super) released: Notify,
}

impl<R: Resource> Lane<R> {
    /// A handle acquired in this lane was released; a tainted one retires its generation.
    /// After `close`, the last release retires the instance.
    pub(crate) fn release(&self, generation: u64, tainted: bool) {
        if tainted && let Some(resident) = self.resident.upgrade() {
            resident.taint(generation);
        }
        self.in_use.fetch_sub(1, Ordering::SeqCst);
        // Sequentially consistent with `close` and `in_use`: either `drained` sees this release
        // in its count, or this sees `closed`, wakes it and retires the instance if no handle is
        // left (`drained` may have given up at its deadline: nothing else would).
        if self.drain.closed.load(Ordering::SeqCst) {
            self.drain.released.notify_waiters();
            if let Some(resident) = self.resident.upgrade() {
                resident.released_after_close();
            }
        }
    }
}

/// How many lanes a resident has: four per hardware thread, rounded up to a power of two
/// (so that threads numbered one after the other land in different lanes), at most 64.
pub(super) fn lane_count() -> usize {
    std::thread::available_parallelism()
        .map_or(4, std::num::NonZeroUsize::get)
        .saturating_mul(4)
        .next_power_of_two()
        .min(64)
}

/// The calling thread's number, given on its first acquire of any resident.
pub(super) fn thread_number() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static NUMBER: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    NUMBER.with(|number| *number)
}

/// A handle to the resident instance, with the generation and lane it was acquired in.
pub(crate) struct Shared<R: Resource> {
    pub(crate) instance: R::Instance,
    pub(crate) generation: u64,
    pub(crate) lane: Arc<Lane<R>>,
}
