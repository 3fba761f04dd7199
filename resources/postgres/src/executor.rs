//! sqlx's `Executor` for [`PostgresConnection`] and [`PostgresTransaction`]: every statement is
//! classified before it is sent (does it change the session?) and its outcome recorded (was it
//! cut off, was the error fatal?), then handed to the `PgConnection` underneath. The watching
//! itself is shared with the other sqlx-based resources ([`nebula_resource_sqlx::executor`]).

use crate::connection::PostgresConnection;
use crate::transaction::PostgresTransaction;

nebula_resource_sqlx::impl_watched_executor!(PostgresConnection, sqlx::Postgres);
nebula_resource_sqlx::impl_watched_executor!(PostgresTransaction<'_>, sqlx::Postgres);
