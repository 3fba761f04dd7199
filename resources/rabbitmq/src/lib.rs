#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod channel;
mod config;
mod connection;
mod error;

pub use lapin;

pub use crate::channel::{PooledChannel, RabbitMqChannel};
pub use crate::config::{
    MAX_HEARTBEAT, MAX_NAME_LEN, MAX_TIMEOUT, RabbitMqChannelConfig, RabbitMqConfig,
};
pub use crate::connection::{RabbitMq, RabbitMqConnection};
pub use crate::error::{PublishError, PublishStage};
