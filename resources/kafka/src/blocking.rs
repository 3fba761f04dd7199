//! librdkafka calls that block a thread, kept off the async runtime's workers and bounded.
//!
//! - [`run`]: a call librdkafka itself bounds by a timeout (`fetch_metadata`, `flush`) runs
//!   under `spawn_blocking`, and the caller stops waiting at a deadline a little past that
//!   timeout.
//! - [`run_detached`] and [`spawn_named`]: a call that may block with no bound of ours —
//!   closing a consumer commits and leaves its group, which waits on the brokers (rust-rdkafka
//!   #509, #611: indefinitely when they are gone); the drop of a client closes it. Such a call
//!   runs on a plain thread of its own rather than under `spawn_blocking`, because a runtime
//!   being dropped waits for every blocking task: an application's exit would wait for a close
//!   to a dead broker.

use std::fmt;
use std::time::Duration;

use tokio::sync::oneshot;

/// How much longer than librdkafka's own timeout the caller waits before giving up on a call.
pub(crate) const GRACE: Duration = Duration::from_millis(500);

/// A blocking call that did not return a result.
#[derive(Debug)]
pub(crate) enum Blocked {
    /// It did not return within the deadline; it goes on in the background.
    TimedOut { what: &'static str, after: Duration },
    /// It panicked.
    Panicked { what: &'static str },
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TimedOut { what, after } => {
                write!(f, "librdkafka `{what}` did not return within {after:?}")
            }
            Self::Panicked { what } => write!(f, "librdkafka `{what}` panicked"),
        }
    }
}

impl std::error::Error for Blocked {}

/// Run `call` on the blocking pool; wait for it at most `deadline`.
///
/// Cancel safe: dropping the future leaves the call to finish on its own.
pub(crate) async fn run<T, F>(what: &'static str, deadline: Duration, call: F) -> Result<T, Blocked>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::time::timeout(deadline, tokio::task::spawn_blocking(call)).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(Blocked::Panicked { what }),
        Err(_) => Err(Blocked::TimedOut {
            what,
            after: deadline,
        }),
    }
}

/// Run `call` on a new thread of its own; wait for it at most `deadline`. The thread runs to
/// its end whatever the caller does.
///
/// Cancel safe: dropping the future leaves the call to finish on its own.
pub(crate) async fn run_detached<T, F>(
    what: &'static str,
    deadline: Duration,
    call: F,
) -> Result<T, Blocked>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (done, result) = oneshot::channel();
    spawn_named(what, move || {
        // The caller may have stopped waiting: nobody to tell then.
        let _ = done.send(call());
    });
    match tokio::time::timeout(deadline, result).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(Blocked::Panicked { what }),
        Err(_) => Err(Blocked::TimedOut {
            what,
            after: deadline,
        }),
    }
}

/// Start `work` on a thread named after it; if no thread can be started, run it here.
pub(crate) fn spawn_named(what: &'static str, work: impl FnOnce() + Send + 'static) {
    let slot = std::sync::Arc::new(parking_lot::Mutex::new(Some(work)));
    let theirs = std::sync::Arc::clone(&slot);
    let spawned = std::thread::Builder::new()
        .name(format!("nebula-kafka-{what}"))
        .spawn(move || {
            if let Some(work) = theirs.lock().take() {
                work();
            }
        });
    if let Err(err) = spawned {
        tracing::warn!(error = %err, what, "no thread for a blocking librdkafka call; running it here");
        if let Some(work) = slot.lock().take() {
            work();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    // Real time: a blocking task in flight stops a paused clock from advancing. The call
    // cannot return before it is released, so the deadline always fires first.
    #[tokio::test]
    async fn a_call_past_its_deadline_is_left_running_and_reported() {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let err = run("fetch_metadata", Duration::from_millis(50), move || {
            let _ = released.recv();
        })
        .await
        .unwrap_err();
        assert!(
            matches!(err, Blocked::TimedOut { after, .. } if after == Duration::from_millis(50))
        );
        assert_eq!(
            err.to_string(),
            "librdkafka `fetch_metadata` did not return within 50ms"
        );
        release.send(()).unwrap();
        assert_eq!(run("flush", Duration::from_secs(2), || 7).await.unwrap(), 7);
        let panicked = run("flush", Duration::from_secs(2), || -> () { panic!("boom") })
            .await
            .unwrap_err();
        assert!(matches!(panicked, Blocked::Panicked { what: "flush" }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_detached_call_past_its_deadline_finishes_on_its_thread() {
        let (release, released) = std::sync::mpsc::channel::<()>();
        let finished = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&finished);
        let err = run_detached("close", Duration::from_secs(4), move || {
            let _ = released.recv();
            flag.store(true, Ordering::SeqCst);
        })
        .await
        .unwrap_err();
        assert!(matches!(err, Blocked::TimedOut { what: "close", .. }));
        assert!(!finished.load(Ordering::SeqCst));
        release.send(()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !finished.load(Ordering::SeqCst) {
            assert!(
                std::time::Instant::now() < deadline,
                "the close never ended"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn spawned_work_runs_on_a_named_thread_of_its_own() {
        let (tx, rx) = std::sync::mpsc::channel();
        spawn_named("close-test", move || {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
        });
        let name = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(name.as_deref(), Some("nebula-kafka-close-test"));
    }
}
