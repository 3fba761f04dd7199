#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub use sqlx;

mod config;
mod connection;
mod executor;
mod fatal;
mod memory;
mod resource;
mod sql;
mod transaction;

pub use crate::config::{
    DEFAULT_BUSY_TIMEOUT, DEFAULT_STATEMENT_CACHE_CAPACITY, MAX_BUSY_TIMEOUT,
    MAX_STATEMENT_CACHE_CAPACITY, SqliteConfig,
};
pub use crate::connection::SqliteConnection;
pub use crate::fatal::{is_fatal, is_fatal_code};
pub use crate::resource::Sqlite;
pub use crate::transaction::SqliteTransaction;
