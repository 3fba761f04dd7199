//! [`Policy`]: the per-registration settings that are not the resource's own config.

mod pool;
mod scope;

pub use self::pool::{PoolConfig, QueueOrder};
pub use self::scope::Scope;

use std::fmt;
use std::sync::Arc;

use crate::credentials::CredentialProvider;
use crate::error::Error;
use crate::health::HealthConfig;
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
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Policy {
    pub(crate) pool: PoolConfig,
    pub(crate) health: HealthConfig,
    pub(crate) breaker: BreakerConfig,
    pub(crate) retry: RetryPolicy,
    pub(crate) credentials: Option<Arc<dyn CredentialProvider>>,
    pub(crate) scope: Scope,
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("pool", &self.pool)
            .field("health", &self.health)
            .field("breaker", &self.breaker)
            .field("retry", &self.retry)
            .field("scope", &self.scope)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "provider"),
            )
            .finish()
    }
}

impl PartialEq for Policy {
    /// Equal settings, and the same credential provider (by identity).
    fn eq(&self, other: &Self) -> bool {
        self.pool == other.pool
            && self.health == other.health
            && self.breaker == other.breaker
            && self.retry == other.retry
            && self.scope == other.scope
            && match (&self.credentials, &other.credentials) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            }
    }
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

    /// Where instances get their credentials: fetched before the first create, handed to
    /// `create` by [`CreateContext::credentials`](crate::CreateContext::credentials), and fetched
    /// again on rotation or near expiry. Default: none.
    #[must_use]
    pub fn credentials(mut self, provider: impl CredentialProvider) -> Self {
        self.credentials = Some(Arc::new(provider));
        self
    }

    /// [`credentials`](Self::credentials) with a provider shared with other code (a test, an
    /// admin endpoint that changes its answer).
    #[must_use]
    pub fn credentials_shared(mut self, provider: Arc<dyn CredentialProvider>) -> Self {
        self.credentials = Some(provider);
        self
    }

    /// How long instances live: for the manager's life ([`Scope::Global`], the default), or
    /// per workflow or execution, ended by
    /// [`end_scope`](crate::ResourceManager::end_scope). A scoped registration gets a pool
    /// (with these settings) per scope and is acquired with
    /// [`acquire_in`](crate::ResourceManager::acquire_in) in a context naming the scope.
    #[must_use]
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }

    /// The scope.
    pub fn get_scope(&self) -> Scope {
        self.scope
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
