//! Shutdown under load loses no acknowledged message, and no message queued before it: the
//! producer's `destroy` flushes, so every delivery future resolves `Ok` and the topic holds
//! exactly what was acknowledged (counted on the broker's side by reading the topic back).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{config, create_topic, read_back, unique};
use nebula_resource::{ErrorKind, Policy, Resource, ResourceManager};
use nebula_resource_kafka::KafkaProducer;
use nebula_resource_kafka::rdkafka::producer::{DeliveryFuture, FutureRecord};
use parking_lot::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_flushes_and_loses_no_acknowledged_message() {
    const PARTITIONS: i32 = 2;
    let topic = unique("shutdown");
    create_topic(&topic, PARTITIONS).await;
    let resource = KafkaProducer::new();
    // A long linger: when shutdown begins, messages sit in librdkafka's queue, which only the
    // flush in `destroy` sends.
    let manager = ResourceManager::builder()
        .register_with(
            resource.clone(),
            config().set("linger.ms", "200"),
            Policy::default(),
        )
        .build()
        .await
        .unwrap_or_else(|err| common::unreachable(err));

    // Half the tasks send and wait for the acknowledgement with the guard held (shutdown
    // waits for those guards); the other half only queue messages and drop the guard at once,
    // keeping the delivery futures for later.
    let acked = Arc::new(AtomicU64::new(0));
    let queued: Arc<Mutex<Vec<DeliveryFuture>>> = Arc::default();
    let mut tasks = Vec::new();
    for task in 0..16_u32 {
        let (manager, topic) = (manager.clone(), topic.clone());
        let (acked, queued) = (Arc::clone(&acked), Arc::clone(&queued));
        tasks.push(tokio::spawn(async move {
            for round in 0_u32.. {
                let producer = match manager.acquire::<KafkaProducer>().await {
                    Ok(producer) => producer,
                    Err(err) => {
                        assert_eq!(err.kind(), ErrorKind::ShuttingDown, "{err}");
                        return;
                    }
                };
                let payload = format!("{task}-{round}");
                let record = FutureRecord::to(&topic).key(&payload).payload(&payload);
                if task % 2 == 0 {
                    producer
                        .send(record, Duration::from_secs(1))
                        .await
                        .unwrap_or_else(|(err, _)| panic!("send under a held guard: {err}"));
                    acked.fetch_add(1, Ordering::Relaxed);
                } else {
                    let delivery = producer
                        .send_result(record)
                        .unwrap_or_else(|(err, _)| panic!("queue a message: {err}"));
                    queued.lock().push(delivery);
                    drop(producer);
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    manager.shutdown(Duration::from_secs(10)).await.unwrap();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("every task ends after shutdown")
            .expect("no task panics");
    }

    // Every queued message was delivered by the flush: its future says so.
    let queued = std::mem::take(&mut *queued.lock());
    let queued_count = u64::try_from(queued.len()).unwrap();
    assert!(queued_count > 0);
    for delivery in queued {
        let delivered = tokio::time::timeout(Duration::from_secs(1), delivery)
            .await
            .expect("resolved by the flush")
            .expect("the producer reported it");
        if let Err((err, _)) = delivered {
            panic!("a message queued before shutdown was not delivered: {err}");
        }
    }
    let acked = acked.load(Ordering::Relaxed) + queued_count;
    assert!(acked > queued_count, "both kinds of task ran");
    let counters = resource.counters();
    assert!(
        counters.contains(&("undelivered_at_close", 0))
            && counters.contains(&("flush_timeouts", 0)),
        "{counters:?}"
    );

    let stored = u64::try_from(read_back(&topic, PARTITIONS).await.len()).unwrap();
    assert_eq!(stored, acked, "stored on the broker vs acknowledged");
    eprintln!(
        "shutdown: {acked} acknowledged ({queued_count} only queued at shutdown), {stored} stored"
    );
}
