//! Bounds every setting is checked against, and the check shared by every duration setting.

use std::time::Duration;

use crate::error::Error;

/// Largest `max_size` accepted: far beyond any real connection limit, so a typo is caught.
pub const MAX_POOL_SIZE: usize = 100_000;

/// Longest timeout or lifetime accepted (one week): anything longer is a unit mistake.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A duration setting must be greater than zero and at most [`MAX_DURATION`]; the error names
/// `field`.
pub(crate) fn check_duration(field: &'static str, value: Duration) -> Result<(), Error> {
    if value.is_zero() {
        return Err(Error::config(field, "must be greater than zero"));
    }
    if value > MAX_DURATION {
        return Err(Error::config(
            field,
            format!("must be at most {MAX_DURATION:?} (got {value:?})"),
        ));
    }
    Ok(())
}
