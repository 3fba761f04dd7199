//! [`PostgresConfig`]: where to connect and how, every knob with its default, validated before
//! anything connects; and the redacted form of a connection URL that messages show.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use nebula_resource::{Config, Error, Secret, redact_url};
use nebula_resource_sqlx::config::{
    ServerTarget, check_address, check_password, check_path_given, check_scheme, check_timeout,
    push_redacted_query, query_parameters, split_scheme, split_server_url, unknown_parameter,
};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// Default [`PostgresConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest [`PostgresConfig::connect_timeout`] accepted: anything longer is a unit mistake.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(600);

/// Default [`PostgresConfig::statement_cache_capacity`] (sqlx's default).
pub const DEFAULT_STATEMENT_CACHE_CAPACITY: usize = 100;

/// Largest [`PostgresConfig::statement_cache_capacity`] accepted. Every cached statement holds
/// memory on the server for the life of the connection.
pub const MAX_STATEMENT_CACHE_CAPACITY: usize = 10_000;

/// Longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`); longer names are silently cut.
const MAX_IDENTIFIER_LEN: usize = 63;

/// The query parameters sqlx 0.9 understands in a connection URL; anything else is rejected, so
/// that a misspelt `sslmode` cannot silently fall back to an unencrypted connection.
const URL_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// The URL parameters whose values messages may show; the others show as `name=***`.
const SHOWN_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "application_name",
];

/// How the connection is secured with TLS: libpq's `sslmode`.
///
/// `Require`, `VerifyCa` and `VerifyFull` need a TLS backend in sqlx: enable this crate's
/// `tls-rustls` feature (or one of sqlx's TLS features). Without one, connecting in those modes
/// fails with a create error that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TlsMode {
    /// Never use TLS.
    Disable,
    /// Try without TLS first; if the server refuses, try with TLS.
    Allow,
    /// Try TLS first; if the server (or the build) does not support it, connect without.
    /// The default, as in libpq.
    #[default]
    Prefer,
    /// Only connect with TLS; do not verify the server's certificate (unless a root certificate
    /// is given, in which case as `VerifyCa`).
    Require,
    /// Only connect with TLS, and verify that the server's certificate is issued by a trusted
    /// certificate authority.
    VerifyCa,
    /// As `VerifyCa`, and verify that the server's host name matches its certificate.
    VerifyFull,
}

impl From<TlsMode> for PgSslMode {
    fn from(mode: TlsMode) -> Self {
        match mode {
            TlsMode::Disable => Self::Disable,
            TlsMode::Allow => Self::Allow,
            TlsMode::Prefer => Self::Prefer,
            TlsMode::Require => Self::Require,
            TlsMode::VerifyCa => Self::VerifyCa,
            TlsMode::VerifyFull => Self::VerifyFull,
        }
    }
}

/// When a released connection's session is reset before the next user gets it.
///
/// The reset rolls back an open transaction and clears what `DISCARD ALL` clears — settings,
/// temporary tables, `LISTEN` registrations, cursors, session advisory locks, the session
/// authorization — except the prepared statements, which are sqlx's statement cache. It is one
/// round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SessionReset {
    /// Only when the session may have changed (the default): a statement that is not known to
    /// leave the session as it was (`BEGIN`, `SET`, `CREATE TEMP TABLE`, `LISTEN`, a call to
    /// `set_config` …), an operation that was cancelled half-way, a transaction left open, or
    /// any use of the raw `PgConnection`. A connection used only for plain queries goes back
    /// with no round trip.
    #[default]
    WhenDirty,
    /// On every release. For code that changes session state where the pool cannot see it:
    /// inside functions or procedures of its own (`PERFORM set_config(…)` in PL/pgSQL).
    Always,
}

/// Settings of the [`Postgres`](crate::Postgres) resource: a URL, or a host and the other parts
/// one by one; a part set explicitly overrides the URL's.
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::Config;
/// use nebula_resource_postgres::{PostgresConfig, TlsMode};
///
/// let from_url = PostgresConfig::new("postgres://app@db.internal:5432/orders?sslmode=require")
///     .password("s3cret")
///     .application_name("orders-api")
///     .connect_timeout(Duration::from_secs(3));
/// assert!(from_url.validate().is_ok());
/// assert!(!format!("{from_url:?}").contains("s3cret"));
///
/// let from_fields = PostgresConfig::from_host("db.internal")
///     .port(5433)
///     .username("app")
///     .database("orders")
///     .tls_mode(TlsMode::VerifyFull);
/// assert_eq!(from_fields.to_string(), "postgres://app@db.internal:5433/orders");
/// ```
///
/// Parts given neither here nor in the URL fall back as in libpq: to the environment
/// (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGDATABASE`, `PGSSLMODE`, `PGAPPNAME`,
/// `PGOPTIONS`), then to the built-in defaults (port 5432, the operating-system user name, a
/// database named like the user). With a URL, a password missing from both is also looked up
/// in `~/.pgpass`.
#[derive(Clone)]
pub struct PostgresConfig {
    url: Option<Secret>,
    host: Option<String>,
    port: Option<u16>,
    username: Option<String>,
    database: Option<String>,
    password: Option<Secret>,
    application_name: Option<String>,
    connect_timeout: Duration,
    statement_cache_capacity: Option<usize>,
    tls_mode: Option<TlsMode>,
    tls_root_cert: Option<PathBuf>,
    pub(crate) session_reset: SessionReset,
}

impl PostgresConfig {
    /// Connect with a URL: `postgres://[user[:password]@]host[:port][/database][?param=value&…]`
    /// (scheme `postgres` or `postgresql`). Query parameters are sqlx's: `sslmode`,
    /// `sslrootcert`, `sslcert`, `sslkey`, `statement-cache-capacity`, `host`, `hostaddr`,
    /// `port`, `dbname`, `user`, `password`, `application_name`, `options`, `options[name]`.
    ///
    /// The URL is kept as a [`Secret`], since it may hold the password: it never appears in
    /// `Debug`, `Display` or an error as given, only with the password replaced by `***`.
    /// Nothing is checked until [`validate`](Config::validate).
    pub fn new(url: impl Into<String>) -> Self {
        Self::with(Some(Secret::new(url.into())), None)
    }

    /// Connect to `host` (a name, an IP address, or the directory of a Unix socket), with the
    /// other parts set one by one.
    pub fn from_host(host: impl Into<String>) -> Self {
        Self::with(None, Some(host.into()))
    }

    fn with(url: Option<Secret>, host: Option<String>) -> Self {
        Self {
            url,
            host,
            port: None,
            username: None,
            database: None,
            password: None,
            application_name: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_cache_capacity: None,
            tls_mode: None,
            tls_root_cert: None,
            session_reset: SessionReset::default(),
        }
    }

    /// The server's host: overrides the URL's. Defaults to the URL's, then `PGHOST`, then
    /// `localhost`.
    #[must_use]
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// The server's port: overrides the URL's. Defaults to the URL's, then `PGPORT`, then 5432.
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The user to log in as: overrides the URL's. Defaults to the URL's, then `PGUSER`, then
    /// the operating-system user name.
    #[must_use]
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The database to connect to: overrides the URL's. Defaults to the URL's, then
    /// `PGDATABASE`, then the server's default (a database named like the user).
    #[must_use]
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// The password: overrides the URL's, so the URL can stay free of it. Defaults to the URL's,
    /// then `PGPASSWORD`, then (with a URL) `~/.pgpass`, then none.
    #[must_use]
    pub fn password(mut self, password: impl Into<Secret>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The `application_name` the server shows in `pg_stat_activity` and its logs: overrides
    /// the URL's. At most 63 bytes of printable ASCII. Defaults to the URL's, then `PGAPPNAME`,
    /// then none.
    #[must_use]
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = Some(name.into());
        self
    }

    /// Longest one connection attempt (TCP, TLS and authentication) may take before `create`
    /// fails with an error naming the server. The pool's `create_timeout` bounds the whole
    /// `create` as well. Defaults to [`DEFAULT_CONNECT_TIMEOUT`] (5 s); must be greater than
    /// zero and at most [`MAX_CONNECT_TIMEOUT`] (10 minutes).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many prepared statements each connection keeps (least recently used are closed
    /// first); 0 turns the cache off, so every query is prepared anew. Overrides the URL's
    /// `statement-cache-capacity`. Defaults to the URL's, then
    /// [`DEFAULT_STATEMENT_CACHE_CAPACITY`] (100); must be at most
    /// [`MAX_STATEMENT_CACHE_CAPACITY`] (10 000).
    #[must_use]
    pub fn statement_cache_capacity(mut self, capacity: usize) -> Self {
        self.statement_cache_capacity = Some(capacity);
        self
    }

    /// How the connection is secured with TLS: overrides the URL's `sslmode`. Defaults to the
    /// URL's, then `PGSSLMODE`, then [`TlsMode::Prefer`].
    #[must_use]
    pub fn tls_mode(mut self, mode: TlsMode) -> Self {
        self.tls_mode = Some(mode);
        self
    }

    /// A PEM file of the certificate authorities to trust, for [`TlsMode::VerifyCa`] and
    /// [`TlsMode::VerifyFull`]: overrides the URL's `sslrootcert`. Defaults to the URL's, then
    /// `PGSSLROOTCERT`, then the TLS backend's own roots.
    #[must_use]
    pub fn tls_root_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_root_cert = Some(path.into());
        self
    }

    /// When a released connection's session is reset. Defaults to [`SessionReset::WhenDirty`].
    #[must_use]
    pub fn session_reset(mut self, reset: SessionReset) -> Self {
        self.session_reset = reset;
        self
    }

    /// The configured [`connect_timeout`](Self::connect_timeout).
    pub fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The configured [`session_reset`](Self::session_reset).
    pub fn get_session_reset(&self) -> SessionReset {
        self.session_reset
    }

    /// The sqlx options these settings connect with: the URL (if any) with every part set here
    /// applied over it. Use them for sqlx's own facilities, such as a `PgListener`.
    ///
    /// The options hold the password, and their `Debug` output shows it: never log them.
    ///
    /// # Errors
    ///
    /// The [`Config`](nebula_resource::ErrorKind::Config) error of
    /// [`validate`](Config::validate) for a URL that does not parse.
    pub fn connect_options(&self) -> Result<PgConnectOptions, Error> {
        let mut options = match &self.url {
            Some(url) => parse_url(url.expose())?,
            None => PgConnectOptions::new_without_pgpass(),
        };
        if let Some(host) = &self.host {
            options = options.host(host);
        }
        if let Some(port) = self.port {
            options = options.port(port);
        }
        if let Some(username) = &self.username {
            options = options.username(username);
        }
        if let Some(database) = &self.database {
            options = options.database(database);
        }
        if let Some(password) = &self.password {
            options = options.password(password.expose());
        }
        if let Some(name) = &self.application_name {
            options = options.application_name(name);
        }
        if let Some(capacity) = self.statement_cache_capacity {
            options = options.statement_cache_capacity(capacity);
        }
        if let Some(mode) = self.tls_mode {
            options = options.ssl_mode(mode.into());
        }
        if let Some(path) = &self.tls_root_cert {
            options = options.ssl_root_cert(path);
        }
        Ok(options)
    }
}

impl Config for PostgresConfig {
    fn validate(&self) -> Result<(), Error> {
        check_address(
            self.url.as_ref(),
            self.host.as_deref(),
            self.port,
            "PostgresConfig",
            |url| parse_url(url).map(drop),
        )?;
        if let Some(username) = &self.username {
            check_identifier("username", username)?;
        }
        if let Some(database) = &self.database {
            check_identifier("database", database)?;
        }
        check_password(self.password.as_ref())?;
        if let Some(name) = &self.application_name {
            if name.len() > MAX_IDENTIFIER_LEN {
                return Err(Error::config(
                    "application_name",
                    format!(
                        "must be at most {MAX_IDENTIFIER_LEN} bytes (got {}); the server would \
                         cut it",
                        name.len()
                    ),
                ));
            }
            if !name.bytes().all(|b| (b' '..=b'~').contains(&b)) {
                return Err(Error::config(
                    "application_name",
                    "must be printable ASCII; the server replaces anything else with `?`",
                ));
            }
        }
        check_timeout(
            "connect_timeout",
            self.connect_timeout,
            MAX_CONNECT_TIMEOUT,
            "must be greater than zero",
        )?;
        if let Some(capacity) = self.statement_cache_capacity
            && capacity > MAX_STATEMENT_CACHE_CAPACITY
        {
            return Err(Error::config(
                "statement_cache_capacity",
                format!("must be at most {MAX_STATEMENT_CACHE_CAPACITY} (got {capacity})"),
            ));
        }
        check_path_given("tls_root_cert", self.tls_root_cert.as_deref())?;
        Ok(())
    }
}

/// A user or database name: non-empty, no NUL, at most [`MAX_IDENTIFIER_LEN`] bytes.
fn check_identifier(field: &'static str, value: &str) -> Result<(), Error> {
    if value.is_empty() {
        return Err(Error::config(field, "must not be empty"));
    }
    if value.contains('\0') {
        return Err(Error::config(field, "must not contain a NUL byte"));
    }
    if value.len() > MAX_IDENTIFIER_LEN {
        return Err(Error::config(
            field,
            format!(
                "must be at most {MAX_IDENTIFIER_LEN} bytes (got {}); the server would cut it",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// Check a connection URL and parse it into sqlx's options. No message repeats the URL's
/// password, nor any part of the URL that might be one.
fn parse_url(url: &str) -> Result<PgConnectOptions, Error> {
    const EXPECTED: &str = "expected `postgres://[user[:password]@]host[:port][/database]\
                            [?param=value&...]`";
    let parts = UrlParts::new(split_server_url(url, EXPECTED)?);
    check_scheme(
        parts.scheme,
        &["postgres", "postgresql"],
        &parts.display(),
        is_plain_name,
    )?;
    for (key, _) in parts.parameters() {
        let known = URL_PARAMETERS.contains(&key)
            || key
                .strip_prefix("options[")
                .is_some_and(|rest| rest.ends_with(']'));
        if !known {
            return Err(unknown_parameter(
                key,
                &parts.display(),
                &format!("{}, options[name]", URL_PARAMETERS.join(", ")),
                "PostgresConfig",
                is_plain_name,
            ));
        }
    }
    let options = PgConnectOptions::from_str(url).map_err(|err| {
        Error::config(
            "url",
            format!("`{}` is not a valid PostgreSQL URL: {err}", parts.display()),
        )
    })?;
    if options.get_port() == 0 {
        return Err(Error::config(
            "url",
            format!("port must be in 1..=65535 (got 0) in `{}`", parts.display()),
        ));
    }
    Ok(options)
}

/// A short name made of ASCII letters, digits and `_-.[]+`: safe to repeat in a message.
fn is_plain_name(text: &str) -> bool {
    nebula_resource_sqlx::config::is_plain_name(text, b"_-.[]+")
}

/// A connection URL cut where a URL parser cuts it, for display.
struct UrlParts<'a> {
    scheme: &'a str,
    /// Everything between `://` and the query.
    head: &'a str,
    query: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    /// The parts of a URL cut by [`split_scheme`].
    fn new((scheme, rest): (&'a str, &'a str)) -> Self {
        let (head, query) = match rest.split_once('?') {
            Some((head, query)) => (head, Some(query)),
            None => (rest, None),
        };
        Self {
            scheme,
            head,
            query,
        }
    }

    fn parameters(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
        query_parameters(self.query)
    }

    /// The URL with the password replaced by `***`, and the values of parameters other than a
    /// few known harmless ones (`sslmode`, `host`, `port`, …) too.
    fn display(&self) -> String {
        let mut shown = redact_url(&format!("{}://{}", self.scheme, self.head));
        push_redacted_query(&mut shown, self.query, SHOWN_PARAMETERS, is_plain_name);
        shown
    }
}

/// The URL as messages may show it: the password and secret-looking parts replaced by `***`, or
/// a placeholder for a URL too malformed to cut safely.
fn display_url(url: &str) -> String {
    match split_scheme(url) {
        Some(parts) => UrlParts::new(parts).display(),
        None => "[malformed URL, not shown]".to_owned(),
    }
}

impl fmt::Display for PostgresConfig {
    /// Where the configuration connects to, never with the password: the URL (password
    /// replaced by `***`) or `postgres://user@host:port/database`, then any parts set over it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown_url = self.url.as_ref().map(|url| display_url(url.expose()));
        let target = ServerTarget {
            scheme: "postgres",
            shown_url: shown_url.as_deref(),
            host: self.host.as_deref(),
            port: self.port,
            socket: None,
            username: self.username.as_deref(),
            database: self.database.as_deref(),
        };
        fmt::Display::fmt(&target, f)
    }
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field(
                "url",
                &self.url.as_ref().map(|url| display_url(url.expose())),
            )
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("database", &self.database)
            .field("password", &self.password)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_cache_capacity", &self.statement_cache_capacity)
            .field("tls_mode", &self.tls_mode)
            .field("tls_root_cert", &self.tls_root_cert)
            .field("session_reset", &self.session_reset)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use nebula_resource::ErrorKind;

    use super::*;

    const PASSWORD: &str = "s3cr3tpw";

    #[track_caller]
    fn rejected(config: &PostgresConfig, field: &str) -> String {
        let err = config.validate().expect_err("config must be rejected");
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert_eq!(err.field(), Some(field), "{err}");
        let text = format!("{err} {err:?}");
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
        text
    }

    #[test]
    fn urls_parse_into_options() {
        let config = PostgresConfig::new(format!(
            "postgresql://app:{PASSWORD}@db.internal:6543/orders?sslmode=disable&application_name=api"
        ));
        config.validate().unwrap();
        let options = config.connect_options().unwrap();
        assert_eq!(options.get_host(), "db.internal");
        assert_eq!(options.get_port(), 6543);
        assert_eq!(options.get_username(), "app");
        assert_eq!(options.get_database(), Some("orders"));
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Disable));
        assert_eq!(options.get_application_name(), Some("api"));
    }

    #[test]
    fn explicit_parts_override_the_url() {
        let config = PostgresConfig::new("postgres://app@db.internal:6543/orders?sslmode=disable")
            .host("replica.internal")
            .port(5433)
            .username("reader")
            .database("archive")
            .application_name("reports")
            .tls_mode(TlsMode::Require);
        config.validate().unwrap();
        let options = config.connect_options().unwrap();
        assert_eq!(options.get_host(), "replica.internal");
        assert_eq!(options.get_port(), 5433);
        assert_eq!(options.get_username(), "reader");
        assert_eq!(options.get_database(), Some("archive"));
        assert_eq!(options.get_application_name(), Some("reports"));
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Require));
    }

    #[test]
    fn fields_build_options() {
        let config = PostgresConfig::from_host("127.0.0.1")
            .port(5432)
            .username("postgres")
            .database("test")
            .password(PASSWORD);
        config.validate().unwrap();
        let options = config.connect_options().unwrap();
        assert_eq!(options.get_host(), "127.0.0.1");
        assert_eq!(options.get_port(), 5432);
        assert_eq!(options.get_username(), "postgres");
        assert_eq!(options.get_database(), Some("test"));
        assert_eq!(
            config.to_string(),
            "postgres://postgres@127.0.0.1:5432/test"
        );
    }

    #[test]
    fn defaults_are_documented_values() {
        let config = PostgresConfig::new("postgres://h/db");
        assert_eq!(config.get_connect_timeout(), DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(config.get_session_reset(), SessionReset::WhenDirty);
        assert_eq!(TlsMode::default(), TlsMode::Prefer);
    }

    #[test]
    fn bad_urls_name_the_url_field() {
        let url = |u: &str| PostgresConfig::new(u);
        assert!(rejected(&url(""), "url").contains("must not be empty"));
        assert!(rejected(&url("   "), "url").contains("must not be empty"));
        assert!(rejected(&url(PASSWORD), "url").contains("is not a URL"));
        let scheme = rejected(
            &url(&format!("mysql://root:{PASSWORD}@127.0.0.1:3306/test")),
            "url",
        );
        assert!(scheme.contains("got `mysql`"), "{scheme}");
        assert!(
            scheme.contains("mysql://root:***@127.0.0.1:3306/test"),
            "{scheme}"
        );
        let port = rejected(
            &url(&format!(
                "postgres://postgres:{PASSWORD}@127.0.0.1:99999/test"
            )),
            "url",
        );
        assert!(
            port.contains("postgres://postgres:***@127.0.0.1:99999/test"),
            "{port}"
        );
        let unknown = rejected(
            &url(&format!(
                "postgres://postgres:{PASSWORD}@h/db?ssl_mode=require&password={PASSWORD}"
            )),
            "url",
        );
        assert!(
            unknown.contains("unknown parameter `ssl_mode`"),
            "{unknown}"
        );
        let timeout = rejected(&url("postgres://h/db?connect_timeout=5"), "url");
        assert!(
            timeout.contains("PostgresConfig::connect_timeout"),
            "{timeout}"
        );
        let zero = rejected(&url("postgres://h:0/db"), "url");
        assert!(zero.contains("port must be in 1..=65535"), "{zero}");
        let mode = rejected(&url("postgres://h/db?sslmode=sometimes"), "url");
        assert!(mode.contains("sometimes"), "{mode}");
    }

    #[test]
    fn malformed_urls_never_show_a_password() {
        // Unencoded special characters in the password: a parser takes part of it for the
        // host, port or path, so such URLs are refused without being repeated.
        for url in [
            format!("postgres://app:{PASSWORD}/x@h/db"),
            format!("postgres://app:/{PASSWORD}@h/db"),
            format!("postgres://app:x?{PASSWORD}@h/db"),
            format!("postgres://app:x#{PASSWORD}@h/db"),
            format!("postgres://h/db?password:{PASSWORD}"),
            format!("postgres://h/db?app=a@b&password={PASSWORD}"),
        ] {
            let config = PostgresConfig::new(url.clone());
            let shown = format!("{config} {config:?}");
            assert!(!shown.contains(PASSWORD), "{url} shown as {shown}");
            if let Err(err) = config.validate() {
                let text = format!("{err} {err:?}");
                assert!(!text.contains(PASSWORD), "{url}: {text}");
            }
        }
    }

    #[test]
    fn bad_fields_name_their_field() {
        let base = || PostgresConfig::from_host("127.0.0.1");
        rejected(&base().host(""), "host");
        rejected(&base().host("db internal"), "host");
        rejected(&base().port(0), "port");
        rejected(&base().username(""), "username");
        rejected(&base().database("x".repeat(64)), "database");
        rejected(&base().database("a\0b"), "database");
        let nul = rejected(&base().password(format!("{PASSWORD}\0")), "password");
        assert!(nul.contains("NUL"), "{nul}");
        rejected(&base().application_name("x".repeat(64)), "application_name");
        rejected(&base().application_name("naïve"), "application_name");
        rejected(&base().connect_timeout(Duration::ZERO), "connect_timeout");
        rejected(
            &base().connect_timeout(MAX_CONNECT_TIMEOUT + Duration::from_secs(1)),
            "connect_timeout",
        );
        rejected(
            &base().statement_cache_capacity(MAX_STATEMENT_CACHE_CAPACITY + 1),
            "statement_cache_capacity",
        );
        rejected(&base().tls_root_cert(""), "tls_root_cert");
        let missing = PostgresConfig::with(None, None);
        rejected(&missing, "url");
        base()
            .statement_cache_capacity(0)
            .connect_timeout(MAX_CONNECT_TIMEOUT)
            .validate()
            .unwrap();
    }

    #[test]
    fn debug_and_display_hide_the_password() {
        let config = PostgresConfig::new(format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:5432/test?sslmode=prefer&password={PASSWORD}"
        ))
        .password(PASSWORD);
        let debug = format!("{config:?} {config:#?}");
        let display = config.to_string();
        assert!(!debug.contains(PASSWORD), "{debug}");
        assert!(!display.contains(PASSWORD), "{display}");
        assert_eq!(
            display,
            "postgres://postgres:***@127.0.0.1:5432/test?sslmode=prefer&password=***"
        );
        assert!(debug.contains("Secret([redacted])"), "{debug}");
    }

    #[test]
    fn display_lists_parts_set_over_the_url() {
        let config = PostgresConfig::new("postgres://app@primary/orders")
            .host("replica")
            .database("archive");
        assert_eq!(
            config.to_string(),
            "postgres://app@primary/orders with host `replica`, database `archive`"
        );
    }
}
