//! The test kit's conformance suite, run against the real server: for [`Nats`] directly and
//! through a fault proxy (resets, a refused server, a black hole), and for [`JetStream`] on top
//! of it.

mod common;

use std::time::Duration;

use nebula_resource::Error;
use nebula_resource_nats::{JetStream, JetStreamConfig, Nats, NatsConfig};
use nebula_resource_testing::{Conformance, FaultProxy};

fn bounded(config: NatsConfig) -> NatsConfig {
    config
        .connect_timeout(Duration::from_millis(500))
        .check_timeout(Duration::from_millis(500))
        .publish_timeout(Duration::from_millis(500))
        .drain_timeout(Duration::from_secs(1))
        .reconnect_max_delay(Duration::from_millis(100))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_conforms() {
    let upstream = common::nats_url()
        .trim_start_matches("nats://")
        .parse()
        .expect("NEBULA_TEST_NATS_URL is nats://<ip>:<port> for the conformance suite");
    let proxy = FaultProxy::start(upstream).await.expect("start the proxy");
    let proxied = bounded(NatsConfig::new(format!(
        "nats://127.0.0.1:{}",
        proxy.port()
    )));
    Conformance::new(Nats, bounded(common::config()))
        .exercise(|nats| {
            Box::pin(async move {
                nats.publish_bounded("nebula.conformance", "x".into())
                    .await
                    .map_err(Error::check)?;
                nats.ping().await.map_err(Error::check)
            })
        })
        .through_proxy(proxy, proxied)
        .run()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_conforms() {
    Conformance::new(
        JetStream,
        JetStreamConfig::default().timeout(Duration::from_secs(1)),
    )
    .dependencies(|builder| builder.register(Nats, bounded(common::config())))
    .exercise(|js| Box::pin(async move { js.ping().await.map_err(Error::check) }))
    .run()
    .await;
}
