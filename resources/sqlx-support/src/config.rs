//! Configuration helpers shared by the database crates: the checks their configurations have
//! in common, cutting a connection URL where a URL parser cuts it, decoding its parts, and
//! showing it in messages without its password or any parameter value that might be a secret.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use nebula_resource::{Error, Secret};

/// The checks of where a server configuration connects, in this order: a URL (checked by
/// `parse_url`) or a host is given; a host is not empty and holds no whitespace or control
/// characters; a port is not 0. `config_type` names the configuration in the message for a
/// missing server.
///
/// # Errors
///
/// The configuration error of the first check that fails.
pub fn check_address(
    url: Option<&Secret>,
    host: Option<&str>,
    port: Option<u16>,
    config_type: &str,
    parse_url: impl FnOnce(&str) -> Result<(), Error>,
) -> Result<(), Error> {
    match (url, host) {
        (Some(url), _) => parse_url(url.expose())?,
        (None, None) => {
            return Err(Error::config(
                "url",
                format!(
                    "no server given: use `{config_type}::new(url)` or \
                     `{config_type}::from_host(host)`"
                ),
            ));
        }
        (None, Some(_)) => {}
    }
    if let Some(host) = host {
        if host.is_empty() {
            return Err(Error::config("host", "must not be empty"));
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::config(
                "host",
                "must not contain whitespace or control characters",
            ));
        }
    }
    if port == Some(0) {
        return Err(Error::config("port", "must be in 1..=65535 (got 0)"));
    }
    Ok(())
}

/// A password must not hold a NUL byte.
///
/// # Errors
///
/// A `password` configuration error, which never echoes the value.
pub fn check_password(password: Option<&Secret>) -> Result<(), Error> {
    if password.is_some_and(|password| password.expose().contains('\0')) {
        return Err(Error::config("password", "must not contain a NUL byte"));
    }
    Ok(())
}

/// A timeout must be greater than zero (`zero` says why, if it is) and at most `max`.
///
/// # Errors
///
/// A configuration error for `field`.
pub fn check_timeout(
    field: &'static str,
    timeout: Duration,
    max: Duration,
    zero: &str,
) -> Result<(), Error> {
    if timeout.is_zero() {
        return Err(Error::config(field, zero));
    }
    if timeout > max {
        return Err(Error::config(
            field,
            format!("must be at most {max:?} (got {timeout:?})"),
        ));
    }
    Ok(())
}

/// A path, if given, must not be empty.
///
/// # Errors
///
/// A configuration error for `field`.
pub fn check_path_given(field: &'static str, path: Option<&Path>) -> Result<(), Error> {
    if path.is_some_and(|path| path.as_os_str().is_empty()) {
        return Err(Error::config(field, "must not be empty"));
    }
    Ok(())
}

/// Where a server configuration connects, as its `Display` shows it (never with the password):
/// the URL as messages may show it, then the parts set over it; or, with no URL,
/// `scheme://user@host:port/database` and the socket.
#[derive(Debug, Clone, Copy)]
pub struct ServerTarget<'a> {
    /// The scheme shown when there is no URL.
    pub scheme: &'a str,
    /// The URL, already redacted for display.
    pub shown_url: Option<&'a str>,
    /// The host set over the URL, or the host.
    pub host: Option<&'a str>,
    /// The port set over the URL, or the port.
    pub port: Option<u16>,
    /// The Unix socket, for the databases that have one.
    pub socket: Option<&'a Path>,
    /// The user name set over the URL, or the user name.
    pub username: Option<&'a str>,
    /// The database set over the URL, or the database.
    pub database: Option<&'a str>,
}

impl fmt::Display for ServerTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(url) = self.shown_url {
            f.write_str(url)?;
            let mut overrides = Vec::new();
            if let Some(host) = self.host {
                overrides.push(format!("host `{host}`"));
            }
            if let Some(port) = self.port {
                overrides.push(format!("port {port}"));
            }
            if let Some(socket) = self.socket {
                overrides.push(format!("socket `{}`", socket.display()));
            }
            if let Some(username) = self.username {
                overrides.push(format!("user `{username}`"));
            }
            if let Some(database) = self.database {
                overrides.push(format!("database `{database}`"));
            }
            if !overrides.is_empty() {
                write!(f, " with {}", overrides.join(", "))?;
            }
            return Ok(());
        }
        write!(f, "{}://", self.scheme)?;
        if let Some(username) = self.username {
            write!(f, "{username}@")?;
        }
        f.write_str(self.host.unwrap_or(""))?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        if let Some(database) = self.database {
            write!(f, "/{database}")?;
        }
        if let Some(socket) = self.socket {
            write!(f, " (socket `{}`)", socket.display())?;
        }
        Ok(())
    }
}

/// `url` cut after its `scheme://`: the scheme and the rest.
///
/// `None` if `url` has no `scheme://`, or holds an `@` after its authority — a password with an
/// unencoded `/`, `?` or `#` in it, whose tail a parser would take for the host, path or query.
/// Such a URL is never shown.
pub fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if rest[authority_end..].contains('@') {
        return None;
    }
    Some((scheme, rest))
}

/// The checks every server URL gets before its parts are read: it is not empty, and
/// [`split_scheme`] can cut it. `expected` describes the URL's form, for the error message.
///
/// # Errors
///
/// A `url` configuration error that never repeats the URL.
pub fn split_server_url<'a>(url: &'a str, expected: &str) -> Result<(&'a str, &'a str), Error> {
    if url.trim().is_empty() {
        return Err(Error::config("url", "must not be empty"));
    }
    split_scheme(url).ok_or_else(|| {
        Error::config(
            "url",
            if url.contains("://") {
                "holds an `@` after its host part: percent-encode `@`, `:`, `/`, `?` and `#` in \
                 the user name and password"
                    .to_owned()
            } else {
                format!("is not a URL; {expected}")
            },
        )
    })
}

/// Check that `scheme` is one of `schemes` (ignoring case); `shown` is the URL as messages
/// show it.
///
/// # Errors
///
/// A `url` configuration error naming the schemes accepted, and `scheme` if it is a
/// [plain name](is_plain_name).
pub fn check_scheme(
    scheme: &str,
    schemes: &[&str],
    shown: &str,
    is_plain_name: fn(&str) -> bool,
) -> Result<(), Error> {
    if schemes
        .iter()
        .any(|accepted| scheme.eq_ignore_ascii_case(accepted))
    {
        return Ok(());
    }
    let got = if is_plain_name(scheme) {
        format!("`{scheme}`")
    } else {
        "something else".to_owned()
    };
    let accepted = schemes
        .iter()
        .map(|accepted| format!("`{accepted}`"))
        .collect::<Vec<_>>()
        .join(" or ");
    Err(Error::config(
        "url",
        format!("scheme must be {accepted}, got {got} in `{shown}`"),
    ))
}

/// The error for the URL parameter `key`, which is not one of `known`: the key is named only if
/// it is a [plain name](is_plain_name). `config_type` names the configuration whose
/// `connect_timeout` sets what a URL may not.
pub fn unknown_parameter(
    key: &str,
    shown: &str,
    known: &str,
    config_type: &str,
    is_plain_name: fn(&str) -> bool,
) -> Error {
    let which = if is_plain_name(key) {
        format!("unknown parameter `{key}`")
    } else {
        "an unknown parameter".to_owned()
    };
    Error::config(
        "url",
        format!(
            "{which} in `{shown}`; known: {known} (set the connect timeout with \
             `{config_type}::connect_timeout`)"
        ),
    )
}

/// The `key[=value]` pairs of a URL's query, in order; empty pairs are skipped.
pub fn query_parameters(query: Option<&str>) -> impl Iterator<Item = (&str, Option<&str>)> {
    query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (pair, None),
        })
}

/// Append `query` to `shown` as messages may show it: the values of parameters other than
/// `shown_parameters` replaced by `***`, and keys that are not a plain name too.
pub fn push_redacted_query(
    shown: &mut String,
    query: Option<&str>,
    shown_parameters: &[&str],
    is_plain_name: fn(&str) -> bool,
) {
    let mut separator = '?';
    for (key, value) in query_parameters(query) {
        shown.push(separator);
        separator = '&';
        match value {
            Some(value) if shown_parameters.contains(&key) => {
                shown.push_str(key);
                shown.push('=');
                shown.push_str(value);
            }
            _ if is_plain_name(key) => {
                shown.push_str(key);
                shown.push_str("=***");
            }
            _ => shown.push_str("***"),
        }
    }
}

/// Whether `text` is a short name (at most 40 bytes) of ASCII letters, digits and the bytes of
/// `punctuation`: safe to repeat in a message.
pub fn is_plain_name(text: &str, punctuation: &[u8]) -> bool {
    !text.is_empty()
        && text.len() <= 40
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || punctuation.contains(&b))
}

/// `%XX`-decode `text` into UTF-8; `None` if it is not valid.
pub fn decode_percent(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Decode a query value as URL parsers do (`application/x-www-form-urlencoded`: `+` is a
/// space).
pub fn decode_form(text: &str) -> Option<String> {
    decode_percent(&text.replace('+', " "))
}

#[cfg(test)]
mod tests {
    use super::{decode_form, decode_percent, is_plain_name, query_parameters, split_scheme};

    fn plain(text: &str) -> bool {
        is_plain_name(text, b"_-.+")
    }

    #[test]
    fn urls_with_an_at_after_the_authority_are_not_cut() {
        assert_eq!(split_scheme("a://u:p@h/db"), Some(("a", "u:p@h/db")));
        assert_eq!(split_scheme("a://u:p/w@h/db"), None);
        assert_eq!(split_scheme("no scheme"), None);
    }

    #[test]
    fn query_pairs_keep_missing_values_apart() {
        let pairs: Vec<_> = query_parameters(Some("a=1&&b&c=")).collect();
        assert_eq!(pairs, [("a", Some("1")), ("b", None), ("c", Some(""))]);
    }

    #[test]
    fn percent_and_form_decoding() {
        assert_eq!(decode_percent("a%20b+c").as_deref(), Some("a b+c"));
        assert_eq!(decode_form("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(decode_percent("%zz"), None);
        assert_eq!(decode_percent("%ff"), None);
    }

    #[test]
    fn plain_names_are_short_and_tame() {
        assert!(plain("ssl-mode"));
        assert!(!plain(""));
        assert!(!plain("p@ss"));
        assert!(!plain(&"x".repeat(41)));
    }
}
