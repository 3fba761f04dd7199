//! Helpers for the tests against a real RabbitMQ broker: where it is, unique queue names,
//! managers, an independent admin connection, and `rabbitmqctl`. A test that cannot reach the
//! broker fails.
#![allow(dead_code, unreachable_pub)]

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nebula_resource::{Policy, PoolConfig, ResourceManager};
use nebula_resource_rabbitmq::lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use nebula_resource_rabbitmq::lapin::types::FieldTable;
use nebula_resource_rabbitmq::lapin::{Channel, Connection, ConnectionProperties};
use nebula_resource_rabbitmq::{RabbitMq, RabbitMqChannel, RabbitMqChannelConfig, RabbitMqConfig};

/// The broker under test: `NEBULA_TEST_AMQP_URL`, default `amqp://127.0.0.1:5672/%2f`.
pub fn amqp_url() -> String {
    std::env::var("NEBULA_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://127.0.0.1:5672/%2f".to_owned())
}

pub fn config() -> RabbitMqConfig {
    RabbitMqConfig::new(amqp_url())
}

/// A queue name no other test (in this process or another) uses.
pub fn queue_name(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "nebula-test.{test}.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn unreachable(err: impl std::fmt::Display) -> ! {
    panic!(
        "the RabbitMQ broker at {} must be reachable (set NEBULA_TEST_AMQP_URL): {err}",
        amqp_url()
    )
}

/// A manager with [`RabbitMq`] (`connection`) and [`RabbitMqChannel`] (`channels`, `pool`).
pub async fn manager(
    connection: RabbitMqConfig,
    channels: RabbitMqChannelConfig,
    pool: PoolConfig,
) -> ResourceManager {
    ResourceManager::builder()
        .register(RabbitMq, connection)
        .register_with(RabbitMqChannel, channels, Policy::default().pool(pool))
        .build()
        .await
        .unwrap_or_else(|err| unreachable(err))
}

/// A connection and channel of the test's own, outside any manager.
pub struct Admin {
    pub connection: Connection,
    pub channel: Channel,
}

pub async fn admin() -> Admin {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default())
        .await
        .unwrap_or_else(|err| unreachable(err));
    let channel = connection
        .create_channel()
        .await
        .unwrap_or_else(|err| unreachable(err));
    Admin {
        connection,
        channel,
    }
}

impl Admin {
    /// Declare a transient queue `name` (auto-deleted with no consumers is not wanted: counts
    /// are read from it later).
    pub async fn declare(&self, name: &str) {
        self.channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("declare the test queue");
    }

    /// Messages ready in queue `name`, as the broker counts them (a passive declare).
    pub async fn count(&self, name: &str) -> u32 {
        self.channel
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare of the test queue")
            .message_count()
    }

    pub async fn delete(&self, name: &str) {
        self.channel
            .queue_delete(name.into(), QueueDeleteOptions::default())
            .await
            .expect("delete the test queue");
    }
}

/// Run `rabbitmqctl args…`; panic if it fails.
pub fn rabbitmqctl(args: &[&str]) {
    let output = Command::new("rabbitmqctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Poll `condition` every 10 ms until it holds; panic with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
