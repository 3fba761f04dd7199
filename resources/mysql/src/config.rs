//! [`MySqlConfig`]: where to connect and how, every knob with its default, validated before
//! anything connects; and the redacted form of a connection URL that messages show.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use nebula_resource::{Config, Error, Secret, redact_url};
use nebula_resource_sqlx::config::{
    ServerTarget, check_address, check_password, check_path_given, check_scheme, check_timeout,
    decode_form, decode_percent, push_redacted_query, query_parameters, split_scheme,
    split_server_url, unknown_parameter,
};
use sqlx::mysql::{MySqlConnectOptions, MySqlSslMode};

/// Default [`MySqlConfig::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest [`MySqlConfig::connect_timeout`] accepted: anything longer is a unit mistake.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(600);

/// Default [`MySqlConfig::statement_cache_capacity`] (sqlx's default).
pub const DEFAULT_STATEMENT_CACHE_CAPACITY: usize = 100;

/// Largest [`MySqlConfig::statement_cache_capacity`] accepted. Every cached statement is a
/// prepared statement on the server for the life of the connection, and the server caps them
/// for all connections together (`max_prepared_stmt_count`, 16 382 by default).
pub const MAX_STATEMENT_CACHE_CAPACITY: usize = 10_000;

/// Longest user name accepted: MariaDB's limit (MySQL's is 32).
const MAX_USERNAME_LEN: usize = 80;

/// Longest database, character set, collation and time zone name accepted.
const MAX_NAME_LEN: usize = 64;

/// The query parameters sqlx 0.9 understands in a MySQL URL; anything else is rejected, so that
/// a misspelt `ssl-mode` cannot silently fall back to an unencrypted connection.
const URL_PARAMETERS: &[&str] = &[
    "ssl-mode",
    "sslmode",
    "ssl-ca",
    "sslca",
    "ssl-cert",
    "sslcert",
    "ssl-key",
    "sslkey",
    "charset",
    "collation",
    "statement-cache-capacity",
    "socket",
    "timezone",
    "time-zone",
];

/// The URL parameters whose values messages may show; the others show as `name=***`.
const SHOWN_PARAMETERS: &[&str] = &[
    "ssl-mode",
    "sslmode",
    "ssl-ca",
    "sslca",
    "ssl-cert",
    "sslcert",
    "charset",
    "collation",
    "statement-cache-capacity",
    "socket",
    "timezone",
    "time-zone",
];

/// How the connection is secured with TLS: MySQL's `--ssl-mode`.
///
/// `Required`, `VerifyCa` and `VerifyIdentity` need a TLS backend in sqlx: enable this crate's
/// `tls-rustls` feature (or one of sqlx's TLS features). Without one, connecting in those modes
/// fails with a create error that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SslMode {
    /// Never use TLS.
    Disabled,
    /// Use TLS if the server (and the build) supports it, else connect without. The default,
    /// as in the `mysql` client.
    #[default]
    Preferred,
    /// Only connect with TLS; do not verify the server's certificate.
    Required,
    /// Only connect with TLS, and verify that the server's certificate is issued by a trusted
    /// certificate authority ([`MySqlConfig::ssl_ca`]).
    VerifyCa,
    /// As `VerifyCa`, and verify that the server's host name matches its certificate.
    VerifyIdentity,
}

impl From<SslMode> for MySqlSslMode {
    fn from(mode: SslMode) -> Self {
        match mode {
            SslMode::Disabled => Self::Disabled,
            SslMode::Preferred => Self::Preferred,
            SslMode::Required => Self::Required,
            SslMode::VerifyCa => Self::VerifyCa,
            SslMode::VerifyIdentity => Self::VerifyIdentity,
        }
    }
}

/// What happens, on release, to a connection whose session may have changed beyond its
/// transaction: a `SET` (session or user variable, `autocommit`, `NAMES`), `USE`, a temporary
/// table, `LOCK TABLES`, `GET_LOCK`, a server-side `PREPARE`, `HANDLER`, `CALL`, `XA`, a
/// statement not recognised, or any mutable use of the raw sqlx connection.
///
/// MySQL has no SQL statement that brings a session back to the state of a fresh one (the
/// protocol's `COM_RESET_CONNECTION` is not reachable through sqlx), so the choice is between
/// a fresh connection and a known, documented leftover.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnSessionChange {
    /// Close the connection instead of returning it (the default); the pool opens a new one
    /// when it needs one. The next user never sees another user's session state, at the price
    /// of a reconnect after each such use.
    #[default]
    Retire,
    /// Keep the connection, and on every release from then on reset what would otherwise leak
    /// across users, in one round trip: roll back the transaction, release table locks
    /// (`UNLOCK TABLES`) and named locks (`RELEASE_ALL_LOCKS()`, MySQL 5.7 / MariaDB 10.5 and
    /// later; on older servers the reset fails, and the connection is closed as with `Retire`).
    /// Variables, temporary tables, the current database and prepared statements stay as the
    /// last user left them. For applications that set the same session state on every checkout
    /// and cannot afford a reconnect each time.
    Keep,
}

/// Settings of the [`MySql`](crate::MySql) resource: a URL, or a host and the other parts one by
/// one; a part set explicitly overrides the URL's.
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::Config;
/// use nebula_resource_mysql::{MySqlConfig, SslMode};
///
/// let from_url = MySqlConfig::new("mysql://app@db.internal:3306/orders?ssl-mode=required")
///     .password("s3cret")
///     .connect_timeout(Duration::from_secs(3));
/// assert!(from_url.validate().is_ok());
/// assert!(!format!("{from_url:?}").contains("s3cret"));
///
/// let from_fields = MySqlConfig::from_host("db.internal")
///     .port(3307)
///     .username("app")
///     .database("orders")
///     .ssl_mode(SslMode::VerifyIdentity);
/// assert_eq!(from_fields.to_string(), "mysql://app@db.internal:3307/orders");
/// ```
///
/// Parts given neither here nor in the URL take sqlx's defaults: host `localhost`, port 3306,
/// user `root`, no password, no default database.
#[derive(Clone)]
pub struct MySqlConfig {
    url: Option<Secret>,
    host: Option<String>,
    port: Option<u16>,
    socket: Option<PathBuf>,
    username: Option<String>,
    password: Option<Secret>,
    database: Option<String>,
    connect_timeout: Duration,
    statement_cache_capacity: Option<usize>,
    ssl_mode: Option<SslMode>,
    ssl_ca: Option<PathBuf>,
    charset: Option<String>,
    collation: Option<String>,
    timezone: Option<Option<String>>,
    pub(crate) on_session_change: OnSessionChange,
}

impl MySqlConfig {
    /// Connect with a URL:
    /// `mysql://[user[:password]@]host[:port][/database][?param=value&…]` (scheme `mysql` or
    /// `mariadb`). Query parameters are sqlx's: `ssl-mode`, `ssl-ca`, `ssl-cert`, `ssl-key`,
    /// `charset`, `collation`, `statement-cache-capacity`, `socket`, `timezone`.
    ///
    /// The URL is kept as a [`Secret`], since it may hold the password: it never appears in
    /// `Debug`, `Display` or an error as given, only with the password replaced by `***`.
    /// Nothing is checked until [`validate`](Config::validate).
    pub fn new(url: impl Into<String>) -> Self {
        Self::with(Some(Secret::new(url.into())), None)
    }

    /// Connect to `host` (a name or an IP address), with the other parts set one by one.
    pub fn from_host(host: impl Into<String>) -> Self {
        Self::with(None, Some(host.into()))
    }

    fn with(url: Option<Secret>, host: Option<String>) -> Self {
        Self {
            url,
            host,
            port: None,
            socket: None,
            username: None,
            password: None,
            database: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            statement_cache_capacity: None,
            ssl_mode: None,
            ssl_ca: None,
            charset: None,
            collation: None,
            timezone: None,
            on_session_change: OnSessionChange::default(),
        }
    }

    /// The server's host: overrides the URL's. Defaults to the URL's, then `localhost`.
    #[must_use]
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// The server's port: overrides the URL's. Defaults to the URL's, then 3306.
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Connect through this Unix domain socket instead of TCP (host and port are then
    /// ignored): overrides the URL's `socket`. Defaults to the URL's, then none (TCP).
    #[must_use]
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.socket = Some(path.into());
        self
    }

    /// The user to log in as: overrides the URL's. At most 80 bytes. Defaults to the URL's,
    /// then `root`.
    #[must_use]
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The password: overrides the URL's, so the URL can stay free of it. Defaults to the URL's,
    /// then none.
    #[must_use]
    pub fn password(mut self, password: impl Into<Secret>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The default database of each connection: overrides the URL's. At most 64 characters.
    /// Defaults to the URL's, then none (statements must qualify their tables).
    #[must_use]
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// Longest one connection attempt (TCP, TLS, authentication and the initial `SET`) may take
    /// before `create` fails with an error naming the server. The pool's `create_timeout` bounds
    /// the whole `create` as well. Defaults to [`DEFAULT_CONNECT_TIMEOUT`] (5 s); must be greater
    /// than zero and at most [`MAX_CONNECT_TIMEOUT`] (10 minutes).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many prepared statements each connection keeps (least recently used are closed
    /// first). Overrides the URL's `statement-cache-capacity`. Defaults to the URL's, then
    /// [`DEFAULT_STATEMENT_CACHE_CAPACITY`] (100); must be in
    /// 1..=[`MAX_STATEMENT_CACHE_CAPACITY`] (10 000). To run a statement without caching it, use
    /// sqlx's `.persistent(false)` on the query.
    #[must_use]
    pub fn statement_cache_capacity(mut self, capacity: usize) -> Self {
        self.statement_cache_capacity = Some(capacity);
        self
    }

    /// How the connection is secured with TLS: overrides the URL's `ssl-mode`. Defaults to the
    /// URL's, then [`SslMode::Preferred`].
    #[must_use]
    pub fn ssl_mode(mut self, mode: SslMode) -> Self {
        self.ssl_mode = Some(mode);
        self
    }

    /// A PEM file of the certificate authorities to trust, for [`SslMode::VerifyCa`] and
    /// [`SslMode::VerifyIdentity`]: overrides the URL's `ssl-ca`. Defaults to the URL's, then
    /// the TLS backend's own roots.
    #[must_use]
    pub fn ssl_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.ssl_ca = Some(path.into());
        self
    }

    /// The connection's character set (`SET NAMES`): overrides the URL's `charset`. Letters,
    /// digits and `_`, at most 64 bytes. Defaults to the URL's, then `utf8mb4`. Strings are
    /// exchanged as UTF-8, so keep a UTF-8-compatible character set.
    #[must_use]
    pub fn charset(mut self, charset: impl Into<String>) -> Self {
        self.charset = Some(charset.into());
        self
    }

    /// The connection's collation (`SET NAMES … COLLATE …`): overrides the URL's `collation`.
    /// Letters, digits and `_`, at most 64 bytes. Defaults to the URL's, then the server's
    /// default for the character set.
    #[must_use]
    pub fn collation(mut self, collation: impl Into<String>) -> Self {
        self.collation = Some(collation.into());
        self
    }

    /// The session's `time_zone`, set on connect: an offset (`+00:00`, `-05:30`), `SYSTEM`, or a
    /// named zone (`Europe/Paris`, which needs the server's time zone tables); `None` keeps the
    /// server's default. Overrides the URL's `timezone`. Defaults to the URL's, then `+00:00`
    /// (sqlx decodes `TIMESTAMP` values as UTC).
    #[must_use]
    pub fn timezone(mut self, timezone: impl Into<Option<String>>) -> Self {
        self.timezone = Some(timezone.into());
        self
    }

    /// What happens on release to a connection whose session may have changed beyond its
    /// transaction. Defaults to [`OnSessionChange::Retire`].
    #[must_use]
    pub fn on_session_change(mut self, policy: OnSessionChange) -> Self {
        self.on_session_change = policy;
        self
    }

    /// The configured [`connect_timeout`](Self::connect_timeout).
    pub fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The configured [`on_session_change`](Self::on_session_change).
    pub fn get_on_session_change(&self) -> OnSessionChange {
        self.on_session_change
    }

    /// The sqlx options these settings connect with: the URL (if any) with every part set here
    /// applied over it.
    ///
    /// The options hold the password, and their `Debug` output shows it: never log them.
    ///
    /// # Errors
    ///
    /// The [`Config`](nebula_resource::ErrorKind::Config) error of
    /// [`validate`](Config::validate) for a URL that does not parse.
    pub fn connect_options(&self) -> Result<MySqlConnectOptions, Error> {
        let mut options = match &self.url {
            Some(url) => parse_url(url.expose())?,
            None => MySqlConnectOptions::new(),
        };
        if let Some(host) = &self.host {
            options = options.host(host);
        }
        if let Some(port) = self.port {
            options = options.port(port);
        }
        if let Some(socket) = &self.socket {
            options = options.socket(socket);
        }
        if let Some(username) = &self.username {
            options = options.username(username);
        }
        if let Some(password) = &self.password {
            options = options.password(password.expose());
        }
        if let Some(database) = &self.database {
            options = options.database(database);
        }
        if let Some(capacity) = self.statement_cache_capacity {
            options = options.statement_cache_capacity(capacity);
        }
        if let Some(mode) = self.ssl_mode {
            options = options.ssl_mode(mode.into());
        }
        if let Some(path) = &self.ssl_ca {
            options = options.ssl_ca(path);
        }
        if let Some(charset) = &self.charset {
            options = options.charset(charset);
        }
        if let Some(collation) = &self.collation {
            options = options.collation(collation);
        }
        if let Some(timezone) = &self.timezone {
            options = options.timezone(timezone.clone());
        }
        Ok(options)
    }
}

impl Config for MySqlConfig {
    fn validate(&self) -> Result<(), Error> {
        check_address(
            self.url.as_ref(),
            self.host.as_deref(),
            self.port,
            "MySqlConfig",
            |url| parse_url(url).map(drop),
        )?;
        check_path_given("socket", self.socket.as_deref())?;
        if let Some(username) = &self.username {
            check("username", username_rule(username))?;
        }
        if let Some(database) = &self.database {
            check("database", database_rule(database))?;
        }
        check_password(self.password.as_ref())?;
        check_timeout(
            "connect_timeout",
            self.connect_timeout,
            MAX_CONNECT_TIMEOUT,
            "must be greater than zero",
        )?;
        if let Some(capacity) = self.statement_cache_capacity {
            check("statement_cache_capacity", cache_capacity_rule(capacity))?;
        }
        check_path_given("ssl_ca", self.ssl_ca.as_deref())?;
        if let Some(charset) = &self.charset {
            check("charset", sql_name_rule(charset))?;
        }
        if let Some(collation) = &self.collation {
            check("collation", sql_name_rule(collation))?;
        }
        if let Some(Some(timezone)) = &self.timezone {
            check("timezone", timezone_rule(timezone))?;
        }
        Ok(())
    }
}

/// The rule a user name breaks, if any: it must be non-empty, without NUL, at most
/// [`MAX_USERNAME_LEN`] bytes.
fn username_rule(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.contains('\0') {
        return Err("must not contain a NUL byte".to_owned());
    }
    if value.len() > MAX_USERNAME_LEN {
        return Err(format!(
            "must be at most {MAX_USERNAME_LEN} bytes (got {})",
            value.len()
        ));
    }
    Ok(())
}

/// The rule a database name breaks, if any (MySQL's rules): non-empty, no NUL, not ending in a
/// space, at most [`MAX_NAME_LEN`] characters.
fn database_rule(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.contains('\0') {
        return Err("must not contain a NUL byte".to_owned());
    }
    if value.ends_with(' ') {
        return Err("must not end with a space".to_owned());
    }
    let chars = value.chars().count();
    if chars > MAX_NAME_LEN {
        return Err(format!(
            "must be at most {MAX_NAME_LEN} characters (got {chars})"
        ));
    }
    Ok(())
}

fn cache_capacity_rule(capacity: usize) -> Result<(), String> {
    if capacity == 0 || capacity > MAX_STATEMENT_CACHE_CAPACITY {
        return Err(format!(
            "must be in 1..={MAX_STATEMENT_CACHE_CAPACITY} (got {capacity}); to skip the cache for \
             one statement, use `.persistent(false)` on the query"
        ));
    }
    Ok(())
}

/// The rule a character set or collation name breaks, if any. sqlx puts it into `SET NAMES`
/// as it is, so only letters, digits and `_` pass.
fn sql_name_rule(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if value.len() > MAX_NAME_LEN
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(format!(
            "must be ASCII letters, digits and `_`, at most {MAX_NAME_LEN} bytes"
        ));
    }
    Ok(())
}

/// The rule a time zone breaks, if any. sqlx puts it into `SET time_zone = '…'` as it is, so
/// only the characters of offsets and zone names pass.
fn timezone_rule(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("must not be empty (use `None` for the server's default)".to_owned());
    }
    if value.len() > MAX_NAME_LEN
        || !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_/+-:".contains(&b))
    {
        return Err(format!(
            "must be an offset (`+00:00`), `SYSTEM` or a zone name (`Europe/Paris`): ASCII \
             letters, digits and `_/+-:`, at most {MAX_NAME_LEN} bytes"
        ));
    }
    Ok(())
}

/// `rule` applied to the field `field`.
fn check(field: &'static str, rule: Result<(), String>) -> Result<(), Error> {
    rule.map_err(|rule| Error::config(field, rule))
}

/// Check a connection URL and parse it into sqlx's options. No message repeats the URL's
/// password, nor any part of the URL that might be one.
fn parse_url(url: &str) -> Result<MySqlConnectOptions, Error> {
    const EXPECTED: &str =
        "expected `mysql://[user[:password]@]host[:port][/database][?param=value&...]`";
    let parts = UrlParts::new(split_server_url(url, EXPECTED)?);
    check_scheme(
        parts.scheme,
        &["mysql", "mariadb"],
        &parts.display(),
        is_plain_name,
    )?;
    for (key, value) in parts.parameters() {
        if !URL_PARAMETERS.contains(&key) {
            return Err(unknown_parameter(
                key,
                &parts.display(),
                &URL_PARAMETERS.join(", "),
                "MySqlConfig",
                is_plain_name,
            ));
        }
        let Some(value) = value.and_then(decode_form) else {
            return Err(Error::config(
                "url",
                format!(
                    "parameter `{key}` needs a value (valid UTF-8, percent-encoded) in `{}`",
                    parts.display()
                ),
            ));
        };
        parameter_rule(key, &value).map_err(|rule| {
            Error::config(
                "url",
                format!("parameter `{key}` in `{}` {rule}", parts.display()),
            )
        })?;
    }
    type Rule = fn(&str) -> Result<(), String>;
    let named: [(&str, Option<&str>, Rule); 2] = [
        ("user name", parts.username(), username_rule),
        ("database", parts.database(), database_rule),
    ];
    for (what, value, rule) in named {
        let Some(value) = value else {
            continue;
        };
        let Some(value) = decode_percent(value) else {
            return Err(Error::config(
                "url",
                format!(
                    "the {what} in `{}` is not valid percent-encoded UTF-8",
                    parts.display()
                ),
            ));
        };
        rule(&value).map_err(|rule| {
            Error::config("url", format!("the {what} in `{}` {rule}", parts.display()))
        })?;
    }
    MySqlConnectOptions::from_str(url).map_err(|err| {
        Error::config(
            "url",
            format!("`{}` is not a valid MySQL URL: {err}", parts.display()),
        )
    })
}

/// The rule a URL parameter's (decoded) value breaks, if any.
fn parameter_rule(key: &str, value: &str) -> Result<(), String> {
    match key {
        "ssl-mode" | "sslmode" => MySqlSslMode::from_str(value).map(drop).map_err(|_| {
            "must be one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY".to_owned()
        }),
        "charset" | "collation" => sql_name_rule(value),
        "timezone" | "time-zone" => timezone_rule(value),
        "statement-cache-capacity" => match value.parse::<usize>() {
            Ok(capacity) => cache_capacity_rule(capacity),
            Err(_) => Err("must be a whole number".to_owned()),
        },
        _ if value.is_empty() => Err("must not be empty".to_owned()),
        _ => Ok(()),
    }
}

/// A short name made of ASCII letters, digits and `_-.+`: safe to repeat in a message.
fn is_plain_name(text: &str) -> bool {
    nebula_resource_sqlx::config::is_plain_name(text, b"_-.+")
}

/// A connection URL cut where a URL parser cuts it, for checks and display.
struct UrlParts<'a> {
    scheme: &'a str,
    /// `[userinfo@]host[:port]`.
    authority: &'a str,
    /// Everything after the authority and before the query, without the leading `/`.
    path: &'a str,
    query: Option<&'a str>,
}

impl<'a> UrlParts<'a> {
    /// The parts of a URL cut by [`split_scheme`].
    fn new((scheme, rest): (&'a str, &'a str)) -> Self {
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(authority_end);
        let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        Self {
            scheme,
            authority,
            path: path.strip_prefix('/').unwrap_or(path),
            query,
        }
    }

    fn username(&self) -> Option<&'a str> {
        let (userinfo, _) = self.authority.rsplit_once('@')?;
        let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
        (!user.is_empty()).then_some(user)
    }

    fn database(&self) -> Option<&'a str> {
        (!self.path.is_empty()).then_some(self.path)
    }

    fn parameters(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
        query_parameters(self.query)
    }

    /// The URL with the password replaced by `***`, and the values of parameters other than a
    /// few known harmless ones (`ssl-mode`, `charset`, …) too.
    fn display(&self) -> String {
        let mut shown = redact_url(&format!(
            "{}://{}/{}",
            self.scheme, self.authority, self.path
        ));
        if self.path.is_empty() {
            shown.pop();
        }
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

impl fmt::Display for MySqlConfig {
    /// Where the configuration connects to, never with the password: the URL (password
    /// replaced by `***`) or `mysql://user@host:port/database`, then any parts set over it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown_url = self.url.as_ref().map(|url| display_url(url.expose()));
        let target = ServerTarget {
            scheme: "mysql",
            shown_url: shown_url.as_deref(),
            host: self.host.as_deref(),
            port: self.port,
            socket: self.socket.as_deref(),
            username: self.username.as_deref(),
            database: self.database.as_deref(),
        };
        fmt::Display::fmt(&target, f)
    }
}

impl fmt::Debug for MySqlConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MySqlConfig")
            .field(
                "url",
                &self.url.as_ref().map(|url| display_url(url.expose())),
            )
            .field("host", &self.host)
            .field("port", &self.port)
            .field("socket", &self.socket)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("database", &self.database)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_cache_capacity", &self.statement_cache_capacity)
            .field("ssl_mode", &self.ssl_mode)
            .field("ssl_ca", &self.ssl_ca)
            .field("charset", &self.charset)
            .field("collation", &self.collation)
            .field("timezone", &self.timezone)
            .field("on_session_change", &self.on_session_change)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use nebula_resource::ErrorKind;

    use super::*;

    const PASSWORD: &str = "s3cr3tpw";

    #[track_caller]
    fn rejected(config: &MySqlConfig, field: &str) -> String {
        let err = config.validate().expect_err("config must be rejected");
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert_eq!(err.field(), Some(field), "{err}");
        let text = format!("{err} {err:?}");
        assert!(!text.contains(PASSWORD), "password leaked: {text}");
        text
    }

    #[test]
    fn urls_parse_into_options() {
        let config = MySqlConfig::new(format!(
            "mysql://app:{PASSWORD}@db.internal:3307/orders?ssl-mode=disabled&charset=utf8mb4\
             &collation=utf8mb4_unicode_ci&statement-cache-capacity=50"
        ));
        config.validate().unwrap();
        let options = config.connect_options().unwrap();
        assert_eq!(options.get_host(), "db.internal");
        assert_eq!(options.get_port(), 3307);
        assert_eq!(options.get_username(), "app");
        assert_eq!(options.get_database(), Some("orders"));
        assert!(matches!(options.get_ssl_mode(), MySqlSslMode::Disabled));
        assert_eq!(options.get_collation(), Some("utf8mb4_unicode_ci"));
    }

    #[test]
    fn the_mariadb_scheme_and_a_socket_are_accepted() {
        MySqlConfig::new("mariadb://root@localhost/test")
            .validate()
            .unwrap();
        let config = MySqlConfig::new("mysql://root@localhost/test?socket=%2Frun%2Fmysqld.sock");
        config.validate().unwrap();
        assert_eq!(
            config.connect_options().unwrap().get_socket(),
            Some(&PathBuf::from("/run/mysqld.sock"))
        );
    }

    #[test]
    fn explicit_parts_override_the_url() {
        let config = MySqlConfig::new(format!("mysql://app:{PASSWORD}@db.internal/orders"))
            .host("replica.internal")
            .port(3308)
            .username("reader")
            .password("other")
            .database("reports")
            .ssl_mode(SslMode::Required)
            .charset("utf8mb4")
            .collation("utf8mb4_bin")
            .statement_cache_capacity(20)
            .timezone(None);
        config.validate().unwrap();
        let options = config.connect_options().unwrap();
        assert_eq!(options.get_host(), "replica.internal");
        assert_eq!(options.get_port(), 3308);
        assert_eq!(options.get_username(), "reader");
        assert_eq!(options.get_database(), Some("reports"));
        assert!(matches!(options.get_ssl_mode(), MySqlSslMode::Required));
        assert_eq!(options.get_collation(), Some("utf8mb4_bin"));
    }

    #[test]
    fn fields_alone_make_a_config() {
        let config = MySqlConfig::from_host("127.0.0.1")
            .port(3306)
            .username("root")
            .database("test");
        config.validate().unwrap();
        assert_eq!(config.to_string(), "mysql://root@127.0.0.1:3306/test");
        let options = config.connect_options().unwrap();
        assert_eq!(options.get_host(), "127.0.0.1");
    }

    #[test]
    fn bad_urls_are_rejected_naming_the_field() {
        for url in [
            String::new(),
            "   ".to_owned(),
            "not a url".to_owned(),
            format!("postgres://root:{PASSWORD}@127.0.0.1/test"),
            format!("mysql://root:{PASSWORD}@127.0.0.1:99999/test"),
            format!("mysql://root:{PASSWORD}@127.0.0.1/test?sslmode=bogus"),
            format!("mysql://root:{PASSWORD}@127.0.0.1/test?ssl_mode=required"),
            format!("mysql://root:{PASSWORD}@127.0.0.1/test?statement-cache-capacity=0"),
            format!("mysql://root:{PASSWORD}@127.0.0.1/test?statement-cache-capacity=lots"),
            format!("mysql://root:{PASSWORD}@127.0.0.1/test?charset=utf8'--"),
            format!("mysql://root:{PASSWORD}@127.0.0.1/test?timezone=%27%3B%20DROP"),
            format!("mysql://root:{PASSWORD}@127.0.0.1/test?charset"),
            format!("mysql://root:{PASSWORD}@127.0.0.1/{}", "d".repeat(65)),
            format!("mysql://root:{PASSWORD}@127.0.0.1/a%ZZ"),
            format!("mysql://root:{PASSWORD}/x@127.0.0.1/test"),
        ] {
            let text = rejected(&MySqlConfig::new(url.clone()), "url");
            assert!(
                !text.contains(PASSWORD),
                "{url:?} leaked its password: {text}"
            );
        }
    }

    #[test]
    fn messages_show_the_url_redacted() {
        let text = rejected(
            &MySqlConfig::new(format!(
                "postgres://root:{PASSWORD}@127.0.0.1:3306/test?ssl-mode=required"
            )),
            "url",
        );
        assert!(
            text.contains("postgres://root:***@127.0.0.1:3306/test?ssl-mode=required"),
            "{text}"
        );
        let text = rejected(
            &MySqlConfig::new(format!("mysql://root@127.0.0.1/test?password={PASSWORD}")),
            "url",
        );
        assert!(text.contains("password=***"), "{text}");
    }

    #[test]
    fn bad_fields_are_rejected_naming_the_field() {
        let base = || MySqlConfig::from_host("127.0.0.1");
        rejected(&MySqlConfig::from_host(""), "host");
        rejected(&MySqlConfig::from_host("db internal"), "host");
        rejected(&base().port(0), "port");
        rejected(&base().socket(""), "socket");
        rejected(&base().username(""), "username");
        rejected(&base().username("u".repeat(81)), "username");
        rejected(&base().database(""), "database");
        rejected(&base().database("orders "), "database");
        rejected(&base().database("d".repeat(65)), "database");
        rejected(&base().password(format!("{PASSWORD}\0")), "password");
        rejected(&base().connect_timeout(Duration::ZERO), "connect_timeout");
        rejected(
            &base().connect_timeout(Duration::from_secs(601)),
            "connect_timeout",
        );
        rejected(
            &base().statement_cache_capacity(0),
            "statement_cache_capacity",
        );
        rejected(
            &base().statement_cache_capacity(MAX_STATEMENT_CACHE_CAPACITY + 1),
            "statement_cache_capacity",
        );
        rejected(&base().ssl_ca(""), "ssl_ca");
        rejected(&base().charset("utf8mb4; DROP"), "charset");
        rejected(&base().collation(""), "collation");
        rejected(&base().timezone("+00:00'".to_owned()), "timezone");
        rejected(&base().timezone(String::new()), "timezone");
        rejected(&MySqlConfig::from_host("x").host(""), "host");
    }

    #[test]
    fn a_config_without_a_server_is_rejected() {
        let mut config = MySqlConfig::from_host("127.0.0.1");
        config.host = None;
        rejected(&config, "url");
    }

    #[test]
    fn good_timezones_pass() {
        for tz in [
            "+00:00",
            "-05:30",
            "SYSTEM",
            "Europe/Paris",
            "America/Argentina/Buenos_Aires",
        ] {
            MySqlConfig::from_host("h")
                .timezone(tz.to_owned())
                .validate()
                .unwrap();
        }
    }

    #[test]
    fn debug_and_display_never_show_the_password() {
        let config = MySqlConfig::new(format!(
            "mysql://root:{PASSWORD}@127.0.0.1:3306/test?ssl-key=%2Fkeys%2F{PASSWORD}"
        ))
        .password(PASSWORD);
        for text in [
            format!("{config:?}"),
            format!("{config:#?}"),
            config.to_string(),
        ] {
            assert!(!text.contains(PASSWORD), "{text}");
        }
        assert_eq!(
            config.to_string(),
            "mysql://root:***@127.0.0.1:3306/test?ssl-key=***"
        );
        let malformed = MySqlConfig::new(format!("mysql://root:{PASSWORD}/x@h/db"));
        assert!(!format!("{malformed:?} {malformed}").contains(PASSWORD));
    }

    #[test]
    fn defaults_are_documented_values() {
        let config = MySqlConfig::from_host("h");
        assert_eq!(config.get_connect_timeout(), DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(config.get_on_session_change(), OnSessionChange::Retire);
        let options = config.connect_options().unwrap();
        assert_eq!(options.get_port(), 3306);
        assert_eq!(options.get_username(), "root");
        assert_eq!(options.get_charset(), "utf8mb4");
        assert!(matches!(options.get_ssl_mode(), MySqlSslMode::Preferred));
    }
}
