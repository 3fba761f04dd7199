//! Credentials: [`Secret`] values that never print, the [`Credentials`] a
//! [`CredentialProvider`] supplies per registration (and per tenant) with an optional expiry, the
//! built-in providers, and redaction of connection strings.
//!
//! A registration with a provider (`Policy::credentials`) fetches its credentials before its
//! first create; `Resource::create` reads them with `CreateContext::credentials()`. On
//! `ResourceManager::rotate_credentials`, or when the current credentials come within
//! [`REFRESH_BEFORE_EXPIRY`] of their expiry, they are fetched again; if they changed, a new
//! generation starts: new instances use the new credentials, idle old ones are destroyed at once,
//! in-use old ones when their guards drop. No acquire fails because of a rotation.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::error::{Error, ErrorKind};
use crate::tenant::TenantId;

/// Credentials are fetched again this long before they expire.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(30);

/// A secret value (a password, a token) that never appears in `Debug` or `Display` output, and
/// so never in a log line or an error message.
///
/// Cloning is cheap (one reference count). Read the value with [`expose`](Self::expose), at the
/// one place that hands it to a driver.
///
/// ```
/// use nebula_resource::Secret;
///
/// let password = Secret::new("hunter2");
/// assert_eq!(format!("{password:?}"), "Secret([redacted])");
/// assert_eq!(password.to_string(), "[redacted]");
/// assert_eq!(password.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The secret value itself. Hand it to the driver; never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

/// A username (optional) and a secret, valid until `expires_at` (if set). `Debug` never shows
/// the secret.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Credentials {
    username: Option<String>,
    secret: Secret,
    expires_at: Option<SystemTime>,
}

impl Credentials {
    /// A secret with no username and no expiry.
    pub fn new(secret: impl Into<Secret>) -> Self {
        Self {
            username: None,
            secret: secret.into(),
            expires_at: None,
        }
    }

    /// Set the username.
    #[must_use]
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// Set when these credentials stop being valid: they are fetched again
    /// [`REFRESH_BEFORE_EXPIRY`] before.
    #[must_use]
    pub fn expires_at(mut self, at: SystemTime) -> Self {
        self.expires_at = Some(at);
        self
    }

    /// The username, if any.
    pub fn get_username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The secret.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// When they expire, if they do.
    pub fn get_expires_at(&self) -> Option<SystemTime> {
        self.expires_at
    }
}

/// The future a [`CredentialProvider`] returns.
pub type CredentialFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Credentials, Error>> + Send + 'a>>;

/// Supplies credentials for a registration, or for one tenant of a per-tenant registration.
///
/// Implement it for a secret store (Vault, a cloud secret manager, an IAM token service):
///
/// ```
/// use nebula_resource::{CredentialFuture, CredentialProvider, Credentials, TenantId};
///
/// struct Vault;
/// impl CredentialProvider for Vault {
///     fn fetch<'a>(&'a self, tenant: Option<&'a TenantId>) -> CredentialFuture<'a> {
///         Box::pin(async move {
///             let user = tenant.map_or("app", |t| t.as_str());
///             Ok(Credentials::new("from-vault").username(user))
///         })
///     }
/// }
/// ```
pub trait CredentialProvider: Send + Sync + 'static {
    /// The current credentials (`tenant` is set for a per-tenant registration's pool).
    ///
    /// # Errors
    ///
    /// Whatever the source reports; a create waiting for credentials fails with it.
    ///
    /// # Cancel safety
    ///
    /// The future may be dropped (its create was cancelled); it must not leave the source in a
    /// half-updated state.
    fn fetch<'a>(&'a self, tenant: Option<&'a TenantId>) -> CredentialFuture<'a>;
}

/// Credentials set in code; [`set`](Self::set) changes the answer (then call
/// `ResourceManager::rotate_credentials`).
#[derive(Debug)]
pub struct StaticCredentials(Mutex<Credentials>);

impl StaticCredentials {
    /// Always answer `credentials` (until [`set`](Self::set)).
    pub fn new(credentials: Credentials) -> Self {
        Self(Mutex::new(credentials))
    }

    /// Answer `credentials` from now on.
    pub fn set(&self, credentials: Credentials) {
        *self.0.lock() = credentials;
    }
}

impl CredentialProvider for StaticCredentials {
    fn fetch<'a>(&'a self, _tenant: Option<&'a TenantId>) -> CredentialFuture<'a> {
        let credentials = self.0.lock().clone();
        Box::pin(async move { Ok(credentials) })
    }
}

/// Credentials from environment variables, read at each fetch: the secret from `secret_var`,
/// the username from `username_var` if set.
#[derive(Debug, Clone)]
pub struct EnvCredentials {
    secret_var: String,
    username_var: Option<String>,
}

impl EnvCredentials {
    /// Read the secret from the variable `secret_var`.
    pub fn new(secret_var: impl Into<String>) -> Self {
        Self {
            secret_var: secret_var.into(),
            username_var: None,
        }
    }

    /// Also read the username from `username_var`.
    #[must_use]
    pub fn username_var(mut self, username_var: impl Into<String>) -> Self {
        self.username_var = Some(username_var.into());
        self
    }
}

impl CredentialProvider for EnvCredentials {
    fn fetch<'a>(&'a self, _tenant: Option<&'a TenantId>) -> CredentialFuture<'a> {
        Box::pin(async move {
            let read = |var: &str| {
                std::env::var(var).map_err(|_| {
                    Error::other(
                        ErrorKind::Config,
                        format!("credentials: environment variable `{var}` is not set"),
                    )
                })
            };
            let mut credentials = Credentials::new(read(&self.secret_var)?);
            if let Some(var) = &self.username_var {
                credentials = credentials.username(read(var)?);
            }
            Ok(credentials)
        })
    }
}

/// Credentials from a file, read at each fetch (a mounted Kubernetes secret, a file a sidecar
/// rewrites): its first line is the secret, surrounding whitespace trimmed.
#[derive(Debug, Clone)]
pub struct FileCredentials {
    path: PathBuf,
    username: Option<String>,
}

impl FileCredentials {
    /// Read the secret from `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            username: None,
        }
    }

    /// Pair the secret with a fixed username.
    #[must_use]
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }
}

impl CredentialProvider for FileCredentials {
    fn fetch<'a>(&'a self, _tenant: Option<&'a TenantId>) -> CredentialFuture<'a> {
        Box::pin(async move {
            let path = self.path.clone();
            let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
                .await
                .map_err(|err| Error::other(ErrorKind::Config, format!("credentials: {err}")))?
                .map_err(|err| {
                    Error::other(
                        ErrorKind::Config,
                        format!("credentials: cannot read `{}`: {err}", self.path.display()),
                    )
                })?;
            let secret = text.lines().next().unwrap_or("").trim();
            if secret.is_empty() {
                return Err(Error::other(
                    ErrorKind::Config,
                    format!("credentials: `{}` is empty", self.path.display()),
                ));
            }
            let mut credentials = Credentials::new(secret);
            if let Some(username) = &self.username {
                credentials = credentials.username(username.clone());
            }
            Ok(credentials)
        })
    }
}

/// Query parameters whose values [`redact_url`] hides.
const SECRET_PARAMS: [&str; 6] = ["password", "pass", "pwd", "secret", "token", "sslpassword"];

/// A connection string fit for a message: the password of the userinfo part
/// (`scheme://user:password@host`) and the values of query parameters such as `password=` or
/// `token=` are replaced by `***`. Anything else is kept, so the message still says which server
/// and user were meant.
///
/// ```
/// use nebula_resource::redact_url;
///
/// assert_eq!(
///     redact_url("postgres://app:s3cret@db.internal:5432/orders?sslmode=require&password=x"),
///     "postgres://app:***@db.internal:5432/orders?sslmode=require&password=***",
/// );
/// assert_eq!(redact_url("redis://:s3cret@127.0.0.1/0"), "redis://:***@127.0.0.1/0");
/// assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
/// ```
pub fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let rest = match url.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            rest
        }
        None => url,
    };
    // A password may hold unencoded '/', '?', '#' or '@': the userinfo runs to the last '@'
    // of the whole string, wherever the authority would otherwise seem to end.
    let rest = match (url.contains("://"), rest.rsplit_once('@')) {
        (true, Some((userinfo, after))) => {
            match userinfo.split_once(':') {
                Some((user, _password)) => {
                    out.push_str(user);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push('@');
            after
        }
        _ => rest,
    };
    let (head, query) = match rest.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (rest, None),
    };
    out.push_str(head);
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            let lower = name.to_ascii_lowercase();
            // A pair naming a secret, even malformed (`password:x`), keeps only its name.
            if let Some(secret) = SECRET_PARAMS.iter().find(|p| lower.starts_with(*p)) {
                out.push_str(&name[..secret.len()]);
                out.push_str("=***");
            } else {
                out.push_str(pair);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_password_is_hidden_and_the_rest_kept() {
        assert_eq!(
            redact_url("mysql://root:pw@127.0.0.1:3306/test"),
            "mysql://root:***@127.0.0.1:3306/test"
        );
        assert_eq!(
            redact_url("postgres://app@localhost/db"),
            "postgres://app@localhost/db"
        );
        assert_eq!(
            redact_url("postgres://a:p@ss:w@rd@h/db"),
            "postgres://a:***@h/db"
        );
        assert_eq!(redact_url(""), "");
        assert_eq!(redact_url("not a url"), "not a url");
    }

    #[test]
    fn passwords_with_reserved_characters_never_leak() {
        for (url, secret) in [
            ("postgres://u:pa/ss@h/db", "pa/ss"),
            ("postgres://u:pa?ss@h/db", "pa?ss"),
            ("postgres://u:pa#ss@h/db", "pa#ss"),
            ("postgres://u:p@ss@h/db", "p@ss"),
            ("postgres://h/db?password:xyzzy", "xyzzy"),
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} -> {shown}");
        }
        assert_eq!(
            redact_url("postgres://u:pa/ss@h/db"),
            "postgres://u:***@h/db"
        );
    }

    #[test]
    fn secret_query_parameters_are_hidden_whatever_their_case() {
        assert_eq!(
            redact_url("postgres://h/db?user=a&PASSWORD=p&application_name=x"),
            "postgres://h/db?user=a&PASSWORD=***&application_name=x"
        );
    }

    #[tokio::test]
    async fn built_in_providers_answer_and_never_print_the_secret() {
        let fixed = StaticCredentials::new(Credentials::new("s3cr3t-one").username("app"));
        let got = fixed.fetch(None).await.unwrap();
        assert_eq!(got.secret().expose(), "s3cr3t-one");
        assert_eq!(got.get_username(), Some("app"));
        fixed.set(Credentials::new("two"));
        assert_eq!(fixed.fetch(None).await.unwrap().secret().expose(), "two");
        assert!(!format!("{got:?}").contains("s3cr3t"));

        let path = std::env::temp_dir().join(format!("nebula-creds-{}", std::process::id()));
        std::fs::write(&path, "  s3cret-file \nignored\n").unwrap();
        let file = FileCredentials::new(&path).username("svc");
        let got = file.fetch(None).await.unwrap();
        assert_eq!(got.secret().expose(), "s3cret-file");
        std::fs::write(&path, "\n").unwrap();
        let err = file.fetch(None).await.unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        std::fs::remove_file(&path).unwrap();

        let err = EnvCredentials::new("NEBULA_TEST_SURELY_UNSET_VAR")
            .fetch(None)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("NEBULA_TEST_SURELY_UNSET_VAR"),
            "{err}"
        );
    }

    #[test]
    fn secret_never_formats_its_value() {
        let secret = Secret::from(String::from("topsecret"));
        assert!(!format!("{secret:?} {secret} {secret:#?}").contains("topsecret"));
    }
}
