//! The test kit's conformance suite on the in-process cache (no backend to cut, so the suite
//! runs without its proxy scenario).

use nebula_resource::{Error, ErrorKind};
use nebula_resource_cache::{Cache, CacheConfig};
use nebula_resource_testing::Conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_conforms() {
    Conformance::new(Cache::<String, u64>::new(), CacheConfig::new(1_000))
        .exercise(|cache| {
            Box::pin(async move {
                cache.insert("key".to_owned(), 7).await;
                match cache.get("key").await {
                    Some(7) => Ok(()),
                    other => Err(Error::other(
                        ErrorKind::Check,
                        format!("read back {other:?} after inserting 7"),
                    )),
                }
            })
        })
        .run()
        .await;
}
