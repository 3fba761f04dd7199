//! The circuit breaker: [`BreakerConfig`], the state a caller can observe ([`BreakerState`],
//! [`BreakerStatus`], [`Transition`]) and the crate's state machine, `CircuitBreaker`.
//!
//! Semantics follow resilience4j's count-based breaker:
//!
//! - **Closed**: the outcomes of the last `window` calls are kept in a ring, with running counts
//!   of failures and slow calls, so recording one outcome is O(1). Once the ring holds at least
//!   `minimum_calls` outcomes, a failure rate or slow-call rate at or above its threshold opens
//!   the breaker and clears the ring.
//! - **Open**: every call is refused for the open wait: `open_wait` the first time, multiplied by
//!   `open_wait_multiplier` for each consecutive re-open (a failed half-open round), never more
//!   than `max_open_wait`. The re-open count starts over when the breaker closes.
//! - **Half-open**: the first call after the wait becomes a probe; exactly `half_open_calls`
//!   probes are allowed. When all of them have been recorded their rates decide: at or above a
//!   threshold, open again (with the longer wait); otherwise closed, with a fresh ring. A probe
//!   permit whose call never happened (a cancelled acquire) is given back with `release_probe`.
//!
//! The state machine is not synchronized: the pool keeps it behind the lock it already holds, so
//! recording an outcome costs a few instructions and no atomic traffic.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, ErrorKind};
use crate::limits::check_duration;

/// Largest `window` accepted: a ring of this many outcomes is already far more history than a
/// rate needs, so a larger value is a typo.
const MAX_WINDOW: u32 = 100_000;

/// Settings of one circuit breaker, built by value from [`BreakerConfig::default`]:
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::BreakerConfig;
/// let breaker = BreakerConfig::default()
///     .window(50)
///     .minimum_calls(10)
///     .failure_rate_threshold(0.25)
///     .open_wait(Duration::from_secs(5))
///     .open_wait_multiplier(2.0)
///     .half_open_calls(2);
/// assert!(breaker.validate().is_ok());
/// assert!(BreakerConfig::disabled().validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    pub(crate) enabled: bool,
    pub(crate) window: u32,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate_threshold: f64,
    pub(crate) slow_call_threshold: Duration,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) open_wait: Duration,
    pub(crate) open_wait_multiplier: f64,
    pub(crate) max_open_wait: Duration,
    pub(crate) half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window: 100,
            minimum_calls: 20,
            failure_rate_threshold: 0.5,
            slow_call_threshold: Duration::from_secs(5),
            slow_call_rate_threshold: 1.0,
            open_wait: Duration::from_secs(30),
            open_wait_multiplier: 1.0,
            max_open_wait: Duration::from_secs(300),
            half_open_calls: 3,
        }
    }
}

impl BreakerConfig {
    /// A breaker that never opens: every call goes through and recording costs one branch.
    /// The other settings keep their defaults.
    pub fn disabled() -> Self {
        Self::default().enabled(false)
    }

    /// Whether the breaker watches calls at all. Defaults to `true`.
    #[must_use]
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// How many of the most recent calls the rates are computed over (a count-based sliding
    /// window). Defaults to 100; must be 1..=100 000.
    #[must_use]
    pub fn window(mut self, calls: u32) -> Self {
        self.window = calls;
        self
    }

    /// Fewest calls in the window before a rate is computed: below it the breaker cannot open,
    /// even if every call failed. Defaults to 20; must be at least 1 and at most `window`.
    #[must_use]
    pub fn minimum_calls(mut self, calls: u32) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// Share of failed calls in the window (0.5 = 50 %) at or above which the breaker opens.
    /// Defaults to 0.5; must be in (0, 1].
    #[must_use]
    pub fn failure_rate_threshold(mut self, rate: f64) -> Self {
        self.failure_rate_threshold = rate;
        self
    }

    /// A call that takes this long or longer counts as slow. Defaults to 5 s; must be greater
    /// than zero.
    #[must_use]
    pub fn slow_call_threshold(mut self, threshold: Duration) -> Self {
        self.slow_call_threshold = threshold;
        self
    }

    /// Share of slow calls in the window at or above which the breaker opens. Defaults to 1.0:
    /// only when every call in the window is slow. Must be in (0, 1].
    #[must_use]
    pub fn slow_call_rate_threshold(mut self, rate: f64) -> Self {
        self.slow_call_rate_threshold = rate;
        self
    }

    /// How long the breaker stays open before it lets probes through. Defaults to 30 s; must be
    /// greater than zero.
    #[must_use]
    pub fn open_wait(mut self, wait: Duration) -> Self {
        self.open_wait = wait;
        self
    }

    /// Factor the open wait grows by each time the breaker re-opens after a failed half-open
    /// round; the growth starts over once the breaker closes. Defaults to 1.0 (the wait does not
    /// grow); must be at least 1.
    #[must_use]
    pub fn open_wait_multiplier(mut self, multiplier: f64) -> Self {
        self.open_wait_multiplier = multiplier;
        self
    }

    /// Longest open wait, however often the breaker re-opened. Defaults to 5 minutes; must be at
    /// least `open_wait`.
    #[must_use]
    pub fn max_open_wait(mut self, wait: Duration) -> Self {
        self.max_open_wait = wait;
        self
    }

    /// How many probe calls the half-open breaker lets through; their outcomes decide whether it
    /// closes or opens again. Defaults to 3; must be at least 1.
    #[must_use]
    pub fn half_open_calls(mut self, calls: u32) -> Self {
        self.half_open_calls = calls;
        self
    }

    /// Whether the breaker is enabled.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Check every value against its rule (also when the breaker is disabled, so enabling it
    /// later cannot surface an old mistake).
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error naming the first field out of range, as
    /// `breaker.<field>`.
    pub fn validate(&self) -> Result<(), Error> {
        if self.window == 0 || self.window > MAX_WINDOW {
            return Err(Error::config(
                "breaker.window",
                format!("must be in 1..={MAX_WINDOW} (got {})", self.window),
            ));
        }
        if self.minimum_calls == 0 || self.minimum_calls > self.window {
            return Err(Error::config(
                "breaker.minimum_calls",
                format!(
                    "must be at least 1 and at most window {} (got {})",
                    self.window, self.minimum_calls
                ),
            ));
        }
        check_rate(
            "breaker.failure_rate_threshold",
            self.failure_rate_threshold,
        )?;
        check_duration("breaker.slow_call_threshold", self.slow_call_threshold)?;
        check_rate(
            "breaker.slow_call_rate_threshold",
            self.slow_call_rate_threshold,
        )?;
        check_duration("breaker.open_wait", self.open_wait)?;
        if !(self.open_wait_multiplier >= 1.0 && self.open_wait_multiplier.is_finite()) {
            return Err(Error::config(
                "breaker.open_wait_multiplier",
                format!(
                    "must be a finite number of at least 1 (got {})",
                    self.open_wait_multiplier
                ),
            ));
        }
        check_duration("breaker.max_open_wait", self.max_open_wait)?;
        if self.max_open_wait < self.open_wait {
            return Err(Error::config(
                "breaker.max_open_wait",
                format!(
                    "must be at least open_wait {:?} (got {:?})",
                    self.open_wait, self.max_open_wait
                ),
            ));
        }
        if self.half_open_calls == 0 {
            return Err(Error::config(
                "breaker.half_open_calls",
                "must be at least 1 (got 0)",
            ));
        }
        Ok(())
    }
}

fn check_rate(field: &'static str, rate: f64) -> Result<(), Error> {
    // Written so that NaN fails too.
    if rate > 0.0 && rate <= 1.0 {
        Ok(())
    } else {
        Err(Error::config(
            field,
            format!("must be in (0, 1] (got {rate})"),
        ))
    }
}

impl Outcome {
    /// What a half-open probe acquire that failed with `err` says about the backend: a create,
    /// check or timeout error is a failure; any other error (shutdown, quarantine) says nothing,
    /// and its permit is given back (`None`).
    pub(crate) fn of_failed_probe(err: &Error) -> Option<Self> {
        match err.kind() {
            ErrorKind::Create | ErrorKind::Check | ErrorKind::Timeout => Some(Self::Failure),
            _ => None,
        }
    }
}

/// Where a circuit breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through; outcomes are counted.
    Closed,
    /// Calls are refused until the open wait has passed.
    Open,
    /// A limited number of probe calls go through to decide between closing and re-opening.
    HalfOpen,
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        })
    }
}

/// A snapshot of a circuit breaker, for status reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BreakerStatus {
    /// Where the breaker is.
    pub state: BreakerState,
    /// Share of failed calls in the window; `None` while fewer than `minimum_calls` have been
    /// recorded (closed), while open, and while half-open probes are still outstanding.
    pub failure_rate: Option<f64>,
    /// Share of slow calls in the window; `None` under the same conditions as `failure_rate`.
    pub slow_call_rate: Option<f64>,
    /// Outcomes recorded in the current window (closed) or probe outcomes recorded so far
    /// (half-open); 0 while open.
    pub calls_in_window: u32,
    /// While open: how long until the next call is let through as a probe (zero once the wait
    /// has passed and no call has come yet). `None` in the other states.
    pub retry_after: Option<Duration>,
    /// How many times the breaker has opened since it was created.
    pub times_opened: u64,
}

/// A change of [`BreakerState`], as reported by the state machine (and carried by events).
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    /// The breaker opened: calls are refused for `retry_after`.
    Opened {
        /// How long the breaker stays open.
        retry_after: Duration,
        /// Failure rate of the window (or of the half-open probes) that opened it.
        failure_rate: f64,
        /// Slow-call rate of the window (or of the half-open probes) that opened it.
        slow_call_rate: f64,
    },
    /// The open wait passed: probe calls are let through.
    HalfOpened,
    /// The probes succeeded: calls go through again, counted in a fresh window.
    Closed,
}

/// What kind of call a permit from `CircuitBreaker::try_call` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// A call made while closed; its outcome goes into the window.
    Normal,
    /// A half-open probe; its outcome decides between closing and re-opening. Must be recorded
    /// or released exactly once.
    Probe,
}

/// How a call ended, as far as the breaker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The call did what it should.
    Success,
    /// The call failed (an error, a timeout, a tainted instance).
    Failure,
}

const FAILED: u8 = 0b01;
const SLOW: u8 = 0b10;

fn outcome_flags(failed: bool, slow: bool) -> u8 {
    (u8::from(failed) * FAILED) | (u8::from(slow) * SLOW)
}

/// The last `capacity` outcomes as flag bytes, with running counts updated on every push.
#[derive(Debug)]
struct Window {
    outcomes: Vec<u8>,
    /// Where the next outcome goes once the ring is full (the oldest entry).
    next: usize,
    capacity: usize,
    failures: u32,
    slow: u32,
}

impl Window {
    fn new(capacity: u32) -> Self {
        Self {
            // Grown on demand up to `capacity`: a disabled or rarely used breaker allocates little.
            outcomes: Vec::new(),
            next: 0,
            capacity: capacity as usize,
            failures: 0,
            slow: 0,
        }
    }

    #[inline]
    fn push_success(&mut self) {
        if self.outcomes.len() < self.capacity {
            self.outcomes.push(0);
        } else {
            let old = std::mem::replace(&mut self.outcomes[self.next], 0);
            if old != 0 {
                self.failures -= u32::from(old & FAILED != 0);
                self.slow -= u32::from(old & SLOW != 0);
            }
            self.next += 1;
            if self.next == self.capacity {
                self.next = 0;
            }
        }
    }

    fn push(&mut self, flags: u8) {
        if self.outcomes.len() < self.capacity {
            self.outcomes.push(flags);
        } else {
            let old = std::mem::replace(&mut self.outcomes[self.next], flags);
            self.failures -= u32::from(old & FAILED != 0);
            self.slow -= u32::from(old & SLOW != 0);
            self.next += 1;
            if self.next == self.capacity {
                self.next = 0;
            }
        }
        self.failures += u32::from(flags & FAILED != 0);
        self.slow += u32::from(flags & SLOW != 0);
    }

    fn len(&self) -> u32 {
        // At most MAX_WINDOW entries.
        self.outcomes.len() as u32
    }

    fn clear(&mut self) {
        self.outcomes.clear();
        self.next = 0;
        self.failures = 0;
        self.slow = 0;
    }
}

/// The counts of the current half-open round.
#[derive(Debug, Default)]
struct Probes {
    /// Permits not yet handed out.
    left: u32,
    /// Permits handed out whose outcome has not been recorded (nor the permit released).
    in_flight: u32,
    recorded: u32,
    failures: u32,
    slow: u32,
}

/// The breaker's state machine. Not synchronized: the owner keeps it behind its own lock.
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    state: BreakerState,
    enabled: bool,
    minimum_calls: u32,
    failure_rate_threshold: f64,
    slow_call_threshold: Duration,
    slow_call_rate_threshold: f64,
    open_wait: Duration,
    open_wait_multiplier: f64,
    max_open_wait: Duration,
    half_open_calls: u32,
    window: Window,
    probes: Probes,
    /// While open: when the next call becomes a probe.
    open_until: Instant,
    /// The wait of the current (or last) open period; grows with consecutive re-opens.
    current_wait: Duration,
    times_opened: u64,
}

impl CircuitBreaker {
    /// A closed breaker with an empty window. `config` is expected to be validated.
    pub(crate) fn new(config: &BreakerConfig) -> Self {
        Self {
            state: BreakerState::Closed,
            enabled: config.enabled,
            minimum_calls: config.minimum_calls,
            failure_rate_threshold: config.failure_rate_threshold,
            slow_call_threshold: config.slow_call_threshold,
            slow_call_rate_threshold: config.slow_call_rate_threshold,
            open_wait: config.open_wait,
            open_wait_multiplier: config.open_wait_multiplier,
            max_open_wait: config.max_open_wait,
            half_open_calls: config.half_open_calls,
            window: Window::new(if config.enabled { config.window } else { 0 }),
            probes: Probes::default(),
            open_until: Instant::now(),
            current_wait: config.open_wait,
            times_opened: 0,
        }
    }

    /// Ask to start a call.
    ///
    /// - Closed (always, when disabled): `Ok((Call::Normal, None))`; `now` is not looked at, so a
    ///   caller that checked [`is_closed`](Self::is_closed) may skip reading the clock.
    /// - Open with the wait passed: becomes half-open and hands out the first probe permit,
    ///   `Ok((Call::Probe, Some(Transition::HalfOpened)))`.
    /// - Half-open with a permit left: `Ok((Call::Probe, None))`, the permit taken.
    /// - Open within the wait: `Err(time until the wait ends)`.
    /// - Half-open with every permit taken: `Err(Duration::ZERO)`. When the breaker lets calls
    ///   through again depends on the outstanding probes, not on a clock, so zero stands for
    ///   "as soon as they finish".
    ///
    /// A `Call::Probe` must be given back exactly once: to [`record`](Self::record) or, if the
    /// call never happened, to [`release_probe`](Self::release_probe).
    pub(crate) fn try_call(
        &mut self,
        now: Instant,
    ) -> Result<(Call, Option<Transition>), Duration> {
        match self.state {
            BreakerState::Closed => Ok((Call::Normal, None)),
            BreakerState::Open => {
                if now < self.open_until {
                    return Err(self.open_until - now);
                }
                self.state = BreakerState::HalfOpen;
                self.probes = Probes {
                    left: self.half_open_calls - 1,
                    in_flight: 1,
                    ..Probes::default()
                };
                Ok((Call::Probe, Some(Transition::HalfOpened)))
            }
            BreakerState::HalfOpen => {
                if self.probes.left == 0 {
                    return Err(Duration::ZERO);
                }
                self.probes.left -= 1;
                self.probes.in_flight += 1;
                Ok((Call::Probe, None))
            }
        }
    }

    /// Record the outcome of a call started with [`try_call`](Self::try_call). A call lasting
    /// `slow_call_threshold` or longer counts as slow. Returns the transition it caused.
    ///
    /// A `Call::Normal` that arrives while open or half-open (a call started while closed that
    /// finished after the breaker opened) is ignored: the window it belonged to is gone, and it
    /// must not be mistaken for a probe. A `Call::Probe` with no probe outstanding is ignored as
    /// well.
    /// A successful, fast call: what every release records. Neither rate can rise, so this is
    /// a ring write and nothing else (ignored unless closed, like any late `Normal` record).
    #[inline]
    pub(crate) fn record_success(&mut self) {
        if self.enabled && self.state == BreakerState::Closed {
            self.window.push_success();
        }
    }

    pub(crate) fn record(
        &mut self,
        call: Call,
        outcome: Outcome,
        duration: Duration,
        now: Instant,
    ) -> Option<Transition> {
        if !self.enabled {
            return None;
        }
        let failed = outcome == Outcome::Failure;
        let slow = duration >= self.slow_call_threshold;
        match (self.state, call) {
            // The release path's case: neither rate can rise, so there is nothing to evaluate.
            (BreakerState::Closed, Call::Normal) if !failed && !slow => {
                self.window.push(0);
                None
            }
            (BreakerState::Closed, Call::Normal) => {
                self.window.push(outcome_flags(failed, slow));
                let calls = self.window.len();
                if calls < self.minimum_calls {
                    return None;
                }
                let failure_rate = f64::from(self.window.failures) / f64::from(calls);
                let slow_call_rate = f64::from(self.window.slow) / f64::from(calls);
                if self.trips(failure_rate, slow_call_rate) {
                    self.window.clear();
                    self.current_wait = self.open_wait;
                    Some(self.open(now, failure_rate, slow_call_rate))
                } else {
                    None
                }
            }
            (BreakerState::HalfOpen, Call::Probe) if self.probes.in_flight > 0 => {
                self.probes.in_flight -= 1;
                self.probes.recorded += 1;
                self.probes.failures += u32::from(failed);
                self.probes.slow += u32::from(slow);
                if self.probes.recorded < self.half_open_calls {
                    return None;
                }
                let calls = f64::from(self.probes.recorded);
                let failure_rate = f64::from(self.probes.failures) / calls;
                let slow_call_rate = f64::from(self.probes.slow) / calls;
                if self.trips(failure_rate, slow_call_rate) {
                    self.current_wait = self.next_wait();
                    Some(self.open(now, failure_rate, slow_call_rate))
                } else {
                    self.state = BreakerState::Closed;
                    self.window.clear();
                    self.current_wait = self.open_wait;
                    Some(Transition::Closed)
                }
            }
            _ => None,
        }
    }

    /// Give back a probe permit whose call never happened (a cancelled acquire), so that exactly
    /// `half_open_calls` probes are recorded. Does nothing when no probe is outstanding.
    pub(crate) fn release_probe(&mut self) {
        if self.state == BreakerState::HalfOpen && self.probes.in_flight > 0 {
            self.probes.in_flight -= 1;
            self.probes.left += 1;
        }
    }

    /// Where the breaker is.
    #[cfg(test)]
    pub(crate) fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether calls go through without asking: one comparison, the hot-path check. Always true
    /// for a disabled breaker.
    pub(crate) fn is_closed(&self) -> bool {
        self.state == BreakerState::Closed
    }

    /// A snapshot for status reports.
    pub(crate) fn status(&self, now: Instant) -> BreakerStatus {
        let (calls, failures, slow, needed) = match self.state {
            BreakerState::Closed => (
                self.window.len(),
                self.window.failures,
                self.window.slow,
                self.minimum_calls,
            ),
            BreakerState::Open => (0, 0, 0, u32::MAX),
            BreakerState::HalfOpen => (
                self.probes.recorded,
                self.probes.failures,
                self.probes.slow,
                self.half_open_calls,
            ),
        };
        let rate = |count: u32| {
            (calls >= needed && calls > 0).then(|| f64::from(count) / f64::from(calls))
        };
        BreakerStatus {
            state: self.state,
            failure_rate: rate(failures),
            slow_call_rate: rate(slow),
            calls_in_window: calls,
            retry_after: (self.state == BreakerState::Open)
                .then(|| self.open_until.saturating_duration_since(now)),
            times_opened: self.times_opened,
        }
    }

    fn trips(&self, failure_rate: f64, slow_call_rate: f64) -> bool {
        failure_rate >= self.failure_rate_threshold
            || slow_call_rate >= self.slow_call_rate_threshold
    }

    /// The wait after one more consecutive re-open: the current one times the multiplier,
    /// capped.
    fn next_wait(&self) -> Duration {
        Duration::try_from_secs_f64(self.current_wait.as_secs_f64() * self.open_wait_multiplier)
            .unwrap_or(Duration::MAX)
            .min(self.max_open_wait)
    }

    fn open(&mut self, now: Instant, failure_rate: f64, slow_call_rate: f64) -> Transition {
        self.state = BreakerState::Open;
        self.open_until = now + self.current_wait;
        self.times_opened += 1;
        Transition::Opened {
            retry_after: self.current_wait,
            failure_rate,
            slow_call_rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::limits::MAX_DURATION;

    const FAST: Duration = Duration::from_millis(1);

    fn config() -> BreakerConfig {
        BreakerConfig::default()
            .window(10)
            .minimum_calls(4)
            .failure_rate_threshold(0.5)
            .open_wait(Duration::from_secs(10))
            .half_open_calls(2)
    }

    fn record_n(breaker: &mut CircuitBreaker, outcome: Outcome, n: u32) -> Vec<Transition> {
        let now = Instant::now();
        (0..n)
            .filter_map(|_| {
                let (call, _) = breaker.try_call(now).unwrap();
                breaker.record(call, outcome, FAST, now)
            })
            .collect()
    }

    /// Trip a breaker built from `config()` (window 10, minimum 4).
    fn trip(breaker: &mut CircuitBreaker) {
        let transitions = record_n(breaker, Outcome::Failure, 4);
        assert!(matches!(transitions[..], [Transition::Opened { .. }]));
    }

    #[test]
    fn defaults_are_valid() {
        BreakerConfig::default().validate().unwrap();
        BreakerConfig::disabled().validate().unwrap();
        assert!(BreakerConfig::default().is_enabled());
        assert!(!BreakerConfig::disabled().is_enabled());
    }

    #[test]
    fn every_rule_names_its_field() {
        let d = BreakerConfig::default;
        let cases = [
            (d().window(0), "breaker.window"),
            (d().window(MAX_WINDOW + 1), "breaker.window"),
            (d().minimum_calls(0), "breaker.minimum_calls"),
            (d().window(10).minimum_calls(11), "breaker.minimum_calls"),
            (
                d().failure_rate_threshold(0.0),
                "breaker.failure_rate_threshold",
            ),
            (
                d().failure_rate_threshold(1.5),
                "breaker.failure_rate_threshold",
            ),
            (
                d().failure_rate_threshold(f64::NAN),
                "breaker.failure_rate_threshold",
            ),
            (
                d().slow_call_threshold(Duration::ZERO),
                "breaker.slow_call_threshold",
            ),
            (
                d().slow_call_rate_threshold(-0.1),
                "breaker.slow_call_rate_threshold",
            ),
            (d().open_wait(Duration::ZERO), "breaker.open_wait"),
            (d().open_wait(MAX_DURATION * 2), "breaker.open_wait"),
            (
                d().open_wait_multiplier(0.5),
                "breaker.open_wait_multiplier",
            ),
            (
                d().open_wait_multiplier(f64::INFINITY),
                "breaker.open_wait_multiplier",
            ),
            (
                d().open_wait(Duration::from_secs(60))
                    .max_open_wait(Duration::from_secs(59)),
                "breaker.max_open_wait",
            ),
            (d().half_open_calls(0), "breaker.half_open_calls"),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
            assert_eq!(err.kind(), crate::ErrorKind::Config);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_trip_below_minimum_calls() {
        let mut breaker = CircuitBreaker::new(&config());
        assert!(record_n(&mut breaker, Outcome::Failure, 3).is_empty());
        assert!(breaker.is_closed());
        let status = breaker.status(Instant::now());
        assert_eq!(status.failure_rate, None);
        assert_eq!(status.slow_call_rate, None);
        assert_eq!(status.calls_in_window, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn trips_exactly_when_rate_reaches_threshold() {
        let mut breaker = CircuitBreaker::new(&config().failure_rate_threshold(0.3));
        // 7 successes then failures: 1/8, 2/9 stay under 0.3; 3/10 reaches it.
        assert!(record_n(&mut breaker, Outcome::Success, 7).is_empty());
        assert!(record_n(&mut breaker, Outcome::Failure, 2).is_empty());
        let status = breaker.status(Instant::now());
        assert_eq!(status.failure_rate, Some(2.0 / 9.0));
        let transitions = record_n(&mut breaker, Outcome::Failure, 1);
        match &transitions[..] {
            [
                Transition::Opened {
                    retry_after,
                    failure_rate,
                    slow_call_rate,
                },
            ] => {
                assert_eq!(*retry_after, Duration::from_secs(10));
                assert_eq!(*failure_rate, 0.3);
                assert_eq!(*slow_call_rate, 0.0);
            }
            other => panic!("expected one Opened, got {other:?}"),
        }
        assert_eq!(breaker.state(), BreakerState::Open);
        let status = breaker.status(Instant::now());
        assert_eq!(status.times_opened, 1);
        assert_eq!(
            status.calls_in_window, 0,
            "the window is cleared on opening"
        );
        assert_eq!(status.retry_after, Some(Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn old_outcomes_fall_out_of_the_window() {
        let mut breaker = CircuitBreaker::new(&config().minimum_calls(10));
        // 4 failures, then 6 successes: 40 %.
        assert!(record_n(&mut breaker, Outcome::Failure, 4).is_empty());
        assert!(record_n(&mut breaker, Outcome::Success, 6).is_empty());
        assert_eq!(
            breaker.status(Instant::now()).failure_rate,
            Some(0.4),
            "full window"
        );
        // 4 more successes push the failures out.
        assert!(record_n(&mut breaker, Outcome::Success, 4).is_empty());
        let status = breaker.status(Instant::now());
        assert_eq!(status.failure_rate, Some(0.0));
        assert_eq!(status.calls_in_window, 10);
        // 4 failures: 40 % again, still closed; a fifth reaches 50 %.
        assert!(record_n(&mut breaker, Outcome::Failure, 4).is_empty());
        assert_eq!(record_n(&mut breaker, Outcome::Failure, 1).len(), 1);
        assert_eq!(breaker.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn open_half_open_closed() {
        let mut breaker = CircuitBreaker::new(&config());
        trip(&mut breaker);
        let now = Instant::now();
        assert_eq!(breaker.try_call(now), Err(Duration::from_secs(10)));

        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            breaker.try_call(Instant::now()),
            Err(Duration::from_secs(6)),
            "retry_after decreases as time passes"
        );
        assert_eq!(
            breaker.status(Instant::now()).retry_after,
            Some(Duration::from_secs(6))
        );

        tokio::time::advance(Duration::from_secs(6)).await;
        let now = Instant::now();
        assert_eq!(
            breaker.try_call(now),
            Ok((Call::Probe, Some(Transition::HalfOpened)))
        );
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert_eq!(breaker.try_call(now), Ok((Call::Probe, None)));
        assert_eq!(
            breaker.try_call(now),
            Err(Duration::ZERO),
            "two permits only"
        );

        assert_eq!(
            breaker.record(Call::Probe, Outcome::Success, FAST, now),
            None
        );
        assert_eq!(
            breaker.record(Call::Probe, Outcome::Success, FAST, now),
            Some(Transition::Closed)
        );
        assert!(breaker.is_closed());
        let status = breaker.status(now);
        assert_eq!(status.calls_in_window, 0, "a fresh window");
        assert_eq!(status.retry_after, None);
        assert_eq!(status.times_opened, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probes_reopen_with_a_growing_capped_wait() {
        let mut breaker = CircuitBreaker::new(
            &config()
                .open_wait_multiplier(2.0)
                .max_open_wait(Duration::from_secs(30)),
        );
        trip(&mut breaker);
        let mut expected_wait = Duration::from_secs(10);
        for expected_next in [20, 30, 30] {
            tokio::time::advance(expected_wait).await;
            let now = Instant::now();
            assert_eq!(breaker.try_call(now).unwrap().0, Call::Probe);
            assert_eq!(breaker.try_call(now).unwrap().0, Call::Probe);
            assert_eq!(
                breaker.record(Call::Probe, Outcome::Success, FAST, now),
                None
            );
            // One of two failed: 50 % reaches the threshold.
            let reopened = breaker.record(Call::Probe, Outcome::Failure, FAST, now);
            expected_wait = Duration::from_secs(expected_next);
            assert_eq!(
                reopened,
                Some(Transition::Opened {
                    retry_after: expected_wait,
                    failure_rate: 0.5,
                    slow_call_rate: 0.0,
                })
            );
            assert_eq!(breaker.try_call(now), Err(expected_wait));
        }
        assert_eq!(breaker.status(Instant::now()).times_opened, 4);

        // Closing resets the growth: the next trip waits open_wait again.
        tokio::time::advance(expected_wait).await;
        let now = Instant::now();
        breaker.try_call(now).unwrap();
        breaker.try_call(now).unwrap();
        breaker.record(Call::Probe, Outcome::Success, FAST, now);
        assert_eq!(
            breaker.record(Call::Probe, Outcome::Success, FAST, now),
            Some(Transition::Closed)
        );
        trip(&mut breaker);
        assert_eq!(
            breaker.try_call(Instant::now()),
            Err(Duration::from_secs(10))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn release_probe_gives_a_permit_back() {
        let mut breaker = CircuitBreaker::new(&config().half_open_calls(3));
        trip(&mut breaker);
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(breaker.try_call(now).unwrap().0, Call::Probe);
        }
        assert_eq!(breaker.try_call(now), Err(Duration::ZERO));
        breaker.release_probe();
        assert_eq!(breaker.try_call(now), Ok((Call::Probe, None)));
        assert_eq!(breaker.try_call(now), Err(Duration::ZERO));

        // Releasing more than was taken changes nothing.
        for _ in 0..3 {
            breaker.record(Call::Probe, Outcome::Success, FAST, now);
        }
        assert!(breaker.is_closed());
        breaker.release_probe();
        assert!(breaker.is_closed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_released_probe_is_not_counted() {
        let mut breaker = CircuitBreaker::new(&config());
        trip(&mut breaker);
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        breaker.try_call(now).unwrap();
        breaker.try_call(now).unwrap();
        breaker.release_probe();
        assert_eq!(
            breaker.record(Call::Probe, Outcome::Success, FAST, now),
            None,
            "one probe recorded, one released: the round is not over"
        );
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        breaker.try_call(now).unwrap();
        assert_eq!(
            breaker.record(Call::Probe, Outcome::Success, FAST, now),
            Some(Transition::Closed)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn late_normal_records_are_ignored_while_open_or_half_open() {
        let mut breaker = CircuitBreaker::new(&config());
        let now = Instant::now();
        let (late, _) = breaker.try_call(now).unwrap();
        assert_eq!(late, Call::Normal);
        trip(&mut breaker);
        assert_eq!(breaker.record(late, Outcome::Failure, FAST, now), None);
        assert_eq!(breaker.state(), BreakerState::Open);

        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        breaker.try_call(now).unwrap();
        breaker.try_call(now).unwrap();
        // Late failures while half-open neither count as probes nor re-open the breaker.
        for _ in 0..5 {
            assert_eq!(breaker.record(late, Outcome::Failure, FAST, now), None);
        }
        assert_eq!(breaker.state(), BreakerState::HalfOpen);
        assert_eq!(breaker.status(now).calls_in_window, 0);
        breaker.record(Call::Probe, Outcome::Success, FAST, now);
        assert_eq!(
            breaker.record(Call::Probe, Outcome::Success, FAST, now),
            Some(Transition::Closed)
        );
        // A stray probe record once closed is ignored too.
        assert_eq!(
            breaker.record(Call::Probe, Outcome::Failure, FAST, now),
            None
        );
        assert_eq!(breaker.status(now).calls_in_window, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_trip_via_the_slow_rate() {
        let slow = Duration::from_secs(1);
        let mut breaker = CircuitBreaker::new(
            &config()
                .slow_call_threshold(slow)
                .slow_call_rate_threshold(0.75),
        );
        let now = Instant::now();
        let mut record = |duration| {
            let (call, _) = breaker.try_call(now).unwrap();
            breaker.record(call, Outcome::Success, duration, now)
        };
        assert_eq!(
            record(slow - FAST),
            None,
            "just under the threshold is fast"
        );
        assert_eq!(record(slow), None, "at the threshold is slow");
        assert_eq!(record(slow * 3), None);
        assert_eq!(
            record(slow),
            Some(Transition::Opened {
                retry_after: Duration::from_secs(10),
                failure_rate: 0.0,
                slow_call_rate: 0.75,
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_probes_reopen() {
        let slow = Duration::from_secs(1);
        let mut breaker = CircuitBreaker::new(&config().slow_call_threshold(slow));
        trip(&mut breaker);
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        breaker.try_call(now).unwrap();
        breaker.try_call(now).unwrap();
        breaker.record(Call::Probe, Outcome::Success, slow, now);
        let reopened = breaker.record(Call::Probe, Outcome::Success, slow, now);
        assert!(matches!(
            reopened,
            Some(Transition::Opened { slow_call_rate, .. }) if slow_call_rate == 1.0
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_breaker_never_opens() {
        let mut breaker = CircuitBreaker::new(&config().enabled(false));
        assert!(record_n(&mut breaker, Outcome::Failure, 1000).is_empty());
        assert!(breaker.is_closed());
        assert_eq!(breaker.try_call(Instant::now()), Ok((Call::Normal, None)));
        let status = breaker.status(Instant::now());
        assert_eq!(status.calls_in_window, 0);
        assert_eq!(status.times_opened, 0);
        assert_eq!(breaker.window.outcomes.capacity(), 0, "nothing allocated");
    }

    #[tokio::test(start_paused = true)]
    async fn status_while_half_open_counts_probes() {
        let mut breaker = CircuitBreaker::new(&config().half_open_calls(3));
        trip(&mut breaker);
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        breaker.try_call(now).unwrap();
        breaker.record(Call::Probe, Outcome::Failure, FAST, now);
        let status = breaker.status(now);
        assert_eq!(status.state, BreakerState::HalfOpen);
        assert_eq!(status.calls_in_window, 1);
        assert_eq!(status.failure_rate, None);
        assert_eq!(status.retry_after, None);
    }

    #[tokio::test(start_paused = true)]
    async fn status_when_wait_passed_but_no_call_yet() {
        let mut breaker = CircuitBreaker::new(&config());
        trip(&mut breaker);
        tokio::time::advance(Duration::from_secs(60)).await;
        let status = breaker.status(Instant::now());
        assert_eq!(status.state, BreakerState::Open);
        assert_eq!(status.retry_after, Some(Duration::ZERO));
    }

    proptest! {
        /// The running counts always equal a recount of the last `capacity` outcomes.
        #[test]
        fn window_counts_match_a_recount(
            capacity in 1u32..40,
            outcomes in proptest::collection::vec((any::<bool>(), any::<bool>()), 0..300),
        ) {
            let mut window = Window::new(capacity);
            for (i, &(failed, slow)) in outcomes.iter().enumerate() {
                // The release path's specialised push must agree with the general one.
                if failed || slow {
                    window.push(outcome_flags(failed, slow));
                } else {
                    window.push_success();
                }
                let start = (i + 1).saturating_sub(capacity as usize);
                let recent = &outcomes[start..=i];
                let failures = recent.iter().filter(|o| o.0).count() as u32;
                let slows = recent.iter().filter(|o| o.1).count() as u32;
                prop_assert_eq!(window.len() as usize, recent.len());
                prop_assert_eq!(window.failures, failures);
                prop_assert_eq!(window.slow, slows);
            }
        }

        /// Whatever the order of calls, records, releases and time steps, a half-open round never
        /// hands out more than `half_open_calls` permits, and closing or opening only happens
        /// once exactly that many probes were recorded.
        #[test]
        fn probe_accounting_holds(
            half_open_calls in 1u32..5,
            ops in proptest::collection::vec(0u8..6, 0..200),
        ) {
            let config = BreakerConfig::default()
                .window(4)
                .minimum_calls(2)
                .open_wait(Duration::from_secs(1))
                .half_open_calls(half_open_calls);
            let mut breaker = CircuitBreaker::new(&config);
            let start = Instant::now();
            let mut clock = start;
            let mut normal_out = 0u32;
            let mut probes_out = 0u32;
            let mut probes_recorded = 0u32;
            for op in ops {
                match op {
                    0 => match breaker.try_call(clock) {
                        Ok((Call::Normal, _)) => normal_out += 1,
                        Ok((Call::Probe, transition)) => {
                            if transition == Some(Transition::HalfOpened) {
                                prop_assert_eq!(probes_out, 0);
                                probes_recorded = 0;
                            }
                            probes_out += 1;
                        }
                        Err(_) => {}
                    },
                    1 | 2 => {
                        let outcome = if op == 1 { Outcome::Success } else { Outcome::Failure };
                        if probes_out > 0 {
                            probes_out -= 1;
                            probes_recorded += 1;
                            let t = breaker.record(Call::Probe, outcome, FAST, clock);
                            prop_assert_eq!(t.is_some(), probes_recorded == half_open_calls);
                        } else if normal_out > 0 {
                            normal_out -= 1;
                            breaker.record(Call::Normal, outcome, FAST, clock);
                        }
                    }
                    3 => {
                        if probes_out > 0 {
                            probes_out -= 1;
                            breaker.release_probe();
                        }
                    }
                    _ => clock += Duration::from_millis(400),
                }
                prop_assert!(probes_out + probes_recorded <= half_open_calls);
                if breaker.state() == BreakerState::HalfOpen {
                    prop_assert_eq!(breaker.probes.in_flight, probes_out);
                    prop_assert_eq!(
                        breaker.probes.left + breaker.probes.in_flight + breaker.probes.recorded,
                        half_open_calls
                    );
                }
            }
        }
    }
}
