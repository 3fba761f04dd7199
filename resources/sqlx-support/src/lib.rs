#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod config;
mod connection;
mod driver;
pub mod executor;
pub mod fatal;
pub mod lex;
pub mod resource;
mod session;
#[cfg(feature = "testing")]
pub mod testing;
mod transaction;

pub use crate::connection::WatchedConnection;
pub use crate::driver::{Driver, RawConnection, begin_statement_effect};
pub use crate::session::{Effect, Session};
pub use crate::transaction::WatchedTransaction;
