//! [`PoolStats`]: a pool's counts at one moment.

use std::fmt;

/// A pool's counts at one moment, as in `ResourceManager::status` and in timeout errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PoolStats {
    /// Instances that exist or are being created (`idle + in_use + creating + releasing`).
    pub size: usize,
    /// The configured `max_size`.
    pub max_size: usize,
    /// Instances ready in the idle store.
    pub idle: usize,
    /// Instances checked out (held by guards, being validated, or being recycled).
    pub in_use: usize,
    /// Acquires waiting for an instance.
    pub waiters: usize,
    /// Creates in flight.
    pub creating: usize,
    /// Instances being destroyed.
    pub releasing: usize,
    /// Instances created since start.
    pub created: u64,
    /// Instances destroyed since start.
    pub destroyed: u64,
    /// Creates that failed since start.
    pub create_errors: u64,
    /// Acquires that timed out since start.
    pub timeouts: u64,
}

impl PoolStats {
    /// Add `other`'s counts to these (the sum over several pools); `max_size` is kept.
    pub(crate) fn add(&mut self, other: &PoolStats) {
        self.size += other.size;
        self.idle += other.idle;
        self.in_use += other.in_use;
        self.waiters += other.waiters;
        self.creating += other.creating;
        self.releasing += other.releasing;
        self.created += other.created;
        self.destroyed += other.destroyed;
        self.create_errors += other.create_errors;
        self.timeouts += other.timeouts;
    }
}

impl fmt::Display for PoolStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pool size {}/{}, idle {}, in use {}, waiters {}, creating {}",
            self.size, self.max_size, self.idle, self.in_use, self.waiters, self.creating
        )
    }
}
