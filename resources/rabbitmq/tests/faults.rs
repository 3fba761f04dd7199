//! Connections cut by the test kit's fault proxy: reset once (the broker's side vanishes),
//! refused (every open and new connection reset: the broker is down) and blackholed (the link
//! goes silent). Calls fail typed and within their bounds, the circuit breaker opens and fails
//! fast, and a half-open probe closes it once the link heals. With two proxies as two brokers,
//! every reconnect tries the URLs in the order given.

mod common;

use std::time::Duration;

use common::{admin, eventually, queue_name};
use nebula_resource::{
    BreakerConfig, BreakerState, ErrorKind, Event, HealthConfig, Policy, PoolConfig,
    ResourceManager, RetryPolicy,
};
use nebula_resource_rabbitmq::lapin::BasicProperties;
use nebula_resource_rabbitmq::{
    PublishError, RabbitMq, RabbitMqChannel, RabbitMqChannelConfig, RabbitMqConfig,
};
use nebula_resource_testing::FaultProxy;
use tokio::time::Instant;

const OPEN_WAIT: Duration = Duration::from_millis(300);
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);

async fn proxy() -> FaultProxy {
    FaultProxy::start("127.0.0.1:5672".parse().unwrap())
        .await
        .expect("start the fault proxy")
}

/// A manager whose connection goes through `proxy`, with a breaker quick to open and probe.
async fn through(proxy: &FaultProxy) -> ResourceManager {
    let policy = || {
        Policy::default()
            .retry(RetryPolicy::none())
            .health(HealthConfig::disabled())
            .breaker(
                BreakerConfig::default()
                    .window(10)
                    .minimum_calls(4)
                    .open_wait(OPEN_WAIT)
                    .half_open_calls(1),
            )
    };
    ResourceManager::builder()
        .register_with(
            RabbitMq,
            RabbitMqConfig::new(format!("amqp://127.0.0.1:{}/%2f", proxy.port()))
                .connect_timeout(Duration::from_millis(500))
                .heartbeat(Duration::from_secs(1)),
            policy().pool(PoolConfig::default().acquire_timeout(Duration::from_secs(1))),
        )
        .register_with(
            RabbitMqChannel,
            RabbitMqChannelConfig::default().publish_timeout(PUBLISH_TIMEOUT),
            policy().pool(
                PoolConfig::default()
                    .max_size(4)
                    .acquire_timeout(Duration::from_secs(1))
                    .create_timeout(Duration::from_secs(1)),
            ),
        )
        .build()
        .await
        .expect("the broker must be reachable through the proxy")
}

/// Acquire a channel and publish one message to `queue`; any failure as the manager's error.
async fn ping(manager: &ResourceManager, queue: &str) -> Result<(), nebula_resource::Error> {
    let channel = manager.acquire::<RabbitMqChannel>().await?;
    channel
        .publish("", queue, b"ping", BasicProperties::default())
        .await
        .map_err(nebula_resource::Error::check)
}

/// Keep pinging until the channel breaker opens; every call ends within its bounds.
async fn until_open(manager: &ResourceManager, queue: &str) -> Duration {
    for _ in 0..60 {
        let started = Instant::now();
        let result = ping(manager, queue).await;
        assert!(
            started.elapsed() < Duration::from_millis(2500),
            "a call hung: {:?}",
            started.elapsed()
        );
        match result {
            Err(err) if err.kind() == ErrorKind::CircuitOpen => {
                return err.retry_after().expect("retry_after");
            }
            Err(err) => assert!(err.is_retryable(), "{err}"),
            Ok(()) => {}
        }
    }
    panic!("the breaker never opened");
}

/// Open: 100 calls fail fast; healed: the half-open probe closes the breaker.
async fn fails_fast_then_a_probe_closes_it(
    manager: &ResourceManager,
    proxy: &FaultProxy,
    queue: &str,
) {
    let mut events = manager.events();
    let retry_after = until_open(manager, queue).await;
    assert!(retry_after <= OPEN_WAIT, "{retry_after:?}");
    let breaker = manager
        .status()
        .resource("rabbitmq-channel")
        .unwrap()
        .breaker
        .state;
    assert!(matches!(breaker, BreakerState::Open), "{breaker:?}");
    let started = Instant::now();
    for _ in 0..100 {
        let err = ping(manager, queue).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CircuitOpen, "{err}");
    }
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "100 refused calls took {:?}",
        started.elapsed()
    );

    proxy.pass();
    eventually(
        Duration::from_secs(10),
        "a call succeeds after the heal",
        || async { ping(manager, queue).await.is_ok() },
    )
    .await;
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(Event::CircuitClosed(source)) = events.recv().await
                && source.key == "rabbitmq-channel"
            {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "no CircuitClosed for the channels");
    for _ in 0..10 {
        ping(manager, queue)
            .await
            .expect("the closed breaker serves");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections_fail_held_channels_typed_and_new_ones_reconnect() {
    let proxy = proxy().await;
    let manager = through(&proxy).await;
    let admin = admin().await;
    let queue = queue_name("reset");
    admin.declare(&queue).await;

    let held = manager.acquire::<RabbitMqChannel>().await.unwrap();
    held.publish("", &queue, b"before", BasicProperties::default())
        .await
        .unwrap();
    proxy.reset();
    let started = Instant::now();
    let err = loop {
        // The reset may race the publish: it fails at once, or once lapin reads the RST.
        match held
            .publish("", &queue, b"lost?", BasicProperties::default())
            .await
        {
            Err(err) => break err,
            Ok(()) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    assert!(
        started.elapsed() < PUBLISH_TIMEOUT * 3,
        "{:?}",
        started.elapsed()
    );
    assert!(
        matches!(err, PublishError::Channel(_) | PublishError::Timeout { .. }),
        "{err}"
    );
    drop(held);
    // New connections pass: the next acquire reconnects through the proxy.
    ping(&manager, &queue)
        .await
        .expect("reconnected after the reset");
    let connection = manager.status().resource("rabbitmq").unwrap().pool;
    assert_eq!(connection.created, 2, "{connection:?}");
    admin.delete(&queue).await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_backend_opens_the_breaker_and_a_probe_closes_it() {
    let proxy = proxy().await;
    let manager = through(&proxy).await;
    let admin = admin().await;
    let queue = queue_name("refused");
    admin.declare(&queue).await;
    ping(&manager, &queue).await.expect("up through the proxy");

    proxy.refuse();
    fails_fast_then_a_probe_closes_it(&manager, &proxy, &queue).await;
    let stats = manager.handle::<RabbitMqChannel>().unwrap().stats();
    assert_eq!(stats.in_use, 0, "{stats:?}");
    admin.delete(&queue).await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_link_times_out_typed_opens_the_breaker_and_a_probe_closes_it() {
    let proxy = proxy().await;
    let manager = through(&proxy).await;
    let admin = admin().await;
    let queue = queue_name("blackhole");
    admin.declare(&queue).await;

    let held = manager.acquire::<RabbitMqChannel>().await.unwrap();
    held.publish("", &queue, b"before", BasicProperties::default())
        .await
        .unwrap();
    proxy.blackhole();
    // lapin#409: a confirm that never comes. The deadline turns it into a typed timeout.
    let started = Instant::now();
    let err = held
        .publish("", &queue, b"into the void", BasicProperties::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, PublishError::Timeout { after, .. } if after == PUBLISH_TIMEOUT),
        "{err}"
    );
    assert!(started.elapsed() < PUBLISH_TIMEOUT + Duration::from_millis(300));
    // Two silent heartbeat intervals later, lapin drops the connection.
    let connection = held.connection().clone();
    drop(held);
    eventually(
        Duration::from_secs(5),
        "missed heartbeats close the connection",
        || {
            let connected = connection.status().connected();
            async move { !connected }
        },
    )
    .await;
    drop(connection);

    fails_fast_then_a_probe_closes_it(&manager, &proxy, &queue).await;
    admin.delete(&queue).await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Wait until the shared connection is one reached through `proxy` and is up.
async fn connected_through(manager: &ResourceManager, proxy: &FaultProxy) {
    let port = format!(":{}/", proxy.port());
    eventually(
        Duration::from_secs(5),
        &format!("a connection through the proxy on {port}"),
        || async {
            match manager.acquire::<RabbitMq>().await {
                Ok(connection) => {
                    connection.broker().contains(&port) && connection.status().connected()
                }
                Err(_) => false,
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reconnect_tries_the_brokers_in_the_order_given() {
    let (first, second) = (proxy().await, proxy().await);
    let url = |proxy: &FaultProxy| format!("amqp://127.0.0.1:{}/%2f", proxy.port());
    first.refuse();
    let manager = ResourceManager::builder()
        .register_with(
            RabbitMq,
            RabbitMqConfig::new(url(&first))
                .failover(url(&second))
                .connect_timeout(Duration::from_millis(500))
                .heartbeat(Duration::from_secs(1)),
            Policy::default()
                .retry(RetryPolicy::none())
                .health(HealthConfig::disabled()),
        )
        .build()
        .await
        .expect("the second broker takes the connection");
    connected_through(&manager, &second).await;

    // Both up: a reconnect takes the first again, not the one it was on.
    first.pass();
    second.reset();
    connected_through(&manager, &first).await;

    // The first goes down: the reconnect falls over to the second.
    first.refuse();
    connected_through(&manager, &second).await;
    let connection = manager.acquire::<RabbitMq>().await.unwrap();
    let channel = connection.create_channel().await.expect("a working link");
    channel.close(200, "OK".into()).await.unwrap();
    drop(connection);

    let connections = manager.handle::<RabbitMq>().unwrap();
    eventually(
        Duration::from_secs(5),
        "both old connections destroyed",
        || {
            let stats = connections.stats();
            async move { (stats.created, stats.destroyed) == (3, 2) }
        },
    )
    .await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}
