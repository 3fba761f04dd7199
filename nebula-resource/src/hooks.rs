//! The one way the framework calls user code: every [`Resource`] hook, credential provider and
//! tenant resolver goes through here.
//!
//! A hook written as `fn recycle(&self, ..) -> impl Future` can panic in two places: in its body,
//! before it returns the future, and while the future is polled. [`guarded`] catches both, so a
//! panic never unwinds into a guard's `Drop`, the release worker or the health task; [`bounded`]
//! adds the hook's timeout. The typed wrappers below map each failure to the error (or verdict)
//! its caller needs, so no call site handles a panic on its own.

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use crate::context::CreateContext;
use crate::error::{Error, ErrorKind, TimeoutPhase, panic_message};
use crate::resource::{Config, Resource};

/// What a panic carried.
pub(crate) type Panic = Box<dyn Any + Send>;

/// Make the future with `make` and run it; a panic in either is `Err`.
pub(crate) async fn guarded<T, Fut>(make: impl FnOnce() -> Fut) -> Result<T, Panic>
where
    Fut: Future<Output = T>,
{
    let future = catch_unwind(AssertUnwindSafe(make))?;
    AssertUnwindSafe(future).catch_unwind().await
}

/// A synchronous hook; a panic is `Err`.
pub(crate) fn guarded_sync<T>(call: impl FnOnce() -> T) -> Result<T, Panic> {
    catch_unwind(AssertUnwindSafe(call))
}

/// How a guarded, bounded hook call failed.
pub(crate) enum Failed {
    Panicked(Panic),
    TimedOut(Duration),
}

/// [`guarded`], bounded by `limit`.
pub(crate) async fn bounded<T, Fut>(
    limit: Duration,
    make: impl FnOnce() -> Fut,
) -> Result<T, Failed>
where
    Fut: Future<Output = T>,
{
    match tokio::time::timeout(limit, guarded(make)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(panic)) => Err(Failed::Panicked(panic)),
        Err(_) => Err(Failed::TimedOut(limit)),
    }
}

/// A hook returning `Result<T, Error>`, bounded by `limit`: a panic becomes an error of `kind`
/// naming `hook`, a timeout a [`Timeout`](ErrorKind::Timeout) of `phase`.
pub(crate) async fn fallible<T, Fut>(
    kind: ErrorKind,
    hook: &'static str,
    phase: TimeoutPhase,
    limit: Duration,
    make: impl FnOnce() -> Fut,
) -> Result<T, Error>
where
    Fut: Future<Output = Result<T, Error>>,
{
    match bounded(limit, make).await {
        Ok(result) => result,
        Err(Failed::Panicked(panic)) => Err(Error::panicked(kind, hook, &*panic)),
        Err(Failed::TimedOut(limit)) => Err(Error::timeout(phase, limit, None, None)),
    }
}

/// `Resource::create`, bounded by `timeout`.
pub(crate) async fn create<R: Resource>(
    resource: &R,
    config: &R::Config,
    ctx: &CreateContext,
    timeout: Duration,
) -> Result<R::Instance, Error> {
    fallible(
        ErrorKind::Create,
        "create",
        TimeoutPhase::Create,
        timeout,
        || resource.create(config, ctx),
    )
    .await
}

/// `Resource::check`, bounded by `timeout`: a failure, panic or timeout is an error (a timeout
/// is a [`Timeout`](ErrorKind::Timeout) of phase `Check`).
pub(crate) async fn check<R: Resource>(
    resource: &R,
    instance: &mut R::Instance,
    timeout: Duration,
) -> Result<(), Error> {
    fallible(
        ErrorKind::Check,
        "check",
        TimeoutPhase::Check,
        timeout,
        || resource.check(instance),
    )
    .await
}

/// `Resource::recycle`, unbounded (the caller may poll it in place, outside any runtime, before
/// it bounds it on the release worker).
pub(crate) async fn recycle<R: Resource>(
    resource: &R,
    instance: &mut R::Instance,
) -> Result<(), Error> {
    match guarded(|| resource.recycle(instance)).await {
        Ok(result) => result,
        Err(panic) => Err(Error::panicked(ErrorKind::Recycle, "recycle", &*panic)),
    }
}

/// `Resource::destroy`, bounded by `limit`; a panic or timeout is logged (the instance is gone
/// either way).
pub(crate) async fn destroy<R: Resource>(resource: &R, instance: R::Instance, limit: Duration) {
    match bounded(limit, || resource.destroy(instance)).await {
        Ok(()) => {}
        Err(Failed::Panicked(panic)) => {
            let panic = panic_message(&*panic);
            tracing::warn!(resource = R::KEY, %panic, "destroy panicked; instance dropped");
        }
        Err(Failed::TimedOut(limit)) => {
            tracing::warn!(resource = R::KEY, timeout = ?limit, "destroy timed out; instance dropped");
        }
    }
}

/// `Resource::is_broken`; a panic counts as broken.
pub(crate) fn is_broken<R: Resource>(resource: &R, instance: &R::Instance) -> bool {
    guarded_sync(|| resource.is_broken(instance)).unwrap_or_else(|panic| {
        let panic = panic_message(&*panic);
        tracing::warn!(resource = R::KEY, %panic, "is_broken panicked; instance treated as broken");
        true
    })
}

/// `Resource::degraded`; a panic is reported as the reason.
pub(crate) fn degraded<R: Resource>(resource: &R, instance: &R::Instance) -> Option<Arc<str>> {
    match guarded_sync(|| resource.degraded(instance)) {
        Ok(reason) => reason.map(Arc::from),
        Err(panic) => {
            let panic = panic_message(&*panic);
            tracing::warn!(resource = R::KEY, %panic, "degraded panicked; reported as the reason");
            Some(Arc::from(format!("`degraded` panicked: {panic}")))
        }
    }
}

/// `Resource::share`, with `None` and a panic as errors.
pub(crate) fn share<R: Resource>(
    resource: &R,
    instance: &R::Instance,
) -> Result<R::Instance, Error> {
    match guarded_sync(|| resource.share(instance)) {
        Ok(Some(handle)) => Ok(handle),
        Ok(None) => Err(not_shareable::<R>()),
        Err(panic) => Err(Error::panicked(ErrorKind::Create, "share", &*panic)),
    }
}

/// `Resource::counters`; a panic reports none (and is logged).
pub(crate) fn counters<R: Resource>(resource: &R) -> Vec<(&'static str, u64)> {
    guarded_sync(|| resource.counters()).unwrap_or_else(|panic| {
        let panic = panic_message(&*panic);
        tracing::warn!(resource = R::KEY, %panic, "counters panicked; none reported");
        Vec::new()
    })
}

/// `Config::validate`, a panic caught as a `Config` error.
pub(crate) fn validate_config<C: Config>(config: &C) -> Result<(), Error> {
    guarded_sync(|| config.validate()).unwrap_or_else(|panic| {
        Err(Error::panicked(
            ErrorKind::Config,
            "Config::validate",
            &*panic,
        ))
    })
}

/// The error of a `Resident` resource whose `share` returns `None`.
pub(crate) fn not_shareable<R: Resource>() -> Error {
    Error::config(
        "topology",
        format!(
            "`{}` declares Topology::Resident but `Resource::share` returned None; implement it as `Some(instance.clone())`",
            R::KEY
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(unreachable_code)]
    fn panics_before_its_future() -> impl Future<Output = u8> {
        panic!("in the body");
        async { 1 }
    }

    #[tokio::test]
    async fn a_panic_in_the_body_or_the_future_is_caught() {
        assert!(guarded(panics_before_its_future).await.is_err());
        assert!(guarded(|| async { panic!("in the future") }).await.is_err());
        assert_eq!(guarded(|| async { 7 }).await.ok(), Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_hook_times_out_with_the_phase_it_was_in() {
        let err = fallible::<(), _>(
            ErrorKind::Check,
            "check",
            TimeoutPhase::Check,
            Duration::from_secs(1),
            std::future::pending,
        )
        .await
        .unwrap_err();
        assert_eq!(err.timeout_phase(), Some(TimeoutPhase::Check));
    }
}
