//! [`RetryPolicy`]: exponential backoff with randomization, a cap on attempts and an overall
//! deadline; the crate's `Backoff` schedule and `retry` loop.
//!
//! The n-th retry (n = 1 for the second attempt) waits around
//! `min(initial × multiplier^(n-1), max_interval)`, randomized uniformly within
//! `± randomization_factor` of that value: the semantics of Google's `ExponentialBackOff`
//! (google-http-client) and of resilience4j's `IntervalFunction.ofExponentialRandomBackoff`.
//! Randomization spreads out the retries of many callers that failed together.
//!
//! # Why not `backon`
//!
//! `backon` 1.6's `ExponentialBuilder::with_jitter` adds a random amount in `[0, delay)` to the
//! delay, so the sleep lies in `[delay, 2 × delay)`: the spread is fixed at +100 % and never below
//! the nominal delay, and there is no knob for a `± factor`. Its `total_delay` budget adds up
//! only the sleeps, not the time the attempts themselves took, so it is not an overall deadline.
//! Its factor is an `f32` and its RNG `fastrand` (a second RNG next to our `rand`). Getting
//! the documented semantics on top of it would mean disabling its jitter and re-deriving
//! the schedule anyway, so this module computes the schedule itself: a few lines.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::error::Error;
use crate::limits::check_duration;

/// How an operation that failed with a retryable error is tried again, built by value from
/// [`RetryPolicy::exponential`], [`RetryPolicy::none`] or [`RetryPolicy::default`]:
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::RetryPolicy;
/// let retry = RetryPolicy::exponential(Duration::from_millis(200), 5)
///     .multiplier(1.5)
///     .max_interval(Duration::from_secs(5))
///     .randomization_factor(0.2)
///     .deadline(Duration::from_secs(20));
/// assert!(retry.validate().is_ok());
/// assert_eq!(RetryPolicy::none().get_max_attempts(), 1);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub(crate) initial: Duration,
    pub(crate) multiplier: f64,
    pub(crate) max_interval: Duration,
    pub(crate) randomization_factor: f64,
    pub(crate) max_attempts: u32,
    pub(crate) deadline: Option<Duration>,
}

/// `RetryPolicy::exponential(100 ms, 3)`: three attempts, waiting about 100 ms and then 200 ms
/// (± 50 %) in between, multiplier 2, intervals capped at 10 s, no deadline.
impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max_interval: Duration::from_secs(10),
            randomization_factor: 0.5,
            max_attempts: 3,
            deadline: None,
        }
    }
}

impl RetryPolicy {
    /// One attempt, no retry. The backoff settings keep their defaults (they are unused).
    pub fn none() -> Self {
        Self::default().max_attempts(1)
    }

    /// Up to `max_attempts` attempts (the first one included), the first retry after about
    /// `initial`; every other setting at its default.
    pub fn exponential(initial: Duration, max_attempts: u32) -> Self {
        Self::default().initial(initial).max_attempts(max_attempts)
    }

    /// The nominal wait before the first retry. Defaults to 100 ms; must be greater than zero
    /// and at most `max_interval`.
    #[must_use]
    pub fn initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// Factor each nominal wait grows by. Defaults to 2.0; must be at least 1 (1 = a constant
    /// interval).
    #[must_use]
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Cap on the nominal wait (randomization applies after the cap, so a sleep can be up to
    /// `max_interval × (1 + randomization_factor)`). Defaults to 10 s.
    #[must_use]
    pub fn max_interval(mut self, max_interval: Duration) -> Self {
        self.max_interval = max_interval;
        self
    }

    /// How far a sleep may stray from the nominal wait `d`: it is drawn uniformly from
    /// `[d × (1 − factor), d × (1 + factor)]`. Defaults to 0.5; must be in [0, 1]
    /// (0 = no randomization).
    #[must_use]
    pub fn randomization_factor(mut self, factor: f64) -> Self {
        self.randomization_factor = factor;
        self
    }

    /// Most attempts in all, the first one included. Defaults to 3; must be at least 1.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Overall time budget, counted from the first attempt: no retry starts at or after it,
    /// and a sleep that would end there is not taken. A running attempt is not cut short (give
    /// the operation its own timeout). `None` has no deadline. Defaults to `None`.
    #[must_use]
    pub fn deadline(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.deadline = deadline.into();
        self
    }

    /// The configured `max_attempts`.
    pub fn get_max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// Check every value against its rule.
    ///
    /// # Errors
    ///
    /// A [`Config`](crate::ErrorKind::Config) error naming the first field out of range, as
    /// `retry.<field>`.
    pub fn validate(&self) -> Result<(), Error> {
        check_duration("retry.initial", self.initial)?;
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err(Error::config(
                "retry.multiplier",
                format!(
                    "must be a finite number of at least 1 (got {})",
                    self.multiplier
                ),
            ));
        }
        check_duration("retry.max_interval", self.max_interval)?;
        if self.max_interval < self.initial {
            return Err(Error::config(
                "retry.max_interval",
                format!(
                    "must be at least the initial interval {:?} (got {:?})",
                    self.initial, self.max_interval
                ),
            ));
        }
        // Written so that NaN fails too.
        if !(self.randomization_factor >= 0.0 && self.randomization_factor <= 1.0) {
            return Err(Error::config(
                "retry.randomization_factor",
                format!("must be in [0, 1] (got {})", self.randomization_factor),
            ));
        }
        if self.max_attempts == 0 {
            return Err(Error::config(
                "retry.max_attempts",
                "must be at least 1 (got 0)",
            ));
        }
        if let Some(deadline) = self.deadline {
            check_duration("retry.deadline", deadline)?;
        }
        Ok(())
    }
}

/// Why a [`Backoff`] gave no further delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// `max_attempts` attempts have been made.
    Attempts,
    /// The next attempt would start at or after the deadline.
    Deadline,
}

/// The delays between the attempts of one operation under a [`RetryPolicy`].
///
/// The caller makes the first attempt without asking; after each failed attempt
/// [`next_delay`](Self::next_delay) says how long to sleep before the next one, or that there is
/// no next one.
#[derive(Debug)]
pub(crate) struct Backoff {
    /// The nominal (not randomized) wait before the next retry.
    interval: Duration,
    multiplier: f64,
    max_interval: Duration,
    randomization_factor: f64,
    max_attempts: u32,
    deadline: Option<Instant>,
    /// Attempts made or granted so far, the first included.
    attempts: u32,
}

impl Backoff {
    /// The schedule for an operation whose first attempt starts at `start` (the deadline is
    /// counted from there).
    pub(crate) fn new(policy: &RetryPolicy, start: Instant) -> Self {
        Self {
            interval: policy.initial,
            multiplier: policy.multiplier,
            max_interval: policy.max_interval,
            randomization_factor: policy.randomization_factor,
            max_attempts: policy.max_attempts,
            deadline: policy.deadline.map(|d| start + d),
            attempts: 1,
        }
    }

    /// Attempts made (or granted by the last delay) so far, the first included.
    #[cfg(test)]
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// After a failed attempt, at `now`: how long to sleep before the next one, or `None` when
    /// `max_attempts` is reached or the sleep would end at or after the deadline.
    pub(crate) fn next_delay(&mut self, now: Instant, rng: &mut impl Rng) -> Option<Duration> {
        self.next(now, rng).ok()
    }

    /// [`next_delay`](Self::next_delay), saying why there is no next attempt.
    pub(crate) fn next(&mut self, now: Instant, rng: &mut impl Rng) -> Result<Duration, Stop> {
        if self.attempts >= self.max_attempts {
            return Err(Stop::Attempts);
        }
        let delay = randomize(self.interval, self.randomization_factor, rng);
        if let Some(deadline) = self.deadline
            // tokio's timer wakes on a millisecond tick at or after the requested time.
            && now
                .checked_add(delay)
                .and_then(|end| end.checked_add(Duration::from_millis(1)))
                .is_none_or(|end| end >= deadline)
        {
            return Err(Stop::Deadline);
        }
        self.attempts += 1;
        self.interval = Duration::try_from_secs_f64(self.interval.as_secs_f64() * self.multiplier)
            .unwrap_or(Duration::MAX)
            .min(self.max_interval);
        Ok(delay)
    }
}

/// A delay drawn uniformly from `[interval × (1 − factor), interval × (1 + factor))`.
fn randomize(interval: Duration, factor: f64, rng: &mut impl Rng) -> Duration {
    if factor == 0.0 {
        return interval;
    }
    let unit: f64 = rng.random();
    let scale = 1.0 - factor + 2.0 * factor * unit;
    Duration::try_from_secs_f64(interval.as_secs_f64() * scale).unwrap_or(Duration::MAX)
}

/// Run `op` until it succeeds, fails with an error that is not
/// [retryable](Error::is_retryable), or the policy allows no further attempt.
///
/// `op` gets the attempt number, 1 for the first. Before each sleep, `on_retry` gets the number
/// of the attempt that just failed, its error and the delay before the next attempt (for logs,
/// metrics and events). Sleeps use `tokio::time::sleep`.
///
/// The error returned is the last one. When more than one attempt was made, it carries a note
/// saying how many and why the retrying stopped (after any note it already had).
///
/// # Cancel safety
///
/// Dropping the future drops the running attempt (or the sleep); no further attempt starts.
/// Whether the attempt itself is cancel-safe is up to `op`.
pub(crate) async fn retry<T, F, Fut>(
    policy: &RetryPolicy,
    mut op: F,
    mut on_retry: impl FnMut(u32, &Error, Duration),
) -> Result<T, Error>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut backoff = Backoff::new(policy, Instant::now());
    let mut attempt = 1;
    loop {
        let err = match op(attempt).await {
            Ok(value) => return Ok(value),
            Err(err) => err,
        };
        if !err.is_retryable() {
            return Err(if attempt > 1 {
                err.with_note(format!("not retryable; gave up after {attempt} attempts"))
            } else {
                err
            });
        }
        // The thread-local RNG lives only for this statement: it is not `Send`, and the
        // future must be.
        let next = backoff.next(Instant::now(), &mut rand::rng());
        let delay = match next {
            Ok(delay) => delay,
            Err(_) if attempt == 1 => return Err(err),
            Err(Stop::Attempts) => {
                return Err(err.with_note(format!("gave up after {attempt} attempts")));
            }
            Err(Stop::Deadline) => {
                let deadline = policy.deadline.unwrap_or_default();
                return Err(err.with_note(format!(
                    "gave up after {attempt} attempts: the retry deadline of {deadline:?} would pass"
                )));
            }
        };
        on_retry(attempt, &err, delay);
        tokio::time::sleep(delay).await;
        attempt += 1;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;
    use crate::ErrorKind;
    use crate::limits::MAX_DURATION;

    fn retryable() -> Error {
        Error::create("connection refused")
    }

    #[test]
    fn defaults_are_valid() {
        RetryPolicy::default().validate().unwrap();
        RetryPolicy::none().validate().unwrap();
        assert_eq!(
            RetryPolicy::default(),
            RetryPolicy::exponential(Duration::from_millis(100), 3)
        );
    }

    #[test]
    fn every_rule_names_its_field() {
        let d = RetryPolicy::default;
        let cases = [
            (d().initial(Duration::ZERO), "retry.initial"),
            (d().initial(MAX_DURATION * 2), "retry.initial"),
            (d().multiplier(0.9), "retry.multiplier"),
            (d().multiplier(f64::NAN), "retry.multiplier"),
            (d().max_interval(Duration::ZERO), "retry.max_interval"),
            (
                d().initial(Duration::from_secs(2))
                    .max_interval(Duration::from_secs(1)),
                "retry.max_interval",
            ),
            (d().randomization_factor(-0.1), "retry.randomization_factor"),
            (d().randomization_factor(1.1), "retry.randomization_factor"),
            (d().max_attempts(0), "retry.max_attempts"),
            (d().deadline(Duration::ZERO), "retry.deadline"),
        ];
        for (policy, field) in cases {
            let err = policy.validate().unwrap_err();
            assert_eq!(err.field(), Some(field), "{err}");
            assert_eq!(err.kind(), ErrorKind::Config);
        }
    }

    #[test]
    fn delays_stay_within_the_randomization_band_and_grow_capped() {
        let policy = RetryPolicy::exponential(Duration::from_millis(100), 9)
            .multiplier(3.0)
            .max_interval(Duration::from_secs(2))
            .randomization_factor(0.25);
        let nominal_ms = [100.0, 300.0, 900.0, 2000.0, 2000.0, 2000.0, 2000.0, 2000.0];
        let mut rng = StdRng::seed_from_u64(7);
        let start = Instant::now();
        let mut lowest = [f64::MAX; 8];
        let mut highest = [0.0f64; 8];
        for _ in 0..2000 {
            let mut backoff = Backoff::new(&policy, start);
            for (i, nominal) in nominal_ms.iter().enumerate() {
                let ms = backoff.next_delay(start, &mut rng).unwrap().as_secs_f64() * 1000.0;
                assert!(
                    ms >= nominal * 0.75 - 1e-6 && ms <= nominal * 1.25 + 1e-6,
                    "retry {}: {ms} ms outside {nominal} ± 25 %",
                    i + 1
                );
                lowest[i] = lowest[i].min(ms);
                highest[i] = highest[i].max(ms);
            }
            assert_eq!(backoff.attempts(), 9);
            assert_eq!(backoff.next_delay(start, &mut rng), None);
        }
        // The samples cover the band, not just its middle.
        for (i, nominal) in nominal_ms.iter().enumerate() {
            assert!(lowest[i] < nominal * 0.78, "retry {}: {}", i + 1, lowest[i]);
            assert!(
                highest[i] > nominal * 1.22,
                "retry {}: {}",
                i + 1,
                highest[i]
            );
        }
    }

    #[test]
    fn zero_randomization_gives_the_nominal_delays() {
        let policy =
            RetryPolicy::exponential(Duration::from_millis(10), 5).randomization_factor(0.0);
        let start = Instant::now();
        let mut backoff = Backoff::new(&policy, start);
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<_> = std::iter::from_fn(|| backoff.next_delay(start, &mut rng)).collect();
        assert_eq!(delays, [10, 20, 40, 80].map(Duration::from_millis).to_vec());
    }

    #[test]
    fn backoff_refuses_a_sleep_past_the_deadline() {
        let policy = RetryPolicy::exponential(Duration::from_secs(1), 100)
            .randomization_factor(0.0)
            .deadline(Duration::from_secs(4));
        let start = Instant::now();
        let mut backoff = Backoff::new(&policy, start);
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            backoff.next_delay(start, &mut rng),
            Some(Duration::from_secs(1))
        );
        // At 1 s the next sleep (2 s) ends at 3 s: allowed.
        assert_eq!(
            backoff.next_delay(start + Duration::from_secs(1), &mut rng),
            Some(Duration::from_secs(2))
        );
        // At 3 s the next sleep (4 s) would end at 7 s: refused.
        assert_eq!(
            backoff.next(start + Duration::from_secs(3), &mut rng),
            Err(Stop::Deadline)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn max_attempts_honoured_and_on_retry_numbers() {
        let policy = RetryPolicy::exponential(Duration::from_millis(100), 4);
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let mut notified = Vec::new();
        let seen = Arc::clone(&attempts);
        let result: Result<(), Error> = retry(
            &policy,
            |attempt| {
                seen.lock().unwrap().push(attempt);
                async { Err(retryable()) }
            },
            |attempt, err, delay| notified.push((attempt, err.kind(), delay)),
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Create);
        assert!(
            err.to_string().ends_with("; gave up after 4 attempts"),
            "{err}"
        );
        assert_eq!(*attempts.lock().unwrap(), [1, 2, 3, 4]);
        let numbers: Vec<u32> = notified.iter().map(|n| n.0).collect();
        assert_eq!(numbers, [1, 2, 3]);
        for (i, (_, kind, delay)) in notified.iter().enumerate() {
            assert_eq!(*kind, ErrorKind::Create);
            let nominal = 100.0 * 2f64.powi(i as i32);
            let ms = delay.as_secs_f64() * 1000.0;
            assert!(ms >= nominal * 0.5 && ms <= nominal * 1.5, "{ms}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sleeps_are_the_delays_given_to_on_retry() {
        let policy = RetryPolicy::exponential(Duration::from_millis(100), 3);
        let start = Instant::now();
        let mut starts = Vec::new();
        let mut delays = Vec::new();
        let result: Result<(), Error> = retry(
            &policy,
            |_| {
                starts.push(Instant::now() - start);
                async { Err(retryable()) }
            },
            |_, _, delay| delays.push(delay),
        )
        .await;
        assert!(result.is_err());
        assert_eq!(starts.len(), 3);
        assert_eq!(starts[0], Duration::ZERO);
        assert!(starts[1] >= delays[0] && starts[1] < delays[0] + Duration::from_millis(2));
        let second = starts[2] - starts[1];
        assert!(second >= delays[1] && second < delays[1] + Duration::from_millis(2));
    }

    #[tokio::test(start_paused = true)]
    async fn success_after_retries() {
        let policy = RetryPolicy::exponential(Duration::from_millis(10), 5);
        let result = retry(
            &policy,
            |attempt| async move {
                if attempt < 3 {
                    Err(retryable())
                } else {
                    Ok(attempt)
                }
            },
            |_, _, _| {},
        )
        .await;
        assert_eq!(result.unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn non_retryable_error_is_not_retried() {
        let policy = RetryPolicy::exponential(Duration::from_millis(10), 5);
        let mut calls = 0;
        let mut retries = 0;
        let result: Result<(), Error> = retry(
            &policy,
            |_| {
                calls += 1;
                async { Err(Error::config("x", "bad")) }
            },
            |_, _, _| retries += 1,
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert_eq!(err.to_string(), "invalid configuration in field `x`: bad");
        assert_eq!((calls, retries), (1, 0));

        // A non-retryable error after retries says how many attempts were made.
        let result: Result<(), Error> = retry(
            &policy,
            |attempt| async move {
                if attempt < 2 {
                    Err(retryable())
                } else {
                    Err(Error::config("x", "bad"))
                }
            },
            |_, _, _| {},
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string().ends_with("gave up after 2 attempts"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_honoured() {
        let deadline = Duration::from_secs(3);
        let policy = RetryPolicy::exponential(Duration::from_millis(400), 1000)
            .multiplier(1.5)
            .deadline(deadline);
        for _ in 0..50 {
            let start = Instant::now();
            let mut last_start = Duration::ZERO;
            let mut attempts = 0;
            let result: Result<(), Error> = retry(
                &policy,
                |_| {
                    attempts += 1;
                    last_start = Instant::now() - start;
                    async {
                        // Each attempt itself takes time, which counts against the deadline.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Err(retryable())
                    }
                },
                |_, _, _| {},
            )
            .await;
            let err = result.unwrap_err();
            assert!(last_start < deadline, "{last_start:?}");
            assert!(start.elapsed() <= deadline + Duration::from_millis(50));
            assert!(attempts > 1 && attempts < 10, "{attempts}");
            assert!(
                err.to_string().contains(&format!(
                    "gave up after {attempts} attempts: the retry deadline of 3s would pass"
                )),
                "{err}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn none_makes_one_attempt() {
        let mut calls = 0;
        let result: Result<(), Error> = retry(
            &RetryPolicy::none(),
            |_| {
                calls += 1;
                async { Err(retryable()) }
            },
            |_, _, _| panic!("no retry expected"),
        )
        .await;
        let err = result.unwrap_err();
        assert_eq!(calls, 1);
        assert_eq!(
            err.to_string(),
            "create failed: connection refused",
            "a single attempt gets no note"
        );
    }

    #[test]
    fn retry_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let policy = RetryPolicy::default();
        let future = retry(&policy, |_| async { Ok::<_, Error>(()) }, |_, _, _| {});
        assert_send(&future);
    }
}
