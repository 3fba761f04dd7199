//! Helpers for the tests against a real Kafka-protocol broker (tansu): where it is, unique
//! topics made with the admin client, managers, counting what a topic holds by reading it back,
//! restarting the machine's broker, and a private broker of a test's own (for the fault proxy).
//! A test that cannot reach its broker fails.
#![allow(dead_code, unreachable_pub)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nebula_resource::{Policy, ResourceManager};
use nebula_resource_kafka::rdkafka::admin::{
    AdminClient, AdminOptions, NewTopic, TopicReplication,
};
use nebula_resource_kafka::rdkafka::client::DefaultClientContext;
use nebula_resource_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use nebula_resource_kafka::rdkafka::message::OwnedMessage;
use nebula_resource_kafka::rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use nebula_resource_kafka::{KafkaConfig, KafkaConsumer, KafkaConsumerConfig, KafkaProducer};
use nebula_resource_testing::FaultProxy;

/// The broker under test: `NEBULA_TEST_KAFKA_BROKERS`, default `127.0.0.1:9092`.
pub fn brokers() -> String {
    std::env::var("NEBULA_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// Client settings for tests: librdkafka's reconnect backoff kept short (its default grows to
/// 10 s), so that a client is back soon after its broker is.
pub fn tuned(config: KafkaConfig) -> KafkaConfig {
    config
        .metadata_timeout(Duration::from_secs(2))
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "200")
}

/// [`tuned`] settings for the broker under test.
pub fn config() -> KafkaConfig {
    tuned(KafkaConfig::new(brokers()))
}

/// Consumer settings for the broker under test, reading `topic` from its beginning.
pub fn consumer_config(group: &str, topic: &str) -> KafkaConsumerConfig {
    KafkaConsumerConfig::new(config(), group, [topic])
        .offset_reset(nebula_resource_kafka::OffsetReset::Earliest)
}

/// A name no other test (in this process or another) uses, fit for a topic or group.
pub fn unique(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "nebula-test-{test}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn unreachable(err: impl std::fmt::Display) -> ! {
    panic!(
        "the Kafka broker at {} must be reachable (set NEBULA_TEST_KAFKA_BROKERS): {err}",
        brokers()
    )
}

/// A manager with [`KafkaProducer`] registered with `config` and `policy`.
pub async fn producer_manager(config: KafkaConfig, policy: Policy) -> ResourceManager {
    ResourceManager::builder()
        .register_with(KafkaProducer::new(), config, policy)
        .build()
        .await
        .unwrap_or_else(|err| unreachable(err))
}

/// A manager with [`KafkaConsumer`] registered with `config` and `policy`.
pub async fn consumer_manager(config: KafkaConsumerConfig, policy: Policy) -> ResourceManager {
    ResourceManager::builder()
        .register_with(KafkaConsumer::new(), config, policy)
        .build()
        .await
        .unwrap_or_else(|err| unreachable(err))
}

/// Create `topic` with `partitions` partitions on the brokers at `brokers` (topics are not
/// created automatically by tansu).
pub async fn create_topic_on(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap_or_else(|err| unreachable(err));
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(5))),
        )
        .await
        .unwrap_or_else(|err| unreachable(err));
    for result in results {
        if let Err((name, code)) = result {
            panic!("create topic {name} on {brokers}: {code}");
        }
    }
}

/// Create `topic` on the broker under test.
pub async fn create_topic(topic: &str, partitions: i32) {
    create_topic_on(&brokers(), topic, partitions).await;
}

/// Read every partition of `topic` on `brokers` from its beginning (no group, nothing
/// committed) until no message came for `quiet`; what it holds.
pub async fn read_back_from(
    brokers: &str,
    topic: &str,
    partitions: i32,
    quiet: Duration,
) -> Vec<OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap_or_else(|err| unreachable(err));
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("a valid offset");
    }
    consumer.assign(&assignment).expect("assign the partitions");
    let mut messages = Vec::new();
    while let Ok(received) = tokio::time::timeout(quiet, consumer.recv()).await {
        let message = received.unwrap_or_else(|err| panic!("read back {topic}: {err}"));
        messages.push(message.detach());
    }
    messages
}

/// [`read_back_from`] the broker under test, with a quiet period of 2 s.
pub async fn read_back(topic: &str, partitions: i32) -> Vec<OwnedMessage> {
    read_back_from(&brokers(), topic, partitions, Duration::from_secs(2)).await
}

/// The payload of `message` as text.
pub fn text(message: &OwnedMessage) -> String {
    String::from_utf8(message.payload().expect("a payload").to_vec()).expect("UTF-8")
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

/// The tansu binary: `$NEBULA_TANSU`, else `~/.cache/nebula-tools/bin/tansu`, where the
/// project's test script installs it.
pub fn tansu_binary() -> PathBuf {
    std::env::var_os("NEBULA_TANSU").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME is set");
            PathBuf::from(home).join(".cache/nebula-tools/bin/tansu")
        },
        PathBuf::from,
    )
}

/// A free port on loopback (free when asked; the caller binds it soon after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// The shell a private broker runs under: it starts the broker (`"$0" "$@"`), kills it on
/// SIGTERM, and kills it as well when the test process is gone — a test binary killed by a
/// timeout, or one whose output pipe closed, never runs its destructors, and the broker would
/// be left running.
const WATCHDOG: &str = r#""$0" "$@" & broker=$!
trap 'kill -9 "$broker" 2>/dev/null; wait "$broker"; exit 0' TERM INT
parent=$PPID
while kill -0 "$parent" 2>/dev/null && kill -0 "$broker" 2>/dev/null; do sleep 0.2; done
kill -9 "$broker" 2>/dev/null
wait "$broker"
"#;

/// A tansu broker of one test's own, with in-memory storage, on a port of its own. It may
/// advertise another address than it listens on — a fault proxy's, so that every connection
/// of a client (librdkafka connects to the advertised address after bootstrap) goes through
/// the proxy. Killed when dropped.
///
/// It runs as a symlink named `kafka-private-broker`, so that the machine broker's stop
/// command (`pkill -f 'tansu broker'`) never matches it.
pub struct PrivateBroker {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl PrivateBroker {
    /// Start a broker on a free port that advertises `127.0.0.1:<advertised_port>` (its own
    /// port if `None`), and wait until it accepts connections.
    pub fn start(port: u16, advertised_port: Option<u16>) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "nebula-kafka-broker-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a folder for the private broker");
        let binary = tansu_binary();
        assert!(
            binary.exists(),
            "tansu must be installed at {} (or set NEBULA_TANSU)",
            binary.display()
        );
        let link = dir.join("kafka-private-broker");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&binary, &link).expect("link the tansu binary");
        let log = std::fs::File::create(dir.join("broker.log")).expect("the broker's log");
        let advertised = advertised_port.unwrap_or(port);
        let child = Command::new("sh")
            .args(["-c", WATCHDOG])
            .arg(&link)
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url",
                &format!("tcp://127.0.0.1:{advertised}"),
            ])
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log, twice"))
            .stderr(log)
            .spawn()
            .expect("start the private tansu");
        let broker = Self {
            child: Some(child),
            port,
            dir,
        };
        broker.wait_listening();
        broker
    }

    fn wait_listening(&self) {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the private tansu did not listen on {address} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kill the broker now: it is gone, with everything it stored.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM to the watchdog shell, which kills the broker and waits for it.
            let _ = Command::new("kill")
                .arg(child.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private broker behind a fault proxy, advertising the proxy's address: every connection
/// of a client bootstrapped from [`through`] goes through the proxy.
pub async fn broker_behind_proxy() -> (FaultProxy, PrivateBroker) {
    let port = free_port();
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("start the proxy");
    let advertised = proxy.port();
    let broker = tokio::task::spawn_blocking(move || PrivateBroker::start(port, Some(advertised)))
        .await
        .expect("start the private broker");
    (proxy, broker)
}

/// The bootstrap list that reaches a broker through `proxy`.
pub fn proxied_brokers(proxy: &FaultProxy) -> String {
    format!("127.0.0.1:{}", proxy.port())
}

/// [`tuned`] settings through `proxy`, with every bound short: a metadata round trip 300 ms,
/// a delivery 1 s, a flush or close 1 s.
pub fn through(proxy: &FaultProxy) -> KafkaConfig {
    tuned(KafkaConfig::new(proxied_brokers(proxy)))
        .metadata_timeout(Duration::from_millis(300))
        .delivery_timeout(Duration::from_secs(1))
        .flush_timeout(Duration::from_secs(1))
        .close_timeout(Duration::from_secs(1))
}
