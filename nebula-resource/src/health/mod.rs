//! Health of a registration: [`HealthConfig`], the states an operator sees ([`Health`],
//! [`HealthTransition`], [`HealthReport`]) and the crate's `HealthTracker`, which turns check
//! results into those states.
//!
//! The tracker has an *own* state, driven by check rounds, and may be marked degraded because a
//! dependency is unhealthy; what it reports is the worse of the two:
//!
//! - A failed round below `failure_threshold` consecutive failures makes a healthy registration
//!   Degraded (with the failure as the reason); `failure_threshold` consecutive failures make it
//!   Unhealthy. Failures never improve the state: an Unhealthy registration stays Unhealthy.
//! - `success_threshold` consecutive good rounds bring a Degraded or Unhealthy registration back
//!   to Healthy.
//! - A registration whose checks pass but whose resource reports itself impaired
//!   ([`Resource::degraded`](crate::Resource::degraded)) reports Degraded with the resource's
//!   reason, for as long as the rounds find it so; that is not a failure.
//! - While a dependency is unhealthy a registration that is itself Healthy reports Degraded with
//!   the reason "dependency `<name>` is unhealthy"; one that is Degraded or Unhealthy by its own
//!   checks keeps its own state and reason, and one impaired keeps the resource's reason.
//!
//! Every change of the reported state is a [`HealthTransition`], kept in a bounded history.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::Error;
use crate::limits::check_duration;

/// Largest `history` accepted.
const MAX_HISTORY: usize = 1024;

/// Settings of the health checks of one registration, built by value from
/// [`HealthConfig::default`]:
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::HealthConfig;
/// let health = HealthConfig::default()
///     .interval(Duration::from_secs(10))
///     .timeout(Duration::from_secs(2))
///     .failure_threshold(5);
/// assert!(health.validate().is_ok());
/// assert!(HealthConfig::disabled().validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub(crate) enabled: bool,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) failure_threshold: u32,
    pub(crate) success_threshold: u32,
    pub(crate) history: usize,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            failure_threshold: 3,
            success_threshold: 2,
            history: 16,
        }
    }
}

impl HealthConfig {
    /// No background checks. The other settings keep their defaults.
    pub fn disabled() -> Self {
        Self::default().enabled(false)
    }

    /// Whether the registration is checked in the background. Defaults to `true`.
    #[must_use]
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Time between two check rounds. Defaults to 30 s; must be greater than zero.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Longest one check (or probe) may take before it counts as failed. Defaults to 5 s; must
    /// be greater than zero.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Consecutive failed rounds that make the registration Unhealthy (fewer make it
    /// Degraded). Defaults to 3; must be at least 1.
    #[must_use]
    pub fn failure_threshold(mut self, rounds: u32) -> Self {
        self.failure_threshold = rounds;
        self
    }

    /// Consecutive good rounds that make a Degraded or Unhealthy registration Healthy again.
    /// Defaults to 2; must be at least 1.
    #[must_use]
    pub fn success_threshold(mut self, rounds: u32) -> Self {
        self.success_threshold = rounds;
        self
    }

    /// How many of the latest health transitions are kept for status reports. Defaults to 16;
    /// must be 1..=1024.
    #[must_use]
    pub fn history(mut self, transitions: usize) -> Self {
        self.history = transitions;
        self
    }

    /// Whether background checks are enabled.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Check every value against its rule (also when disabled).
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error naming the first field out of range, as
    /// `health.<field>`.
    pub fn validate(&self) -> Result<(), Error> {
        check_duration("health.interval", self.interval)?;
        check_duration("health.timeout", self.timeout)?;
        if self.failure_threshold == 0 {
            return Err(Error::config(
                "health.failure_threshold",
                "must be at least 1 (got 0)",
            ));
        }
        if self.success_threshold == 0 {
            return Err(Error::config(
                "health.success_threshold",
                "must be at least 1 (got 0)",
            ));
        }
        if self.history == 0 || self.history > MAX_HISTORY {
            return Err(Error::config(
                "health.history",
                format!("must be in 1..={MAX_HISTORY} (got {})", self.history),
            ));
        }
        Ok(())
    }
}

/// How well a registration is doing, worst last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Health {
    /// Checks pass and every dependency is healthy.
    Healthy,
    /// Serving, but recent checks failed or a dependency is unhealthy.
    Degraded,
    /// `failure_threshold` consecutive check rounds failed.
    Unhealthy,
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Unhealthy => "unhealthy",
        })
    }
}

/// One change of a registration's [`Health`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTransition {
    /// The health before.
    pub from: Health,
    /// The health after.
    pub to: Health,
    /// Why: the failure, the dependency, or the recovery.
    pub reason: Arc<str>,
    /// When, by the wall clock (for operators; not for measuring intervals).
    pub at: SystemTime,
}

/// A snapshot of a registration's health, for status reports.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthReport {
    /// The health now.
    pub health: Health,
    /// Why it is not healthy: the last failure, or the unhealthy dependency. `None` when
    /// healthy.
    pub reason: Option<Arc<str>>,
    /// When the health last changed (or tracking began), by the wall clock.
    pub since: SystemTime,
    /// The latest transitions, oldest first, at most `history` of them.
    pub history: Vec<HealthTransition>,
    /// Failed check rounds in a row, up to now.
    pub consecutive_failures: u32,
    /// Good check rounds in a row, up to now.
    pub consecutive_successes: u32,
}

/// Turns check results and dependency health into a [`Health`] with history. Not synchronized:
/// the owner keeps it behind its own lock.
#[derive(Debug)]
pub(crate) struct HealthTracker {
    failure_threshold: u32,
    success_threshold: u32,
    /// The state by this registration's own checks.
    own: Health,
    /// The last failure, while `own` is not healthy.
    own_reason: Option<Arc<str>>,
    /// The unhealthy dependency, if one is.
    dependency: Option<Arc<str>>,
    /// Why the resource says its instances are impaired (the last good round's
    /// `Resource::degraded`).
    impaired: Option<Arc<str>>,
    consecutive_failures: u32,
    consecutive_successes: u32,
    since: SystemTime,
    history: VecDeque<HealthTransition>,
    history_cap: usize,
}

impl HealthTracker {
    /// A healthy tracker (the registration was just initialized). `config` is expected to be
    /// validated.
    pub(crate) fn new(config: &HealthConfig) -> Self {
        let history_cap = config.history.max(1);
        Self {
            failure_threshold: config.failure_threshold,
            success_threshold: config.success_threshold,
            own: Health::Healthy,
            own_reason: None,
            dependency: None,
            impaired: None,
            consecutive_failures: 0,
            consecutive_successes: 0,
            since: SystemTime::now(),
            history: VecDeque::with_capacity(history_cap),
            history_cap,
        }
    }

    /// The health reported now.
    pub(crate) fn health(&self) -> Health {
        self.effective().0
    }

    /// A good check round. Returns the transition it caused, if any.
    pub(crate) fn record_success(&mut self) -> Option<HealthTransition> {
        self.consecutive_failures = 0;
        self.consecutive_successes = self.consecutive_successes.saturating_add(1);
        if self.own == Health::Healthy || self.consecutive_successes < self.success_threshold {
            return None;
        }
        let before = self.effective();
        self.own = Health::Healthy;
        self.own_reason = None;
        // Recovered, unless an unhealthy dependency keeps it degraded: then that is the reason.
        let reason = match self.effective() {
            (Health::Healthy, _) | (_, None) => format!(
                "{} consecutive successful checks",
                self.consecutive_successes
            )
            .into(),
            (_, Some(reason)) => reason,
        };
        self.transition(before, reason)
    }

    /// A failed check round, and why. Returns the transition it caused, if any.
    pub(crate) fn record_failure(
        &mut self,
        reason: impl Into<Arc<str>>,
    ) -> Option<HealthTransition> {
        let reason = reason.into();
        self.consecutive_successes = 0;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let before = self.effective();
        self.own = if self.consecutive_failures >= self.failure_threshold {
            Health::Unhealthy
        } else {
            self.own.max(Health::Degraded)
        };
        let transition_reason: Arc<str> = if self.own == Health::Unhealthy {
            format!(
                "{} consecutive failed checks: {reason}",
                self.consecutive_failures
            )
            .into()
        } else {
            Arc::clone(&reason)
        };
        self.own_reason = Some(reason);
        self.transition(before, transition_reason)
    }

    /// A dependency became unhealthy (`Some(name)`), or none is any longer (`None`). Returns
    /// the transition it caused, if any: a registration that is itself healthy turns Degraded
    /// and back.
    pub(crate) fn set_degraded_by_dependency(
        &mut self,
        dependency: Option<&str>,
    ) -> Option<HealthTransition> {
        if self.dependency.as_deref() == dependency {
            return None;
        }
        let before = self.effective();
        let previous = std::mem::replace(&mut self.dependency, dependency.map(Arc::from));
        let reason: Arc<str> = match (dependency, previous) {
            (Some(name), _) => dependency_reason(name).into(),
            (None, Some(name)) => format!("dependency `{name}` is no longer unhealthy").into(),
            (None, None) => return None,
        };
        let after = self.effective();
        // The reason of a transition into a state is the reason that state reports.
        let reason = if after.0 == Health::Healthy {
            reason
        } else {
            after.1.unwrap_or(reason)
        };
        self.transition(before, reason)
    }

    /// The last good round's word from the resource: impaired (`Some(reason)`) or not.
    pub(crate) fn set_impaired(&mut self, impaired: Option<Arc<str>>) -> Option<HealthTransition> {
        if self.impaired == impaired {
            return None;
        }
        let before = self.effective();
        let reason: Arc<str> = match &impaired {
            Some(reason) => Arc::clone(reason),
            None => "no longer impaired".into(),
        };
        self.impaired = impaired;
        let after = self.effective();
        let reason = if after.0 == Health::Healthy {
            reason
        } else {
            after.1.unwrap_or(reason)
        };
        self.transition(before, reason)
    }

    /// A snapshot for status reports.
    pub(crate) fn report(&self) -> HealthReport {
        let (health, reason) = self.effective();
        HealthReport {
            health,
            reason,
            since: self.since,
            history: self.history.iter().cloned().collect(),
            consecutive_failures: self.consecutive_failures,
            consecutive_successes: self.consecutive_successes,
        }
    }

    /// The reported health and its reason: the own state if it is not Healthy, else Degraded
    /// if the resource says it is impaired or a dependency is unhealthy (in that order).
    fn effective(&self) -> (Health, Option<Arc<str>>) {
        match (&self.impaired, &self.dependency, self.own) {
            (Some(reason), _, Health::Healthy) => (Health::Degraded, Some(Arc::clone(reason))),
            (None, Some(name), Health::Healthy) => {
                (Health::Degraded, Some(dependency_reason(name).into()))
            }
            (_, _, own) => (own, self.own_reason.clone()),
        }
    }

    /// Record a transition if the reported health changed since `before`.
    fn transition(
        &mut self,
        before: (Health, Option<Arc<str>>),
        reason: Arc<str>,
    ) -> Option<HealthTransition> {
        let to = self.health();
        if before.0 == to {
            return None;
        }
        let transition = HealthTransition {
            from: before.0,
            to,
            reason,
            at: SystemTime::now(),
        };
        self.since = transition.at;
        if self.history.len() == self.history_cap {
            self.history.pop_front();
        }
        self.history.push_back(transition.clone());
        Some(transition)
    }
}

fn dependency_reason(name: &str) -> String {
    format!("dependency `{name}` is unhealthy")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::MAX_DURATION;

    fn tracker() -> HealthTracker {
        HealthTracker::new(&HealthConfig::default().history(4))
    }

    fn step(t: Option<HealthTransition>) -> Option<(Health, Health, String)> {
        t.map(|t| (t.from, t.to, t.reason.to_string()))
    }

    #[test]
    fn defaults_are_valid() {
        HealthConfig::default().validate().unwrap();
        HealthConfig::disabled().validate().unwrap();
        assert!(!HealthConfig::disabled().is_enabled());
    }

    #[test]
    fn every_rule_names_its_field() {
        let d = HealthConfig::default;
        let cases = [
            (d().interval(Duration::ZERO), "health.interval"),
            (d().interval(MAX_DURATION * 2), "health.interval"),
            (d().timeout(Duration::ZERO), "health.timeout"),
            (d().failure_threshold(0), "health.failure_threshold"),
            (d().success_threshold(0), "health.success_threshold"),
            (d().history(0), "health.history"),
            (d().history(MAX_HISTORY + 1), "health.history"),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
            assert_eq!(err.kind(), crate::ErrorKind::Config);
        }
    }

    #[test]
    fn an_impaired_resource_reports_degraded_without_counting_a_failure() {
        use Health::*;
        let mut t = tracker();
        assert_eq!(
            step(t.set_impaired(Some("broker alarm".into()))),
            Some((Healthy, Degraded, "broker alarm".into()))
        );
        assert_eq!(t.set_impaired(Some("broker alarm".into())), None);
        let report = t.report();
        assert_eq!(report.reason.as_deref(), Some("broker alarm"));
        assert_eq!(report.consecutive_failures, 0);
        // Its own failures come first; when they heal, the impairment shows again.
        t.record_failure("refused");
        assert_eq!(t.report().reason.as_deref(), Some("refused"));
        t.record_success();
        assert_eq!(t.record_success(), None, "still degraded: impaired");
        assert_eq!(t.report().reason.as_deref(), Some("broker alarm"));
        // The impairment wins over an unhealthy dependency, and lifting it leaves that.
        t.set_degraded_by_dependency(Some("db"));
        assert_eq!(t.report().reason.as_deref(), Some("broker alarm"));
        assert_eq!(t.set_impaired(None), None, "still degraded: the dependency");
        assert_eq!(
            t.report().reason.as_deref(),
            Some("dependency `db` is unhealthy")
        );
        t.set_degraded_by_dependency(None);
        assert_eq!(t.health(), Healthy);
    }

    #[test]
    fn thresholds() {
        use Health::*;
        let mut t = tracker();
        assert_eq!(t.health(), Healthy);
        assert_eq!(t.record_success(), None);
        assert_eq!(
            step(t.record_failure("refused")),
            Some((Healthy, Degraded, "refused".into()))
        );
        assert_eq!(t.report().reason.as_deref(), Some("refused"));
        assert_eq!(t.record_failure("timed out"), None, "still below threshold");
        assert_eq!(t.report().reason.as_deref(), Some("timed out"));
        assert_eq!(
            step(t.record_failure("reset")),
            Some((
                Degraded,
                Unhealthy,
                "3 consecutive failed checks: reset".into()
            ))
        );
        assert_eq!(t.report().consecutive_failures, 3);
        assert_eq!(t.record_failure("reset"), None);

        // One success is not enough; a failure in between does not improve anything and
        // starts the count over.
        assert_eq!(t.record_success(), None);
        assert_eq!(t.health(), Unhealthy);
        assert_eq!(t.record_failure("again"), None);
        assert_eq!(t.health(), Unhealthy, "a failure never improves the state");
        assert_eq!(t.record_success(), None);
        assert_eq!(
            step(t.record_success()),
            Some((Unhealthy, Healthy, "2 consecutive successful checks".into()))
        );
        let report = t.report();
        assert_eq!(report.health, Healthy);
        assert_eq!(report.reason, None);
        assert_eq!(report.consecutive_successes, 2);
        assert_eq!(report.since, report.history.last().unwrap().at);

        // Degraded recovers with the same threshold.
        t.record_failure("blip");
        assert_eq!(t.record_success(), None);
        assert_eq!(
            step(t.record_success()).map(|s| (s.0, s.1)),
            Some((Degraded, Healthy))
        );
    }

    #[test]
    fn failure_threshold_of_one_goes_straight_to_unhealthy() {
        let mut t = HealthTracker::new(&HealthConfig::default().failure_threshold(1));
        assert_eq!(
            step(t.record_failure("down")),
            Some((
                Health::Healthy,
                Health::Unhealthy,
                "1 consecutive failed checks: down".into()
            ))
        );
    }

    #[test]
    fn history_is_bounded_and_ordered() {
        let mut t = tracker();
        let mut all = Vec::new();
        for i in 0..5 {
            all.extend(t.record_failure(format!("failure {i}")));
            all.extend(t.record_success());
            all.extend(t.record_success());
        }
        assert_eq!(all.len(), 10);
        let report = t.report();
        assert_eq!(
            report.history,
            all[6..].to_vec(),
            "the latest 4, oldest first"
        );
        assert_eq!(report.history[0].reason.as_ref(), "failure 3");
        assert!(report.history.windows(2).all(|w| w[0].at <= w[1].at));
    }

    #[test]
    fn dependency_degradation_and_clearing() {
        use Health::*;
        let mut t = tracker();
        assert_eq!(
            step(t.set_degraded_by_dependency(Some("postgres"))),
            Some((
                Healthy,
                Degraded,
                "dependency `postgres` is unhealthy".into()
            ))
        );
        assert_eq!(t.set_degraded_by_dependency(Some("postgres")), None);
        assert_eq!(
            t.report().reason.as_deref(),
            Some("dependency `postgres` is unhealthy")
        );
        assert_eq!(
            t.set_degraded_by_dependency(Some("redis")),
            None,
            "still degraded"
        );
        assert_eq!(
            t.report().reason.as_deref(),
            Some("dependency `redis` is unhealthy")
        );
        // Successes do not clear a dependency's degradation.
        t.record_success();
        t.record_success();
        assert_eq!(t.health(), Degraded);
        assert_eq!(
            step(t.set_degraded_by_dependency(None)),
            Some((
                Degraded,
                Healthy,
                "dependency `redis` is no longer unhealthy".into()
            ))
        );
        assert_eq!(t.set_degraded_by_dependency(None), None);
    }

    #[test]
    fn own_state_wins_when_worse_and_shows_after_clearing() {
        use Health::*;
        let mut t = HealthTracker::new(&HealthConfig::default().failure_threshold(2));
        t.set_degraded_by_dependency(Some("db"));
        assert_eq!(t.record_failure("refused"), None, "degraded either way");
        assert_eq!(t.report().reason.as_deref(), Some("refused"));
        assert_eq!(
            step(t.record_failure("refused")).map(|s| (s.0, s.1)),
            Some((Degraded, Unhealthy))
        );
        assert_eq!(t.set_degraded_by_dependency(None), None);
        // Own recovery while the dependency is unhealthy lands on Degraded, with its reason.
        t.set_degraded_by_dependency(Some("db"));
        t.record_success();
        assert_eq!(
            step(t.record_success()),
            Some((Unhealthy, Degraded, "dependency `db` is unhealthy".into()))
        );
        // Clearing the dependency while the own state is degraded keeps the own reason.
        t.record_failure("slow");
        assert_eq!(t.set_degraded_by_dependency(None), None);
        assert_eq!(t.health(), Degraded);
        assert_eq!(t.report().reason.as_deref(), Some("slow"));
    }
}
