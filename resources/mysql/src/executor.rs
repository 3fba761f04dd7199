//! sqlx's `Executor` for [`MySqlConnection`] and [`MySqlTransaction`]: every statement is
//! classified before it is sent (may it open a transaction, change the session?) and its
//! outcome recorded (was it cut off, was the error fatal?), then handed to the sqlx connection
//! underneath. The watching itself is shared with the other sqlx-based resources
//! ([`nebula_resource_sqlx::executor`]).

use crate::connection::MySqlConnection;
use crate::transaction::MySqlTransaction;

nebula_resource_sqlx::impl_watched_executor!(MySqlConnection, sqlx::MySql);
nebula_resource_sqlx::impl_watched_executor!(MySqlTransaction<'_>, sqlx::MySql);
