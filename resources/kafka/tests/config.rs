//! Bad settings are rejected by `build()` before anything is created, with a `Config` error
//! naming the resource and the field, and never showing a secret; brokers that do not answer
//! fail `build()` with a `Create` error within the metadata timeout.

use std::time::Duration;

use nebula_resource::{ErrorKind, Policy, PoolConfig, ResourceManager, RetryPolicy};
use nebula_resource_kafka::{
    KafkaConfig, KafkaConsumer, KafkaConsumerConfig, KafkaProducer, SaslMechanism,
};

const SECRET: &str = "hunter2-very-secret";

async fn producer_build_error(config: KafkaConfig) -> nebula_resource::Error {
    ResourceManager::builder()
        .register(KafkaProducer::new(), config)
        .build()
        .await
        .expect_err("a bad config fails build()")
}

async fn consumer_build_error(config: KafkaConsumerConfig) -> nebula_resource::Error {
    ResourceManager::builder()
        .register(KafkaConsumer::new(), config)
        .build()
        .await
        .expect_err("a bad config fails build()")
}

fn assert_names(err: &nebula_resource::Error, key: &str, field: &str) {
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert_eq!(err.field(), Some(field), "{err}");
    assert_eq!(err.resource_key(), Some(key), "{err}");
    let shown = format!("{err} {err:?}");
    assert!(shown.contains(key) && shown.contains(field), "{shown}");
    assert!(!shown.contains(SECRET), "a secret in {shown}");
}

#[tokio::test]
async fn build_rejects_bad_producer_settings_naming_the_field() {
    let good = || KafkaConfig::new("127.0.0.1:9092").sasl(SaslMechanism::Plain, "app", SECRET);
    let cases = [
        (KafkaConfig::new(""), "bootstrap_servers"),
        (KafkaConfig::new("127.0.0.1:9092,,"), "bootstrap_servers"),
        (
            KafkaConfig::new("kafka://127.0.0.1:9092"),
            "bootstrap_servers",
        ),
        (KafkaConfig::new("127.0.0.1:70000"), "bootstrap_servers"),
        (good().client_id("two words"), "client_id"),
        (good().sasl(SaslMechanism::Plain, "", SECRET), "sasl"),
        (good().metadata_timeout(Duration::ZERO), "metadata_timeout"),
        (
            good().delivery_timeout(Duration::from_secs(7 * 24 * 3600)),
            "delivery_timeout",
        ),
        (
            good().flush_timeout(Duration::from_secs(86_400)),
            "flush_timeout",
        ),
        (good().close_timeout(Duration::ZERO), "close_timeout"),
        (good().health_topic("bad topic"), "health_topic"),
        (good().set("bootstrap.servers", "other:9092"), "properties"),
        (good().set("sasl.password", SECRET), "properties"),
        (good().set("not.a.librdkafka.property", "1"), "properties"),
        (good().set("acks", "sometimes"), "properties"),
        // librdkafka quotes the value it rejects: scrubbed when it is a configured secret.
        (
            good()
                .set("ssl.key.password", SECRET)
                .set("socket.timeout.ms", SECRET),
            "properties",
        ),
    ];
    for (config, field) in cases {
        let err = producer_build_error(config).await;
        assert_names(&err, "kafka-producer", field);
    }
}

#[tokio::test]
async fn build_rejects_bad_consumer_settings_naming_the_field() {
    let client = || KafkaConfig::new("127.0.0.1:9092").sasl(SaslMechanism::Plain, "app", SECRET);
    let cases = [
        (
            KafkaConsumerConfig::new(client(), "", ["orders"]),
            "group_id",
        ),
        (
            KafkaConsumerConfig::new(client(), "g", Vec::<String>::new()),
            "topics",
        ),
        (
            KafkaConsumerConfig::new(client(), "g", ["or ders"]),
            "topics",
        ),
        (
            KafkaConsumerConfig::new(client(), "g", ["x".repeat(250)]),
            "topics",
        ),
        (
            KafkaConsumerConfig::new(KafkaConfig::new("nohost"), "g", ["orders"]),
            "bootstrap_servers",
        ),
        (
            KafkaConsumerConfig::new(client().set("group.id", "other"), "g", ["orders"]),
            "properties",
        ),
        (
            KafkaConsumerConfig::new(client().set("session.timeout.ms", "-1"), "g", ["orders"]),
            "properties",
        ),
    ];
    for (config, field) in cases {
        let err = consumer_build_error(config).await;
        assert_names(&err, "kafka-consumer", field);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_that_do_not_answer_fail_build_with_a_create_error_in_bounded_time() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap()
        .port();
    let config = KafkaConfig::new(format!("127.0.0.1:{port}"))
        .sasl(SaslMechanism::Plain, "app", SECRET)
        .metadata_timeout(Duration::from_millis(500));
    let started = tokio::time::Instant::now();
    let err = ResourceManager::builder()
        .register_with(
            KafkaProducer::new(),
            config,
            Policy::default()
                .retry(RetryPolicy::none())
                .pool(PoolConfig::default().create_timeout(Duration::from_secs(5))),
        )
        .build()
        .await
        .expect_err("nobody answers");
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Create, "{err}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(SECRET), "{shown}");
}
