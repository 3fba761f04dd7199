//! [`Policy`]: the per-registration settings that are not the resource's own config.

use crate::error::Error;
use crate::pool::PoolConfig;

/// Per-registration settings, built by value from [`Policy::default`]:
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::{Policy, PoolConfig};
/// let policy = Policy::default().pool(PoolConfig::default().max_size(32));
/// assert_eq!(policy.pool_config().get_max_size(), 32);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Policy {
    pub(crate) pool: PoolConfig,
}

impl Policy {
    /// Pool sizes, timeouts and lifetimes. Defaults to [`PoolConfig::default`].
    #[must_use]
    pub fn pool(mut self, pool: PoolConfig) -> Self {
        self.pool = pool;
        self
    }

    /// The pool settings.
    pub fn pool_config(&self) -> &PoolConfig {
        &self.pool
    }

    /// Check every part.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error naming the first field out of range.
    pub fn validate(&self) -> Result<(), Error> {
        self.pool.validate()
    }
}
