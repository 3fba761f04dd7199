//! Helpers for the tests against a real NATS server: where it is, unique subjects and streams,
//! managers and an independent client. A test that cannot reach the server fails.
#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nebula_resource::{Policy, ResourceManager};
use nebula_resource_nats::async_nats;
use nebula_resource_nats::{JetStream, JetStreamConfig, Nats, NatsConfig};

/// The server under test: `NEBULA_TEST_NATS_URL`, default `nats://127.0.0.1:4222`.
pub fn nats_url() -> String {
    std::env::var("NEBULA_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

pub fn config() -> NatsConfig {
    NatsConfig::new(nats_url())
}

/// A token no other test (in this process or another) uses, fit for a subject or stream name.
pub fn unique(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{test}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn unreachable(err: impl std::fmt::Display) -> ! {
    panic!(
        "the NATS server at {} must be reachable (set NEBULA_TEST_NATS_URL): {err}",
        nats_url()
    )
}

/// A manager with [`Nats`] registered with `config` and `policy`.
pub async fn manager_with(config: NatsConfig, policy: Policy) -> ResourceManager {
    ResourceManager::builder()
        .register_with(Nats, config, policy)
        .build()
        .await
        .unwrap_or_else(|err| unreachable(err))
}

/// A manager with [`Nats`] and [`JetStream`] registered with their defaults.
pub async fn with_jetstream() -> ResourceManager {
    ResourceManager::builder()
        .register(Nats, config())
        .register(JetStream, JetStreamConfig::default())
        .build()
        .await
        .unwrap_or_else(|err| unreachable(err))
}

/// A client of the test's own, outside any manager, to observe what the resources did.
pub async fn observer() -> async_nats::Client {
    // Room for every message a test's load sends to one subscription: async-nats drops what
    // overflows a subscription's buffer (65,536 by default) when its reader falls behind.
    async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(nats_url())
        .await
        .unwrap_or_else(|err| unreachable(err))
}

/// Wait until the server has processed everything `client` sent so far (a `SUB` above all):
/// a request nobody serves, answered "no responders" by the server. `Client::flush` is no such
/// barrier: it returns once the bytes are written to the local socket.
pub async fn synced(client: &async_nats::Client) {
    let subject = format!("_nebula.sync.{}", unique("sync"));
    match client.request(subject, bytes::Bytes::new()).await {
        Err(err) if err.kind() == async_nats::RequestErrorKind::NoResponders => {}
        Err(err) => unreachable(err),
        Ok(_) => panic!("somebody answered the sync subject"),
    }
}

/// Create a stream named `name` over `subject.>`, replacing one of that name.
pub async fn stream(
    client: &async_nats::Client,
    name: &str,
    subject: &str,
) -> async_nats::jetstream::stream::Stream {
    let js = async_nats::jetstream::new(client.clone());
    let _ = js.delete_stream(name).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{subject}.>")],
        storage: async_nats::jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|err| panic!("JetStream must be enabled on the server: {err}"))
}

/// How many messages the stream `name` holds now.
pub async fn stored(client: &async_nats::Client, name: &str) -> u64 {
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream(name).await.expect("the stream exists");
    stream.info().await.expect("stream info").state.messages
}

pub async fn delete_stream(client: &async_nats::Client, name: &str) {
    let js = async_nats::jetstream::new(client.clone());
    js.delete_stream(name)
        .await
        .expect("delete the test stream");
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
