//! [`KafkaConfig`]: where the brokers are, who the client is, how long each blocking call may
//! take, and any other librdkafka property; [`KafkaConsumerConfig`] adds the group and topics of
//! a consumer.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use nebula_resource::{Config, CreateContext, Error, Secret};
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;

use crate::secrets::Secrets;

/// Longest timeout accepted (one hour): anything longer is a unit mistake.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Longest `client.id` and `group.id` accepted, in bytes.
pub const MAX_ID_LEN: usize = 255;

/// Longest topic name Kafka accepts, in bytes.
pub const MAX_TOPIC_LEN: usize = 249;

/// Properties this crate sets from its own knobs: setting them with
/// [`KafkaConfig::set`] is rejected, so that one value cannot silently override another.
const MANAGED: [(&str, &str); 12] = [
    ("bootstrap.servers", "KafkaConfig::new"),
    ("metadata.broker.list", "KafkaConfig::new"),
    ("client.id", "KafkaConfig::client_id"),
    ("sasl.mechanism", "KafkaConfig::sasl"),
    ("sasl.mechanisms", "KafkaConfig::sasl"),
    ("sasl.username", "KafkaConfig::sasl"),
    ("sasl.password", "KafkaConfig::sasl"),
    ("message.timeout.ms", "KafkaConfig::delivery_timeout"),
    ("delivery.timeout.ms", "KafkaConfig::delivery_timeout"),
    ("group.id", "KafkaConsumerConfig::new"),
    ("auto.offset.reset", "KafkaConsumerConfig::offset_reset"),
    (
        "group.instance.id",
        "KafkaConsumerConfig (each member is its own instance)",
    ),
];

/// Whether the property `key` holds a secret: its value is redacted from `Debug` output and
/// scrubbed from every error message.
///
/// True for keys containing `password`, `secret` or `token` (any case), and for
/// `ssl.key.pem` and `sasl.oauthbearer.config`, which hold a private key and client secrets.
pub fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token"]
        .iter()
        .any(|word| key.contains(word))
        || key == "ssl.key.pem"
        || key == "sasl.oauthbearer.config"
}

/// A SASL mechanism librdkafka can authenticate with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SaslMechanism {
    /// `PLAIN`: user name and password, sent as is (use it over TLS, or on a trusted network).
    Plain,
    /// `SCRAM-SHA-256`. Needs a librdkafka built with OpenSSL (rdkafka's `ssl` feature, which
    /// this workspace does not enable): `validate` rejects it otherwise.
    ScramSha256,
    /// `SCRAM-SHA-512`. As [`ScramSha256`](Self::ScramSha256), needs OpenSSL.
    ScramSha512,
}

impl SaslMechanism {
    /// The name librdkafka's `sasl.mechanisms` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

#[derive(Clone)]
struct Sasl {
    mechanism: SaslMechanism,
    username: String,
    password: Secret,
}

/// Which client a librdkafka configuration is for: some properties apply to one only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Producer,
    Consumer,
}

/// Settings of a Kafka client, built by value from [`KafkaConfig::new`]:
///
/// ```
/// use std::time::Duration;
/// use nebula_resource::Config;
/// use nebula_resource_kafka::{KafkaConfig, SaslMechanism};
///
/// let config = KafkaConfig::new("127.0.0.1:9092,127.0.0.2:9092")
///     .client_id("billing")
///     .sasl(SaslMechanism::Plain, "billing", "s3cret")
///     .delivery_timeout(Duration::from_secs(10))
///     .set("linger.ms", "5");
/// assert!(config.validate().is_ok());
/// // The password never prints.
/// let shown = format!("{config:?}");
/// assert!(!shown.contains("s3cret"));
/// assert!(shown.contains("linger.ms"));
/// ```
#[derive(Clone)]
pub struct KafkaConfig {
    bootstrap_servers: String,
    client_id: String,
    sasl: Option<Sasl>,
    metadata_timeout: Duration,
    health_topic: Option<String>,
    delivery_timeout: Duration,
    flush_timeout: Duration,
    close_timeout: Duration,
    properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Bootstrap from `bootstrap_servers`, a comma-separated list of `host:port`
    /// (`[::1]:9092` for an IPv6 address); every other setting has its default.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: String::from("nebula-resource"),
            sasl: None,
            metadata_timeout: Duration::from_secs(5),
            health_topic: None,
            delivery_timeout: Duration::from_secs(30),
            flush_timeout: Duration::from_secs(4),
            close_timeout: Duration::from_secs(4),
            properties: BTreeMap::new(),
        }
    }

    /// The `client.id` the brokers see in their logs and quotas. Defaults to
    /// `nebula-resource`; must be 1 to [`MAX_ID_LEN`] bytes of printable ASCII without spaces.
    #[must_use]
    pub fn client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// Authenticate with SASL `mechanism` as `username`. Sets `security.protocol` to
    /// `SASL_PLAINTEXT` unless you set it yourself (`.set("security.protocol", "SASL_SSL")`).
    /// Defaults to none (no authentication). A credential provider registered with the resource
    /// (`Policy::credentials`) supplies the user name and password of each new client instead;
    /// the mechanism stays this one (`PLAIN` if none is set).
    ///
    /// The password is a [`Secret`]: it never appears in `Debug` output or in an error message.
    #[must_use]
    pub fn sasl(
        mut self,
        mechanism: SaslMechanism,
        username: impl Into<String>,
        password: impl Into<Secret>,
    ) -> Self {
        self.sasl = Some(Sasl {
            mechanism,
            username: username.into(),
            password: password.into(),
        });
        self
    }

    /// Longest one metadata request may take: the round trip `create` makes to prove a broker
    /// answers, and the health check. Defaults to 5 s; must be 1 ms to [`MAX_TIMEOUT`].
    #[must_use]
    pub fn metadata_timeout(mut self, timeout: Duration) -> Self {
        self.metadata_timeout = timeout;
        self
    }

    /// Fetch the metadata of this topic only, in `create` and in health checks; a topic the
    /// brokers do not know then fails them. Defaults to none: the metadata of every topic (on a
    /// cluster with thousands of topics, name one). Must be a valid topic name.
    #[must_use]
    pub fn health_topic(mut self, topic: impl Into<String>) -> Self {
        self.health_topic = Some(topic.into());
        self
    }

    /// Producer only: longest a message may wait for its acknowledgement, retries included
    /// (librdkafka's `message.timeout.ms`); a send then fails with `MessageTimedOut`. Defaults
    /// to 30 s (librdkafka's own default is 5 minutes); must be 1 ms to [`MAX_TIMEOUT`].
    #[must_use]
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// Producer only: longest the producer's `destroy` (shutdown, or replacement of a broken
    /// producer) waits for messages still queued or in flight to be acknowledged. What is left
    /// after it is logged and counted as `undelivered_at_close`. Defaults to 4 s; must be 1 ms
    /// to [`MAX_TIMEOUT`]. The pool's `recycle_timeout` (5 s by default) and a shutdown's
    /// deadline bound the wait for `destroy` too: keep this shorter than both, or the manager
    /// stops waiting first and the flush ends in the background (still logged and counted).
    #[must_use]
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.flush_timeout = timeout;
        self
    }

    /// Consumer only: longest `destroy` waits for the final commit and for the consumer to
    /// leave its group. If the brokers are gone this is what it takes; the close then goes on in
    /// a background thread and is counted as `close_timeouts`. Defaults to 4 s; must be 1 ms to
    /// [`MAX_TIMEOUT`]. The pool's `recycle_timeout` bounds `destroy` too: keep this shorter.
    #[must_use]
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    /// Set any other librdkafka property (`linger.ms`, `compression.type`, `security.protocol`,
    /// `ssl.ca.location`, …). Defaults to none. A property this crate sets from a knob of its own
    /// (`bootstrap.servers`, `client.id`, `sasl.*` credentials, `message.timeout.ms`,
    /// `group.id`, `auto.offset.reset`) is rejected by `validate`, naming the knob to use;
    /// librdkafka checks names and values at `validate` too. Values of secret properties (see
    /// [`is_secret_property`]) never appear in `Debug` output or errors.
    #[must_use]
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(key.into(), value.into());
        self
    }

    /// The bootstrap servers as given.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    pub(crate) fn get_metadata_timeout(&self) -> Duration {
        self.metadata_timeout
    }

    pub(crate) fn get_health_topic(&self) -> Option<&str> {
        self.health_topic.as_deref()
    }

    pub(crate) fn get_flush_timeout(&self) -> Duration {
        self.flush_timeout
    }

    pub(crate) fn get_close_timeout(&self) -> Duration {
        self.close_timeout
    }

    /// Every secret this config holds, to scrub from driver messages.
    pub(crate) fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::default();
        if let Some(sasl) = &self.sasl {
            secrets.add(sasl.password.expose());
        }
        for (key, value) in &self.properties {
            if is_secret_property(key) {
                secrets.add(value);
            }
        }
        secrets
    }

    /// The librdkafka configuration of one new client, with the registration's credentials
    /// (the current generation) in place of the configured SASL user, and the secrets to scrub
    /// from its errors.
    pub(crate) fn client_config_for(
        &self,
        role: Role,
        ctx: &CreateContext,
    ) -> Result<(ClientConfig, Secrets), Error> {
        let mut secrets = self.secrets();
        let mut sasl = self.sasl.clone();
        if let Some(credentials) = ctx.credentials() {
            let username = credentials
                .get_username()
                .map(str::to_owned)
                .or_else(|| sasl.as_ref().map(|sasl| sasl.username.clone()))
                .ok_or_else(|| {
                    Error::create(
                        "the credential provider gave no user name and the config sets no SASL user",
                    )
                    .permanent()
                })?;
            secrets.add(credentials.secret().expose());
            sasl = Some(Sasl {
                mechanism: sasl.map_or(SaslMechanism::Plain, |sasl| sasl.mechanism),
                username,
                password: credentials.secret().clone(),
            });
        }
        Ok((self.client_config(role, sasl.as_ref()), secrets))
    }

    fn client_config(&self, role: Role, sasl: Option<&Sasl>) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.bootstrap_servers.trim())
            .set("client.id", &self.client_id);
        if role == Role::Producer {
            config.set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().to_string(),
            );
        }
        if let Some(sasl) = sasl {
            if !self.properties.contains_key("security.protocol") {
                config.set("security.protocol", "SASL_PLAINTEXT");
            }
            config
                .set("sasl.mechanisms", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose());
        }
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }

    /// Check every setting; `role` adds librdkafka's check of the properties for that client.
    pub(crate) fn validate_for(&self, role: Role) -> Result<(), Error> {
        check_bootstrap_servers(&self.bootstrap_servers)?;
        check_id("client_id", &self.client_id)?;
        if let Some(sasl) = &self.sasl {
            if sasl.username.is_empty() {
                return Err(Error::config("sasl", "the user name must not be empty"));
            }
            if sasl.password.is_empty() {
                return Err(Error::config("sasl", "the password must not be empty"));
            }
        }
        check_timeout("metadata_timeout", self.metadata_timeout)?;
        check_timeout("delivery_timeout", self.delivery_timeout)?;
        check_timeout("flush_timeout", self.flush_timeout)?;
        check_timeout("close_timeout", self.close_timeout)?;
        if let Some(topic) = &self.health_topic {
            check_topic("health_topic", topic)?;
        }
        for key in self.properties.keys() {
            check_property_key(key)?;
        }
        // librdkafka knows every property's name and range: ask it, without making a client.
        let native = self
            .client_config(role, self.sasl.as_ref())
            .create_native_config()
            .map_err(|err| self.native_config_error(err))?;
        // A SASL mechanism this librdkafka lacks passes the property check and fails every
        // client it would make: catch it here.
        if let Some(sasl) = &self.sasl
            && matches!(
                sasl.mechanism,
                SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512
            )
        {
            let features = native.get("builtin.features").unwrap_or_default();
            if !features.split(',').any(|feature| feature == "sasl_scram") {
                return Err(Error::config(
                    "sasl",
                    format!(
                        "{} needs a librdkafka built with OpenSSL (rdkafka's `ssl` feature); \
                         this one has: {features}",
                        sasl.mechanism.as_str()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn native_config_error(&self, err: KafkaError) -> Error {
        let secrets = self.secrets();
        let field = match &err {
            KafkaError::ClientConfig(_, _, key, _) if key.starts_with("sasl.") => "sasl",
            _ => "properties",
        };
        let shown = match &err {
            KafkaError::ClientConfig(_, description, key, value) => {
                let value = if is_secret_property(key) {
                    "[redacted]"
                } else {
                    value
                };
                format!("`{key}` = `{value}` rejected by librdkafka: {description}")
            }
            other => other.to_string(),
        };
        Error::config(field, secrets.scrub(&shown))
    }

    /// The properties as `Debug` shows them: a secret property's value redacted, and a
    /// configured secret scrubbed from every other value (one pasted in the wrong property).
    fn redacted_properties(&self) -> BTreeMap<&str, String> {
        let secrets = self.secrets();
        self.properties
            .iter()
            .map(|(key, value)| {
                let shown = if is_secret_property(key) {
                    String::from("[redacted]")
                } else {
                    secrets.scrub(value)
                };
                (key.as_str(), shown)
            })
            .collect()
    }
}

impl Config for KafkaConfig {
    /// Check every setting: the bootstrap list is non-empty and each entry is `host:port`; the
    /// client id, SASL user and password, timeouts and health topic are in range; no property
    /// duplicates a knob; librdkafka accepts every property. Messages name the field and never
    /// show a secret.
    fn validate(&self) -> Result<(), Error> {
        self.validate_for(Role::Producer)
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sasl = self.sasl.as_ref().map(|sasl| {
            format!(
                "{} as {:?} with password {}",
                sasl.mechanism.as_str(),
                sasl.username,
                sasl.password
            )
        });
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("client_id", &self.client_id)
            .field("sasl", &sasl)
            .field("metadata_timeout", &self.metadata_timeout)
            .field("health_topic", &self.health_topic)
            .field("delivery_timeout", &self.delivery_timeout)
            .field("flush_timeout", &self.flush_timeout)
            .field("close_timeout", &self.close_timeout)
            .field("properties", &self.redacted_properties())
            .finish()
    }
}

/// Where a new consumer group member starts when its group has no committed offset for a
/// partition (librdkafka's `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum OffsetReset {
    /// The oldest message still kept.
    Earliest,
    /// Only messages produced from now on (librdkafka's default).
    #[default]
    Latest,
}

impl OffsetReset {
    fn as_str(self) -> &'static str {
        match self {
            Self::Earliest => "earliest",
            Self::Latest => "latest",
        }
    }
}

/// Settings of one consumer group member: the client settings, the group and the topics it
/// subscribes to.
///
/// ```
/// use nebula_resource::Config;
/// use nebula_resource_kafka::{KafkaConfig, KafkaConsumerConfig, OffsetReset};
///
/// let config = KafkaConsumerConfig::new(
///     KafkaConfig::new("127.0.0.1:9092").client_id("billing"),
///     "billing-workers",
///     ["invoices", "refunds"],
/// )
/// .offset_reset(OffsetReset::Earliest);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct KafkaConsumerConfig {
    client: KafkaConfig,
    group_id: String,
    topics: Vec<String>,
    offset_reset: OffsetReset,
    commit_on_close: bool,
}

impl KafkaConsumerConfig {
    /// Members of `group_id` subscribed to `topics` (a name starting with `^` is a regular
    /// expression, as librdkafka's `subscribe` takes); other settings have their defaults.
    pub fn new<T: Into<String>>(
        client: KafkaConfig,
        group_id: impl Into<String>,
        topics: impl IntoIterator<Item = T>,
    ) -> Self {
        Self {
            client,
            group_id: group_id.into(),
            topics: topics.into_iter().map(Into::into).collect(),
            offset_reset: OffsetReset::default(),
            commit_on_close: true,
        }
    }

    /// Where a member starts in a partition its group has no committed offset for.
    /// Defaults to [`OffsetReset::Latest`].
    #[must_use]
    pub fn offset_reset(mut self, reset: OffsetReset) -> Self {
        self.offset_reset = reset;
        self
    }

    /// Whether `destroy` commits the member's stored offsets (with librdkafka's default
    /// `enable.auto.offset.store`, those of every message it handed out; set that property to
    /// `false` and store offsets yourself after processing for at-least-once) before it leaves
    /// the group. A failed commit is logged and counted as `commit_failures_at_close`.
    /// Defaults to `true`.
    #[must_use]
    pub fn commit_on_close(mut self, commit: bool) -> Self {
        self.commit_on_close = commit;
        self
    }

    /// The client settings.
    pub fn client(&self) -> &KafkaConfig {
        &self.client
    }

    /// The consumer group.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The topics subscribed to.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    pub(crate) fn get_commit_on_close(&self) -> bool {
        self.commit_on_close
    }

    /// The librdkafka configuration of one new member.
    pub(crate) fn client_config_for(
        &self,
        ctx: &CreateContext,
    ) -> Result<(ClientConfig, Secrets), Error> {
        let (mut config, secrets) = self.client.client_config_for(Role::Consumer, ctx)?;
        config
            .set("group.id", &self.group_id)
            .set("auto.offset.reset", self.offset_reset.as_str());
        Ok((config, secrets))
    }
}

impl Config for KafkaConsumerConfig {
    /// Check the client settings (as [`KafkaConfig`] does), the group id (1 to [`MAX_ID_LEN`]
    /// bytes, no control characters) and the topics (at least one; each a valid topic name, or
    /// a `^` regular expression).
    fn validate(&self) -> Result<(), Error> {
        self.client.validate_for(Role::Consumer)?;
        if self.group_id.is_empty() || self.group_id.len() > MAX_ID_LEN {
            return Err(Error::config(
                "group_id",
                format!(
                    "must be 1 to {MAX_ID_LEN} bytes long (got {})",
                    self.group_id.len()
                ),
            ));
        }
        if self.group_id.chars().any(char::is_control) {
            return Err(Error::config(
                "group_id",
                "must not contain control characters",
            ));
        }
        if self.topics.is_empty() {
            return Err(Error::config("topics", "must name at least one topic"));
        }
        for topic in &self.topics {
            if topic.starts_with('^') {
                if topic.len() == 1 {
                    return Err(Error::config(
                        "topics",
                        "a regular expression needs a pattern after `^`",
                    ));
                }
            } else {
                check_topic("topics", topic)?;
            }
        }
        Ok(())
    }
}

fn check_timeout(field: &'static str, value: Duration) -> Result<(), Error> {
    if value < Duration::from_millis(1) {
        return Err(Error::config(
            field,
            format!("must be at least 1 ms (got {value:?}); librdkafka counts in milliseconds"),
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

fn check_id(field: &'static str, id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(Error::config(
            field,
            format!("must be 1 to {MAX_ID_LEN} bytes long (got {})", id.len()),
        ));
    }
    if let Some(bad) = id.chars().find(|c| !matches!(c, '!'..='~')) {
        return Err(Error::config(
            field,
            format!("must be printable ASCII without spaces; found {bad:?}"),
        ));
    }
    Ok(())
}

fn check_topic(field: &'static str, topic: &str) -> Result<(), Error> {
    if topic.is_empty() || topic.len() > MAX_TOPIC_LEN {
        return Err(Error::config(
            field,
            format!(
                "a topic name must be 1 to {MAX_TOPIC_LEN} bytes long (got {} for {topic:?})",
                topic.len()
            ),
        ));
    }
    if topic == "." || topic == ".." {
        return Err(Error::config(
            field,
            format!("{topic:?} is not a valid topic name"),
        ));
    }
    if let Some(bad) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::config(
            field,
            format!(
                "a topic name may hold only ASCII letters, digits, `.`, `_` and `-`; {topic:?} has {bad:?}"
            ),
        ));
    }
    Ok(())
}

fn check_property_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::config(
            "properties",
            format!("{key:?} is not a property name"),
        ));
    }
    if let Some((_, knob)) = MANAGED
        .iter()
        .find(|(managed, _)| key.eq_ignore_ascii_case(managed))
    {
        return Err(Error::config(
            "properties",
            format!("`{key}` is set by this crate: use {knob}"),
        ));
    }
    Ok(())
}

/// Each entry of a comma-separated bootstrap list must be `host:port`.
fn check_bootstrap_servers(list: &str) -> Result<(), Error> {
    const FIELD: &str = "bootstrap_servers";
    if list.trim().is_empty() {
        return Err(Error::config(
            FIELD,
            "must list at least one `host:port` (comma-separated)",
        ));
    }
    for entry in list.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(Error::config(
                FIELD,
                format!("`{list}` has an empty entry; expected host:port[,host:port…]"),
            ));
        }
        if entry.contains("://") {
            return Err(Error::config(
                FIELD,
                format!("`{entry}` must be host:port, without a scheme"),
            ));
        }
        let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
            let Some((host, port)) = rest.split_once("]:") else {
                return Err(Error::config(
                    FIELD,
                    format!("`{entry}` must be [ipv6]:port"),
                ));
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(Error::config(
                    FIELD,
                    format!("`{entry}`: `{host}` is not an IPv6 address"),
                ));
            }
            (host, port)
        } else {
            let Some((host, port)) = entry.rsplit_once(':') else {
                return Err(Error::config(
                    FIELD,
                    format!("`{entry}` has no port; expected host:port"),
                ));
            };
            if host.contains(':') {
                return Err(Error::config(
                    FIELD,
                    format!("`{entry}`: write an IPv6 address in brackets, [addr]:port"),
                ));
            }
            let valid_host = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
            if !valid_host {
                return Err(Error::config(
                    FIELD,
                    format!("`{entry}`: `{host}` is not a host name or address"),
                ));
            }
            (host, port)
        };
        match port.parse::<u16>() {
            Ok(0) | Err(_) => {
                return Err(Error::config(
                    FIELD,
                    format!("`{entry}`: the port of `{host}` must be 1..=65535 (got `{port}`)"),
                ));
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use nebula_resource::ErrorKind;

    use super::*;

    /// The field a validation error names (and that it is a configuration error).
    fn field_of(result: Result<(), Error>) -> Option<&'static str> {
        result.err().map(|err| {
            assert_eq!(err.kind(), ErrorKind::Config, "{err}");
            err.field().expect("a config error names its field")
        })
    }

    const SERVERS: &str = "127.0.0.1:9092";

    #[test]
    fn defaults_are_valid_and_build_the_client_config() {
        let config = KafkaConfig::new(" 127.0.0.1:9092, localhost:9093,[::1]:9094 ");
        config.validate().unwrap();
        let producer = config.client_config(Role::Producer, None);
        assert_eq!(
            producer.get("bootstrap.servers"),
            Some("127.0.0.1:9092, localhost:9093,[::1]:9094")
        );
        assert_eq!(producer.get("client.id"), Some("nebula-resource"));
        assert_eq!(producer.get("message.timeout.ms"), Some("30000"));
        assert_eq!(producer.get("security.protocol"), None);
        let consumer = config.client_config(Role::Consumer, None);
        assert_eq!(consumer.get("message.timeout.ms"), None);
    }

    #[test]
    fn sasl_and_properties_reach_librdkafka() {
        let config = KafkaConfig::new(SERVERS)
            .sasl(SaslMechanism::Plain, "app", "pw")
            .set("linger.ms", "7");
        config.validate().unwrap();
        let native = config.client_config(Role::Producer, config.sasl.as_ref());
        assert_eq!(native.get("security.protocol"), Some("SASL_PLAINTEXT"));
        assert_eq!(native.get("sasl.mechanisms"), Some("PLAIN"));
        assert_eq!(native.get("sasl.username"), Some("app"));
        assert_eq!(native.get("sasl.password"), Some("pw"));
        assert_eq!(native.get("linger.ms"), Some("7"));
        let tls = config.set("security.protocol", "SASL_SSL");
        let native = tls.client_config(Role::Producer, tls.sasl.as_ref());
        assert_eq!(native.get("security.protocol"), Some("SASL_SSL"));
    }

    #[test]
    fn every_rule_names_its_field() {
        let base = || KafkaConfig::new(SERVERS);
        let cases = [
            (KafkaConfig::new(""), "bootstrap_servers"),
            (KafkaConfig::new(" , "), "bootstrap_servers"),
            (KafkaConfig::new("127.0.0.1:9092,"), "bootstrap_servers"),
            (KafkaConfig::new("127.0.0.1"), "bootstrap_servers"),
            (KafkaConfig::new("127.0.0.1:0"), "bootstrap_servers"),
            (KafkaConfig::new("127.0.0.1:99999"), "bootstrap_servers"),
            (KafkaConfig::new("127.0.0.1:port"), "bootstrap_servers"),
            (KafkaConfig::new(":9092"), "bootstrap_servers"),
            (KafkaConfig::new("::1:9092"), "bootstrap_servers"),
            (KafkaConfig::new("[nope]:9092"), "bootstrap_servers"),
            (
                KafkaConfig::new("tcp://127.0.0.1:9092"),
                "bootstrap_servers",
            ),
            (KafkaConfig::new("bad host:9092"), "bootstrap_servers"),
            (base().client_id(""), "client_id"),
            (base().client_id("has space"), "client_id"),
            (base().client_id("x".repeat(MAX_ID_LEN + 1)), "client_id"),
            (base().sasl(SaslMechanism::Plain, "", "pw"), "sasl"),
            (base().sasl(SaslMechanism::Plain, "app", ""), "sasl"),
            // The vendored librdkafka is built without OpenSSL, which SCRAM needs.
            (base().sasl(SaslMechanism::ScramSha512, "app", "pw"), "sasl"),
            (base().metadata_timeout(Duration::ZERO), "metadata_timeout"),
            (
                base().metadata_timeout(Duration::from_micros(500)),
                "metadata_timeout",
            ),
            (base().delivery_timeout(MAX_TIMEOUT * 2), "delivery_timeout"),
            (base().flush_timeout(Duration::ZERO), "flush_timeout"),
            (
                base().close_timeout(Duration::from_secs(86_400)),
                "close_timeout",
            ),
            (base().health_topic(""), "health_topic"),
            (base().health_topic("no spaces"), "health_topic"),
            (base().health_topic(".."), "health_topic"),
            (base().set("", "x"), "properties"),
            (base().set("linger ms", "x"), "properties"),
            (base().set("bootstrap.servers", "a:1"), "properties"),
            (base().set("SASL.PASSWORD", "x"), "properties"),
            (base().set("group.id", "g"), "properties"),
            (base().set("no.such.property", "1"), "properties"),
            (base().set("linger.ms", "-5"), "properties"),
            (base().set("compression.type", "bogus"), "properties"),
        ];
        for (config, field) in cases {
            assert_eq!(
                field_of(config.validate()),
                Some(field),
                "{config:?} should fail on {field}"
            );
        }
    }

    #[test]
    fn consumer_rules_name_their_field() {
        let client = || KafkaConfig::new(SERVERS);
        let cases = [
            (KafkaConsumerConfig::new(client(), "", ["t"]), "group_id"),
            (KafkaConsumerConfig::new(client(), "g\n", ["t"]), "group_id"),
            (
                KafkaConsumerConfig::new(client(), "g", Vec::<String>::new()),
                "topics",
            ),
            (
                KafkaConsumerConfig::new(client(), "g", ["ok", "b@d"]),
                "topics",
            ),
            (KafkaConsumerConfig::new(client(), "g", ["^"]), "topics"),
            (
                KafkaConsumerConfig::new(KafkaConfig::new(""), "g", ["t"]),
                "bootstrap_servers",
            ),
        ];
        for (config, field) in cases {
            assert_eq!(field_of(config.validate()), Some(field), "{config:?}");
        }
        KafkaConsumerConfig::new(client(), "g", ["orders", "^audit-.*"])
            .validate()
            .unwrap();
    }

    #[test]
    fn no_debug_and_no_error_shows_a_secret() {
        let secret = "s3cr3tpw";
        let configs = [
            KafkaConfig::new("").sasl(SaslMechanism::Plain, "app", secret),
            KafkaConfig::new(SERVERS)
                .sasl(SaslMechanism::Plain, "", secret)
                .set("ssl.key.password", secret),
            KafkaConfig::new(SERVERS)
                .set("linger.ms", "x")
                .set("sasl.oauthbearer.client.secret", secret),
            // librdkafka rejects the value, and its message would show it.
            KafkaConfig::new(SERVERS)
                .set("ssl.key.password", secret)
                .set("socket.timeout.ms", secret),
            KafkaConfig::new(SERVERS)
                .set("sasl.oauthbearer.token.endpoint.url", "x")
                .set("api.token", secret)
                .set("bogus", secret),
        ];
        for config in configs {
            let debug = format!("{config:?}");
            assert!(!debug.contains(secret), "{debug}");
            let err = config.validate().unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(!shown.contains(secret), "{shown}");
        }
        let consumer = KafkaConsumerConfig::new(
            KafkaConfig::new(SERVERS).sasl(SaslMechanism::Plain, "app", secret),
            "g",
            ["t"],
        );
        assert!(!format!("{consumer:?}").contains(secret));
    }

    #[test]
    fn secret_properties_are_recognised() {
        for key in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "sasl.oauthbearer.client.secret",
            "My.Token",
            "ssl.key.pem",
            "sasl.oauthbearer.config",
        ] {
            assert!(is_secret_property(key), "{key}");
        }
        for key in ["linger.ms", "ssl.ca.location", "client.id"] {
            assert!(!is_secret_property(key), "{key}");
        }
    }
}
