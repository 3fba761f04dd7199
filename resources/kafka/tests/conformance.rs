//! The test kit's conformance suite, run against real brokers for [`KafkaProducer`] and
//! [`KafkaConsumer`]: on the machine's broker, and through a fault proxy (resets, a refused
//! server, a black hole) in front of a private broker that advertises the proxy's address, so
//! that every connection of the clients goes through the proxy.

mod common;

use std::time::Duration;

use common::{broker_behind_proxy, create_topic, create_topic_on, proxied_brokers, unique};
use nebula_resource::Error;
use nebula_resource_kafka::rdkafka::producer::FutureRecord;
use nebula_resource_kafka::{
    KafkaConfig, KafkaConsumer, KafkaConsumerConfig, KafkaProducer, ProducerClient,
};
use nebula_resource_testing::Conformance;

/// Every bound short, within the suite's (3 s per acquire and create, 2 s per destroy, 5 s
/// per exercise).
fn bounded(config: KafkaConfig) -> KafkaConfig {
    config
        .metadata_timeout(Duration::from_millis(500))
        .delivery_timeout(Duration::from_secs(2))
        .flush_timeout(Duration::from_secs(1))
        .close_timeout(Duration::from_secs(1))
}

/// Send one message to `topic` and wait for its acknowledgement.
async fn send(producer: &ProducerClient, topic: &str) -> Result<(), Error> {
    producer
        .send(
            FutureRecord::to(topic).key("k").payload("x"),
            Duration::ZERO,
        )
        .await
        .map(drop)
        .map_err(|(err, _)| Error::check(err))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_conforms() {
    let (proxy, _broker) = broker_behind_proxy().await;
    let topic = unique("conformance");
    create_topic(&topic, 1).await;
    create_topic_on(&proxied_brokers(&proxy), &topic, 1).await;
    let proxied = bounded(common::tuned(KafkaConfig::new(proxied_brokers(&proxy))));
    Conformance::new(KafkaProducer::new(), bounded(common::config()))
        .exercise(move |producer| {
            let topic = topic.clone();
            Box::pin(async move { send(producer, &topic).await })
        })
        .through_proxy(proxy, proxied)
        .run()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_conforms() {
    let (proxy, _broker) = broker_behind_proxy().await;
    let topic = unique("conformance-consumer");
    let group = unique("conformance-group");
    create_topic(&topic, 1).await;
    create_topic_on(&proxied_brokers(&proxy), &topic, 1).await;
    let member = |client: KafkaConfig| KafkaConsumerConfig::new(bounded(client), &group, [&topic]);
    let proxied = member(common::tuned(KafkaConfig::new(proxied_brokers(&proxy))));
    Conformance::new(KafkaConsumer::new(), member(common::config()))
        .exercise(|member| Box::pin(member.ping()))
        .through_proxy(proxy, proxied)
        .run()
        .await;
}
