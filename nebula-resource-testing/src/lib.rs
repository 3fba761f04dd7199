#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod conformance;
pub mod proxy;
pub mod service;

pub use crate::conformance::Conformance;
pub use crate::proxy::FaultProxy;
pub use crate::service::{Service, Stopped};
