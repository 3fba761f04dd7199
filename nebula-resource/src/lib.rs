#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod context;
pub mod credentials;
pub mod error;
pub mod events;
mod guard;
mod health;
mod hooks;
mod limits;
mod manager;
mod policy;
pub mod pool;
mod resilience;
pub mod resource;
mod runtime;
mod scope;
mod stats;
pub mod status;
mod telemetry;
pub mod tenancy;
mod tenant;

pub use crate::context::{Context, CreateContext, TenantId};
pub use crate::credentials::{
    CredentialFuture, CredentialProvider, Credentials, EnvCredentials, FileCredentials, Secret,
    StaticCredentials, redact_url,
};
pub use crate::error::{BoxError, Error, ErrorKind, TimeoutPhase};
pub use crate::events::Event;
pub use crate::guard::Guard;
pub use crate::health::{Health, HealthConfig, HealthReport, HealthTransition};
pub use crate::manager::{Handle, ResourceManager, ResourceManagerBuilder};
pub use crate::policy::Policy;
pub use crate::pool::{PoolConfig, PoolStats, QueueOrder};
pub use crate::resilience::{
    BreakerConfig, BreakerState, BreakerStatus, RetryPolicy, Transition as BreakerTransition,
};
pub use crate::resource::{Config, Dependencies, Resource, Topology};
pub use crate::scope::Scope;
pub use crate::status::{Phase, ResourceStatus, Status};
pub use crate::tenancy::{Tenancy, TenantSetup, TenantStatus};
