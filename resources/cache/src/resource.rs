//! [`Cache`]: the resource, and [`CacheHandle`]: what a guard derefs to.

use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use moka::notification::RemovalCause;
use nebula_resource::{CreateContext, Error, Resource, Topology};

use crate::config::CacheConfig;

/// The counts behind [`Resource::counters`], shared by the resource and every handle.
#[derive(Debug, Default)]
struct Stats {
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    expirations: AtomicU64,
}

impl Stats {
    fn lookup(&self, hit: bool) {
        let counter = if hit { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A typed in-process cache from `K` to `V`: [`Topology::Resident`], one
/// [`moka::future::Cache`] whose handle every acquirer gets.
///
/// Register one per key and value type (or several with `register_named`). The manager's
/// [`status`](nebula_resource::ResourceManager::status) shows its counters:
///
/// | Counter | Meaning |
/// |---|---|
/// | `hits` | lookups that found an entry ([`CacheHandle::get`], [`get_with`](CacheHandle::get_with), [`try_get_with`](CacheHandle::try_get_with)) |
/// | `misses` | lookups that found none |
/// | `entries` | entries held now (moka's count: pending maintenance may lag it slightly) |
/// | `evictions` | entries evicted to stay within `max_capacity` |
/// | `expirations` | entries removed by `time_to_live` or `time_to_idle` |
///
/// The counts live in the resource value, so they survive the cache being replaced (after a
/// guard's `taint`) and are kept per registration. Every `Cache<K, V>` has the key `cache`:
/// when a manager holds more than one, register them with `register_named` so that `status()`
/// tells them apart.
///
/// ```
/// use nebula_resource::ResourceManager;
/// use nebula_resource_cache::{Cache, CacheConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), nebula_resource::Error> {
/// let manager = ResourceManager::builder()
///     .register(Cache::<u64, String>::new(), CacheConfig::new(1_000))
///     .build()
///     .await?;
/// let users = manager.acquire::<Cache<u64, String>>().await?;
/// users.insert(7, "ada".to_owned()).await;
/// assert_eq!(users.get(&7).await.as_deref(), Some("ada"));
/// assert_eq!(users.get(&8).await, None);
///
/// let status = manager.status();
/// let counters = &status.resource("cache").unwrap().counters;
/// assert!(counters.contains(&("hits", 1)) && counters.contains(&("misses", 1)));
/// # Ok(()) }
/// ```
pub struct Cache<K, V> {
    stats: Arc<Stats>,
    /// The cache now in service and its generation, for the `entries` counter.
    current: Mutex<Option<(u64, moka::future::Cache<K, V>)>>,
    generations: AtomicU64,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Cache<K, V> {
    /// A cache resource with its counters at zero.
    pub fn new() -> Self {
        Self {
            stats: Arc::default(),
            current: Mutex::new(None),
            generations: AtomicU64::new(0),
            _types: PhantomData,
        }
    }
}

impl<K, V> Default for Cache<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("key", &std::any::type_name::<K>())
            .field("value", &std::any::type_name::<V>())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<K, V> Resource for Cache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    type Config = CacheConfig;
    type Instance = CacheHandle<K, V>;
    const KEY: &'static str = "cache";
    const TOPOLOGY: Topology = Topology::Resident;

    async fn create(
        &self,
        config: &CacheConfig,
        ctx: &CreateContext,
    ) -> Result<CacheHandle<K, V>, Error> {
        let stats = Arc::clone(&self.stats);
        let mut builder = moka::future::Cache::builder()
            .name(ctx.name().unwrap_or(Self::KEY))
            .max_capacity(config.get_max_capacity())
            .eviction_listener(move |_key, _value, cause| match cause {
                RemovalCause::Size => {
                    stats.evictions.fetch_add(1, Ordering::Relaxed);
                }
                RemovalCause::Expired => {
                    stats.expirations.fetch_add(1, Ordering::Relaxed);
                }
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            });
        if let Some(ttl) = config.get_time_to_live() {
            builder = builder.time_to_live(ttl);
        }
        if let Some(tti) = config.get_time_to_idle() {
            builder = builder.time_to_idle(tti);
        }
        let cache = builder.build();
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((generation, cache.clone()));
        Ok(CacheHandle {
            cache,
            stats: Arc::clone(&self.stats),
            generation,
        })
    }

    async fn destroy(&self, handle: CacheHandle<K, V>) {
        // Let go of the entries now rather than when the manager is dropped, unless a newer
        // cache has taken this one's place already.
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current
            .as_ref()
            .is_some_and(|(generation, _)| *generation == handle.generation)
        {
            *current = None;
        }
    }

    fn share(&self, handle: &CacheHandle<K, V>) -> Option<CacheHandle<K, V>> {
        Some(handle.clone())
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let entries = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, |(_, cache)| cache.entry_count());
        vec![
            ("hits", self.stats.hits.load(Ordering::Relaxed)),
            ("misses", self.stats.misses.load(Ordering::Relaxed)),
            ("entries", entries),
            ("evictions", self.stats.evictions.load(Ordering::Relaxed)),
            (
                "expirations",
                self.stats.expirations.load(Ordering::Relaxed),
            ),
        ]
    }
}

/// A handle to the cache of a [`Cache`] registration. Cheap to clone (two reference counts).
///
/// Lookups through [`get`](Self::get), [`get_with`](Self::get_with) and
/// [`try_get_with`](Self::try_get_with) are counted as hits and misses; everything else moka
/// offers is on [`inner`](Self::inner), uncounted.
pub struct CacheHandle<K, V> {
    cache: moka::future::Cache<K, V>,
    stats: Arc<Stats>,
    generation: u64,
}

impl<K, V> Clone for CacheHandle<K, V> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            stats: Arc::clone(&self.stats),
            generation: self.generation,
        }
    }
}

impl<K, V> fmt::Debug for CacheHandle<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheHandle")
            .field("name", &self.cache.name())
            .field("entries", &self.cache.entry_count())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<K, V> CacheHandle<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// The value for `key`, if present and not expired; counted as a hit or a miss.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let value = self.cache.get(key).await;
        self.stats.lookup(value.is_some());
        value
    }

    /// The value for `key`; if absent, `init` computes it and it is inserted. Concurrent calls
    /// for the same absent key run one `init` and all get its value. Counted as a miss when this
    /// call's `init` ran, as a hit otherwise.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped while `init` runs, `init` is dropped with it and
    /// nothing is inserted; another caller waiting for the same key runs its own `init`.
    pub async fn get_with(&self, key: K, init: impl Future<Output = V>) -> V {
        let entry = self.cache.entry(key).or_insert_with(init).await;
        self.stats.lookup(!entry.is_fresh());
        entry.into_value()
    }

    /// As [`get_with`](Self::get_with), for an `init` that can fail: an error is not cached,
    /// and every caller waiting for that `init` gets it.
    ///
    /// # Errors
    ///
    /// The error of `init` (shared, hence the `Arc`). A failed `init` counts as a miss.
    ///
    /// # Cancel safety
    ///
    /// As [`get_with`](Self::get_with).
    pub async fn try_get_with<F, E>(&self, key: K, init: F) -> Result<V, Arc<E>>
    where
        F: Future<Output = Result<V, E>>,
        E: Send + Sync + 'static,
    {
        match self.cache.entry(key).or_try_insert_with(init).await {
            Ok(entry) => {
                self.stats.lookup(!entry.is_fresh());
                Ok(entry.into_value())
            }
            Err(err) => {
                self.stats.lookup(false);
                Err(err)
            }
        }
    }

    /// Insert `value` for `key`, replacing any previous value.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if the future is dropped, the value may or may not have been inserted.
    pub async fn insert(&self, key: K, value: V) {
        self.cache.insert(key, value).await;
    }

    /// Remove `key` and return its value, if present.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if the future is dropped, the entry may or may not have been removed.
    pub async fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.cache.remove(key).await
    }

    /// Remove `key`, if present.
    ///
    /// # Cancel safety
    ///
    /// As [`remove`](Self::remove).
    pub async fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.cache.invalidate(key).await;
    }

    /// Remove every entry (lazily: they are no longer returned from now on).
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// Whether `key` is present and not expired; not counted as a lookup.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.cache.contains_key(key)
    }

    /// How many entries the cache holds, as moka counts them (its pending maintenance may lag
    /// behind the latest writes; [`run_pending_tasks`](Self::run_pending_tasks) catches up).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// Run moka's pending maintenance now: evictions, expirations, and the entry count.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: what was not done is done by the next maintenance run.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Lookups that found an entry, over every handle of this registration.
    pub fn hits(&self) -> u64 {
        self.stats.hits.load(Ordering::Relaxed)
    }

    /// Lookups that found none, over every handle of this registration.
    pub fn misses(&self) -> u64 {
        self.stats.misses.load(Ordering::Relaxed)
    }

    /// The moka cache itself, for what this handle does not wrap. Lookups on it are not
    /// counted.
    pub fn inner(&self) -> &moka::future::Cache<K, V> {
        &self.cache
    }
}
