//! [`PoolConfig`]: sizes, timeouts and lifetimes of one pool, every knob with its default.

use std::time::Duration;

use crate::error::Error;
use crate::limits::MAX_POOL_SIZE;
use crate::limits::check_duration;

/// Which idle instance an acquire gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QueueOrder {
    /// The most recently returned (the default): keeps a warm working set and lets surplus
    /// instances reach `idle_timeout`.
    #[default]
    Lifo,
    /// The least recently returned: spreads use evenly over all instances.
    Fifo,
}

/// Settings of one pool. Build it by value from [`PoolConfig::default`]:
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::PoolConfig;
/// let pool = PoolConfig::default().max_size(32).min_idle(4).acquire_timeout(Duration::from_secs(2));
/// assert!(pool.validate().is_ok());
/// assert_eq!(pool.get_max_size(), 32);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub(crate) max_size: usize,
    pub(crate) min_idle: usize,
    pub(crate) acquire_timeout: Duration,
    pub(crate) create_timeout: Duration,
    pub(crate) recycle_timeout: Duration,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) max_lifetime: Option<Duration>,
    pub(crate) validate_after_idle: Option<Duration>,
    pub(crate) order: QueueOrder,
    pub(crate) max_concurrent_creates: usize,
    pub(crate) leak_threshold: Option<Duration>,
    pub(crate) maintenance_interval: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_size: 10,
            min_idle: 0,
            acquire_timeout: Duration::from_secs(30),
            create_timeout: Duration::from_secs(10),
            recycle_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(600)),
            max_lifetime: Some(Duration::from_secs(1800)),
            validate_after_idle: Some(Duration::from_millis(500)),
            order: QueueOrder::Lifo,
            max_concurrent_creates: 4,
            leak_threshold: None,
            maintenance_interval: Duration::from_secs(1),
        }
    }
}

impl PoolConfig {
    /// Most instances alive at once (idle, in use, being created or destroyed).
    /// Defaults to 10; must be 1..=[`MAX_POOL_SIZE`].
    #[must_use]
    pub fn max_size(mut self, max_size: usize) -> Self {
        self.max_size = max_size;
        self
    }

    /// Idle instances kept ready: created at start and refilled by maintenance.
    /// Defaults to 0; must not exceed `max_size`.
    #[must_use]
    pub fn min_idle(mut self, min_idle: usize) -> Self {
        self.min_idle = min_idle;
        self
    }

    /// Longest an acquire waits for an instance. Defaults to 30 s.
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Longest one `Resource::create` may run. Defaults to 10 s.
    #[must_use]
    pub fn create_timeout(mut self, timeout: Duration) -> Self {
        self.create_timeout = timeout;
        self
    }

    /// Longest one `Resource::recycle`, `Resource::check` or `Resource::destroy` may run.
    /// Defaults to 5 s.
    #[must_use]
    pub fn recycle_timeout(mut self, timeout: Duration) -> Self {
        self.recycle_timeout = timeout;
        self
    }

    /// Idle instances beyond `min_idle` are destroyed after this long unused; `None` keeps them.
    /// Defaults to 10 minutes.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.idle_timeout = timeout.into();
        self
    }

    /// Instances are retired this long after creation (minus up to 2.5 % jitter, so they do not
    /// all expire together); `None` keeps them forever. Defaults to 30 minutes.
    #[must_use]
    pub fn max_lifetime(mut self, lifetime: impl Into<Option<Duration>>) -> Self {
        self.max_lifetime = lifetime.into();
        self
    }

    /// An instance idle longer than this is validated with `Resource::check` before it is handed
    /// out; `None` never validates on acquire. Defaults to 500 ms (as HikariCP).
    #[must_use]
    pub fn validate_after_idle(mut self, idle: impl Into<Option<Duration>>) -> Self {
        self.validate_after_idle = idle.into();
        self
    }

    /// Which idle instance an acquire gets. Defaults to [`QueueOrder::Lifo`].
    #[must_use]
    pub fn order(mut self, order: QueueOrder) -> Self {
        self.order = order;
        self
    }

    /// Most `Resource::create` calls in flight at once. Defaults to 4; must be at least 1.
    #[must_use]
    pub fn max_concurrent_creates(mut self, creates: usize) -> Self {
        self.max_concurrent_creates = creates;
        self
    }

    /// A guard held longer than this is reported (a warning log and an `Event::LeakDetected`
    /// naming the resource and the hold time). `None` turns detection off. Defaults to `None`.
    #[must_use]
    pub fn leak_threshold(mut self, threshold: impl Into<Option<Duration>>) -> Self {
        self.leak_threshold = threshold.into();
        self
    }

    /// How often background maintenance visits this pool (idle timeout, lifetime, `min_idle`
    /// refill, leak detection). Defaults to 1 s.
    #[must_use]
    pub fn maintenance_interval(mut self, interval: Duration) -> Self {
        self.maintenance_interval = interval;
        self
    }

    /// The configured `max_size`.
    pub fn get_max_size(&self) -> usize {
        self.max_size
    }

    /// The configured `min_idle`.
    pub fn get_min_idle(&self) -> usize {
        self.min_idle
    }

    /// The configured `acquire_timeout`.
    pub fn get_acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// Check every value against its rule.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error naming the first field out of range.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_size == 0 || self.max_size > MAX_POOL_SIZE {
            return Err(Error::config(
                "pool.max_size",
                format!("must be in 1..={MAX_POOL_SIZE} (got {})", self.max_size),
            ));
        }
        if self.min_idle > self.max_size {
            return Err(Error::config(
                "pool.min_idle",
                format!(
                    "must not exceed max_size {} (got {})",
                    self.max_size, self.min_idle
                ),
            ));
        }
        if self.max_concurrent_creates == 0 {
            return Err(Error::config(
                "pool.max_concurrent_creates",
                "must be at least 1 (got 0)",
            ));
        }
        let durations = [
            ("pool.acquire_timeout", Some(self.acquire_timeout)),
            ("pool.create_timeout", Some(self.create_timeout)),
            ("pool.recycle_timeout", Some(self.recycle_timeout)),
            ("pool.maintenance_interval", Some(self.maintenance_interval)),
            ("pool.idle_timeout", self.idle_timeout),
            ("pool.max_lifetime", self.max_lifetime),
            ("pool.validate_after_idle", self.validate_after_idle),
            ("pool.leak_threshold", self.leak_threshold),
        ];
        for (field, value) in durations {
            if let Some(value) = value {
                check_duration(field, value)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_DURATION;

    #[test]
    fn defaults_are_valid() {
        PoolConfig::default().validate().unwrap();
    }

    #[test]
    fn every_rule_names_its_field() {
        let cases = [
            (PoolConfig::default().max_size(0), "pool.max_size"),
            (
                PoolConfig::default().max_size(MAX_POOL_SIZE + 1),
                "pool.max_size",
            ),
            (
                PoolConfig::default().max_size(2).min_idle(3),
                "pool.min_idle",
            ),
            (
                PoolConfig::default().max_concurrent_creates(0),
                "pool.max_concurrent_creates",
            ),
            (
                PoolConfig::default().acquire_timeout(Duration::ZERO),
                "pool.acquire_timeout",
            ),
            (
                PoolConfig::default().create_timeout(MAX_DURATION * 2),
                "pool.create_timeout",
            ),
            (
                PoolConfig::default().idle_timeout(Duration::ZERO),
                "pool.idle_timeout",
            ),
            (
                PoolConfig::default().leak_threshold(Duration::ZERO),
                "pool.leak_threshold",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
        }
    }
}
