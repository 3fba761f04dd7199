//! [`CacheConfig`]: how many entries a cache holds and how long they live.

use std::time::Duration;

use nebula_resource::{Config, Error};

/// Largest `max_capacity` accepted (one billion entries): anything above is a typo.
pub const MAX_CAPACITY: u64 = 1_000_000_000;

/// Longest time to live or to idle accepted (one year): anything longer is a unit mistake.
pub const MAX_EXPIRY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Settings of a [`Cache`](crate::Cache), built by value:
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::Config;
/// use nebula_resource_cache::CacheConfig;
///
/// let config = CacheConfig::new(50_000)
///     .time_to_live(Duration::from_secs(300))
///     .time_to_idle(Duration::from_secs(60));
/// assert!(config.validate().is_ok());
/// assert_eq!(config.get_max_capacity(), 50_000);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    max_capacity: u64,
    time_to_live: Option<Duration>,
    time_to_idle: Option<Duration>,
}

impl Default for CacheConfig {
    /// 10,000 entries, no time to live, no time to idle.
    fn default() -> Self {
        Self::new(10_000)
    }
}

impl CacheConfig {
    /// A cache of at most `max_capacity` entries; no expiry unless set.
    /// `max_capacity` must be in `1..=`[`MAX_CAPACITY`].
    pub fn new(max_capacity: u64) -> Self {
        Self {
            max_capacity,
            time_to_live: None,
            time_to_idle: None,
        }
    }

    /// Most entries held; beyond it, the least likely to be used again are evicted (moka's
    /// TinyLFU policy). Defaults to 10,000; must be in `1..=`[`MAX_CAPACITY`].
    #[must_use]
    pub fn max_capacity(mut self, max_capacity: u64) -> Self {
        self.max_capacity = max_capacity;
        self
    }

    /// An entry expires this long after it was inserted (or replaced), however often it is
    /// read. Defaults to `None` (never); when set, must be greater than zero and at most
    /// [`MAX_EXPIRY`].
    #[must_use]
    pub fn time_to_live(mut self, ttl: impl Into<Option<Duration>>) -> Self {
        self.time_to_live = ttl.into();
        self
    }

    /// An entry expires this long after it was last read or written. Defaults to `None`
    /// (never); when set, must be greater than zero, at most [`MAX_EXPIRY`], and not above
    /// `time_to_live` (it would never apply).
    #[must_use]
    pub fn time_to_idle(mut self, tti: impl Into<Option<Duration>>) -> Self {
        self.time_to_idle = tti.into();
        self
    }

    /// The configured `max_capacity`.
    pub fn get_max_capacity(&self) -> u64 {
        self.max_capacity
    }

    /// The configured `time_to_live`.
    pub fn get_time_to_live(&self) -> Option<Duration> {
        self.time_to_live
    }

    /// The configured `time_to_idle`.
    pub fn get_time_to_idle(&self) -> Option<Duration> {
        self.time_to_idle
    }
}

fn check_expiry(field: &'static str, value: Option<Duration>) -> Result<(), Error> {
    match value {
        Some(d) if d.is_zero() => Err(Error::config(
            field,
            "must be greater than zero (leave it unset for no expiry)",
        )),
        Some(d) if d > MAX_EXPIRY => Err(Error::config(
            field,
            format!("must be at most {MAX_EXPIRY:?} (got {d:?})"),
        )),
        _ => Ok(()),
    }
}

impl Config for CacheConfig {
    /// Check `max_capacity`, `time_to_live` and `time_to_idle` against their rules.
    fn validate(&self) -> Result<(), Error> {
        if self.max_capacity == 0 || self.max_capacity > MAX_CAPACITY {
            return Err(Error::config(
                "max_capacity",
                format!("must be in 1..={MAX_CAPACITY} (got {})", self.max_capacity),
            ));
        }
        check_expiry("time_to_live", self.time_to_live)?;
        check_expiry("time_to_idle", self.time_to_idle)?;
        if let (Some(ttl), Some(tti)) = (self.time_to_live, self.time_to_idle)
            && tti > ttl
        {
            return Err(Error::config(
                "time_to_idle",
                format!("must not exceed time_to_live {ttl:?} (got {tti:?}); it would never apply"),
            ));
        }
        Ok(())
    }
}
