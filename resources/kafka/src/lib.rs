#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod blocking;
mod config;
mod consumer;
mod context;
mod probe;
mod producer;
mod secrets;

pub use rdkafka;

pub use crate::config::{
    KafkaConfig, KafkaConsumerConfig, MAX_ID_LEN, MAX_TIMEOUT, MAX_TOPIC_LEN, OffsetReset,
    SaslMechanism, is_secret_property,
};
pub use crate::consumer::{GroupConsumer, KafkaConsumer};
pub use crate::context::KafkaContext;
pub use crate::producer::{KafkaProducer, ProducerClient};
