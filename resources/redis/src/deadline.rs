//! One bound for a Redis request, whatever the connection does meanwhile (a reconnection of
//! the resident connection included: redis-rs's own response timeout covers only the wait
//! for a reply on a live connection).

use std::future::Future;
use std::time::Duration;

use redis::{RedisError, RedisResult};

/// `request`, failed with a timeout error (an I/O error of kind `TimedOut`, as the driver's
/// own) if it takes longer than `limit`.
pub(crate) async fn within<T>(
    limit: Option<Duration>,
    request: impl Future<Output = RedisResult<T>>,
) -> RedisResult<T> {
    match limit {
        None => request.await,
        Some(limit) => tokio::time::timeout(limit, request)
            .await
            .unwrap_or_else(|_| {
                Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no reply within response_timeout ({limit:?})"),
                )))
            }),
    }
}
