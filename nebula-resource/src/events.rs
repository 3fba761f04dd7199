//! Lifecycle events, published on [`ResourceManager::events`](crate::ResourceManager::events).
//!
//! Events are for observers (dashboards, audit logs, tests). They are sent only on slow paths —
//! creation, destruction, leaks, shutdown — never per acquire, and cost nothing when nobody
//! subscribes.

use std::sync::Arc;
use std::time::Duration;

use crate::health::Health;
use crate::tenant::TenantId;

/// Which registration an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The resource's `KEY`.
    pub key: &'static str,
    /// The registration name, for `register_named`.
    pub name: Option<Arc<str>>,
    /// The tenant, for a per-tenant registration's pool.
    pub tenant: Option<TenantId>,
}

/// Something that happened to a resource.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// An instance was created.
    InstanceCreated(Source),
    /// Creating an instance failed.
    CreateFailed {
        /// The registration.
        source: Source,
        /// The error, as text.
        error: String,
    },
    /// An instance was destroyed.
    InstanceDestroyed(Source),
    /// A guard has been held longer than the pool's `leak_threshold`.
    LeakDetected {
        /// The registration.
        source: Source,
        /// How long the guard had been held when it was noticed.
        held: Duration,
    },
    /// A tenant's pool was created, on its first acquire. `source.tenant` names the tenant.
    TenantPoolCreated {
        /// The registration and tenant.
        source: Source,
    },
    /// A tenant's pool was evicted (idle past `tenant_idle_ttl`, or beyond `max_tenants`); it
    /// drains gracefully.
    TenantPoolEvicted {
        /// The registration and tenant.
        source: Source,
    },
    /// A health round changed a registration's (or tenant pool's) health.
    HealthChanged {
        /// The registration (and tenant).
        source: Source,
        /// The health before.
        from: Health,
        /// The health now.
        to: Health,
        /// Why.
        reason: Arc<str>,
    },
    /// The registration turned Unhealthy: acquires fail at once with `Unavailable` until a
    /// recovery probe succeeds.
    Quarantined {
        /// The registration (and tenant).
        source: Source,
        /// Why.
        reason: Arc<str>,
    },
    /// Recovery probes succeeded: the quarantine is lifted.
    Recovered(Source),
    /// The circuit breaker opened: acquires fail at once with `CircuitOpen`.
    CircuitOpened {
        /// The registration (and tenant).
        source: Source,
        /// When a probe will be let through.
        retry_after: Duration,
        /// The failure rate that tripped it (0–1).
        failure_rate: f64,
        /// The slow-call rate at that moment (0–1).
        slow_call_rate: f64,
    },
    /// The open wait passed: a few probe acquires are let through.
    CircuitHalfOpen(Source),
    /// The probes succeeded: the breaker closed.
    CircuitClosed(Source),
    /// New credentials were fetched: a new generation of instances started.
    CredentialsRotated(Source),
    /// `reconfigure` replaced the config: a new generation of instances started.
    Reconfigured(Source),
    /// `shutdown` began.
    ShutdownStarted,
    /// `shutdown` finished.
    ShutdownCompleted,
}
