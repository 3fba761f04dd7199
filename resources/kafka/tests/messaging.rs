//! Producing and consuming through the resources' guards, against the real broker: messages go
//! out through the resident producer and come back through group members; 64 tasks sharing the
//! producer get every message stored exactly once; a member commits what it read when its guard
//! is dropped, and the next member of its group resumes after it; members are never reused.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{config, consumer_config, create_topic, read_back, text, unique};
use nebula_resource::{Policy, PoolConfig, Resource, ResourceManager};
use nebula_resource_kafka::rdkafka::Message;
use nebula_resource_kafka::rdkafka::producer::FutureRecord;
use nebula_resource_kafka::{KafkaConsumer, KafkaProducer};

const SEND_QUEUE_TIMEOUT: Duration = Duration::from_secs(1);

/// Send `payload` to `topic` through a freshly acquired producer guard; the delivery.
async fn send(manager: &ResourceManager, topic: &str, key: &str, payload: &str) -> (i32, i64) {
    let producer = manager.acquire::<KafkaProducer>().await.expect("acquire");
    let delivery = producer
        .send(
            FutureRecord::to(topic).key(key).payload(payload),
            SEND_QUEUE_TIMEOUT,
        )
        .await
        .unwrap_or_else(|(err, _)| panic!("send {payload} to {topic}: {err}"));
    (delivery.partition, delivery.offset)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_out_through_the_producer_and_come_back_through_a_member() {
    let topic = unique("guards");
    create_topic(&topic, 1).await;
    let manager = ResourceManager::builder()
        .register(KafkaProducer::new(), config())
        .register(
            KafkaConsumer::new(),
            consumer_config(&unique("guards-group"), &topic),
        )
        .build()
        .await
        .unwrap_or_else(|err| common::unreachable(err));

    for i in 0..10_i64 {
        let (partition, offset) = send(&manager, &topic, &format!("k{i}"), &format!("m{i}")).await;
        assert_eq!((partition, offset), (0, i));
    }
    let producer = manager.acquire::<KafkaProducer>().await.unwrap();
    producer.ping().await.expect("a metadata round trip");
    assert!(!KafkaProducer::new().is_broken(&producer));
    drop(producer);

    let member = manager.acquire::<KafkaConsumer>().await.unwrap();
    member.ping().await.expect("a metadata round trip");
    for i in 0..10_i64 {
        let message = tokio::time::timeout(Duration::from_secs(30), member.recv())
            .await
            .expect("a message within 30 s")
            .expect("a message");
        assert_eq!(message.offset(), i);
        assert_eq!(message.key(), Some(format!("k{i}").as_bytes()));
        assert_eq!(message.payload(), Some(format!("m{i}").as_bytes()));
    }
    drop(member);

    let status = manager.status();
    let producer = status.resource("kafka-producer").unwrap();
    assert_eq!(producer.pool.created, 1, "one resident producer");
    assert!(
        producer
            .counters
            .iter()
            .any(|(name, value)| *name == "undelivered_at_close" && *value == 0),
        "{:?}",
        producer.counters
    );
    manager.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_on_the_producer_store_every_message_exactly_once() {
    const TASKS: usize = 64;
    const PER_TASK: usize = 40;
    const PARTITIONS: i32 = 3;
    let topic = unique("tasks");
    create_topic(&topic, PARTITIONS).await;
    let manager = common::producer_manager(config().set("linger.ms", "2"), Policy::default()).await;

    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let (manager, topic) = (manager.clone(), topic.clone());
            tokio::spawn(async move {
                let mut delivered = Vec::with_capacity(PER_TASK);
                for i in 0..PER_TASK {
                    let payload = format!("{task}-{i}");
                    delivered.push(send(&manager, &topic, &payload, &payload).await);
                }
                delivered
            })
        })
        .collect();
    let mut offsets = BTreeSet::new();
    for task in tasks {
        for delivery in tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the tasks finish")
            .expect("no task panics")
        {
            assert!(
                offsets.insert(delivery),
                "offset {delivery:?} delivered twice"
            );
        }
    }
    assert_eq!(offsets.len(), TASKS * PER_TASK);
    for partition in 0..PARTITIONS {
        // Each partition's offsets are 0..n without a gap.
        let in_partition: Vec<i64> = offsets
            .iter()
            .filter(|(p, _)| *p == partition)
            .map(|(_, offset)| *offset)
            .collect();
        let expected: Vec<i64> = (0..i64::try_from(in_partition.len()).unwrap()).collect();
        assert_eq!(in_partition, expected, "partition {partition}");
    }

    let stored = read_back(&topic, PARTITIONS).await;
    let payloads: BTreeSet<String> = stored.iter().map(text).collect();
    let sent: BTreeSet<String> = (0..TASKS)
        .flat_map(|task| (0..PER_TASK).map(move |i| format!("{task}-{i}")))
        .collect();
    assert_eq!(stored.len(), TASKS * PER_TASK, "stored vs sent");
    assert_eq!(payloads, sent);
    assert_eq!(
        manager
            .status()
            .resource("kafka-producer")
            .unwrap()
            .pool
            .created,
        1
    );
    manager.shutdown(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_commits_on_close_and_the_next_member_resumes_after_it() {
    let topic = unique("commit");
    create_topic(&topic, 1).await;
    let producer = common::producer_manager(config(), Policy::default()).await;
    for i in 0..20 {
        send(&producer, &topic, "k", &format!("m{i}")).await;
    }
    let manager = common::consumer_manager(
        consumer_config(&unique("commit-group"), &topic),
        Policy::default().pool(PoolConfig::default().max_size(2)),
    )
    .await;

    let first = manager.acquire::<KafkaConsumer>().await.unwrap();
    for i in 0..10 {
        let message = tokio::time::timeout(Duration::from_secs(30), first.recv())
            .await
            .expect("a message within 30 s")
            .expect("a message");
        assert_eq!(message.payload(), Some(format!("m{i}").as_bytes()));
    }
    // The guard goes: the member commits what it read (offsets are stored as messages are
    // handed out) and leaves the group; it is not kept for another acquirer.
    drop(first);
    let handle = manager.handle::<KafkaConsumer>().unwrap();
    common::eventually(Duration::from_secs(10), "the member is closed", || {
        let stats = handle.stats();
        async move { stats.size == 0 && stats.releasing == 0 }
    })
    .await;
    let pool = manager.status().resource("kafka-consumer").unwrap().pool;
    assert_eq!((pool.created, pool.destroyed), (1, 1), "{pool:?}");

    let second = manager.acquire::<KafkaConsumer>().await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(30), second.recv())
        .await
        .expect("a message within 30 s")
        .expect("a message");
    assert_eq!(
        message.payload(),
        Some(&b"m10"[..]),
        "the next member resumes after the committed offset"
    );
    drop(message);

    // Two members at once are two consumers, never one shared.
    let third = manager.acquire::<KafkaConsumer>().await.unwrap();
    assert_eq!(handle.stats().in_use, 2);
    drop((second, third));
    let counters = manager
        .status()
        .resource("kafka-consumer")
        .unwrap()
        .counters
        .clone();
    manager.shutdown(Duration::from_secs(10)).await.unwrap();
    let pool = manager.status().resource("kafka-consumer").unwrap().pool;
    assert_eq!((pool.created, pool.destroyed), (3, 3), "{pool:?}");
    assert!(
        counters
            .iter()
            .any(|(name, value)| *name == "commit_failures_at_close" && *value == 0),
        "{counters:?}"
    );
    producer.shutdown(Duration::from_secs(10)).await.unwrap();
}
