//! [`TenantId`]: a tenant's validated id. A module of its own, below the context, the events and
//! the credentials that all name tenants.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, ErrorKind};

/// Longest tenant id accepted, in bytes.
pub const MAX_TENANT_ID_LEN: usize = 128;

/// A validated tenant id: 1 to [`MAX_TENANT_ID_LEN`] bytes of ASCII letters, digits, `-`, `_`
/// and `.`, so it can never alter a connection string, a path or a log line it is put into.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// Validate `id`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::TenantRejected`] if `id` is empty, longer than [`MAX_TENANT_ID_LEN`] bytes, or
    /// holds a character other than ASCII letters, digits, `-`, `_`, `.`.
    pub fn new(id: &str) -> Result<Self, Error> {
        Self::validate(id)?;
        Ok(Self(Arc::from(id)))
    }

    /// Validate `id` without keeping it.
    pub(crate) fn validate(id: &str) -> Result<(), Error> {
        let reject = |why: &str| Err(Error::other(ErrorKind::TenantRejected, why.to_owned()));
        if id.is_empty() {
            return reject("tenant id is empty");
        }
        if id.len() > MAX_TENANT_ID_LEN {
            return reject(&format!(
                "tenant id is {} bytes long, the limit is {MAX_TENANT_ID_LEN}",
                id.len()
            ));
        }
        if let Some(bad) = id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return reject(&format!(
                "tenant id holds {bad:?}; only ASCII letters, digits, '-', '_' and '.' are allowed"
            ));
        }
        Ok(())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn arc(&self) -> &Arc<str> {
        &self.0
    }
}

impl std::borrow::Borrow<str> for TenantId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_validated() {
        assert_eq!(
            TenantId::new("acme-01.eu_west").unwrap().as_str(),
            "acme-01.eu_west"
        );
        for bad in [
            "",
            "a;b",
            "a b",
            "a\nb",
            "x'y",
            "a/b",
            "a@b",
            "a=b",
            &"x".repeat(129),
        ] {
            let err = TenantId::new(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::TenantRejected, "{bad:?}");
        }
    }
}
