//! The test kit's conformance suite, for both resources, on the real broker (and through the
//! fault proxy for the backend-killed scenarios).

mod common;

use std::time::Duration;

use common::config;
use nebula_resource::{Error, Policy, PoolConfig};
use nebula_resource_rabbitmq::lapin::BasicProperties;
use nebula_resource_rabbitmq::{RabbitMq, RabbitMqChannel, RabbitMqChannelConfig, RabbitMqConfig};
use nebula_resource_testing::{Conformance, FaultProxy};

/// The bound of the connection's exercise: open and close a channel.
const ROUND_TRIP: Duration = Duration::from_secs(2);

async fn proxy() -> FaultProxy {
    FaultProxy::start("127.0.0.1:5672".parse().unwrap())
        .await
        .expect("start the fault proxy")
}

fn via(proxy: &FaultProxy) -> RabbitMqConfig {
    RabbitMqConfig::new(format!("amqp://127.0.0.1:{}/%2f", proxy.port()))
        .connect_timeout(Duration::from_secs(1))
        .heartbeat(Duration::from_secs(1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_conforms() {
    let proxy = proxy().await;
    let proxied = via(&proxy);
    Conformance::new(RabbitMq, config().heartbeat(Duration::from_secs(1)))
        .exercise(|connection| {
            Box::pin(async move {
                // lapin's RPCs have no deadline of their own, and one caught by the connection's
                // death can wait forever: bound them, as every user of the connection should.
                let round_trip = async {
                    let channel = connection.create_channel().await.map_err(Error::check)?;
                    channel.close(200, "OK".into()).await.map_err(Error::check)
                };
                tokio::time::timeout(ROUND_TRIP, round_trip)
                    .await
                    .map_err(|_| {
                        Error::check(format!("no channel round trip within {ROUND_TRIP:?}"))
                    })?
            })
        })
        .through_proxy(proxy, proxied)
        .run()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channels_conform() {
    let proxy = proxy().await;
    // The channels' backend is reached through their dependency: the suite's proxy sits in
    // front of the connection registered below.
    let upstream = via(&proxy);
    let channels = RabbitMqChannelConfig::default().publish_timeout(Duration::from_secs(2));
    Conformance::new(RabbitMqChannel, channels.clone())
        .dependencies(move |builder| {
            builder.register_with(
                RabbitMq,
                upstream.clone(),
                Policy::default()
                    .pool(PoolConfig::default().acquire_timeout(Duration::from_secs(2))),
            )
        })
        .exercise(|channel| {
            Box::pin(async move {
                // The default exchange with no queue bound to the key: confirmed and dropped.
                channel
                    .publish(
                        "",
                        "nebula-conformance-nowhere",
                        b"x",
                        BasicProperties::default(),
                    )
                    .await
                    .map_err(Error::check)
            })
        })
        .through_proxy(proxy, channels)
        .run()
        .await;
}
