//! The resource under test, wrapped: every hook can be made to fail or panic on demand, and
//! every instance is counted from its create to its drop, whichever way it goes.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use nebula_resource::{CreateContext, Dependencies, Error, Resource, Topology};
use parking_lot::Mutex;

/// What a hook does before (or instead of) the real one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Run the real hook.
    #[default]
    None,
    /// Fail with an error (destroy cannot fail: it drops the instance without the real hook).
    Error,
    /// Panic inside the hook's future.
    Panic,
    /// Panic in the hook's body, before any future exists.
    PanicSync,
}

impl Fault {
    pub(crate) const INJECTED: [Self; 3] = [Self::Error, Self::Panic, Self::PanicSync];

    /// Inside the future: fail or panic as set.
    fn inject(self, hook: &str) -> Result<(), Error> {
        match self {
            Self::None => Ok(()),
            Self::Error => Err(Error::create(format!(
                "conformance: {hook} failed on purpose"
            ))),
            Self::Panic | Self::PanicSync => {
                panic!("conformance: {hook} panicked on purpose")
            }
        }
    }
}

/// The hooks a scenario can break.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Hook {
    Create,
    Check,
    Recycle,
    Destroy,
}

/// The faults set now, and the count of instances.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    create: Mutex<Fault>,
    check: Mutex<Fault>,
    recycle: Mutex<Fault>,
    destroy: Mutex<Fault>,
    /// Instances created and not yet dropped.
    alive: AtomicUsize,
    /// Instances created, ever.
    created: AtomicUsize,
}

impl Faults {
    pub(crate) fn set(&self, hook: Hook, fault: Fault) {
        *self.slot(hook).lock() = fault;
    }

    fn slot(&self, hook: Hook) -> &Mutex<Fault> {
        match hook {
            Hook::Create => &self.create,
            Hook::Check => &self.check,
            Hook::Recycle => &self.recycle,
            Hook::Destroy => &self.destroy,
        }
    }

    /// The synchronous part of a hook: `PanicSync` panics here.
    fn enter(&self, hook: Hook) -> Fault {
        let fault = *self.slot(hook).lock();
        if fault == Fault::PanicSync {
            panic!("conformance: {hook:?} panicked on purpose before making its future");
        }
        fault
    }

    pub(crate) fn alive(&self) -> usize {
        self.alive.load(Ordering::SeqCst)
    }

    pub(crate) fn created(&self) -> usize {
        self.created.load(Ordering::SeqCst)
    }
}

/// One instance of the resource under test. Only instances that `create` made carry an
/// [`Alive`] count; the handles a resident shares do not.
pub(crate) struct Tracked<I> {
    pub(crate) instance: I,
    alive: Option<Alive>,
}

/// Counts an instance alive until it is dropped.
struct Alive(Arc<Faults>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The resource under test with [`Faults`] in front of its hooks.
pub(crate) struct Faulty<R> {
    inner: Arc<R>,
    pub(crate) faults: Arc<Faults>,
}

impl<R> Faulty<R> {
    pub(crate) fn new(inner: &Arc<R>) -> Self {
        Self {
            inner: Arc::clone(inner),
            faults: Arc::new(Faults::default()),
        }
    }
}

impl<R: Resource> Resource for Faulty<R> {
    type Config = R::Config;
    type Instance = Tracked<R::Instance>;
    const KEY: &'static str = R::KEY;
    const TOPOLOGY: Topology = R::TOPOLOGY;

    fn dependencies() -> Dependencies {
        R::dependencies()
    }

    fn create(
        &self,
        config: &R::Config,
        ctx: &CreateContext,
    ) -> impl Future<Output = Result<Self::Instance, Error>> + Send {
        let fault = self.faults.enter(Hook::Create);
        async move {
            fault.inject("create")?;
            let instance = self.inner.create(config, ctx).await?;
            self.faults.alive.fetch_add(1, Ordering::SeqCst);
            self.faults.created.fetch_add(1, Ordering::SeqCst);
            Ok(Tracked {
                instance,
                alive: Some(Alive(Arc::clone(&self.faults))),
            })
        }
    }

    fn check(
        &self,
        tracked: &mut Self::Instance,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let fault = self.faults.enter(Hook::Check);
        async move {
            fault.inject("check")?;
            self.inner.check(&mut tracked.instance).await
        }
    }

    fn is_broken(&self, tracked: &Self::Instance) -> bool {
        self.inner.is_broken(&tracked.instance)
    }

    fn degraded(&self, tracked: &Self::Instance) -> Option<String> {
        self.inner.degraded(&tracked.instance)
    }

    fn recycle(
        &self,
        tracked: &mut Self::Instance,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        let fault = self.faults.enter(Hook::Recycle);
        async move {
            fault.inject("recycle")?;
            self.inner.recycle(&mut tracked.instance).await
        }
    }

    fn destroy(&self, tracked: Self::Instance) -> impl Future<Output = ()> + Send {
        let fault = self.faults.enter(Hook::Destroy);
        async move {
            let Tracked { instance, alive } = tracked;
            if fault == Fault::None {
                self.inner.destroy(instance).await;
            } else {
                drop(instance);
                drop(alive);
                let _ = fault.inject("destroy");
            }
        }
    }

    fn share(&self, tracked: &Self::Instance) -> Option<Self::Instance> {
        self.inner.share(&tracked.instance).map(|instance| Tracked {
            instance,
            alive: None,
        })
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.inner.counters()
    }
}
