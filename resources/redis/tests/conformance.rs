//! The test kit's conformance suite for both Redis resources against the real server:
//! directly, and through a fault proxy that resets, refuses and black-holes its connections.

use std::time::Duration;

use nebula_resource::Error;
use nebula_resource_redis::redis::{self, aio::ConnectionLike};
use nebula_resource_redis::{Redis, RedisConfig, RedisDedicated};
use nebula_resource_testing::{Conformance, FaultProxy};

const SERVER: &str = "127.0.0.1:6379";

fn config(address: &str) -> RedisConfig {
    RedisConfig::new(format!("redis://{address}"))
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(1))
}

async fn ping(conn: &mut (impl ConnectionLike + Send)) -> Result<(), Error> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(drop)
        .map_err(Error::check)
}

async fn proxy() -> FaultProxy {
    FaultProxy::start(SERVER.parse().expect("a loopback address"))
        .await
        .expect("start the proxy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_redis_conforms() {
    let proxy = proxy().await;
    let proxied = config(&proxy.local_addr().to_string());
    Conformance::new(Redis, config(SERVER))
        .exercise(|conn| Box::pin(ping(conn)))
        .through_proxy(proxy, proxied)
        .run()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedicated_redis_conforms() {
    let proxy = proxy().await;
    let proxied = config(&proxy.local_addr().to_string());
    Conformance::new(RedisDedicated, config(SERVER))
        .exercise(|conn| Box::pin(ping(conn)))
        .through_proxy(proxy, proxied)
        .run()
        .await;
}
