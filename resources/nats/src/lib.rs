#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod client;
mod config;
mod error;
mod jetstream;

pub use async_nats;

pub use crate::client::{Nats, NatsClient};
pub use crate::config::{
    JetStreamConfig, MAX_RECONNECT_ATTEMPTS, MAX_SERVERS, MAX_TIMEOUT, MIN_PING_INTERVAL,
    NatsConfig,
};
pub use crate::error::{NatsError, NatsErrorKind};
pub use crate::jetstream::{JetStream, JetStreamContext};
