//! [`MySql`]: the resource — how a pooled connection is created, checked, reset and closed.

use nebula_resource::{CreateContext, Error, Resource};
use nebula_resource_sqlx::resource::connect_within;
use sqlx::ConnectOptions;

use crate::config::MySqlConfig;
use crate::connection::MySqlConnection;

/// The MySQL / MariaDB resource: a pool of [`MySqlConnection`]s, one per guard.
///
/// Register it with a [`MySqlConfig`]; acquire a [`Guard<MySql>`](nebula_resource::Guard) and
/// pass `&mut *guard` to sqlx. The hooks:
///
/// | Hook | What it does |
/// |---|---|
/// | `create` | connects (TCP or socket, TLS, authentication, the initial `SET`) within `connect_timeout`; the error names the server, password hidden |
/// | `check` | one round trip (`COM_PING`), for connections idle longer than the pool's `validate_after_idle` |
/// | `is_broken` | whether a fatal error ([`is_fatal`](crate::is_fatal)) was seen, or the session changed under [`OnSessionChange::Retire`](crate::OnSessionChange::Retire): no I/O |
/// | `recycle` | nothing for a clean connection; one `ROLLBACK` round trip if a transaction may be open ([`OnSessionChange::Keep`](crate::OnSessionChange::Keep): also releases locks) |
/// | `destroy` | sends `COM_QUIT`, unless the connection is broken |
#[derive(Debug, Clone, Copy, Default)]
pub struct MySql;

impl Resource for MySql {
    type Config = MySqlConfig;
    type Instance = MySqlConnection;
    const KEY: &'static str = "mysql";

    async fn create(
        &self,
        config: &MySqlConfig,
        ctx: &CreateContext,
    ) -> Result<MySqlConnection, Error> {
        let mut options = config.connect_options()?;
        // Credentials from the registration's provider (the current generation) win over the
        // config's own.
        if let Some(credentials) = ctx.credentials() {
            if let Some(username) = credentials.get_username() {
                options = options.username(username);
            }
            options = options.password(credentials.secret().expose());
        }
        let conn = connect_within(
            config,
            config.get_connect_timeout(),
            options.connect(),
            refused_for_good,
        )
        .await?;
        Ok(MySqlConnection::new(conn, config.on_session_change))
    }

    async fn check(&self, conn: &mut MySqlConnection) -> Result<(), Error> {
        conn.ping().await.map_err(Error::check)
    }

    fn is_broken(&self, conn: &MySqlConnection) -> bool {
        conn.must_retire()
    }

    async fn recycle(&self, conn: &mut MySqlConnection) -> Result<(), Error> {
        conn.reset().await
    }

    async fn destroy(&self, conn: MySqlConnection) {
        conn.close().await;
    }
}

/// Access denied (1044, 1045, 1698) or an unknown database (1049): retrying cannot help.
fn refused_for_good(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|db| matches!(db.number(), 1044 | 1045 | 1049 | 1698))
}
