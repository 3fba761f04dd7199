//! Credential rotation through a reconnect: a user of the test's own (`rabbitmqctl add_user`),
//! its password changed on the broker (`change_password`) and in the `CredentialProvider`, then
//! `rotate_credentials`. Channels in use keep working; new ones use a connection logged in with
//! the new password; the old connection closes once its last channel is gone.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{admin, config, eventually, queue_name, rabbitmqctl};
use nebula_resource::{Credentials, Policy, PoolConfig, ResourceManager, StaticCredentials};
use nebula_resource_rabbitmq::lapin::BasicProperties;
use nebula_resource_rabbitmq::{RabbitMq, RabbitMqChannel, RabbitMqChannelConfig};

/// A broker user that exists for the test and is deleted when dropped.
struct User(String);

impl User {
    fn create(password: &str) -> Self {
        let name = format!("nebula-rotation-{}", std::process::id());
        // A user left over by an aborted run of this same pid is replaced.
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &name])
            .output();
        rabbitmqctl(&["add_user", &name, password]);
        rabbitmqctl(&["set_permissions", "-p", "/", &name, ".*", ".*", ".*"]);
        Self(name)
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_user", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_credentials_reconnect_without_cutting_channels_in_use() {
    let user = User::create("first-s3cret");
    let provider = Arc::new(StaticCredentials::new(
        Credentials::new("first-s3cret").username(user.0.clone()),
    ));
    let manager = ResourceManager::builder()
        .register_with(
            RabbitMq,
            config(),
            Policy::default().credentials_shared(provider.clone()),
        )
        .register_with(
            RabbitMqChannel,
            RabbitMqChannelConfig::default(),
            Policy::default().pool(PoolConfig::default().max_size(2)),
        )
        .build()
        .await
        .expect("log in as the test user");
    let admin = admin().await;
    let queue = queue_name("rotation");
    admin.declare(&queue).await;

    let held = manager.acquire::<RabbitMqChannel>().await.unwrap();
    assert_eq!(held.connection().status().username(), user.0);
    held.publish("", &queue, b"first", BasicProperties::default())
        .await
        .unwrap();
    let old = held.connection().status().clone();

    rabbitmqctl(&["change_password", &user.0, "second-s3cret"]);
    provider.set(Credentials::new("second-s3cret").username(user.0.clone()));
    assert_eq!(manager.rotate_credentials::<RabbitMq>().await.unwrap(), 1);

    // The channel in use still works on the old connection …
    held.publish("", &queue, b"in flight", BasicProperties::default())
        .await
        .unwrap();
    assert!(held.connection().is_retired());
    drop(held);
    // … and is replaced once released.
    let channels = manager.handle::<RabbitMqChannel>().unwrap();
    eventually(
        Duration::from_secs(5),
        "the old channel is destroyed",
        || {
            let destroyed = channels.stats().destroyed;
            async move { destroyed == 1 }
        },
    )
    .await;

    // New channels run on a connection logged in with the new password.
    let channel = manager.acquire::<RabbitMqChannel>().await.unwrap();
    assert!(!channel.connection().is_retired());
    channel
        .publish("", &queue, b"second", BasicProperties::default())
        .await
        .unwrap();
    drop(channel);
    let connection = manager.status().resource("rabbitmq").unwrap().pool;
    assert_eq!(
        (connection.created, connection.destroyed),
        (2, 1),
        "{connection:?}"
    );
    // The old connection closed when its last channel went.
    eventually(
        Duration::from_secs(5),
        "the old connection is closed",
        || {
            let connected = old.connected();
            async move { !connected }
        },
    )
    .await;
    assert_eq!(admin.count(&queue).await, 3);
    admin.delete(&queue).await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}
