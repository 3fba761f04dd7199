//! [`Status`]: what `ResourceManager::status` reports.

use std::sync::Arc;

use crate::health::HealthReport;
use crate::resilience::BreakerStatus;
use crate::resource::Topology;
use crate::scope::Scope;
use crate::stats::PoolStats;
use crate::tenancy::TenantStatus;

/// Where a registration is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[repr(u8)]
pub enum Phase {
    /// Registered; not yet initialized.
    Pending = 0,
    /// Being initialized by `build()`.
    Initializing = 1,
    /// Serving acquires.
    Ready = 2,
    /// Initialization failed.
    Failed = 3,
    /// Shutting down: no new acquires, waiting for guards in use.
    Draining = 4,
    /// Every instance destroyed.
    Stopped = 5,
}

impl Phase {
    pub(crate) fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Pending,
            1 => Self::Initializing,
            2 => Self::Ready,
            3 => Self::Failed,
            4 => Self::Draining,
            _ => Self::Stopped,
        }
    }
}

/// One registration in a [`Status`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ResourceStatus {
    /// The resource's `KEY`.
    pub key: &'static str,
    /// The registration name, for `register_named`.
    pub name: Option<Arc<str>>,
    /// Pooled or resident.
    pub topology: Topology,
    /// Where it is in its life.
    pub phase: Phase,
    /// The keys (and names) of the registrations it depends on.
    pub dependencies: Vec<String>,
    /// The pool's counts now.
    pub pool: PoolStats,
    /// The resource's own counters, from [`Resource::counters`](crate::Resource::counters).
    pub counters: Vec<(&'static str, u64)>,
    /// For a per-tenant registration, each live tenant pool and its counts (ordered by tenant);
    /// `pool` is then their sum. Empty otherwise.
    pub tenants: Vec<TenantStatus>,
    /// Health from the background checks: Healthy, Degraded (its own checks failing, or a
    /// dependency Unhealthy) or Unhealthy (quarantined), with reason and recent transitions.
    /// For a per-tenant registration, the worst tenant pool's.
    pub health: HealthReport,
    /// The circuit breaker (for a per-tenant or scoped registration, the pool's furthest from
    /// closed).
    pub breaker: BreakerStatus,
    /// How long its instances live ([`Scope::Global`] unless registered at a workflow or
    /// execution scope).
    pub scope: Scope,
    /// For a scoped registration, how many scopes have a pool now (`pool` is their sum).
    pub scopes: usize,
}

/// A snapshot of every registration of a manager, in initialization order.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Status {
    /// One entry per registration.
    pub resources: Vec<ResourceStatus>,
    /// Whether `shutdown` has begun.
    pub shutting_down: bool,
}

impl Status {
    /// The entry for the unnamed registration with `key`.
    pub fn resource(&self, key: &str) -> Option<&ResourceStatus> {
        self.resources
            .iter()
            .find(|r| r.key == key && r.name.is_none())
    }

    /// The entry for the registration with `key` and `name`.
    pub fn named(&self, key: &str, name: &str) -> Option<&ResourceStatus> {
        self.resources
            .iter()
            .find(|r| r.key == key && r.name.as_deref() == Some(name))
    }
}
