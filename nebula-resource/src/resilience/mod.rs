//! Resilience policies: the circuit breaker ([`breaker`]) and retry with backoff ([`retry`]).
//!
//! Both are pure state and schedules with no pool code: the pool keeps a breaker behind its own
//! lock and runs creations through `retry`.

pub(crate) mod breaker;
pub(crate) mod retry;

pub use self::breaker::{BreakerConfig, BreakerState, BreakerStatus, Transition};
pub use self::retry::RetryPolicy;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use self::retry::Backoff;
use crate::events::{Event, Source};
use crate::health::{Health, HealthConfig, HealthReport, HealthTracker, HealthTransition};
use crate::runtime::Runtime;

/// Of several pools' breakers, the one furthest from closed (open, then half-open); closed
/// with `config`'s settings when there is none.
pub(crate) fn furthest_from_closed(
    statuses: impl Iterator<Item = BreakerStatus>,
    config: &BreakerConfig,
) -> BreakerStatus {
    statuses
        .max_by_key(|status| match status.state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        })
        .unwrap_or_else(|| breaker::CircuitBreaker::new(config).status(Instant::now()))
}

/// The health of one pool (or resident instance): its tracker, and the backoff of recovery
/// probes while it is quarantined.
pub(crate) struct Watch {
    pub(crate) config: HealthConfig,
    tracker: Mutex<HealthTracker>,
    /// The retry policy with no attempt cap and no deadline: recovery keeps probing, ever more
    /// slowly up to `max_interval`, until the resource comes back.
    recovery_policy: RetryPolicy,
    recovery: Mutex<Option<Backoff>>,
}

/// What a health round found: `Ok(None)` all good, `Ok(Some(reason))` good but impaired (the
/// resource's `degraded` hook), `Err(reason)` failed.
pub(crate) type Round = Result<Option<Arc<str>>, Arc<str>>;

/// What one health round changed.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    pub(crate) transition: Option<HealthTransition>,
    /// The resource just turned Unhealthy: quarantine it, with this reason.
    pub(crate) quarantine: Option<Arc<str>>,
    /// The resource just left Unhealthy: lift its quarantine.
    pub(crate) recovered: bool,
}

impl Watch {
    pub(crate) fn new(config: &HealthConfig, retry: &RetryPolicy) -> Self {
        Self {
            config: config.clone(),
            tracker: Mutex::new(HealthTracker::new(config)),
            recovery_policy: retry.clone().max_attempts(u32::MAX).deadline(None),
            recovery: Mutex::new(None),
        }
    }

    pub(crate) fn report(&self) -> HealthReport {
        self.tracker.lock().report()
    }

    /// A dependency turned Unhealthy (`Some(label)`) or none is any longer (`None`).
    pub(crate) fn set_dependency(&self, dependency: Option<&str>) -> Option<HealthTransition> {
        self.tracker.lock().set_degraded_by_dependency(dependency)
    }

    /// Record the outcome of a round (a check of idle instances, or a probe).
    pub(crate) fn record(&self, outcome: Round) -> Verdict {
        let mut tracker = self.tracker.lock();
        let was = tracker.health();
        let transition = match outcome {
            // At most one of the two changes the reported health: an impairment shows only
            // while the own state is Healthy, and a success changes only a state that is not.
            Ok(impaired) => {
                let impairment = tracker.set_impaired(impaired);
                tracker.record_success().or(impairment)
            }
            Err(reason) => tracker.record_failure(reason),
        };
        let now = tracker.health();
        drop(tracker);
        let mut verdict = Verdict {
            transition,
            ..Verdict::default()
        };
        if now == Health::Unhealthy && was != Health::Unhealthy {
            verdict.quarantine = Some(
                verdict
                    .transition
                    .as_ref()
                    .map_or_else(|| Arc::from("unhealthy"), |t| Arc::clone(&t.reason)),
            );
            *self.recovery.lock() = Some(Backoff::new(&self.recovery_policy, Instant::now()));
        } else if was == Health::Unhealthy && now != Health::Unhealthy {
            verdict.recovered = true;
            *self.recovery.lock() = None;
        }
        verdict
    }

    /// When the next round is due: the health interval, or the next recovery backoff delay
    /// while quarantined.
    pub(crate) fn next_delay(&self) -> Duration {
        match self.recovery.lock().as_mut() {
            Some(backoff) => backoff
                .next_delay(Instant::now(), &mut rand::rng())
                .unwrap_or(self.recovery_policy.max_interval),
            None => self.config.interval,
        }
    }
}

/// Publish a round's health events and log them.
pub(crate) fn emit_verdict(runtime: &Runtime, source: &Source, verdict: &Verdict) {
    if let Some(t) = &verdict.transition {
        tracing::info!(resource = source.key, name = ?source.name, tenant = ?source.tenant, from = %t.from, to = %t.to, reason = %t.reason, "health changed");
        runtime.emit(Event::HealthChanged {
            source: source.clone(),
            from: t.from,
            to: t.to,
            reason: Arc::clone(&t.reason),
        });
    }
    if let Some(reason) = &verdict.quarantine {
        tracing::warn!(resource = source.key, name = ?source.name, tenant = ?source.tenant, %reason, "quarantined");
        runtime.emit(Event::Quarantined {
            source: source.clone(),
            reason: Arc::clone(reason),
        });
    }
    if verdict.recovered {
        tracing::info!(resource = source.key, name = ?source.name, tenant = ?source.tenant, "recovered from quarantine");
        runtime.emit(Event::Recovered(source.clone()));
    }
}

/// Publish a health transition caused by a dependency.
pub(crate) fn emit_transition(
    runtime: &Runtime,
    source: &Source,
    transition: Option<HealthTransition>,
) {
    emit_verdict(
        runtime,
        source,
        &Verdict {
            transition,
            ..Verdict::default()
        },
    );
}

/// Publish a breaker transition and log it.
pub(crate) fn emit_breaker(runtime: &Runtime, source: &Source, transition: Transition) {
    match transition {
        Transition::Opened {
            retry_after,
            failure_rate,
            slow_call_rate,
        } => {
            tracing::warn!(resource = source.key, name = ?source.name, tenant = ?source.tenant, ?retry_after, failure_rate, slow_call_rate, "circuit breaker opened");
            runtime.emit(Event::CircuitOpened {
                source: source.clone(),
                retry_after,
                failure_rate,
                slow_call_rate,
            });
        }
        Transition::HalfOpened => {
            tracing::info!(resource = source.key, name = ?source.name, tenant = ?source.tenant, "circuit breaker half-open");
            runtime.emit(Event::CircuitHalfOpen(source.clone()));
        }
        Transition::Closed => {
            tracing::info!(resource = source.key, name = ?source.name, tenant = ?source.tenant, "circuit breaker closed");
            runtime.emit(Event::CircuitClosed(source.clone()));
        }
    }
}
