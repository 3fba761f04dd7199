//! [`Postgres`]: the resource — how a pooled connection is created, checked, reset and closed.

use nebula_resource::{CreateContext, Error, Resource};
use nebula_resource_sqlx::resource::connect_within;
use sqlx::{ConnectOptions, Row};

use crate::config::PostgresConfig;
use crate::connection::PostgresConnection;

/// The PostgreSQL resource: a pool of [`PostgresConnection`]s, one per guard.
///
/// Register it with a [`PostgresConfig`]; acquire a [`Guard<Postgres>`](nebula_resource::Guard)
/// and pass `&mut *guard` to sqlx. The hooks:
///
/// | Hook | What it does |
/// |---|---|
/// | `create` | connects (TCP, TLS, authentication) and reads the backend's process id, within `connect_timeout`; the error names the server, password hidden |
/// | `check` | one round trip (a `Sync`, answered by `ReadyForQuery`), for connections idle longer than the pool's `validate_after_idle` |
/// | `is_broken` | whether a fatal error ([`is_fatal`](crate::is_fatal)) was seen on the connection: no I/O |
/// | `recycle` | nothing for a clean connection; otherwise one round trip that rolls back and resets the session ([`SessionReset`](crate::SessionReset)) |
/// | `destroy` | sends `Terminate`, unless the connection is broken |
#[derive(Debug, Clone, Copy, Default)]
pub struct Postgres;

impl Resource for Postgres {
    type Config = PostgresConfig;
    type Instance = PostgresConnection;
    const KEY: &'static str = "postgres";

    async fn create(
        &self,
        config: &PostgresConfig,
        ctx: &CreateContext,
    ) -> Result<PostgresConnection, Error> {
        let mut options = config.connect_options()?;
        // Credentials from the registration's provider (the current generation) win over the
        // config's own.
        if let Some(credentials) = ctx.credentials() {
            if let Some(username) = credentials.get_username() {
                options = options.username(username);
            }
            options = options.password(credentials.secret().expose());
        }
        let timeout = config.get_connect_timeout();
        let connect = async {
            let mut conn = options.connect().await?;
            // One simple-protocol round trip: no statement is prepared and cached for it.
            let backend_pid: i32 = sqlx::raw_sql("SELECT pg_backend_pid()")
                .fetch_one(&mut conn)
                .await?
                .try_get(0)?;
            Ok(PostgresConnection::new(
                conn,
                backend_pid,
                config.session_reset,
            ))
        };
        connect_within(config, timeout, connect, refused_for_good).await
    }

    async fn check(&self, conn: &mut PostgresConnection) -> Result<(), Error> {
        conn.ping().await.map_err(Error::check)
    }

    fn is_broken(&self, conn: &PostgresConnection) -> bool {
        conn.is_broken()
    }

    async fn recycle(&self, conn: &mut PostgresConnection) -> Result<(), Error> {
        conn.reset().await
    }

    async fn destroy(&self, conn: PostgresConnection) {
        conn.close().await;
    }
}

/// Authentication refused (28000, 28P01) or an unknown database (3D000): retrying cannot help.
fn refused_for_good(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| matches!(&*code, "28000" | "28P01" | "3D000"))
}
