//! [`Policy`]: the per-registration settings that are not the resource's own config.

use crate::error::Error;
use crate::health::HealthConfig;
use crate::pool::PoolConfig;
use crate::resilience::{BreakerConfig, RetryPolicy};

/// Per-registration settings, built by value from [`Policy::default`]:
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::{BreakerConfig, HealthConfig, Policy, PoolConfig, RetryPolicy};
/// let policy = Policy::default()
///     .pool(PoolConfig::default().max_size(32))
///     .health(HealthConfig::default().interval(Duration::from_secs(10)))
///     .breaker(BreakerConfig::default().failure_rate_threshold(0.25))
///     .retry(RetryPolicy::exponential(Duration::from_millis(50), 5));
/// assert_eq!(policy.pool_config().get_max_size(), 32);
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Policy {
    pub(crate) pool: PoolConfig,
    pub(crate) health: HealthConfig,
    pub(crate) breaker: BreakerConfig,
    pub(crate) retry: RetryPolicy,
}

impl Policy {
    /// Pool sizes, timeouts and lifetimes. Defaults to [`PoolConfig::default`].
    #[must_use]
    pub fn pool(mut self, pool: PoolConfig) -> Self {
        self.pool = pool;
        self
    }

    /// The background health checks and the quarantine they drive. Defaults to
    /// [`HealthConfig::default`] (every 30 s).
    #[must_use]
    pub fn health(mut self, health: HealthConfig) -> Self {
        self.health = health;
        self
    }

    /// The circuit breaker. Defaults to [`BreakerConfig::default`] (enabled).
    #[must_use]
    pub fn breaker(mut self, breaker: BreakerConfig) -> Self {
        self.breaker = breaker;
        self
    }

    /// Retries of instance creation (and so of `build()`'s warm-up), and the backoff of
    /// quarantine recovery probes. Defaults to [`RetryPolicy::default`] (3 attempts from 100 ms).
    #[must_use]
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The pool settings.
    pub fn pool_config(&self) -> &PoolConfig {
        &self.pool
    }

    /// The health settings.
    pub fn health_config(&self) -> &HealthConfig {
        &self.health
    }

    /// The breaker settings.
    pub fn breaker_config(&self) -> &BreakerConfig {
        &self.breaker
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry
    }

    /// Check every part.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error naming the first field out of range
    /// (`pool.*`, `health.*`, `breaker.*`, `retry.*`).
    pub fn validate(&self) -> Result<(), Error> {
        self.pool.validate()?;
        self.health.validate()?;
        self.breaker.validate()?;
        self.retry.validate()
    }
}
