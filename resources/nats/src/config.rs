//! [`NatsConfig`] (where the servers are, how to authenticate, every timeout and the reconnect
//! budget) and [`JetStreamConfig`] (the JetStream API prefix and its timeout).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use async_nats::ServerAddr;
use nebula_resource::{Config, CreateContext, Error, Secret, redact_url};

/// Longest timeout or delay accepted (ten minutes): anything longer is a unit mistake.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Shortest ping interval accepted: pinging more often only loads the server.
pub const MIN_PING_INTERVAL: Duration = Duration::from_millis(100);

/// Most reconnect attempts accepted for one loss of the connection.
pub const MAX_RECONNECT_ATTEMPTS: usize = 10_000;

/// Most servers accepted in one config.
pub const MAX_SERVERS: usize = 64;

/// URL schemes accepted: plain TCP, TLS and WebSocket.
const SCHEMES: [&str; 3] = ["nats", "tls", "ws"];

/// How the client authenticates when no credential provider is set on the registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Auth {
    None,
    UserPassword { user: String, password: Secret },
    Token(Secret),
}

/// Settings of the [`Nats`](crate::Nats) client, built by value from [`NatsConfig::new`]:
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::Config;
/// use nebula_resource_nats::NatsConfig;
///
/// let config = NatsConfig::new("nats://127.0.0.1:4222")
///     .server("nats://127.0.0.1:4223")
///     .user_password("orders", "s3cret")
///     .name("orders-api")
///     .publish_timeout(Duration::from_secs(1));
/// assert!(config.validate().is_ok());
/// // The password never prints.
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
///
/// Server URLs take the form `scheme://host[:port]` with scheme `nats` (port 4222 if omitted),
/// `tls` or `ws`; they may not carry a user or password (use [`user_password`](Self::user_password),
/// [`token`](Self::token) or a `CredentialProvider` on the registration, so that secrets never
/// sit in a URL that gets logged).
#[derive(Clone)]
pub struct NatsConfig {
    servers: Vec<String>,
    auth: Auth,
    name: Option<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    check_timeout: Duration,
    publish_timeout: Duration,
    drain_timeout: Duration,
    ping_interval: Duration,
    reconnect_attempts: usize,
    reconnect_max_delay: Duration,
    client_capacity: usize,
    health_subject_prefix: String,
}

impl NatsConfig {
    /// Connect to the server at `url`; every other setting has its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            servers: vec![url.into()],
            auth: Auth::None,
            name: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            check_timeout: Duration::from_secs(2),
            publish_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(4),
            ping_interval: Duration::from_secs(10),
            reconnect_attempts: 60,
            reconnect_max_delay: Duration::from_secs(1),
            client_capacity: 2048,
            health_subject_prefix: String::from("_nebula.health"),
        }
    }

    /// Connect to the servers at `urls` (at least one; the client picks among them at random and
    /// fails over between them).
    pub fn with_servers<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut config = Self::new(String::new());
        config.servers = urls.into_iter().map(Into::into).collect();
        config
    }

    /// Add one more server to fail over to. Defaults to none beyond the first.
    #[must_use]
    pub fn server(mut self, url: impl Into<String>) -> Self {
        self.servers.push(url.into());
        self
    }

    /// Authenticate as `user` with `password`. Defaults to no authentication. A credential
    /// provider on the registration takes precedence. The password never appears in `Debug`
    /// output or in an error message.
    #[must_use]
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<Secret>) -> Self {
        self.auth = Auth::UserPassword {
            user: user.into(),
            password: password.into(),
        };
        self
    }

    /// Authenticate with `token`. Defaults to no authentication. A credential provider on the
    /// registration takes precedence. The token never appears in `Debug` output or in an error
    /// message.
    #[must_use]
    pub fn token(mut self, token: impl Into<Secret>) -> Self {
        self.auth = Auth::Token(token.into());
        self
    }

    /// The client name the server shows in its connection list. Defaults to none; must be 1 to
    /// 256 bytes without whitespace or control characters.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Longest one connection attempt may take, TCP, TLS, `INFO`, `CONNECT` and the first
    /// `PONG` included. Defaults to 5 s; must be greater than zero and at most [`MAX_TIMEOUT`].
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest `Client::request` waits for its reply (the driver's request timeout). Defaults
    /// to 10 s; must be greater than zero and at most [`MAX_TIMEOUT`].
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Longest the health check's round trip may take. Defaults to 2 s; must be greater than
    /// zero and at most [`MAX_TIMEOUT`]. The registration's `HealthConfig::timeout` bounds the
    /// whole check too.
    #[must_use]
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// Longest [`NatsClient::publish_bounded`](crate::NatsClient::publish_bounded) and
    /// [`NatsClient::flush_bounded`](crate::NatsClient::flush_bounded) wait. Defaults to 5 s;
    /// must be greater than zero and at most [`MAX_TIMEOUT`].
    #[must_use]
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Longest `destroy` (on shutdown or when the instance is replaced) waits, in all: for the
    /// handles still held to be released (at most half of it), then for the client to flush,
    /// drain and report `Closed`. Defaults to 4 s; must be greater than zero and at most
    /// [`MAX_TIMEOUT`]. The pool's `recycle_timeout` (5 s by default) bounds `destroy` as well,
    /// so keep this below it.
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// How often the client pings the server; two unanswered pings mark the connection dead and
    /// start a reconnection. Defaults to 10 s; must be in [`MIN_PING_INTERVAL`]`..=`[`MAX_TIMEOUT`].
    #[must_use]
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// How many times async-nats tries to reconnect after an established connection is lost
    /// (across all servers) before it gives up and closes the client for good; the resource
    /// then reports the instance broken and the manager creates a new one under its retry
    /// policy and circuit breaker. The first connection is never retried by async-nats (see
    /// [`Nats`](crate::Nats)), but its attempts count against this budget, one per server.
    /// Defaults to 60; must be at least the number of servers and at most
    /// [`MAX_RECONNECT_ATTEMPTS`].
    #[must_use]
    pub fn reconnect_attempts(mut self, attempts: usize) -> Self {
        self.reconnect_attempts = attempts;
        self
    }

    /// The longest delay between two reconnect attempts; the delays grow from 10 ms, doubling,
    /// up to this. Defaults to 1 s; must be greater than zero and at most [`MAX_TIMEOUT`].
    #[must_use]
    pub fn reconnect_max_delay(mut self, delay: Duration) -> Self {
        self.reconnect_max_delay = delay;
        self
    }

    /// How many commands (publishes, subscribes) may wait for the connection, also while it
    /// reconnects; past it, publishing waits (and [`publish_bounded`](crate::NatsClient::publish_bounded)
    /// times out). Defaults to 2048; must be in `1..=1_048_576`.
    #[must_use]
    pub fn client_capacity(mut self, capacity: usize) -> Self {
        self.client_capacity = capacity;
        self
    }

    /// The subject prefix of the health check's request: each check sends to
    /// `<prefix>.<unique id>`, where nobody listens, and expects the server's "no responders"
    /// answer. Defaults to `_nebula.health`; must be a valid subject without wildcards. Change
    /// it if the account's permissions do not allow publishing there.
    #[must_use]
    pub fn health_subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.health_subject_prefix = prefix.into();
        self
    }

    /// The server URLs as they may be shown: with a password or token replaced by `***`.
    pub fn redacted_servers(&self) -> Vec<String> {
        self.servers.iter().map(|url| redact_server(url)).collect()
    }

    pub(crate) fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    pub(crate) fn get_request_timeout(&self) -> Duration {
        self.request_timeout
    }

    pub(crate) fn get_check_timeout(&self) -> Duration {
        self.check_timeout
    }

    pub(crate) fn get_publish_timeout(&self) -> Duration {
        self.publish_timeout
    }

    pub(crate) fn get_drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    pub(crate) fn get_ping_interval(&self) -> Duration {
        self.ping_interval
    }

    pub(crate) fn get_reconnect_attempts(&self) -> usize {
        self.reconnect_attempts
    }

    pub(crate) fn get_reconnect_max_delay(&self) -> Duration {
        self.reconnect_max_delay
    }

    pub(crate) fn get_client_capacity(&self) -> usize {
        self.client_capacity
    }

    pub(crate) fn get_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn get_health_subject_prefix(&self) -> &str {
        &self.health_subject_prefix
    }

    /// The parsed server addresses.
    ///
    /// # Errors
    ///
    /// A [`Config`](nebula_resource::ErrorKind::Config) error on field `servers`.
    pub(crate) fn addresses(&self) -> Result<Vec<ServerAddr>, Error> {
        if self.servers.is_empty() {
            return Err(Error::config("servers", "must list at least one server"));
        }
        if self.servers.len() > MAX_SERVERS {
            return Err(Error::config(
                "servers",
                format!(
                    "must list at most {MAX_SERVERS} servers (got {})",
                    self.servers.len()
                ),
            ));
        }
        self.servers.iter().map(|url| parse_server(url)).collect()
    }

    /// The authentication for one create: the registration's credentials (the current
    /// generation) if it has a provider, else this config's.
    pub(crate) fn auth_for(&self, ctx: &CreateContext) -> Auth {
        match ctx.credentials() {
            Some(credentials) => match credentials.get_username() {
                Some(user) => Auth::UserPassword {
                    user: user.to_owned(),
                    password: credentials.secret().clone(),
                },
                None => Auth::Token(credentials.secret().clone()),
            },
            None => self.auth.clone(),
        }
    }
}

/// `url` fit for a message: everything before its last `@` (a user and password, or a token
/// alone, which `redact_url` would keep as a user name) and secret query values replaced by
/// `***`, whether or not the URL is well formed.
fn redact_server(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let rest = match rest.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => rest.to_owned(),
    };
    redact_url(&format!("{scheme}{rest}"))
}

/// Parse one server URL, naming it only with its secrets redacted.
fn parse_server(url: &str) -> Result<ServerAddr, Error> {
    let shown = redact_server(url);
    let Some((scheme, _)) = url.split_once("://") else {
        return Err(Error::config(
            "servers",
            format!("`{shown}` has no scheme: write nats://host:port (or tls://, ws://)"),
        ));
    };
    if !SCHEMES.contains(&scheme) {
        return Err(Error::config(
            "servers",
            format!("`{shown}` has scheme `{scheme}`; only nats://, tls:// and ws:// are accepted"),
        ));
    }
    let addr = ServerAddr::from_str(url).map_err(|_| {
        // The parser's message may quote the URL: it is not shown.
        Error::config("servers", format!("`{shown}` is not a valid URL"))
    })?;
    if addr.has_user_pass() || addr.username().is_some() || url.contains('@') {
        return Err(Error::config(
            "servers",
            format!(
                "`{shown}` holds credentials; set them with `user_password`, `token` or a \
                 credential provider instead"
            ),
        ));
    }
    if addr.host().is_empty() {
        return Err(Error::config("servers", format!("`{shown}` has no host")));
    }
    Ok(addr)
}

fn check_timeout(field: &'static str, value: Duration, min: Duration) -> Result<(), Error> {
    if value.is_zero() || value < min {
        return Err(Error::config(
            field,
            if min.is_zero() {
                String::from("must be greater than zero")
            } else {
                format!("must be at least {min:?} (got {value:?})")
            },
        ));
    }
    if value > MAX_TIMEOUT {
        return Err(Error::config(
            field,
            format!("must be at most {MAX_TIMEOUT:?} (got {value:?})"),
        ));
    }
    Ok(())
}

/// Whether `subject` is a publishable subject: dot-separated non-empty tokens of printable
/// characters, no whitespace, no wildcards.
fn is_plain_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && token
                    .chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && c != '*' && c != '>')
        })
}

impl Config for NatsConfig {
    /// Check every setting: at least one server, each a `nats://`, `tls://` or `ws://` URL with a
    /// host and no credentials; the user, password or token not empty; the name, timeouts,
    /// reconnect budget, capacity and health subject in range. Messages name the field and show
    /// URLs only with their secrets redacted.
    fn validate(&self) -> Result<(), Error> {
        self.addresses()?;
        match &self.auth {
            Auth::None => {}
            Auth::UserPassword { user, password } => {
                if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(Error::config(
                        "user",
                        "must not be empty nor hold whitespace or control characters",
                    ));
                }
                if password.is_empty() {
                    return Err(Error::config("password", "must not be empty"));
                }
            }
            Auth::Token(token) => {
                if token.is_empty() {
                    return Err(Error::config("token", "must not be empty"));
                }
            }
        }
        if let Some(name) = &self.name
            && (name.is_empty()
                || name.len() > 256
                || name.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return Err(Error::config(
                "name",
                "must be 1 to 256 bytes without whitespace or control characters",
            ));
        }
        check_timeout("connect_timeout", self.connect_timeout, Duration::ZERO)?;
        check_timeout("request_timeout", self.request_timeout, Duration::ZERO)?;
        check_timeout("check_timeout", self.check_timeout, Duration::ZERO)?;
        check_timeout("publish_timeout", self.publish_timeout, Duration::ZERO)?;
        check_timeout("drain_timeout", self.drain_timeout, Duration::ZERO)?;
        check_timeout("ping_interval", self.ping_interval, MIN_PING_INTERVAL)?;
        check_timeout(
            "reconnect_max_delay",
            self.reconnect_max_delay,
            Duration::ZERO,
        )?;
        if self.reconnect_attempts < self.servers.len()
            || self.reconnect_attempts > MAX_RECONNECT_ATTEMPTS
        {
            return Err(Error::config(
                "reconnect_attempts",
                format!(
                    "must be in {}..={MAX_RECONNECT_ATTEMPTS}, at least one per server (got {})",
                    self.servers.len(),
                    self.reconnect_attempts
                ),
            ));
        }
        if !(1..=1_048_576).contains(&self.client_capacity) {
            return Err(Error::config(
                "client_capacity",
                format!("must be in 1..=1048576 (got {})", self.client_capacity),
            ));
        }
        if !is_plain_subject(&self.health_subject_prefix) {
            return Err(Error::config(
                "health_subject_prefix",
                format!(
                    "must be a subject of non-empty tokens without whitespace or wildcards (got {:?})",
                    self.health_subject_prefix
                ),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.auth {
            Auth::None => String::from("none"),
            Auth::UserPassword { user, .. } => format!("user {user:?}, password [redacted]"),
            Auth::Token(_) => String::from("token [redacted]"),
        };
        f.debug_struct("NatsConfig")
            .field("servers", &self.redacted_servers())
            .field("auth", &auth)
            .field("name", &self.name)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("check_timeout", &self.check_timeout)
            .field("publish_timeout", &self.publish_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("reconnect_attempts", &self.reconnect_attempts)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .field("client_capacity", &self.client_capacity)
            .field("health_subject_prefix", &self.health_subject_prefix)
            .finish()
    }
}

/// Settings of the [`JetStream`](crate::JetStream) context, built by value from
/// [`JetStreamConfig::default`]:
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::Config;
/// use nebula_resource_nats::JetStreamConfig;
///
/// let config = JetStreamConfig::default()
///     .domain("hub")
///     .timeout(Duration::from_secs(2));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JetStreamConfig {
    domain: Option<String>,
    api_prefix: Option<String>,
    timeout: Duration,
    check_timeout: Duration,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            domain: None,
            api_prefix: None,
            timeout: Duration::from_secs(5),
            check_timeout: Duration::from_secs(2),
        }
    }
}

impl JetStreamConfig {
    /// The JetStream domain (API prefix `$JS.<domain>.API`). Defaults to none (the local
    /// account's JetStream, `$JS.API`); must be a single subject token. Exclusive with
    /// [`api_prefix`](Self::api_prefix).
    #[must_use]
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// A custom JetStream API prefix (an imported account's, say). Defaults to `$JS.API`; must
    /// be a subject without wildcards. Exclusive with [`domain`](Self::domain).
    #[must_use]
    pub fn api_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.api_prefix = Some(prefix.into());
        self
    }

    /// Longest a JetStream API request or a publish acknowledgement may take, and the whole of
    /// [`JetStreamContext::publish_acked`](crate::JetStreamContext::publish_acked).
    /// Defaults to 5 s; must be greater than zero and at most [`MAX_TIMEOUT`].
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Longest the health check (a `$JS.API.INFO` account request) may take. Defaults to 2 s;
    /// must be greater than zero and at most [`MAX_TIMEOUT`].
    #[must_use]
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    pub(crate) fn get_timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn get_check_timeout(&self) -> Duration {
        self.check_timeout
    }

    /// The API prefix to build the context with.
    pub(crate) fn prefix(&self) -> String {
        match (&self.domain, &self.api_prefix) {
            (Some(domain), _) => format!("$JS.{domain}.API"),
            (None, Some(prefix)) => prefix.clone(),
            (None, None) => String::from("$JS.API"),
        }
    }
}

impl Config for JetStreamConfig {
    /// Check the domain or API prefix (not both; valid subjects) and the timeouts.
    fn validate(&self) -> Result<(), Error> {
        if self.domain.is_some() && self.api_prefix.is_some() {
            return Err(Error::config(
                "domain",
                "set either `domain` or `api_prefix`, not both",
            ));
        }
        if let Some(domain) = &self.domain
            && (!is_plain_subject(domain) || domain.contains('.'))
        {
            return Err(Error::config(
                "domain",
                format!(
                    "must be one subject token without dots, whitespace or wildcards (got {domain:?})"
                ),
            ));
        }
        if let Some(prefix) = &self.api_prefix
            && !is_plain_subject(prefix)
        {
            return Err(Error::config(
                "api_prefix",
                format!("must be a subject without whitespace or wildcards (got {prefix:?})"),
            ));
        }
        check_timeout("timeout", self.timeout, Duration::ZERO)?;
        check_timeout("check_timeout", self.check_timeout, Duration::ZERO)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(config: &NatsConfig) -> Option<&'static str> {
        config.validate().err().and_then(|err| err.field())
    }

    #[test]
    fn defaults_are_valid() {
        NatsConfig::new("nats://127.0.0.1:4222").validate().unwrap();
        NatsConfig::new("tls://nats.internal:4443")
            .validate()
            .unwrap();
        NatsConfig::new("ws://127.0.0.1:8080").validate().unwrap();
        NatsConfig::with_servers(["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"])
            .validate()
            .unwrap();
        JetStreamConfig::default().validate().unwrap();
        assert_eq!(JetStreamConfig::default().prefix(), "$JS.API");
        assert_eq!(
            JetStreamConfig::default().domain("hub").prefix(),
            "$JS.hub.API"
        );
    }

    #[test]
    fn every_rule_names_its_field() {
        let url = "nats://127.0.0.1:4222";
        let cases = [
            (NatsConfig::with_servers(Vec::<String>::new()), "servers"),
            (NatsConfig::new(""), "servers"),
            (NatsConfig::new("127.0.0.1:4222"), "servers"),
            (NatsConfig::new("http://127.0.0.1:4222"), "servers"),
            (NatsConfig::new("wss://127.0.0.1:4222"), "servers"),
            (NatsConfig::new("nats://"), "servers"),
            (NatsConfig::new("nats://127.0.0.1:99999"), "servers"),
            (NatsConfig::new("nats://u:p@127.0.0.1:4222"), "servers"),
            (NatsConfig::new("nats://tok@127.0.0.1:4222"), "servers"),
            (NatsConfig::new(url).server("redis://127.0.0.1"), "servers"),
            (
                NatsConfig::with_servers(
                    (0..=MAX_SERVERS).map(|p| format!("nats://127.0.0.1:{p}")),
                )
                .reconnect_attempts(MAX_RECONNECT_ATTEMPTS),
                "servers",
            ),
            (NatsConfig::new(url).user_password("", "pw"), "user"),
            (NatsConfig::new(url).user_password("a b", "pw"), "user"),
            (NatsConfig::new(url).user_password("app", ""), "password"),
            (NatsConfig::new(url).token(""), "token"),
            (NatsConfig::new(url).name(""), "name"),
            (NatsConfig::new(url).name("has space"), "name"),
            (NatsConfig::new(url).name("x".repeat(257)), "name"),
            (
                NatsConfig::new(url).connect_timeout(Duration::ZERO),
                "connect_timeout",
            ),
            (
                NatsConfig::new(url).connect_timeout(MAX_TIMEOUT * 2),
                "connect_timeout",
            ),
            (
                NatsConfig::new(url).request_timeout(Duration::ZERO),
                "request_timeout",
            ),
            (
                NatsConfig::new(url).check_timeout(Duration::ZERO),
                "check_timeout",
            ),
            (
                NatsConfig::new(url).publish_timeout(Duration::ZERO),
                "publish_timeout",
            ),
            (
                NatsConfig::new(url).publish_timeout(MAX_TIMEOUT + Duration::from_secs(1)),
                "publish_timeout",
            ),
            (
                NatsConfig::new(url).drain_timeout(Duration::ZERO),
                "drain_timeout",
            ),
            (
                NatsConfig::new(url).ping_interval(Duration::from_millis(1)),
                "ping_interval",
            ),
            (
                NatsConfig::new(url).reconnect_max_delay(Duration::ZERO),
                "reconnect_max_delay",
            ),
            (
                NatsConfig::new(url).reconnect_attempts(0),
                "reconnect_attempts",
            ),
            (
                NatsConfig::new(url).reconnect_attempts(MAX_RECONNECT_ATTEMPTS + 1),
                "reconnect_attempts",
            ),
            (
                NatsConfig::new(url)
                    .server("nats://127.0.0.1:4223")
                    .reconnect_attempts(1),
                "reconnect_attempts",
            ),
            (NatsConfig::new(url).client_capacity(0), "client_capacity"),
            (
                NatsConfig::new(url).health_subject_prefix(""),
                "health_subject_prefix",
            ),
            (
                NatsConfig::new(url).health_subject_prefix("a..b"),
                "health_subject_prefix",
            ),
            (
                NatsConfig::new(url).health_subject_prefix("a.*"),
                "health_subject_prefix",
            ),
            (
                NatsConfig::new(url).health_subject_prefix("a.>"),
                "health_subject_prefix",
            ),
            (
                NatsConfig::new(url).health_subject_prefix("a b"),
                "health_subject_prefix",
            ),
        ];
        for (config, field) in cases {
            assert_eq!(field_of(&config), Some(field), "{config:?}");
        }
        let js = [
            (
                JetStreamConfig::default().domain("a").api_prefix("b"),
                "domain",
            ),
            (JetStreamConfig::default().domain("a.b"), "domain"),
            (JetStreamConfig::default().domain(""), "domain"),
            (JetStreamConfig::default().api_prefix("$JS.*"), "api_prefix"),
            (
                JetStreamConfig::default().timeout(Duration::ZERO),
                "timeout",
            ),
            (
                JetStreamConfig::default().check_timeout(MAX_TIMEOUT * 2),
                "check_timeout",
            ),
        ];
        for (config, field) in js {
            assert_eq!(
                config.validate().unwrap_err().field(),
                Some(field),
                "{config:?}"
            );
        }
    }

    #[test]
    fn no_message_and_no_debug_shows_a_secret() {
        let secret = "s3cr3tpw";
        let configs = [
            NatsConfig::new(format!("nats://app:{secret}@127.0.0.1:4222")),
            NatsConfig::new(format!("nats://{secret}@127.0.0.1:4222")),
            NatsConfig::new(format!("http://app:{secret}@127.0.0.1")),
            NatsConfig::new(format!("nats://app:{secret}@127.0.0.1:notaport")),
            NatsConfig::new(format!("nats//app:{secret}@127.0.0.1")),
            NatsConfig::new(format!("nats://127.0.0.1:4222?token={secret}")).token(""),
            NatsConfig::new("nats://127.0.0.1:4222")
                .user_password("app", secret)
                .connect_timeout(Duration::ZERO),
            NatsConfig::new("nats://127.0.0.1:4222")
                .token(secret)
                .name(""),
        ];
        for config in configs {
            let debug = format!("{config:?} {:?}", config.redacted_servers());
            assert!(!debug.contains(secret), "{debug}");
            let err = config.validate().unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn messages_show_the_redacted_url() {
        let err = NatsConfig::new("http://app:pw@nats.internal:4222")
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().contains("http://***@nats.internal:4222"),
            "{err}"
        );
        assert!(
            err.to_string().contains("only nats://, tls:// and ws://"),
            "{err}"
        );
    }
}
