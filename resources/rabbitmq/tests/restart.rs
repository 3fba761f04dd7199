//! The broker goes away under load: `rabbitmqctl stop_app` / `start_app`,
//! `rabbitmqctl close_all_connections`, and a memory alarm that blocks publishers.
//!
//! Each of these touches every connection of the broker, so this file is its own test binary
//! and its tests hold one lock: no other test of this crate runs while the broker is down.
//! The test kit's `Stopped` starts the app again however a test ends, and the alarm is lifted
//! by a guard.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::{admin, config, eventually, queue_name, rabbitmqctl};
use nebula_resource::{
    BreakerConfig, BreakerState, ErrorKind, Health, HealthConfig, Policy, PoolConfig,
    ResourceManager, RetryPolicy,
};
use nebula_resource_rabbitmq::lapin::BasicProperties;
use nebula_resource_rabbitmq::lapin::options::QueueDeclareOptions;
use nebula_resource_rabbitmq::lapin::types::FieldTable;
use nebula_resource_rabbitmq::{
    PublishError, PublishStage, RabbitMq, RabbitMqChannel, RabbitMqChannelConfig,
};
use nebula_resource_testing::Service;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// One broker-wide fault at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);
/// What an acquire or a publish may take past its own bound: scheduling on a 2-core machine
/// that also runs the broker.
const SLACK: Duration = Duration::from_millis(250);

/// Quick to notice, quick to come back: short timeouts, a breaker that reopens for probes
/// every 200 ms, retries 50 ms apart.
async fn resilient_manager() -> ResourceManager {
    let policy = || {
        Policy::default()
            .breaker(
                BreakerConfig::default()
                    .minimum_calls(10)
                    .open_wait(Duration::from_millis(200)),
            )
            .retry(RetryPolicy::exponential(Duration::from_millis(50), 2))
            .health(HealthConfig::disabled())
    };
    ResourceManager::builder()
        .register_with(
            RabbitMq,
            config()
                .connect_timeout(Duration::from_millis(500))
                .heartbeat(Duration::from_secs(1)),
            policy().pool(PoolConfig::default().acquire_timeout(ACQUIRE_TIMEOUT)),
        )
        .register_with(
            RabbitMqChannel,
            RabbitMqChannelConfig::default().publish_timeout(PUBLISH_TIMEOUT),
            policy().pool(
                PoolConfig::default()
                    .max_size(8)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .create_timeout(ACQUIRE_TIMEOUT),
            ),
        )
        .build()
        .await
        .expect("the broker must be reachable")
}

/// What the publishing tasks saw.
#[derive(Default)]
struct Tally {
    attempted: AtomicU64,
    confirmed: AtomicU64,
    failed: AtomicU64,
    /// When the first confirm since the tally was last [`rearm`](Self::rearm)ed came, in ms
    /// since the load's start (`u64::MAX`: none yet).
    first_ok_ms: AtomicU64,
    /// The longest acquire and the longest publish, in ms.
    longest_acquire_ms: AtomicU64,
    longest_publish_ms: AtomicU64,
}

impl Tally {
    fn new() -> Self {
        Self {
            first_ok_ms: AtomicU64::new(u64::MAX),
            ..Self::default()
        }
    }

    /// Forget the first confirm seen so far: the next one is recorded.
    fn rearm(&self) {
        self.first_ok_ms.store(u64::MAX, Ordering::SeqCst);
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `tasks` tasks publish persistent messages to the durable `queue` until `stop` is set; each
/// asserts that no acquire and no publish outlives its bound and that every error is typed.
fn publish_load(
    manager: &ResourceManager,
    queue: &str,
    tasks: usize,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Tally>,
    start: Instant,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let (manager, queue, stop, tally) = (
            manager.clone(),
            queue.to_owned(),
            Arc::clone(stop),
            Arc::clone(tally),
        );
        set.spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let began = Instant::now();
                let acquired = manager.acquire::<RabbitMqChannel>().await;
                let waited = began.elapsed();
                tally
                    .longest_acquire_ms
                    .fetch_max(millis(waited), Ordering::Relaxed);
                assert!(
                    waited < ACQUIRE_TIMEOUT + SLACK,
                    "an acquire took {waited:?}"
                );
                let channel = match acquired {
                    Ok(channel) => channel,
                    Err(err) => {
                        assert!(
                            matches!(
                                err.kind(),
                                ErrorKind::Timeout | ErrorKind::Create | ErrorKind::CircuitOpen
                            ),
                            "untyped acquire failure: {err}"
                        );
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                };
                tally.attempted.fetch_add(1, Ordering::Relaxed);
                let began = Instant::now();
                let published = channel
                    .publish(
                        "",
                        &queue,
                        b"durable",
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await;
                let took = began.elapsed();
                tally
                    .longest_publish_ms
                    .fetch_max(millis(took), Ordering::Relaxed);
                assert!(took < PUBLISH_TIMEOUT + SLACK, "a publish took {took:?}");
                match published {
                    Ok(()) => {
                        tally.confirmed.fetch_add(1, Ordering::Relaxed);
                        tally
                            .first_ok_ms
                            .fetch_min(millis(start.elapsed()), Ordering::SeqCst);
                    }
                    Err(PublishError::Timeout { .. } | PublishError::Channel(_)) => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(other) => panic!("unexpected publish error: {other}"),
                }
            }
        });
    }
    set
}

async fn durable_queue(name: &str) {
    let admin = admin().await;
    admin
        .channel
        .queue_declare(
            name.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare the durable queue");
}

/// When the broker's AMQP port first accepts a connection again: polled every 5 ms from now.
fn listening_again(start: Instant) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        loop {
            if tokio::net::TcpStream::connect("127.0.0.1:5672")
                .await
                .is_ok()
            {
                return millis(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_under_load_no_hang_typed_errors_back_within_two_seconds() {
    let _serial = SERIAL.lock().await;
    let manager = resilient_manager().await;
    let queue = queue_name("restart");
    durable_queue(&queue).await;
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::new());
    let mut load = publish_load(&manager, &queue, 16, &stop, &tally, start);

    eventually(Duration::from_secs(10), "publishes flow", || {
        let confirmed = tally.confirmed.load(Ordering::Relaxed);
        async move { confirmed >= 50 }
    })
    .await;
    let stopped = Service::rabbitmq().stop().await;
    // The listener closes before the connections do: give those a moment to go too. From
    // then on, a confirm comes from the broker started again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    tally.rearm();
    let confirmed_while_down = tally.confirmed.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        tally.confirmed.load(Ordering::Relaxed),
        confirmed_while_down,
        "a publish was confirmed while the broker was down"
    );
    assert!(
        tally.failed.load(Ordering::Relaxed) > 0,
        "nothing failed while the broker was down"
    );
    let listening = listening_again(start);
    stopped.start().await;
    let listening_ms = tokio::time::timeout(Duration::from_secs(5), listening)
        .await
        .expect("the port accepts connections once start_app returned")
        .expect("the port watcher does not panic");

    // Service is back within 2 s of the broker's port accepting connections again.
    eventually(
        Duration::from_secs(3),
        "a publish is confirmed after the restart",
        || {
            let first = tally.first_ok_ms.load(Ordering::SeqCst);
            async move { first != u64::MAX }
        },
    )
    .await;
    let recovered = tally
        .first_ok_ms
        .load(Ordering::SeqCst)
        .saturating_sub(listening_ms);
    eprintln!(
        "first confirm {recovered} ms after the port accepted again; longest acquire {} ms, \
         longest publish {} ms; {} failed calls",
        tally.longest_acquire_ms.load(Ordering::Relaxed),
        tally.longest_publish_ms.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    assert!(
        recovered <= 2000,
        "first confirm {recovered} ms after the broker was back"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Release);
    let finished = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(done) = load.join_next().await {
            done.expect("a load task failed");
        }
    })
    .await;
    assert!(finished.is_ok(), "a task hung after the load stopped");

    // Every confirmed message survived (durable queue, persistent messages).
    let count = u64::from(admin().await.count(&queue).await);
    let (confirmed, attempted) = (
        tally.confirmed.load(Ordering::Relaxed),
        tally.attempted.load(Ordering::Relaxed),
    );
    assert!(
        confirmed <= count && count <= attempted,
        "broker has {count}, confirmed {confirmed}, attempted {attempted}"
    );
    admin().await.delete(&queue).await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_all_connections_fails_held_channels_typed_and_the_next_acquire_reconnects() {
    let _serial = SERIAL.lock().await;
    let manager = resilient_manager().await;
    let admin = admin().await;
    let queue = queue_name("closed-by-broker");
    admin.declare(&queue).await;
    drop(admin);

    let held = manager.acquire::<RabbitMqChannel>().await.unwrap();
    held.publish("", &queue, b"before", BasicProperties::default())
        .await
        .unwrap();
    rabbitmqctl(&["close_all_connections", "test"]);
    eventually(
        Duration::from_secs(5),
        "the connection sees the close",
        || {
            let closed = !held.connection().status().connected();
            async move { closed }
        },
    )
    .await;
    let err = held
        .publish("", &queue, b"lost", BasicProperties::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Channel(_)), "{err}");
    drop(held);

    let channel = manager.acquire::<RabbitMqChannel>().await.unwrap();
    channel
        .publish("", &queue, b"after", BasicProperties::default())
        .await
        .unwrap();
    drop(channel);
    let status = manager.status();
    let connection = status.resource("rabbitmq").unwrap().pool;
    assert_eq!(
        (connection.created, connection.destroyed),
        (2, 1),
        "{connection:?}"
    );
    let admin = common::admin().await;
    assert_eq!(admin.count(&queue).await, 2);
    admin.delete(&queue).await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Raises a memory alarm (a watermark no node meets); restores the node's own watermark when
/// dropped, however the test ends.
struct Alarm {
    /// The `set_vm_memory_high_watermark` arguments that restore the watermark found.
    restore: Vec<String>,
}

impl Alarm {
    fn raise() -> Self {
        let output = std::process::Command::new("rabbitmqctl")
            .args(["eval", "vm_memory_monitor:get_vm_memory_high_watermark()."])
            .output()
            .expect("run rabbitmqctl eval");
        assert!(output.status.success(), "read the memory watermark");
        let found = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        // A relative watermark prints as `0.4`, an absolute one as `{absolute,1073741824}`.
        let restore = match found.strip_prefix("{absolute,") {
            Some(rest) => vec!["absolute".to_owned(), rest.trim_end_matches('}').to_owned()],
            None => vec![found],
        };
        rabbitmqctl(&["set_vm_memory_high_watermark", "0.0000001"]);
        Self { restore }
    }
}

impl Drop for Alarm {
    fn drop(&mut self) {
        let mut args = vec!["set_vm_memory_high_watermark"];
        args.extend(self.restore.iter().map(String::as_str));
        rabbitmqctl(&args);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resource_alarm_is_degraded_not_broken_and_publishes_time_out_typed() {
    let _serial = SERIAL.lock().await;
    let health = HealthConfig::default().interval(Duration::from_millis(100));
    let manager = ResourceManager::builder()
        .register_with(RabbitMq, config(), Policy::default().health(health.clone()))
        .register_with(
            RabbitMqChannel,
            RabbitMqChannelConfig::default(),
            Policy::default().health(health),
        )
        .build()
        .await
        .unwrap();
    let queue = queue_name("alarm");
    let admin = admin().await;
    admin.declare(&queue).await;
    drop(admin);

    let channel = manager.acquire::<RabbitMqChannel>().await.unwrap();
    channel
        .publish("", &queue, b"before", BasicProperties::default())
        .await
        .unwrap();
    let alarm = Alarm::raise();
    // The broker blocks a connection when it next publishes: that message is sent, and its
    // confirm may be held back.
    match channel
        .publish_with(
            "",
            &queue,
            Default::default(),
            b"held back",
            BasicProperties::default(),
            Duration::from_millis(500),
        )
        .await
    {
        Ok(()) | Err(PublishError::Timeout { .. }) => {}
        Err(other) => panic!("unexpected publish error: {other}"),
    }
    eventually(
        Duration::from_secs(5),
        "the broker blocks the connection",
        || {
            let blocked = channel.connection().status().blocked();
            async move { blocked }
        },
    )
    .await;
    // Once the notice is in, nothing is sent: the publish waits for the unblock, within its
    // deadline.
    for _ in 0..3 {
        let started = Instant::now();
        let err = channel
            .publish_with(
                "",
                &queue,
                Default::default(),
                b"not sent",
                BasicProperties::default(),
                Duration::from_millis(300),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                PublishError::Timeout {
                    stage: PublishStage::Unblock,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(300) + SLACK,
            "{:?}",
            started.elapsed()
        );
    }
    eventually(Duration::from_secs(5), "health reports Degraded", || {
        let report = manager
            .status()
            .resource("rabbitmq")
            .unwrap()
            .health
            .clone();
        async move {
            report.health == Health::Degraded
                && report
                    .reason
                    .as_deref()
                    .is_some_and(|r| r.contains("blocked"))
        }
    })
    .await;
    // Degraded, not broken: the one connection is still the one created, and no breaker
    // counted the alarm as a failure.
    let status = manager.status();
    let connection = status.resource("rabbitmq").unwrap();
    assert_eq!(
        (connection.pool.created, connection.pool.destroyed),
        (1, 0),
        "{:?}",
        connection.pool
    );
    for key in ["rabbitmq", "rabbitmq-channel"] {
        let breaker = status.resource(key).unwrap().breaker.state;
        assert!(
            matches!(breaker, BreakerState::Closed),
            "{key}: {breaker:?}"
        );
    }
    drop(channel);

    drop(alarm);
    eventually(Duration::from_secs(10), "health is back to Healthy", || {
        let health = manager.status().resource("rabbitmq").unwrap().health.health;
        async move { health == Health::Healthy }
    })
    .await;
    let channel = manager.acquire::<RabbitMqChannel>().await.unwrap();
    channel
        .publish("", &queue, b"after", BasicProperties::default())
        .await
        .unwrap();
    drop(channel);
    // `before` and `after`, and the message held back if the broker took it; none of those
    // that were not sent.
    let admin = common::admin().await;
    let count = admin.count(&queue).await;
    assert!((2..=3).contains(&count), "{count} messages");
    admin.delete(&queue).await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}
