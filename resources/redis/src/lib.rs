#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod config;
mod deadline;
mod dedicated;
mod error;
mod resident;
mod session;

pub use redis;

pub use crate::config::{
    MAX_CLIENT_NAME_LEN, MAX_DB, MAX_RECONNECT_RETRIES, MAX_TIMEOUT, RedisConfig,
};
pub use crate::dedicated::{DedicatedConnection, RedisDedicated};
pub use crate::resident::{Redis, RedisConnection};
