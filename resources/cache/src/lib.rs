#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod config;
mod resource;

pub use moka;

pub use crate::config::{CacheConfig, MAX_CAPACITY, MAX_EXPIRY};
pub use crate::resource::{Cache, CacheHandle};
