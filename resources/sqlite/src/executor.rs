//! sqlx's `Executor` for [`SqliteConnection`] and [`SqliteTransaction`]: every statement is
//! classified before it is sent (may it open a transaction, change the connection?) and its
//! outcome recorded (was it cut off, was the error fatal?), then handed to the sqlx connection
//! underneath. The watching itself is shared with the other sqlx-based resources
//! ([`nebula_resource_sqlx::executor`]).

use crate::connection::SqliteConnection;
use crate::transaction::SqliteTransaction;

nebula_resource_sqlx::impl_watched_executor!(SqliteConnection, sqlx::Sqlite);
nebula_resource_sqlx::impl_watched_executor!(SqliteTransaction<'_>, sqlx::Sqlite);
