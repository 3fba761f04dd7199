//! The machine's broker stopped and started under load: no task hangs, every failure is a typed
//! error within its bound (an acquire within `acquire_timeout`, a send within
//! `delivery_timeout`), and service is back within 2 s of the broker accepting connections.
//!
//! This file is its own test binary: no other test runs while the broker is down. The test
//! kit's `Service` starts it again however the test ends. tansu keeps topics in memory, so the
//! test creates its topic again once the broker is back (inside the 2 s).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{config, create_topic, unique};
use nebula_resource::{BreakerConfig, HealthConfig, Policy, PoolConfig, RetryPolicy};
use nebula_resource_kafka::KafkaProducer;
use nebula_resource_kafka::rdkafka::error::KafkaError;
use nebula_resource_kafka::rdkafka::producer::FutureRecord;
use nebula_resource_testing::Service;
use tokio::time::Instant;

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_under_load_hangs_nothing_and_service_is_back_within_two_seconds() {
    let topic = unique("restart");
    create_topic(&topic, 1).await;
    let resource = KafkaProducer::new();
    let manager = nebula_resource::ResourceManager::builder()
        .register_with(
            resource.clone(),
            config()
                .metadata_timeout(Duration::from_millis(500))
                .delivery_timeout(DELIVERY_TIMEOUT)
                .flush_timeout(Duration::from_millis(500)),
            Policy::default()
                .pool(
                    PoolConfig::default()
                        .acquire_timeout(ACQUIRE_TIMEOUT)
                        .create_timeout(Duration::from_secs(1)),
                )
                .retry(RetryPolicy::none())
                .health(
                    HealthConfig::default()
                        .interval(Duration::from_millis(200))
                        .timeout(Duration::from_secs(1)),
                )
                // The breaker may open while the broker is down; a short open wait keeps it
                // from holding the service down after the broker is back.
                .breaker(BreakerConfig::default().open_wait(Duration::from_millis(250))),
        )
        .build()
        .await
        .unwrap_or_else(|err| common::unreachable(err));

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for task in 0..16 {
        let (manager, topic) = (manager.clone(), topic.clone());
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let call = Instant::now();
                match manager.acquire::<KafkaProducer>().await {
                    Ok(producer) => {
                        let payload = format!("{task}");
                        let sent = producer
                            .send(
                                FutureRecord::to(&topic).key(&payload).payload(&payload),
                                Duration::ZERO,
                            )
                            .await;
                        if let Err((err, _)) = sent {
                            assert!(matches!(err, KafkaError::MessageProduction(_)), "{err:?}");
                            failed.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        } else {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(err) => {
                        assert!(err.is_retryable(), "{err}");
                        failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                let took = call.elapsed();
                assert!(
                    took < ACQUIRE_TIMEOUT + DELIVERY_TIMEOUT + Duration::from_millis(500),
                    "one acquire + send took {took:?}"
                );
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = ok.load(Ordering::Relaxed);
    assert!(before > 0, "the load works before the restart");

    let stopped = Service::tansu().stop().await;
    let down_at = Instant::now();
    let (ok_at_stop, failed_at_stop) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let failed_while_down = failed.load(Ordering::Relaxed) - failed_at_stop;
    let ok_while_down = ok.load(Ordering::Relaxed) - ok_at_stop;
    assert!(failed_while_down > 0, "calls fail while the broker is down");
    stopped.start().await;
    let back_at = Instant::now();
    let down_for = back_at - down_at;

    // Back: the topic again (tansu kept it in memory), then a fresh acquire and send succeed
    // within 2 s of the broker accepting connections.
    create_topic(&topic, 1).await;
    loop {
        if let Ok(producer) = manager.acquire::<KafkaProducer>().await
            && producer
                .send(
                    FutureRecord::to(&topic).key("probe").payload("back"),
                    Duration::ZERO,
                )
                .await
                .is_ok()
        {
            break;
        }
        assert!(
            back_at.elapsed() < Duration::from_secs(2),
            "service not back within 2 s of the broker"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back_after = back_at.elapsed();
    let ok_at_return = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        ok.load(Ordering::Relaxed) > ok_at_return,
        "the load is served again"
    );

    stop.store(true, Ordering::Relaxed);
    for task in load {
        tokio::time::timeout(ACQUIRE_TIMEOUT + 2 * DELIVERY_TIMEOUT, task)
            .await
            .expect("no load task hangs")
            .expect("no load task panics");
    }
    let status = manager.status();
    let producer = status.resource("kafka-producer").unwrap();
    eprintln!(
        "restart: broker down for {down_for:?}, service back {back_after:?} after it; {ok_at_stop} ok \
         before, {ok_while_down} ok and {failed_while_down} failed while down; pool {:?}; \
         counters {:?}",
        producer.pool, producer.counters
    );
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}
