//! [`RedisConfig`]: where the server is and how to talk to it. One config serves both
//! [`Redis`](crate::Redis) and [`RedisDedicated`](crate::RedisDedicated).

use std::fmt;
use std::time::Duration;

use nebula_resource::{Config, CreateContext, Error, Secret, redact_url};
use redis::aio::ConnectionManagerConfig;
use redis::io::tcp::TcpSettings;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion};

use crate::error::Secrets;

/// Largest database index accepted. Redis has 16 databases unless `databases` is raised; anything
/// above this is a typo.
pub const MAX_DB: i64 = 65_535;

/// Longest timeout or delay accepted (one hour): anything longer is a unit mistake.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Most reconnect attempts accepted for one reconnection of the resident connection.
pub const MAX_RECONNECT_RETRIES: usize = 100;

/// Longest client name accepted, in bytes.
pub const MAX_CLIENT_NAME_LEN: usize = 128;

/// URL schemes accepted: plain TCP and Unix sockets (`valkey` spellings included).
const TCP_SCHEMES: [&str; 2] = ["redis", "valkey"];
const UNIX_SCHEMES: [&str; 3] = ["unix", "redis+unix", "valkey+unix"];
const TLS_SCHEMES: [&str; 2] = ["rediss", "valkeys"];

/// Settings of a Redis connection, built by value from [`RedisConfig::new`]:
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::Config;
/// use nebula_resource_redis::RedisConfig;
///
/// let config = RedisConfig::new("redis://127.0.0.1:6379")
///     .db(2)
///     .password("s3cret")
///     .response_timeout(Duration::from_secs(1))
///     .client_name("billing-worker");
/// assert!(config.validate().is_ok());
/// // The password never prints.
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
///
/// The URL takes the forms the `redis` crate accepts:
/// `redis://[[user]:password@]host[:port][/db][?protocol=resp3]` for TCP, and
/// `unix:///path/to/redis.sock[?db=N&user=U&pass=P]` (or `redis+unix://`) for a Unix socket.
/// TLS (`rediss://`) is not supported by this build: it is rejected by [`validate`](Config::validate).
/// Settings made with the builder methods ([`db`](Self::db), [`username`](Self::username),
/// [`password`](Self::password), [`protocol`](Self::protocol)) override the URL's.
#[derive(Clone)]
pub struct RedisConfig {
    url: String,
    db: Option<i64>,
    username: Option<String>,
    password: Option<Secret>,
    protocol: Option<ProtocolVersion>,
    connect_timeout: Duration,
    response_timeout: Option<Duration>,
    client_name: Option<String>,
    reconnect_retries: usize,
    reconnect_max_delay: Duration,
}

impl RedisConfig {
    /// Connect to the server at `url`; every other setting has its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            db: None,
            username: None,
            password: None,
            protocol: None,
            connect_timeout: Duration::from_secs(5),
            response_timeout: Some(Duration::from_secs(5)),
            client_name: None,
            reconnect_retries: 6,
            reconnect_max_delay: Duration::from_secs(2),
        }
    }

    /// The database to `SELECT` after connecting. Defaults to the URL's (its path for TCP, its
    /// `db` parameter for a Unix socket), else 0; must be in `0..=`[`MAX_DB`].
    #[must_use]
    pub fn db(mut self, db: i64) -> Self {
        self.db = Some(db);
        self
    }

    /// The ACL user to authenticate as. Defaults to the URL's, else none (the `default` user).
    #[must_use]
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The password to authenticate with. Defaults to the URL's, else none (no `AUTH`).
    /// It never appears in `Debug` output or in an error message.
    #[must_use]
    pub fn password(mut self, password: impl Into<Secret>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The protocol version. Defaults to the URL's `protocol` parameter, else RESP2.
    /// Pub/sub on a [`DedicatedConnection`](crate::DedicatedConnection) needs RESP3 (Redis 6+).
    #[must_use]
    pub fn protocol(mut self, protocol: ProtocolVersion) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Longest one connection attempt may take, handshake (`AUTH`, `SELECT`) included.
    /// Defaults to 5 s; must be greater than zero and at most [`MAX_TIMEOUT`].
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest to wait for the reply to one command (or pipeline); `None` waits forever.
    /// Defaults to 5 s; when set, must be greater than zero and at most [`MAX_TIMEOUT`].
    ///
    /// On a [`DedicatedConnection`](crate::DedicatedConnection), blocking commands (`BLPOP`,
    /// `BRPOP`, `BLMOVE`, `BLMPOP`, `BRPOPLPUSH`, `BZPOPMIN`, `BZPOPMAX`, `BZMPOP`,
    /// `XREAD`/`XREADGROUP` with `BLOCK`, `WAIT`, `WAITAOF`) are exempt: their own timeout
    /// argument bounds them. On the resident [`RedisConnection`](crate::RedisConnection) it bounds
    /// every command, the wait for a reconnection under way included, so do not send blocking
    /// commands there.
    #[must_use]
    pub fn response_timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.response_timeout = timeout.into();
        self
    }

    /// The name set with `CLIENT SETNAME` on every connection (shown by `CLIENT LIST`); the
    /// resident connection sets it again after it reconnects. Defaults to none; must be 1 to
    /// [`MAX_CLIENT_NAME_LEN`] bytes of printable ASCII without spaces.
    #[must_use]
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }

    /// [`Redis`](crate::Redis) only: how many times one reconnection of the resident connection
    /// (and its first connection) is retried, with exponential backoff from 100 ms, before the
    /// commands waiting for it fail. The next command starts a new reconnection.
    /// Defaults to 6; must be at most [`MAX_RECONNECT_RETRIES`].
    #[must_use]
    pub fn reconnect_retries(mut self, retries: usize) -> Self {
        self.reconnect_retries = retries;
        self
    }

    /// [`Redis`](crate::Redis) only: the longest backoff between two reconnect attempts.
    /// Defaults to 2 s; must be greater than zero and at most [`MAX_TIMEOUT`].
    #[must_use]
    pub fn reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay;
        self
    }

    /// The URL as it may be shown: its password and secret query parameters replaced by `***`.
    /// A URL that does not parse is not shown at all, since where its password is cannot be told.
    pub fn redacted_url(&self) -> String {
        match scheme_of(&self.url) {
            Some(scheme) if parses_as_url(&self.url, scheme) => {
                self.secrets().scrub(&redact_url(&self.url))
            }
            _ => String::from("<malformed URL, not shown>"),
        }
    }

    pub(crate) fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub(crate) fn get_response_timeout(&self) -> Option<Duration> {
        self.response_timeout
    }

    pub(crate) fn get_client_name(&self) -> Option<&str> {
        self.client_name.as_deref()
    }

    /// Every secret this config holds, to scrub from driver messages.
    pub(crate) fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::default();
        if let Some(password) = &self.password {
            secrets.add(password.expose());
        }
        if let Some(url) = redis::parse_redis_url(&self.url) {
            if let Some(raw) = url.password() {
                secrets.add(raw);
            }
            if let Ok(info) = url.into_connection_info()
                && let Some(decoded) = info.redis_settings().password()
            {
                secrets.add(decoded);
            }
        }
        secrets
    }

    /// The driver's connection settings: the URL with this config's overrides applied.
    ///
    /// # Errors
    ///
    /// A [`Config`](nebula_resource::ErrorKind::Config) error for an invalid URL or value.
    /// The connection settings for one create, with the registration's credentials (the
    /// current generation) in place of the config's own, and the secrets to scrub from errors.
    pub(crate) fn connection_for(
        &self,
        ctx: &CreateContext,
    ) -> Result<(ConnectionInfo, Secrets), Error> {
        let mut info = self.connection_info()?;
        let mut secrets = self.secrets();
        if let Some(credentials) = ctx.credentials() {
            let mut redis = info.redis_settings().clone();
            if let Some(username) = credentials.get_username() {
                redis = redis.set_username(username);
            }
            redis = redis.set_password(credentials.secret().expose());
            secrets.add(credentials.secret().expose());
            info = info.set_redis_settings(redis);
        }
        Ok((info, secrets))
    }

    pub(crate) fn connection_info(&self) -> Result<ConnectionInfo, Error> {
        let info = self.parse_url()?;
        let mut redis = info.redis_settings().clone();
        if let Some(db) = self.db {
            redis = redis.set_db(db);
        }
        if let Some(username) = &self.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password.expose());
        }
        if let Some(protocol) = self.protocol {
            redis = redis.set_protocol(protocol);
        }
        // Commands are small writes answered by small reads: Nagle's algorithm only adds latency.
        Ok(info
            .set_redis_settings(redis)
            .set_tcp_settings(TcpSettings::default().set_nodelay(true)))
    }

    /// The resident connection's reconnect and timeout settings. No response timeout of the
    /// driver's: `RedisConnection` bounds each whole command by `response_timeout` (a wait for
    /// a reconnection included), as `DedicatedConnection` does, so a second timer per command
    /// would only repeat it.
    pub(crate) fn manager_config(&self) -> ConnectionManagerConfig {
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None)
            .set_number_of_retries(self.reconnect_retries)
            .set_max_delay(self.reconnect_max_delay)
    }

    fn parse_url(&self) -> Result<ConnectionInfo, Error> {
        let secrets = self.secrets();
        if self.url.trim().is_empty() {
            return Err(Error::config("url", "must not be empty"));
        }
        let Some(scheme) = scheme_of(&self.url) else {
            return Err(Error::config(
                "url",
                "is not a URL (no `scheme://`); expected redis://host[:port][/db] or unix:///path/to/redis.sock",
            ));
        };
        if !parses_as_url(&self.url, scheme) {
            return Err(Error::config(
                "url",
                "is malformed: a bad host, port or character (it is not shown, as it may hold a password); expected redis://[[user]:password@]host[:port][/db]",
            ));
        }
        let shown = secrets.scrub(&redact_url(&self.url));
        let lower = scheme.to_ascii_lowercase();
        if TLS_SCHEMES.contains(&lower.as_str()) {
            return Err(Error::config(
                "url",
                format!(
                    "`{shown}`: TLS (`{scheme}://`) is not supported by this build of nebula-resource-redis; use redis:// on a trusted network or a TLS-terminating proxy"
                ),
            ));
        }
        if !TCP_SCHEMES.contains(&lower.as_str()) && !UNIX_SCHEMES.contains(&lower.as_str()) {
            return Err(Error::config(
                "url",
                format!(
                    "`{shown}`: scheme `{scheme}` is not a Redis scheme; use redis:// (TCP) or unix:// / redis+unix:// (Unix socket)"
                ),
            ));
        }
        let info = redis::parse_redis_url(&self.url)
            .ok_or_else(|| Error::config("url", format!("`{shown}` is not a valid Redis URL")))?
            .into_connection_info()
            .map_err(|err| {
                let detail = secrets.scrub(&err.to_string());
                Error::config(
                    "url",
                    format!("`{shown}` is not a valid Redis URL: {detail}"),
                )
            })?;
        if let ConnectionAddr::Tcp(host, _) = info.addr()
            && host.is_empty()
        {
            return Err(Error::config("url", format!("`{shown}` has no host")));
        }
        Ok(info)
    }
}

/// The scheme of `url`: the text before `://`, if it looks like one.
fn scheme_of(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    let valid = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some(scheme)
}

/// Whether `url` is well formed apart from its scheme, so that [`redact_url`] finds its parts
/// where the driver does.
fn parses_as_url(url: &str, scheme: &str) -> bool {
    let probe_scheme = if UNIX_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
        "unix"
    } else {
        "redis"
    };
    redis::parse_redis_url(&format!("{probe_scheme}{}", &url[scheme.len()..])).is_some()
}

fn check_timeout(field: &'static str, value: Duration) -> Result<(), Error> {
    if value.is_zero() {
        return Err(Error::config(field, "must be greater than zero"));
    }
    if value > MAX_TIMEOUT {
        return Err(Error::config(
            field,
            format!("must be at most {MAX_TIMEOUT:?} (got {value:?})"),
        ));
    }
    Ok(())
}

impl Config for RedisConfig {
    /// Check every setting: the URL parses, has a supported scheme and a host; the database index,
    /// user name, password, client name, timeouts and reconnect settings are in range.
    /// Messages name the field and show the URL only with its password replaced by `***`.
    fn validate(&self) -> Result<(), Error> {
        let info = self.parse_url()?;
        let db = self.db.unwrap_or(info.redis_settings().db());
        if !(0..=MAX_DB).contains(&db) {
            let from = if self.db.is_some() {
                ""
            } else {
                " from the URL"
            };
            return Err(Error::config(
                "db",
                format!("must be in 0..={MAX_DB} (got {db}{from})"),
            ));
        }
        if let Some(username) = &self.username {
            if username.is_empty() {
                return Err(Error::config(
                    "username",
                    "must not be empty (leave it unset for the `default` user)",
                ));
            }
            if username
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(Error::config(
                    "username",
                    "must not hold whitespace or control characters",
                ));
            }
        }
        if let Some(password) = &self.password
            && password.is_empty()
        {
            return Err(Error::config(
                "password",
                "must not be empty (leave it unset to skip AUTH)",
            ));
        }
        if let Some(name) = &self.client_name {
            if name.is_empty() || name.len() > MAX_CLIENT_NAME_LEN {
                return Err(Error::config(
                    "client_name",
                    format!(
                        "must be 1 to {MAX_CLIENT_NAME_LEN} bytes long (got {})",
                        name.len()
                    ),
                ));
            }
            if let Some(bad) = name.chars().find(|c| !matches!(c, '!'..='~')) {
                return Err(Error::config(
                    "client_name",
                    format!(
                        "must be printable ASCII without spaces (Redis rejects others); found {bad:?}"
                    ),
                ));
            }
        }
        check_timeout("connect_timeout", self.connect_timeout)?;
        if let Some(timeout) = self.response_timeout {
            check_timeout("response_timeout", timeout)?;
        }
        if self.reconnect_retries > MAX_RECONNECT_RETRIES {
            return Err(Error::config(
                "reconnect_retries",
                format!(
                    "must be at most {MAX_RECONNECT_RETRIES} (got {})",
                    self.reconnect_retries
                ),
            ));
        }
        check_timeout("reconnect_max_delay", self.reconnect_max_delay)?;
        Ok(())
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("protocol", &self.protocol)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("client_name", &self.client_name)
            .field("reconnect_retries", &self.reconnect_retries)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(config: &RedisConfig) -> Option<&'static str> {
        config.validate().err().and_then(|err| err.field())
    }

    #[test]
    fn defaults_are_valid_and_overrides_apply() {
        let config = RedisConfig::new("redis://127.0.0.1:6379/3?protocol=resp3");
        config.validate().unwrap();
        let info = config.connection_info().unwrap();
        assert_eq!(info.redis_settings().db(), 3);
        assert_eq!(info.redis_settings().protocol(), ProtocolVersion::RESP3);
        assert!(info.tcp_settings().nodelay());

        let info = config
            .clone()
            .db(5)
            .username("app")
            .password("pw")
            .protocol(ProtocolVersion::RESP2)
            .connection_info()
            .unwrap();
        assert_eq!(info.redis_settings().db(), 5);
        assert_eq!(info.redis_settings().username(), Some("app"));
        assert_eq!(info.redis_settings().password(), Some("pw"));
        assert_eq!(info.redis_settings().protocol(), ProtocolVersion::RESP2);
    }

    #[test]
    fn unix_sockets_are_accepted() {
        for url in [
            "unix:///run/redis/redis.sock",
            "redis+unix:///run/redis/redis.sock?db=2",
        ] {
            let config = RedisConfig::new(url);
            config.validate().unwrap();
            assert!(matches!(
                config.connection_info().unwrap().addr(),
                ConnectionAddr::Unix(_)
            ));
        }
    }

    #[test]
    fn every_rule_names_its_field() {
        let url = "redis://127.0.0.1";
        let cases = [
            (RedisConfig::new(""), "url"),
            (RedisConfig::new("   "), "url"),
            (RedisConfig::new("127.0.0.1:6379"), "url"),
            (RedisConfig::new("http://127.0.0.1"), "url"),
            (RedisConfig::new("rediss://127.0.0.1"), "url"),
            (RedisConfig::new("redis://"), "url"),
            (RedisConfig::new("redis://0.0.0.0"), "url"),
            (RedisConfig::new("redis://127.0.0.1:99999"), "url"),
            (RedisConfig::new("redis://127.0.0.1/notanumber"), "url"),
            (RedisConfig::new("redis://127.0.0.1/?protocol=9"), "url"),
            (RedisConfig::new("redis://127.0.0.1/70000"), "db"),
            (RedisConfig::new(url).db(-1), "db"),
            (RedisConfig::new(url).db(MAX_DB + 1), "db"),
            (RedisConfig::new(url).username(""), "username"),
            (RedisConfig::new(url).username("a b"), "username"),
            (RedisConfig::new(url).password(""), "password"),
            (RedisConfig::new(url).client_name(""), "client_name"),
            (
                RedisConfig::new(url).client_name("has space"),
                "client_name",
            ),
            (
                RedisConfig::new(url).client_name("x".repeat(MAX_CLIENT_NAME_LEN + 1)),
                "client_name",
            ),
            (
                RedisConfig::new(url).connect_timeout(Duration::ZERO),
                "connect_timeout",
            ),
            (
                RedisConfig::new(url).connect_timeout(MAX_TIMEOUT * 2),
                "connect_timeout",
            ),
            (
                RedisConfig::new(url).response_timeout(Duration::ZERO),
                "response_timeout",
            ),
            (
                RedisConfig::new(url).response_timeout(Duration::from_secs(86_400)),
                "response_timeout",
            ),
            (
                RedisConfig::new(url).reconnect_retries(MAX_RECONNECT_RETRIES + 1),
                "reconnect_retries",
            ),
            (
                RedisConfig::new(url).reconnect_max_delay(Duration::ZERO),
                "reconnect_max_delay",
            ),
        ];
        for (config, field) in cases {
            assert_eq!(field_of(&config), Some(field), "{config:?}");
        }
        RedisConfig::new(url)
            .response_timeout(None)
            .validate()
            .unwrap();
    }

    #[test]
    fn no_message_and_no_debug_shows_a_password() {
        let secret = "s3cr3tpw";
        let configs = [
            RedisConfig::new(format!("redis://:{secret}@127.0.0.1:6379/70000")),
            RedisConfig::new(format!("rediss://user:{secret}@127.0.0.1:6379")),
            RedisConfig::new(format!("http://user:{secret}@127.0.0.1")),
            RedisConfig::new(format!("redis://user:{secret}@127.0.0.1/x")),
            RedisConfig::new(format!("redis://user:{secret}@127.0.0.1:notaport")),
            RedisConfig::new(format!("redis://:{secret}@/0")),
            RedisConfig::new(format!("redis//:{secret}@127.0.0.1")),
            RedisConfig::new(format!("redis://u:{secret}@127.0.0.1/?protocol=x{secret}")),
            RedisConfig::new(format!("unix:///tmp/r.sock?pass={secret}&db=-4")),
            RedisConfig::new("redis://127.0.0.1")
                .password(secret)
                .db(-1),
        ];
        for config in configs {
            let debug = format!("{config:?}");
            assert!(!debug.contains(secret), "{debug}");
            let err = config.validate().unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn the_redacted_url_keeps_what_helps() {
        let config = RedisConfig::new("redis://app:pw@cache.internal:6380/2");
        assert_eq!(
            config.redacted_url(),
            "redis://app:***@cache.internal:6380/2"
        );
        let err = RedisConfig::new("http://app:pw@cache.internal")
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().contains("http://app:***@cache.internal"),
            "{err}"
        );
    }
}
