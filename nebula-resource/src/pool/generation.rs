//! Generations: a reconfiguration or a credential rotation starts a new one. Only instances of
//! the current generation are kept; older ones are destroyed when idle or when they come back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Pool;
use crate::credentials::CredentialSource;
use crate::error::Error;
use crate::events::Event;
use crate::resource::Resource;

impl<R: Resource> Pool<R> {
    /// Fetch the credentials unless the pool has them, within `timeout`.
    pub(super) async fn ensure_credentials(&self, timeout: Duration) -> Result<(), Error> {
        self.credentials
            .ensure(&self.ctx, timeout)
            .await
            .map_err(|err| self.error(err))
    }

    /// Fetch the credentials again (within `create_timeout`); if they changed, start a new
    /// generation. Returns whether they changed.
    pub(crate) async fn rotate_credentials(self: &Arc<Self>) -> Result<bool, Error> {
        let changed = self
            .credentials
            .refresh(&self.ctx, self.settings.create_timeout)
            .await
            .map_err(|err| self.error(err))?;
        if changed {
            self.new_generation("credentials rotated");
            self.runtime
                .emit(Event::CredentialsRotated(self.source.clone()));
        }
        Ok(changed)
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
        self.config.store(Arc::new(config));
        self.new_generation("reconfigured");
        self.runtime.emit(Event::Reconfigured(self.source.clone()));
    }

    /// From now on only instances of the new generation are kept: idle ones are destroyed at
    /// once, in-use ones and those being created when they come back (a create under way serves
    /// a waiter with what it made, but never leaves it idle). Waiters are served by new creates
    /// as places free up, and maintenance refills `min_idle`.
    fn new_generation(self: &Arc<Self>, why: &str) {
        let idle: Vec<_> = {
            let mut state = self.lock();
            state.generation += 1;
            let idle: Vec<_> = state.idle.drain(..).collect();
            state.releasing += idle.len();
            idle
        };
        tracing::info!(resource = R::KEY, tenant = ?self.source.tenant, why, retired = idle.len(), "new generation");
        for slot in idle {
            self.destroy(slot.instance);
        }
    }

    /// Near expiry: rotate in the background (once at a time).
    pub(super) fn refresh_if_expiring(self: &Arc<Self>) {
        if !CredentialSource::expiring(&self.ctx) || self.rotating.swap(true, Ordering::AcqRel) {
            return;
        }
        // Made before the task: however the task ends (even dropped unpolled), the flag clears.
        let rotating = Rotating(Arc::clone(self));
        self.runtime.spawn(async move {
            if let Err(err) = rotating.0.rotate_credentials().await {
                tracing::warn!(resource = R::KEY, error = %err, "refreshing expiring credentials failed");
            }
            drop(rotating);
        });
    }
}

/// Clears [`Pool::rotating`] when the background rotation ends, however it ends.
struct Rotating<R: Resource>(Arc<Pool<R>>);

impl<R: Resource> Drop for Rotating<R> {
    fn drop(&mut self) {
        let flag: &AtomicBool = &self.0.rotating;
        flag.store(false, Ordering::Release);
    }
}
