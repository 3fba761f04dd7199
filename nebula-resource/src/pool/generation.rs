//! Generations: a reconfiguration or a credential rotation starts a new one (see
//! [`Lifecycle`](super::lifecycle::Lifecycle)). Only instances of the current generation are
//! kept; older ones are destroyed when idle or when they come back.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Pool;
use crate::error::Error;
use crate::resource::Resource;

impl<R: Resource> Pool<R> {
    /// Fetch the credentials again (within `create_timeout`); if they changed, start a new
    /// generation. Returns whether they changed.
    pub(crate) async fn rotate_credentials(self: &Arc<Self>) -> Result<bool, Error> {
        self.life.rotate(|| self.retire_old_generation()).await
    }

    /// [`rotate_credentials`](Self::rotate_credentials) of each of `pools` (the tenant or
    /// scope pools of one registration), one after another; how many rotated.
    pub(crate) async fn rotate_all(
        pools: impl IntoIterator<Item = Arc<Self>>,
    ) -> Result<usize, Error> {
        let mut rotated = 0;
        for pool in pools {
            rotated += usize::from(pool.rotate_credentials().await?);
        }
        Ok(rotated)
    }

    /// Replace the config: a new generation starts.
    pub(crate) fn reconfigure(self: &Arc<Self>, config: R::Config) {
        self.life
            .reconfigure(config, || self.retire_old_generation());
    }

    /// A new generation started: only its instances are kept from now on. Idle ones of older
    /// generations are destroyed at once, in-use ones and those being created when they come
    /// back (a create under way serves a waiter with what it made, but never leaves it idle).
    /// Waiters are served by new creates as places free up, and maintenance refills `min_idle`.
    fn retire_old_generation(self: &Arc<Self>) {
        let generation = self.life.generation();
        let stale: std::collections::VecDeque<_> = {
            let mut state = self.lock();
            let (stale, kept): (std::collections::VecDeque<_>, _) = std::mem::take(&mut state.idle)
                .into_iter()
                .partition(|slot| slot.generation != generation);
            state.idle = kept;
            state.releasing += stale.len();
            stale
        };
        tracing::debug!(resource = R::KEY, tenant = ?self.life.source.tenant, retired = stale.len(), "old generation's idle instances retired");
        for slot in stale {
            self.destroy(slot.instance);
        }
    }

    /// Near expiry: rotate in the background (once at a time).
    pub(super) fn refresh_if_expiring(self: &Arc<Self>) {
        if !self.life.should_rotate() {
            return;
        }
        // Made before the task: however the task ends (even dropped unpolled), the flag clears.
        let rotating = Rotating(Arc::clone(self));
        self.life.runtime.spawn(async move {
            if let Err(err) = rotating.0.rotate_credentials().await {
                tracing::warn!(resource = R::KEY, error = %err, "refreshing expiring credentials failed");
            }
            drop(rotating);
        });
    }
}

/// Clears the lifecycle's `rotating` flag when the background rotation ends, however it ends.
struct Rotating<R: Resource>(Arc<Pool<R>>);

impl<R: Resource> Drop for Rotating<R> {
    fn drop(&mut self) {
        self.0.life.rotating.store(false, Ordering::Release);
    }
}
