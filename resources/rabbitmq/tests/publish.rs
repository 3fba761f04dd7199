//! Publishing and consuming through guards, against the real broker: exact counts under
//! contention, typed publish errors, failover, channels with unconfirmed publishes, and
//! connect errors that never show a password.

mod common;

use std::time::Duration;

use common::{admin, amqp_url, config, eventually, manager, queue_name};
use futures_util::StreamExt;
use nebula_resource::{ErrorKind, PoolConfig, ResourceManager, RetryPolicy};
use nebula_resource_rabbitmq::lapin::BasicProperties;
use nebula_resource_rabbitmq::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions,
};
use nebula_resource_rabbitmq::{
    PublishError, RabbitMq, RabbitMqChannel, RabbitMqChannelConfig, RabbitMqConfig,
};
use nebula_resource_testing::FaultProxy;
use tokio::task::JoinSet;

fn pool(max_size: usize) -> PoolConfig {
    PoolConfig::default()
        .max_size(max_size)
        .acquire_timeout(Duration::from_secs(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_consume_through_guards() {
    let manager = manager(config(), RabbitMqChannelConfig::default(), pool(2)).await;
    let admin = admin().await;
    let queue = queue_name("roundtrip");
    admin.declare(&queue).await;

    let channel = manager.acquire::<RabbitMqChannel>().await.unwrap();
    for n in 0..3 {
        channel
            .publish(
                "",
                &queue,
                format!("m{n}").as_bytes(),
                BasicProperties::default(),
            )
            .await
            .unwrap();
    }
    drop(channel);
    // Confirmed means the broker has them.
    assert_eq!(admin.count(&queue).await, 3);

    let consuming = manager.acquire::<RabbitMqChannel>().await.unwrap();
    let mut consumer = consuming
        .consume(&queue, "", BasicConsumeOptions::default())
        .await
        .unwrap();
    for n in 0..3 {
        let delivery = tokio::time::timeout(Duration::from_secs(5), consumer.next())
            .await
            .expect("a delivery within 5 s")
            .expect("the consumer is open")
            .unwrap();
        assert_eq!(delivery.data, format!("m{n}").as_bytes());
        delivery.ack(BasicAckOptions::default()).await.unwrap();
    }
    drop(consumer);
    drop(consuming);
    // A channel that carried a consumer is not handed to the next user.
    let channels = manager.handle::<RabbitMqChannel>().unwrap();
    eventually(
        Duration::from_secs(5),
        "the consuming channel is destroyed",
        || {
            let destroyed = channels.stats().destroyed;
            async move { destroyed == 1 }
        },
    )
    .await;
    assert_eq!(admin.count(&queue).await, 0);
    admin.delete(&queue).await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_on_eight_channels_publish_exact_counts() {
    const TASKS: usize = 64;
    const EACH: usize = 40;
    let manager = manager(config(), RabbitMqChannelConfig::default(), pool(8)).await;
    let admin = admin().await;
    let queue = queue_name("load");
    admin.declare(&queue).await;

    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let manager = manager.clone();
        let queue = queue.clone();
        tasks.spawn(async move {
            for n in 0..EACH {
                let channel = manager.acquire::<RabbitMqChannel>().await?;
                let body = format!("{task}:{n}");
                channel
                    .publish("", &queue, body.as_bytes(), BasicProperties::default())
                    .await
                    .map_err(nebula_resource::Error::check)?;
            }
            Ok::<_, nebula_resource::Error>(())
        });
    }
    let all = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(done) = tasks.join_next().await {
            done.expect("no task panics")
                .expect("every publish is confirmed");
        }
    })
    .await;
    assert!(all.is_ok(), "the 64 tasks did not finish within 60 s");

    assert_eq!(
        admin.count(&queue).await,
        u32::try_from(TASKS * EACH).unwrap()
    );
    let status = manager.status();
    let channels = status.resource("rabbitmq-channel").unwrap().pool;
    assert!(channels.size <= 8, "{channels:?}");
    assert_eq!(
        (channels.in_use, channels.destroyed),
        (0, 0),
        "{channels:?}"
    );
    let connection = status.resource("rabbitmq").unwrap().pool;
    assert_eq!(
        (connection.created, connection.destroyed),
        (1, 0),
        "{connection:?}"
    );
    admin.delete(&queue).await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_errors_are_typed_and_a_failed_channel_is_replaced() {
    let manager = manager(config(), RabbitMqChannelConfig::default(), pool(1)).await;
    let admin = admin().await;
    let queue = queue_name("errors");
    admin.declare(&queue).await;

    // Unroutable and mandatory: returned by the broker.
    let channel = manager.acquire::<RabbitMqChannel>().await.unwrap();
    let err = channel
        .publish_with(
            "",
            &queue_name("nobody-listens"),
            BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            },
            b"lost",
            BasicProperties::default(),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Returned(_)), "{err}");
    assert!(!err.is_retryable());

    // A missing exchange: the broker closes the channel.
    let err = channel
        .publish(
            "nebula-no-such-exchange",
            "x",
            b"lost",
            BasicProperties::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, PublishError::Channel(_)), "{err}");
    drop(channel);

    // The closed channel is destroyed on release; the next guard gets a working one.
    let channel = manager.acquire::<RabbitMqChannel>().await.unwrap();
    channel
        .publish("", &queue, b"kept", BasicProperties::default())
        .await
        .unwrap();
    drop(channel);
    let stats = manager.handle::<RabbitMqChannel>().unwrap().stats();
    assert_eq!((stats.created, stats.destroyed), (2, 1), "{stats:?}");
    assert_eq!(admin.count(&queue).await, 1);
    admin.delete(&queue).await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_released_with_a_confirm_outstanding_is_drained_then_closed() {
    // The link goes silent before the publish, so its confirm cannot be back by the time the
    // guard is dropped, however the machine schedules the test.
    let proxy = FaultProxy::start("127.0.0.1:5672".parse().unwrap())
        .await
        .expect("start the fault proxy");
    let manager = manager(
        RabbitMqConfig::new(format!("amqp://127.0.0.1:{}/%2f", proxy.port())),
        RabbitMqChannelConfig::default().drain_timeout(Duration::from_secs(5)),
        pool(1).recycle_timeout(Duration::from_secs(10)),
    )
    .await;
    let admin = admin().await;
    let queue = queue_name("unconfirmed");
    admin.declare(&queue).await;

    let channel = manager.acquire::<RabbitMqChannel>().await.unwrap();
    let lapin_channel = channel.channel().clone();
    proxy.blackhole();
    // Raw lapin: the message is written, and its confirm left behind.
    let confirm = channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"confirmed late",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    drop(confirm);
    drop(channel);

    // Not reused, and its destroy waits for the confirm rather than closing the channel.
    let channels = manager.handle::<RabbitMqChannel>().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = channels.stats();
    assert_eq!((stats.idle, stats.destroyed), (0, 0), "{stats:?}");
    assert!(
        lapin_channel.status().connected(),
        "closed before its confirm"
    );

    proxy.pass();
    eventually(
        Duration::from_secs(5),
        "the channel is destroyed once confirmed",
        || {
            let destroyed = channels.stats().destroyed;
            async move { destroyed == 1 }
        },
    )
    .await;
    assert!(
        !lapin_channel.status().connected(),
        "the destroyed channel is closed"
    );
    assert_eq!(admin.count(&queue).await, 1);
    admin.delete(&queue).await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_skips_a_dead_broker_in_order() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let config = RabbitMqConfig::new(format!("amqp://127.0.0.1:{dead_port}/%2f"))
        .failover(amqp_url())
        .connect_timeout(Duration::from_secs(2));
    let manager = manager(config, RabbitMqChannelConfig::default(), pool(2)).await;
    let connection = manager.acquire::<RabbitMq>().await.unwrap();
    assert!(
        connection.broker().contains(":5672"),
        "connected to {}",
        connection.broker()
    );
    drop(connection);
    let admin = admin().await;
    let queue = queue_name("failover");
    admin.declare(&queue).await;
    let channel = manager.acquire::<RabbitMqChannel>().await.unwrap();
    channel
        .publish(
            "",
            &queue,
            b"via the second URL",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    drop(channel);
    assert_eq!(admin.count(&queue).await, 1);
    admin.delete(&queue).await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_lists_every_broker_and_never_shows_the_password() {
    let secret = "wr0ng-s3cret";
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let config = RabbitMqConfig::new(format!("amqp://guest:{secret}@127.0.0.1:5672/%2f"))
        .failover(format!("amqp://guest:{secret}@127.0.0.1:{dead_port}/%2f"));
    let err = ResourceManager::builder()
        .register_with(
            RabbitMq,
            config,
            nebula_resource::Policy::default().retry(RetryPolicy::none()),
        )
        .build()
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(secret), "{shown}");
    assert_eq!(err.kind(), ErrorKind::Create, "{shown}");
    assert!(shown.contains("guest:***@127.0.0.1:5672"), "{shown}");
    assert!(
        shown.contains(&format!("guest:***@127.0.0.1:{dead_port}")),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_loses_no_confirmed_message() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let manager = manager(config(), RabbitMqChannelConfig::default(), pool(8)).await;
    let admin = admin().await;
    let queue = queue_name("shutdown");
    admin.declare(&queue).await;
    let confirmed = Arc::new(AtomicU64::new(0));

    let mut tasks = JoinSet::new();
    for _ in 0..32 {
        let (manager, queue, confirmed) = (manager.clone(), queue.clone(), Arc::clone(&confirmed));
        tasks.spawn(async move {
            loop {
                let channel = match manager.acquire::<RabbitMqChannel>().await {
                    Ok(channel) => channel,
                    Err(err) => {
                        assert_eq!(err.kind(), ErrorKind::ShuttingDown, "{err}");
                        return;
                    }
                };
                // Guards held during shutdown are waited for: every publish ends confirmed.
                channel
                    .publish("", &queue, b"kept", BasicProperties::default())
                    .await
                    .expect("a publish under shutdown is confirmed");
                confirmed.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    eventually(Duration::from_secs(10), "publishes flow", || {
        let sent = confirmed.load(Ordering::Relaxed);
        async move { sent >= 200 }
    })
    .await;
    manager.shutdown(Duration::from_secs(10)).await.unwrap();
    let joined = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(done) = tasks.join_next().await {
            done.expect("no task panics");
        }
    })
    .await;
    assert!(joined.is_ok(), "a task hung after shutdown");
    let status = manager.status();
    let channels = status.resource("rabbitmq-channel").unwrap().pool;
    assert_eq!(channels.size, 0, "{channels:?}");
    assert_eq!(
        u64::from(admin.count(&queue).await),
        confirmed.load(Ordering::Relaxed)
    );
    admin.delete(&queue).await;
}
