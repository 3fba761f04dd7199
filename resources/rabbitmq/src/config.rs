//! [`RabbitMqConfig`] (where the brokers are and how to reach them) and
//! [`RabbitMqChannelConfig`] (how the pooled channels behave).

use std::fmt;
use std::time::Duration;

use lapin::ConnectionProperties;
use lapin::uri::{AMQPScheme, AMQPUri};
use nebula_resource::{Config, CreateContext, Error, Secret, redact_url};
use url::{Host, Url};

use crate::error::Secrets;

/// Longest timeout accepted (one hour): anything longer is a unit mistake.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Longest heartbeat interval accepted (ten minutes). RabbitMQ's default is 60 s; a longer
/// interval only delays noticing a dead peer.
pub const MAX_HEARTBEAT: Duration = Duration::from_secs(600);

/// Longest virtual host name, connection name or user name accepted, in bytes (an AMQP short
/// string).
pub const MAX_NAME_LEN: usize = 255;

/// Settings of the [`RabbitMq`](crate::RabbitMq) connection, built by value from
/// [`RabbitMqConfig::new`]:
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::Config;
/// use nebula_resource_rabbitmq::RabbitMqConfig;
///
/// let config = RabbitMqConfig::new("amqp://app:s3cret@rabbit-a.internal:5672/%2f")
///     .failover("amqp://app:s3cret@rabbit-b.internal:5672/%2f")
///     .heartbeat(Duration::from_secs(10))
///     .connection_name("checkout");
/// assert!(config.validate().is_ok());
/// // The password never prints.
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
///
/// URLs take the form `amqp://[user[:password]@]host[:port][/vhost]` (or `amqps://` for TLS,
/// port 5671 by default). The virtual host is the percent-decoded path: `/%2f` is `/`, and no
/// path at all also means `/`; a bare trailing slash would mean the empty name and is rejected.
/// The user, password and virtual host set with the builder methods (and the credentials of a
/// `CredentialProvider`) override every URL's.
#[derive(Clone)]
pub struct RabbitMqConfig {
    urls: Vec<String>,
    vhost: Option<String>,
    username: Option<String>,
    password: Option<Secret>,
    connect_timeout: Duration,
    heartbeat: Duration,
    connection_name: Option<String>,
}

/// One broker to try: the driver's URI and the URL as it may be shown.
pub(crate) struct Target {
    pub(crate) uri: AMQPUri,
    pub(crate) shown: String,
}

impl RabbitMqConfig {
    /// Connect to the broker at `url`; every other setting has its default.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            urls: vec![url.into()],
            vhost: None,
            username: None,
            password: None,
            connect_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(10),
            connection_name: None,
        }
    }

    /// Try the brokers at `urls`, in order, on every connect. Must hold at least one URL.
    pub fn with_urls<I, U>(urls: I) -> Self
    where
        I: IntoIterator<Item = U>,
        U: Into<String>,
    {
        let mut config = Self::new(String::new());
        config.urls = urls.into_iter().map(Into::into).collect();
        config
    }

    /// Add a broker to try when the ones before it cannot be reached. Each connect (the first,
    /// and every reconnect after a failure) tries the URLs in the order given and keeps the
    /// first that accepts. Defaults to none: only the URL given to [`new`](Self::new).
    #[must_use]
    pub fn failover(mut self, url: impl Into<String>) -> Self {
        self.urls.push(url.into());
        self
    }

    /// The virtual host, for every URL. Defaults to each URL's (its percent-decoded path, `/`
    /// when it has none); must be 1 to [`MAX_NAME_LEN`] bytes.
    #[must_use]
    pub fn vhost(mut self, vhost: impl Into<String>) -> Self {
        self.vhost = Some(vhost.into());
        self
    }

    /// The user to log in as, for every URL. Defaults to each URL's, else `guest`.
    #[must_use]
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The password to log in with, for every URL. Defaults to each URL's, else `guest`.
    /// It never appears in `Debug` output or in an error message.
    #[must_use]
    pub fn password(mut self, password: impl Into<Secret>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Longest one broker may take to accept a connection, AMQP handshake and login included;
    /// then the next URL is tried. Defaults to 5 s; must be greater than zero and at most
    /// [`MAX_TIMEOUT`].
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The heartbeat interval asked of the broker (it may lower it). A connection that hears
    /// nothing from the broker for two intervals is closed by lapin and reported broken, so a
    /// blackholed link is noticed within about twice this. Defaults to 10 s; must be whole
    /// seconds, from 1 s to [`MAX_HEARTBEAT`].
    #[must_use]
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// The connection name shown by `rabbitmqctl list_connections client_properties` and the
    /// management UI. Defaults to none; must be 1 to [`MAX_NAME_LEN`] bytes.
    #[must_use]
    pub fn connection_name(mut self, name: impl Into<String>) -> Self {
        self.connection_name = Some(name.into());
        self
    }

    /// The URLs as they may be shown: passwords replaced by `***`. A URL that does not parse is
    /// not shown at all, since where its password is cannot be told.
    pub fn redacted_urls(&self) -> Vec<String> {
        let secrets = self.secrets();
        self.urls.iter().map(|url| shown(url, &secrets)).collect()
    }

    pub(crate) fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Client properties: the connection name. lapin's automatic recovery stays off (its
    /// default): a lost connection is reported broken and replaced through the manager's retry
    /// policy, so two reconnect loops never race.
    pub(crate) fn properties(&self) -> ConnectionProperties {
        let properties = ConnectionProperties::default();
        match &self.connection_name {
            Some(name) => properties.with_connection_name(name.as_str().into()),
            None => properties,
        }
    }

    /// Every secret this config holds, to scrub from driver messages.
    pub(crate) fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::default();
        if let Some(password) = &self.password {
            secrets.add(password.expose());
        }
        for url in &self.urls {
            if let Ok(parsed) = Url::parse(url)
                && let Some(raw) = parsed.password()
            {
                secrets.add(raw);
                // The password as the driver decodes it (`%40` is `@`).
                secrets.add(&percent_encoding::percent_decode_str(raw).decode_utf8_lossy());
            }
        }
        secrets
    }

    /// The brokers to try for one create, in order, with the registration's credentials (the
    /// current generation) in place of the config's own, and the secrets to scrub from errors.
    pub(crate) fn targets(&self, ctx: &CreateContext) -> Result<(Vec<Target>, Secrets), Error> {
        let mut secrets = self.secrets();
        let credentials = ctx.credentials();
        if let Some(credentials) = &credentials {
            secrets.add(credentials.secret().expose());
        }
        let mut targets = Vec::with_capacity(self.urls.len());
        for (index, url) in self.urls.iter().enumerate() {
            let mut uri = self.parse(index, url, &secrets)?;
            if let Some(credentials) = &credentials {
                if let Some(username) = credentials.get_username() {
                    uri.authority.userinfo.username = username.to_owned();
                }
                uri.authority.userinfo.password = credentials.secret().expose().to_owned();
            }
            targets.push(Target {
                uri,
                shown: shown(url, &secrets),
            });
        }
        Ok((targets, secrets))
    }

    /// Parse URL number `index` into the driver's form, this config's overrides applied.
    fn parse(&self, index: usize, url: &str, secrets: &Secrets) -> Result<AMQPUri, Error> {
        let which = || {
            if self.urls.len() == 1 {
                String::new()
            } else {
                format!(" (URL #{})", index + 1)
            }
        };
        if url.trim().is_empty() {
            return Err(Error::config(
                "urls",
                format!("a broker URL{} is empty", which()),
            ));
        }
        let Ok(parsed) = Url::parse(url) else {
            return Err(Error::config(
                "urls",
                format!(
                    "a broker URL{} is malformed: expected amqp://[user[:password]@]host[:port][/vhost] (it is not shown, as it may hold a password)",
                    which()
                ),
            ));
        };
        let show = shown(url, secrets);
        let scheme = match parsed.scheme() {
            "amqp" => AMQPScheme::AMQP,
            "amqps" => AMQPScheme::AMQPS,
            other => {
                return Err(Error::config(
                    "urls",
                    format!("`{show}`: scheme `{other}` is not AMQP; use amqp:// or amqps://"),
                ));
            }
        };
        let host = match parsed.host() {
            Some(Host::Domain(domain)) if !domain.is_empty() => domain.to_owned(),
            Some(Host::Ipv4(address)) => address.to_string(),
            Some(Host::Ipv6(address)) => address.to_string(),
            _ => return Err(Error::config("urls", format!("`{show}` has no host"))),
        };
        let port = parsed.port().unwrap_or_else(|| scheme.default_port());
        if port == 0 {
            return Err(Error::config("urls", format!("`{show}` has port 0")));
        }
        // lapin's parser reads the query (frame_max, channel_max, auth_mechanism…); its host is
        // replaced by the one read here, since it turns an IP address into `localhost`.
        let mut uri: AMQPUri = url.parse().map_err(|err: String| {
            Error::config(
                "urls",
                format!("`{show}` is not a valid AMQP URL: {}", secrets.scrub(&err)),
            )
        })?;
        uri.scheme = scheme;
        uri.authority.host = host;
        uri.authority.port = port;
        if let Some(vhost) = &self.vhost {
            uri.vhost.clone_from(vhost);
        } else {
            check_name("its virtual host", &uri.vhost).map_err(|rule| {
                Error::config(
                    "urls",
                    format!(
                        "`{show}`: {rule} (a trailing `/` names the empty virtual host; write `/%2f` for `/`, or set `vhost`)"
                    ),
                )
            })?;
        }
        if let Some(username) = &self.username {
            uri.authority.userinfo.username.clone_from(username);
        }
        if let Some(password) = &self.password {
            uri.authority.userinfo.password = password.expose().to_owned();
        }
        uri.query.heartbeat = Some(u16::try_from(self.heartbeat.as_secs()).unwrap_or(u16::MAX));
        Ok(uri)
    }
}

/// `url` fit for a message: its password replaced by `***`, or nothing if it does not parse.
fn shown(url: &str, secrets: &Secrets) -> String {
    if Url::parse(url).is_ok() {
        secrets.scrub(&redact_url(url))
    } else {
        String::from("<malformed URL, not shown>")
    }
}

/// The rule a name (virtual host, user, connection name) breaks, if any.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{what} must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{what} must be at most {MAX_NAME_LEN} bytes (got {})",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!("{what} must not hold control characters"));
    }
    Ok(())
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

impl Config for RabbitMqConfig {
    /// Check every setting: at least one URL; each parses, is `amqp://` or `amqps://`, has a
    /// host and a virtual host; names, timeouts and the heartbeat are in range. Messages name
    /// the field and show URLs only with their password replaced by `***`.
    fn validate(&self) -> Result<(), Error> {
        if self.urls.is_empty() {
            return Err(Error::config("urls", "must hold at least one broker URL"));
        }
        let secrets = self.secrets();
        for (index, url) in self.urls.iter().enumerate() {
            self.parse(index, url, &secrets)?;
        }
        if let Some(vhost) = &self.vhost {
            check_name("the virtual host", vhost).map_err(|rule| Error::config("vhost", rule))?;
        }
        if let Some(username) = &self.username {
            check_name("the user name", username)
                .map_err(|rule| Error::config("username", rule))?;
        }
        if let Some(password) = &self.password
            && password.is_empty()
        {
            return Err(Error::config("password", "must not be empty"));
        }
        if let Some(name) = &self.connection_name {
            check_name("the connection name", name)
                .map_err(|rule| Error::config("connection_name", rule))?;
        }
        check_timeout("connect_timeout", self.connect_timeout)?;
        if self.heartbeat < Duration::from_secs(1) || self.heartbeat > MAX_HEARTBEAT {
            return Err(Error::config(
                "heartbeat",
                format!(
                    "must be from 1 s to {MAX_HEARTBEAT:?} (got {:?})",
                    self.heartbeat
                ),
            ));
        }
        if self.heartbeat.subsec_nanos() != 0 {
            return Err(Error::config(
                "heartbeat",
                format!(
                    "must be whole seconds, as AMQP counts it (got {:?})",
                    self.heartbeat
                ),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for RabbitMqConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitMqConfig")
            .field("urls", &self.redacted_urls())
            .field("vhost", &self.vhost)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("connect_timeout", &self.connect_timeout)
            .field("heartbeat", &self.heartbeat)
            .field("connection_name", &self.connection_name)
            .finish()
    }
}

/// Settings of the pooled [`RabbitMqChannel`](crate::RabbitMqChannel)s, built by value from
/// [`RabbitMqChannelConfig::default`]:
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::Config;
/// use nebula_resource_rabbitmq::RabbitMqChannelConfig;
///
/// let config = RabbitMqChannelConfig::default()
///     .publish_timeout(Duration::from_secs(2))
///     .prefetch(32);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RabbitMqChannelConfig {
    publisher_confirms: bool,
    publish_timeout: Duration,
    prefetch: Option<u16>,
    drain_timeout: Duration,
}

impl Default for RabbitMqChannelConfig {
    fn default() -> Self {
        Self {
            publisher_confirms: true,
            publish_timeout: Duration::from_secs(5),
            prefetch: None,
            drain_timeout: Duration::from_secs(2),
        }
    }
}

impl RabbitMqChannelConfig {
    /// Put every channel in confirm mode (`confirm.select`), so that
    /// [`PooledChannel::publish`](crate::PooledChannel::publish) returns only once the broker
    /// has taken responsibility for the message. Defaults to `true`.
    #[must_use]
    pub fn publisher_confirms(mut self, enabled: bool) -> Self {
        self.publisher_confirms = enabled;
        self
    }

    /// The deadline of [`PooledChannel::publish`](crate::PooledChannel::publish): sending the
    /// message and receiving its confirm. Defaults to 5 s; must be greater than zero and at
    /// most [`MAX_TIMEOUT`].
    #[must_use]
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// `basic.qos` prefetch count set on every channel (per consumer). Defaults to none (the
    /// broker's: unlimited); must be at least 1.
    #[must_use]
    pub fn prefetch(mut self, count: u16) -> Self {
        self.prefetch = Some(count);
        self
    }

    /// How long destroying a channel waits for the confirms of messages published on it before
    /// it closes the channel (with code 200). Defaults to 2 s; must be greater than zero and
    /// at most [`MAX_TIMEOUT`]. The pool's `recycle_timeout` bounds the whole destroy too.
    #[must_use]
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    pub(crate) fn get_publisher_confirms(&self) -> bool {
        self.publisher_confirms
    }

    pub(crate) fn get_publish_timeout(&self) -> Duration {
        self.publish_timeout
    }

    pub(crate) fn get_prefetch(&self) -> Option<u16> {
        self.prefetch
    }

    pub(crate) fn get_drain_timeout(&self) -> Duration {
        self.drain_timeout
    }
}

impl Config for RabbitMqChannelConfig {
    /// Check the publish and drain timeouts and the prefetch count.
    fn validate(&self) -> Result<(), Error> {
        check_timeout("publish_timeout", self.publish_timeout)?;
        check_timeout("drain_timeout", self.drain_timeout)?;
        if self.prefetch == Some(0) {
            return Err(Error::config(
                "prefetch",
                "must be at least 1 (leave it unset for no limit)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(config: &RabbitMqConfig) -> Option<&'static str> {
        config.validate().err().and_then(|err| err.field())
    }

    fn parse_first(config: &RabbitMqConfig) -> AMQPUri {
        config
            .parse(0, &config.urls[0], &config.secrets())
            .expect("a valid URL")
    }

    #[test]
    fn defaults_are_valid_and_ip_hosts_are_kept() {
        let config = RabbitMqConfig::new("amqp://127.0.0.1:5673");
        config.validate().unwrap();
        let uri = parse_first(&config);
        assert_eq!(uri.authority.host, "127.0.0.1");
        assert_eq!(uri.authority.port, 5673);
        assert_eq!(uri.vhost, "/");
        assert_eq!(uri.authority.userinfo.username, "guest");
        assert_eq!(uri.query.heartbeat, Some(10));

        let uri = parse_first(&RabbitMqConfig::new("amqps://[::1]/prod%2Forders"));
        assert_eq!(uri.authority.host, "::1");
        assert_eq!(uri.authority.port, 5671);
        assert_eq!(uri.vhost, "prod/orders");
        assert_eq!(uri.scheme, AMQPScheme::AMQPS);
    }

    #[test]
    fn overrides_apply_to_every_url() {
        let config = RabbitMqConfig::with_urls(["amqp://a:x@h1/v1", "amqp://h2:5700/%2f"])
            .vhost("shared")
            .username("app")
            .password("pw")
            .heartbeat(Duration::from_secs(3));
        config.validate().unwrap();
        let secrets = config.secrets();
        for (index, url) in config.urls.iter().enumerate() {
            let uri = config.parse(index, url, &secrets).unwrap();
            assert_eq!(uri.vhost, "shared");
            assert_eq!(uri.authority.userinfo.username, "app");
            assert_eq!(uri.authority.userinfo.password, "pw");
            assert_eq!(uri.query.heartbeat, Some(3));
        }
    }

    #[test]
    fn every_rule_names_its_field() {
        let url = "amqp://127.0.0.1";
        let cases = [
            (RabbitMqConfig::with_urls(Vec::<String>::new()), "urls"),
            (RabbitMqConfig::new(""), "urls"),
            (RabbitMqConfig::new("   "), "urls"),
            (RabbitMqConfig::new("127.0.0.1:5672"), "urls"),
            (RabbitMqConfig::new("http://127.0.0.1"), "urls"),
            (RabbitMqConfig::new("amqp://"), "urls"),
            (RabbitMqConfig::new("amqp://127.0.0.1:0"), "urls"),
            (RabbitMqConfig::new("amqp://127.0.0.1:99999"), "urls"),
            (RabbitMqConfig::new("amqp://127.0.0.1/"), "urls"),
            (RabbitMqConfig::new("amqp://127.0.0.1/?heartbeat=x"), "urls"),
            (
                RabbitMqConfig::new(url).failover("redis://127.0.0.1"),
                "urls",
            ),
            (RabbitMqConfig::new(url).vhost(""), "vhost"),
            (RabbitMqConfig::new(url).vhost("x".repeat(256)), "vhost"),
            (RabbitMqConfig::new(url).username(""), "username"),
            (RabbitMqConfig::new(url).password(""), "password"),
            (
                RabbitMqConfig::new(url).connection_name(""),
                "connection_name",
            ),
            (
                RabbitMqConfig::new(url).connect_timeout(Duration::ZERO),
                "connect_timeout",
            ),
            (
                RabbitMqConfig::new(url).connect_timeout(MAX_TIMEOUT * 2),
                "connect_timeout",
            ),
            (
                RabbitMqConfig::new(url).heartbeat(Duration::ZERO),
                "heartbeat",
            ),
            (
                RabbitMqConfig::new(url).heartbeat(Duration::from_millis(1500)),
                "heartbeat",
            ),
            (
                RabbitMqConfig::new(url).heartbeat(MAX_HEARTBEAT * 2),
                "heartbeat",
            ),
        ];
        for (config, field) in cases {
            assert_eq!(field_of(&config), Some(field), "{config:?}");
        }
        // A trailing slash is fine once the virtual host is set explicitly.
        RabbitMqConfig::new("amqp://127.0.0.1/")
            .vhost("/")
            .validate()
            .unwrap();
    }

    #[test]
    fn no_message_and_no_debug_shows_a_password() {
        let secret = "s3cr3tpw";
        let configs = [
            RabbitMqConfig::new(format!("http://u:{secret}@127.0.0.1")),
            RabbitMqConfig::new(format!("amqp://u:{secret}@127.0.0.1:notaport")),
            RabbitMqConfig::new(format!("amqp://u:{secret}@127.0.0.1/")),
            RabbitMqConfig::new(format!("amqp://u:{secret}@/x")),
            RabbitMqConfig::new(format!("amqp//u:{secret}@127.0.0.1")),
            RabbitMqConfig::new(format!("amqp://u:{secret}@127.0.0.1/?frame_max=x{secret}")),
            RabbitMqConfig::new(format!(
                "amqp://u:s3cr%33tpw@127.0.0.1/?heartbeat=x{secret}"
            )),
            RabbitMqConfig::new("amqp://127.0.0.1")
                .password(secret)
                .vhost(""),
            RabbitMqConfig::new("amqp://127.0.0.1")
                .failover(format!("amqp://u:{secret}@127.0.0.1:0")),
        ];
        for config in configs {
            let debug = format!("{config:?} {:?}", config.redacted_urls());
            assert!(!debug.contains(secret), "{debug}");
            let err = config.validate().unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn the_redacted_url_keeps_what_helps() {
        let config = RabbitMqConfig::new("amqp://app:pw@rabbit.internal:5672/%2f");
        assert_eq!(
            config.redacted_urls(),
            vec!["amqp://app:***@rabbit.internal:5672/%2f".to_owned()]
        );
        let err = RabbitMqConfig::new("http://app:pw@rabbit.internal")
            .validate()
            .unwrap_err();
        assert!(
            err.to_string().contains("http://app:***@rabbit.internal"),
            "{err}"
        );
    }

    #[test]
    fn lapin_never_reconnects_on_its_own() {
        // One reconnect loop: the manager's. lapin's recovery (and its TCP retries) stay off.
        for config in [
            RabbitMqConfig::new("amqp://127.0.0.1"),
            RabbitMqConfig::new("amqp://127.0.0.1").connection_name("checkout"),
        ] {
            let properties = format!("{:?}", config.properties());
            assert!(properties.contains("auto_recover: false"), "{properties}");
            assert!(properties.contains("max_times: Some(0)"), "{properties}");
        }
    }

    #[test]
    fn channel_config_rules_name_their_field() {
        RabbitMqChannelConfig::default().validate().unwrap();
        let cases = [
            (
                RabbitMqChannelConfig::default().publish_timeout(Duration::ZERO),
                "publish_timeout",
            ),
            (
                RabbitMqChannelConfig::default().drain_timeout(MAX_TIMEOUT * 2),
                "drain_timeout",
            ),
            (RabbitMqChannelConfig::default().prefetch(0), "prefetch"),
        ];
        for (config, field) in cases {
            assert_eq!(
                config.validate().err().and_then(|err| err.field()),
                Some(field),
                "{config:?}"
            );
        }
    }
}
