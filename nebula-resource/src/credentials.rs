//! Secrets that never print, and redaction of connection strings.

use std::fmt;
use std::sync::Arc;

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
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut out = String::with_capacity(url.len());
    match head.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            let authority_end = rest.find(['/', '#']).unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            match authority.rsplit_once('@') {
                Some((userinfo, host)) => {
                    match userinfo.split_once(':') {
                        Some((user, _password)) => {
                            out.push_str(user);
                            out.push_str(":***");
                        }
                        None => out.push_str(userinfo),
                    }
                    out.push('@');
                    out.push_str(host);
                }
                None => out.push_str(authority),
            }
            out.push_str(path);
        }
        None => out.push_str(head),
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if SECRET_PARAMS.contains(&name.to_ascii_lowercase().as_str()) => {
                    out.push_str(name);
                    out.push_str("=***");
                }
                _ => out.push_str(pair),
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
    fn secret_query_parameters_are_hidden_whatever_their_case() {
        assert_eq!(
            redact_url("postgres://h/db?user=a&PASSWORD=p&application_name=x"),
            "postgres://h/db?user=a&PASSWORD=***&application_name=x"
        );
    }

    #[test]
    fn secret_never_formats_its_value() {
        let secret = Secret::from(String::from("topsecret"));
        assert!(!format!("{secret:?} {secret} {secret:#?}").contains("topsecret"));
    }
}
