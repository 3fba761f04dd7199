//! Resilience policies: the circuit breaker ([`breaker`]) and retry with backoff ([`retry`]).
//!
//! Both are pure state and schedules with no pool code: the pool keeps a breaker behind its own
//! lock and runs creations through `retry`.

pub(crate) mod breaker;
pub(crate) mod retry;

pub use self::breaker::{BreakerConfig, BreakerState, BreakerStatus, Transition};
pub use self::retry::RetryPolicy;
