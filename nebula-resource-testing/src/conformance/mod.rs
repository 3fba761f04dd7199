//! [`Conformance`]: the suite every resource should pass — the built-in ones run it, and the
//! author of a custom resource runs it against theirs, on its real backend.
//!
//! Each scenario builds its own [`ResourceManager`](nebula_resource::ResourceManager) around the
//! resource under test, wrapped so that its hooks can be made to fail or panic on demand and
//! every instance it creates is counted until it is dropped. After each scenario the suite waits for the pool to settle and
//! asserts its counts: nothing in use, waiting, being created or released, and exactly as many
//! instances alive as the pool says it holds; after each shutdown, none alive.
//!
//! | Scenario | What it does | What must hold |
//! |---|---|---|
//! | `contention` | 16 tasks acquire, exercise and release, 8 times each | every call succeeds; a resident creates one instance |
//! | `cancellation` | an acquire on a cold pool, cancelled after 0, 1, 2, … polls until one completes; a pooled acquire cancelled while it waits for a full pool | no place, waiter or instance leaks; the next acquire is served |
//! | `create_faults` | `create` fails, panics in its future, panics before it | each acquire fails with a typed error, never a panic; served again once healed |
//! | `check_faults` | `check` fails or panics (pooled: on acquire after idle; resident: in a health round) | the instance is replaced, the acquire is served |
//! | `recycle_faults` | pooled: `recycle` fails or panics on release | the instance is destroyed, its place freed, the pool serves on |
//! | `destroy_faults` | `destroy` panics, before or in its future | the instance is counted gone, the manager serves on |
//! | `backend_killed` | with [`through_proxy`](Conformance::through_proxy): every connection reset; the server refusing; a black hole — each followed by a heal | no acquire or exercise hangs past its bound, in the black hole too; calls fail while the server is refused; service is back within the patience after each heal |
//! | `shutdown` | shutdown while guards are held, within and past its drain deadline | new acquires fail with `ShuttingDown`; every instance is dropped once the guards are |
//!
//! ```no_run
//! # use nebula_resource::{Config, CreateContext, Error, Resource};
//! # #[derive(Clone)] struct MyConfig; impl Config for MyConfig {}
//! # struct Conn; impl Conn { async fn ping(&mut self) -> Result<(), Error> { Ok(()) } }
//! # struct MyResource;
//! # impl Resource for MyResource {
//! #     type Config = MyConfig; type Instance = Conn; const KEY: &'static str = "mine";
//! #     async fn create(&self, _: &MyConfig, _: &CreateContext) -> Result<Conn, Error> { Ok(Conn) }
//! # }
//! use nebula_resource_testing::Conformance;
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn my_resource_conforms() {
//!     Conformance::new(MyResource, MyConfig)
//!         .exercise(|conn| Box::pin(conn.ping()))
//!         .run()
//!         .await;
//! }
//! ```

mod faulty;
mod scenarios;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use nebula_resource::{Error, Resource, ResourceManagerBuilder};

use crate::FaultProxy;

/// How an author proves that an instance works: one real operation against the backend.
type Exercise<I> = Arc<dyn for<'a> Fn(&'a mut I) -> BoxFuture<'a, Result<(), Error>> + Send + Sync>;

/// What registers the resources the one under test depends on.
type Register = Arc<dyn Fn(ResourceManagerBuilder) -> ResourceManagerBuilder + Send + Sync>;

/// The conformance suite for one resource. See the [module docs](self) for its scenarios.
pub struct Conformance<R: Resource> {
    resource: Arc<R>,
    config: R::Config,
    dependencies: Option<Register>,
    exercise: Option<Exercise<R::Instance>>,
    proxied: Option<(FaultProxy, R::Config)>,
    max_size: usize,
    patience: Duration,
}

impl<R: Resource> fmt::Debug for Conformance<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conformance")
            .field("resource", &R::KEY)
            .field("proxied", &self.proxied.is_some())
            .field("max_size", &self.max_size)
            .field("patience", &self.patience)
            .finish_non_exhaustive()
    }
}

impl<R: Resource> Conformance<R> {
    /// The suite for `resource`, created with `config` (which must reach a live backend).
    pub fn new(resource: R, config: R::Config) -> Self {
        Self {
            resource: Arc::new(resource),
            config,
            dependencies: None,
            exercise: None,
            proxied: None,
            max_size: 4,
            patience: Duration::from_secs(15),
        }
    }

    /// Register what the resource depends on, on every manager the suite builds. Default:
    /// nothing (the resource has no dependencies).
    #[must_use]
    pub fn dependencies(
        mut self,
        register: impl Fn(ResourceManagerBuilder) -> ResourceManagerBuilder + Send + Sync + 'static,
    ) -> Self {
        self.dependencies = Some(Arc::new(register));
        self
    }

    /// One real operation that shows an instance works (a `SELECT 1`, a publish, a `PING`);
    /// the suite calls it on acquired instances and expects `Ok` while the backend is up, and
    /// an end within 5 s whatever the backend does — on a black-holed link only a deadline
    /// ends a call, so the exercise must carry the one the resource's users rely on (a
    /// driver's response timeout, or `tokio::time::timeout` where the driver has none).
    /// Default: none — acquiring is all the suite does with an instance.
    #[must_use]
    pub fn exercise(
        mut self,
        exercise: impl for<'a> Fn(&'a mut R::Instance) -> BoxFuture<'a, Result<(), Error>>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.exercise = Some(Arc::new(exercise));
        self
    }

    /// Also run `backend_killed`: `config` reaches the same backend through `proxy`, which the
    /// suite resets, refuses and blackholes. Default: not run.
    #[must_use]
    pub fn through_proxy(mut self, proxy: FaultProxy, config: R::Config) -> Self {
        self.proxied = Some((proxy, config));
        self
    }

    /// The pool's `max_size` in the scenarios of a pooled resource. Default: 4.
    ///
    /// # Panics
    ///
    /// If `max_size` is 0.
    #[must_use]
    pub fn max_size(mut self, max_size: usize) -> Self {
        assert!(
            max_size > 0,
            "Conformance::max_size: a pool holds at least one instance"
        );
        self.max_size = max_size;
        self
    }

    /// How long the backend may take to serve again after a heal, and the pool to settle.
    /// Default: 15 s.
    #[must_use]
    pub fn patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// Run every scenario, one after another, each with a manager of its own; print each
    /// one's outcome on stderr.
    ///
    /// # Panics
    ///
    /// When a scenario fails, after all have run: the message names each failed scenario and
    /// what was wrong.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: a scenario dropped midway may leave its manager's instances to be
    /// dropped without `destroy`, and a proxy in a faulty mode.
    pub async fn run(self) {
        let failures = scenarios::run_all(&self).await;
        assert!(
            failures.is_empty(),
            "`{}` failed {} conformance scenario(s):\n{}",
            R::KEY,
            failures.len(),
            failures.join("\n")
        );
    }
}
