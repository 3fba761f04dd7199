#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub use sqlx;

mod config;
mod connection;
mod executor;
mod fatal;
mod resource;
mod sql;
mod transaction;

pub use crate::config::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_STATEMENT_CACHE_CAPACITY, MAX_CONNECT_TIMEOUT,
    MAX_STATEMENT_CACHE_CAPACITY, PostgresConfig, SessionReset, TlsMode,
};
pub use crate::connection::PostgresConnection;
pub use crate::fatal::{is_fatal, is_fatal_sqlstate};
pub use crate::resource::Postgres;
pub use crate::transaction::PostgresTransaction;
