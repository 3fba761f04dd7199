//! Network faults and a broker that is gone, on a private tansu of each test's own behind the
//! test kit's `FaultProxy`. The broker advertises the proxy's address, so every connection the
//! clients make — the bootstrap one and the ones to the advertised broker — goes through the
//! proxy: a reset or black hole hits all of them, as a real network fault would.
//!
//! - Every connection reset: every call returns within its bound, typed; the producer and a
//!   group member carry on (librdkafka reconnects, or the manager replaces a producer that
//!   reported all brokers down).
//! - A black hole: health checks fail, the breaker opens and fails fast, and the half-open
//!   probe closes it once the network heals.
//! - A flush that cannot finish: shutdown returns within `flush_timeout`, and the messages left
//!   are counted and failed, not silently kept.
//! - A member closing while its broker is gone (killed, or behind a black hole) does not hang:
//!   its close goes on in the background past `close_timeout`, and shutdown returns.

mod common;

use std::time::Duration;

use common::{broker_behind_proxy, create_topic_on, proxied_brokers, through, unique};
use nebula_resource::{
    BreakerConfig, BreakerState, ErrorKind, Event, HealthConfig, Policy, PoolConfig, Resource,
    ResourceManager, RetryPolicy,
};
use nebula_resource_kafka::rdkafka::Message;
use nebula_resource_kafka::rdkafka::error::KafkaError;
use nebula_resource_kafka::rdkafka::producer::FutureRecord;
use nebula_resource_kafka::{KafkaConsumer, KafkaConsumerConfig, KafkaProducer, OffsetReset};
use tokio::time::Instant;

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
/// A send's bound: the delivery timeout of [`through`], and a little.
const SEND_BOUND: Duration = Duration::from_millis(1500);

fn bounded_pool() -> PoolConfig {
    PoolConfig::default()
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .create_timeout(Duration::from_secs(1))
        .recycle_timeout(Duration::from_secs(2))
}

/// Acquire the producer and send one message, as an application would; `Ok` once delivered.
async fn send_once(manager: &ResourceManager, topic: &str, payload: &str) -> Result<(), String> {
    let producer = manager.acquire::<KafkaProducer>().await.map_err(|err| {
        assert!(err.is_retryable(), "{err}");
        err.to_string()
    })?;
    producer
        .send(
            FutureRecord::to(topic).key(payload).payload(payload),
            Duration::ZERO,
        )
        .await
        .map(drop)
        .map_err(|(err, _)| {
            assert!(matches!(err, KafkaError::MessageProduction(_)), "{err:?}");
            err.to_string()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_reset_returns_in_bounds_and_the_clients_carry_on() {
    let (proxy, _broker) = broker_behind_proxy().await;
    let topic = unique("reset");
    create_topic_on(&proxied_brokers(&proxy), &topic, 1).await;
    let manager = ResourceManager::builder()
        .register_with(
            KafkaProducer::new(),
            through(&proxy),
            Policy::default()
                .pool(bounded_pool())
                .retry(RetryPolicy::none()),
        )
        .register_with(
            KafkaConsumer::new(),
            KafkaConsumerConfig::new(through(&proxy), unique("reset-group"), [topic.as_str()])
                .offset_reset(OffsetReset::Earliest),
            Policy::default().pool(bounded_pool()),
        )
        .build()
        .await
        .unwrap_or_else(|err| common::unreachable(err));
    send_once(&manager, &topic, "before").await.unwrap();
    let member = manager.acquire::<KafkaConsumer>().await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), member.recv())
        .await
        .expect("the member reads within 30 s")
        .unwrap();
    assert_eq!(first.payload(), Some(&b"before"[..]));
    drop(first);

    for round in 0..3 {
        proxy.reset();
        let payload = format!("round-{round}");
        let started = Instant::now();
        loop {
            let call = Instant::now();
            let sent = send_once(&manager, &topic, &payload).await;
            let took = call.elapsed();
            assert!(
                took < ACQUIRE_TIMEOUT + SEND_BOUND,
                "one acquire + send took {took:?}"
            );
            if sent.is_ok() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "round {round}: no send got through within 10 s; last: {sent:?}"
            );
        }
        // The member held across the reset reads on: the message sent after it, and perhaps
        // a copy of an earlier send whose acknowledgement the reset lost.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let received = tokio::time::timeout(remaining, member.recv())
                .await
                .unwrap_or_else(|_| panic!("round {round}: the member read nothing new"));
            match received {
                Ok(message) if message.payload() == Some(payload.as_bytes()) => break,
                Ok(_) => {}
                // librdkafka reports the lost connections on the consumer's queue too; the
                // member reconnects and reads on.
                Err(KafkaError::MessageConsumption(code)) => {
                    eprintln!("reset round {round}: the member reported {code:?}");
                }
                Err(err) => panic!("round {round}: {err:?}"),
            }
        }
        eprintln!(
            "reset round {round}: served again after {:?}",
            started.elapsed()
        );
    }
    drop(member);
    let status = manager.status();
    let producer = status.resource("kafka-producer").unwrap();
    eprintln!(
        "resets: producer pool {:?}, counters {:?}",
        producer.pool, producer.counters
    );
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Acquire and ping; a failed ping taints the handle, as an application would.
async fn ping(manager: &ResourceManager) -> Result<(), nebula_resource::Error> {
    let producer = manager.acquire::<KafkaProducer>().await?;
    if let Err(err) = producer.ping().await {
        producer.taint();
        return Err(err);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_opens_the_breaker_which_fails_fast_and_a_probe_closes_it_once_healed() {
    let (proxy, _broker) = broker_behind_proxy().await;
    let topic = unique("blackhole");
    create_topic_on(&proxied_brokers(&proxy), &topic, 1).await;
    let open_wait = Duration::from_millis(500);
    let manager = common::producer_manager(
        through(&proxy),
        Policy::default()
            .retry(RetryPolicy::none())
            .pool(bounded_pool())
            // Checks every 100 ms; no quarantine, so what fails fast is the breaker.
            .health(
                HealthConfig::default()
                    .interval(Duration::from_millis(100))
                    .timeout(Duration::from_secs(1))
                    .failure_threshold(1000),
            )
            .breaker(
                BreakerConfig::default()
                    .window(4)
                    .minimum_calls(2)
                    .failure_rate_threshold(0.5)
                    .open_wait(open_wait)
                    .half_open_calls(1),
            ),
    )
    .await;
    ping(&manager).await.unwrap();
    let mut events = manager.events();

    proxy.blackhole();
    // Nothing fails by itself in a black hole: the metadata round trips time out, health
    // rounds retire the producer, the creates time out, and the breaker opens. Every call
    // meanwhile returns within its bound.
    let started = Instant::now();
    let retry_after = loop {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the breaker never opened"
        );
        let call = Instant::now();
        let result = ping(&manager).await;
        let took = call.elapsed();
        assert!(
            took < ACQUIRE_TIMEOUT + Duration::from_millis(900),
            "{took:?}"
        );
        match result {
            Err(err) if err.kind() == ErrorKind::CircuitOpen => {
                break err.retry_after().expect("retry_after");
            }
            Err(err) => assert!(err.is_retryable(), "{err}"),
            Ok(()) => panic!("a metadata round trip succeeded through a black hole"),
        }
    };
    assert!(retry_after <= open_wait, "{retry_after:?}");
    assert_eq!(
        manager
            .status()
            .resource("kafka-producer")
            .unwrap()
            .breaker
            .state,
        BreakerState::Open
    );
    eprintln!("black hole: breaker open after {:?}", started.elapsed());

    // Open: fails fast, without touching the network.
    let fast = Instant::now();
    for _ in 0..100 {
        let err = manager.acquire::<KafkaProducer>().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CircuitOpen, "{err}");
    }
    assert!(
        fast.elapsed() < Duration::from_millis(100),
        "{:?}",
        fast.elapsed()
    );

    proxy.pass();
    tokio::time::sleep(open_wait).await;
    // The half-open probe creates a working producer and closes the breaker.
    common::eventually(
        Duration::from_secs(5),
        "a probe succeeds once healed",
        || {
            let manager = manager.clone();
            async move { ping(&manager).await.is_ok() }
        },
    )
    .await;
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(Event::CircuitClosed(source)) = events.recv().await {
                return source;
            }
        }
    })
    .await
    .expect("CircuitClosed within 2 s");
    assert_eq!(closed.key, "kafka-producer");
    for i in 0..10 {
        send_once(&manager, &topic, &format!("healed-{i}"))
            .await
            .expect("the closed breaker serves");
    }
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_past_its_deadline_returns_and_counts_the_messages_left() {
    const QUEUED: usize = 50;
    let (proxy, _broker) = broker_behind_proxy().await;
    let topic = unique("flush");
    create_topic_on(&proxied_brokers(&proxy), &topic, 1).await;
    let resource = KafkaProducer::new();
    let flush_timeout = Duration::from_millis(300);
    let manager = ResourceManager::builder()
        .register_with(
            resource.clone(),
            through(&proxy)
                .delivery_timeout(Duration::from_secs(30))
                .flush_timeout(flush_timeout),
            Policy::default().pool(bounded_pool()),
        )
        .build()
        .await
        .unwrap_or_else(|err| common::unreachable(err));
    send_once(&manager, &topic, "warm").await.unwrap();

    proxy.blackhole();
    let producer = manager.acquire::<KafkaProducer>().await.unwrap();
    let deliveries: Vec<_> = (0..QUEUED)
        .map(|i| {
            let payload = format!("stuck-{i}");
            producer
                .send_result(FutureRecord::to(&topic).key(&payload).payload(&payload))
                .unwrap_or_else(|(err, _)| panic!("queue: {err}"))
        })
        .collect();
    drop(producer);

    let started = Instant::now();
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < flush_timeout + Duration::from_secs(1),
        "shutdown took {took:?} with a flush of {flush_timeout:?}"
    );
    let counters = resource.counters();
    assert!(counters.contains(&("flush_timeouts", 1)), "{counters:?}");
    assert!(
        counters.contains(&("undelivered_at_close", u64::try_from(QUEUED).unwrap())),
        "{counters:?}"
    );
    // Dropping the producer purged them: each sender learns its message failed.
    for delivery in deliveries {
        let outcome = tokio::time::timeout(Duration::from_secs(5), delivery)
            .await
            .expect("every delivery future resolves")
            .expect("the producer reported it");
        let (err, _) = outcome.expect_err("not delivered through a black hole");
        assert!(matches!(err, KafkaError::MessageProduction(_)), "{err:?}");
    }
    proxy.pass();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_closes_without_hanging_when_its_broker_is_gone() {
    for killed in [true, false] {
        let (proxy, mut broker) = broker_behind_proxy().await;
        let topic = unique("close");
        create_topic_on(&proxied_brokers(&proxy), &topic, 1).await;
        let resource = KafkaConsumer::new();
        let close_timeout = Duration::from_secs(1);
        let manager = ResourceManager::builder()
            .register_with(
                KafkaProducer::new(),
                through(&proxy),
                Policy::default().pool(bounded_pool()),
            )
            .register_with(
                resource.clone(),
                KafkaConsumerConfig::new(
                    through(&proxy).close_timeout(close_timeout),
                    unique("close-group"),
                    [topic.as_str()],
                )
                .offset_reset(OffsetReset::Earliest),
                Policy::default().pool(bounded_pool()),
            )
            .build()
            .await
            .unwrap_or_else(|err| common::unreachable(err));
        send_once(&manager, &topic, "one").await.unwrap();
        let member = manager.acquire::<KafkaConsumer>().await.unwrap();
        let message = tokio::time::timeout(Duration::from_secs(30), member.recv())
            .await
            .expect("a message within 30 s")
            .unwrap();
        assert_eq!(message.payload(), Some(&b"one"[..]));
        drop(message);

        if killed {
            broker.kill();
        } else {
            proxy.blackhole();
        }
        // The member has an offset to commit and a group to leave, and nobody to tell.
        let started = Instant::now();
        drop(member);
        manager.shutdown(Duration::from_secs(10)).await.unwrap();
        let took = started.elapsed();
        assert!(
            took < close_timeout + Duration::from_secs(2),
            "closing a member took {took:?} with the broker gone (killed: {killed})"
        );
        let counters = resource.counters();
        let failures: u64 = counters
            .iter()
            .filter(|(name, _)| matches!(*name, "close_timeouts" | "commit_failures_at_close"))
            .map(|(_, value)| value)
            .sum();
        assert!(failures >= 1, "killed: {killed}: {counters:?}");
        eprintln!("broker gone (killed: {killed}): closed in {took:?}; counters {counters:?}");
        proxy.pass();
    }
}
