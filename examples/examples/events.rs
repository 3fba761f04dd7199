//! Events: a transactional outbox relayed to three brokers, every client a resource of one DAG.
//!
//! An order service writes each event into an `outbox` table in the same transaction as its
//! business change; this relay takes the outbox in batches (`FOR UPDATE SKIP LOCKED`, so several
//! relays can run side by side) and publishes each event to RabbitMQ (a confirmed publish),
//! Kafka (an acknowledged produce) and NATS JetStream (a stored, acknowledged publish), then
//! deletes the batch in the same transaction. An event is deleted only once all three brokers
//! took it; a failure rolls the batch back and it is sent again (at least once: consumers
//! deduplicate by the event id carried in every message).
//!
//! ```text
//!              relay
//!   ┌────────┬───┴──────────┬──────────────┐
//! postgres  rabbitmq-channel kafka-producer nats-jetstream
//!            │                              │
//!           rabbitmq                        nats
//! ```
//!
//! The servers are the local ones the project's test script starts; override with
//! `DATABASE_URL`, `AMQP_URL`, `KAFKA_BROKERS`, `NATS_URL`.
//!
//! ```text
//! cargo run -p nebula-resource-examples --example events
//! ```
#![allow(clippy::print_stdout, reason = "an example prints what it does")]

use std::time::Duration;

use nebula_resource::{
    Config, CreateContext, Dependencies, Error, Handle, Policy, PoolConfig, Resource,
    ResourceManager, Topology,
};
use nebula_resource_kafka::rdkafka::admin::{
    AdminClient, AdminOptions, NewTopic, TopicReplication,
};
use nebula_resource_kafka::rdkafka::client::DefaultClientContext;
use nebula_resource_kafka::rdkafka::producer::FutureRecord;
use nebula_resource_kafka::rdkafka::types::RDKafkaErrorCode;
use nebula_resource_kafka::{KafkaConfig, KafkaProducer};
use nebula_resource_nats::async_nats::jetstream::stream;
use nebula_resource_nats::{JetStream, JetStreamConfig, Nats, NatsConfig};
use nebula_resource_postgres::sqlx::{self, Row};
use nebula_resource_postgres::{Postgres, PostgresConfig};
use nebula_resource_rabbitmq::lapin::BasicProperties;
use nebula_resource_rabbitmq::lapin::options::QueueDeclareOptions;
use nebula_resource_rabbitmq::lapin::types::FieldTable;
use nebula_resource_rabbitmq::{RabbitMq, RabbitMqChannel, RabbitMqChannelConfig, RabbitMqConfig};

/// Where every event goes: the RabbitMQ queue, the Kafka topic and the JetStream subject.
const QUEUE: &str = "orders.events";
const TOPIC: &str = "orders-events";
const SUBJECT: &str = "orders.events";
const STREAM: &str = "ORDERS_EVENTS";

/// How many events the demo writes, and how many the relay takes per transaction.
const EVENTS: i64 = 200;
const BATCH: i64 = 50;

#[derive(Clone, Default)]
struct RelayConfig;

impl Config for RelayConfig {}

/// The relay: a handle on each resource it needs, shared by every acquirer.
#[derive(Clone)]
struct Relay {
    db: Handle<Postgres>,
    rabbit: Handle<RabbitMqChannel>,
    kafka: Handle<KafkaProducer>,
    jetstream: Handle<JetStream>,
}

/// What one pass of the relay did.
#[derive(Debug, Default, Clone, Copy)]
struct Relayed {
    events: usize,
}

impl Relay {
    /// Take one batch of the outbox, publish it to the three brokers, delete it; how many events
    /// went out (0 when the outbox is empty).
    async fn pass(&self) -> Result<Relayed, Error> {
        let mut conn = self.db.acquire().await?;
        let mut tx = conn.begin().await.map_err(Error::check)?;
        let rows = sqlx::query(
            "SELECT id, payload FROM events_outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await
        .map_err(Error::check)?;
        if rows.is_empty() {
            return Ok(Relayed::default());
        }
        let events: Vec<(i64, String)> = rows
            .iter()
            .map(|row| (row.get("id"), row.get("payload")))
            .collect();

        let channel = self.rabbit.acquire().await?;
        let producer = self.kafka.acquire().await?;
        let jetstream = self.jetstream.acquire().await?;
        for (id, payload) in &events {
            let key = id.to_string();
            let rabbit = async {
                let properties = BasicProperties::default().with_message_id(key.clone().into());
                channel
                    .publish("", QUEUE, payload.as_bytes(), properties)
                    .await
                    .map_err(|err| Error::check(err.to_string()))
            };
            let kafka = async {
                producer
                    .send(
                        FutureRecord::to(TOPIC).key(&key).payload(payload),
                        Duration::from_secs(5),
                    )
                    .await
                    .map(drop)
                    .map_err(|(err, _message)| Error::check(err))
            };
            let nats = async {
                jetstream
                    .publish_acked(SUBJECT, payload.clone().into())
                    .await
                    .map(drop)
                    .map_err(Error::check)
            };
            tokio::try_join!(rabbit, kafka, nats)?;
        }

        let ids: Vec<i64> = events.iter().map(|(id, _)| *id).collect();
        sqlx::query("DELETE FROM events_outbox WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(Error::check)?;
        tx.commit().await.map_err(Error::check)?;
        Ok(Relayed {
            events: events.len(),
        })
    }
}

/// The relay resource: created after the database and the three brokers are ready; it makes
/// the outbox table, the queue, the topic and the stream it publishes to.
struct OutboxRelay;

impl Resource for OutboxRelay {
    type Config = RelayConfig;
    type Instance = Relay;
    const KEY: &'static str = "relay";
    const TOPOLOGY: Topology = Topology::Resident;

    fn dependencies() -> Dependencies {
        Dependencies::none()
            .on::<Postgres>()
            .on::<RabbitMqChannel>()
            .on::<KafkaProducer>()
            .on::<JetStream>()
    }

    async fn create(&self, _config: &RelayConfig, ctx: &CreateContext) -> Result<Relay, Error> {
        let relay = Relay {
            db: ctx.dependency::<Postgres>()?,
            rabbit: ctx.dependency::<RabbitMqChannel>()?,
            kafka: ctx.dependency::<KafkaProducer>()?,
            jetstream: ctx.dependency::<JetStream>()?,
        };
        let mut conn = relay.db.acquire().await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS events_outbox (id BIGSERIAL PRIMARY KEY, payload TEXT NOT NULL)",
        )
        .execute(&mut *conn)
        .await
        .map_err(Error::create)?;
        drop(conn);

        let channel = relay.rabbit.acquire().await?;
        channel
            .queue_declare(
                QUEUE.into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(Error::create)?;
        drop(channel);

        let jetstream = relay.jetstream.acquire().await?;
        jetstream
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec![SUBJECT.into()],
                ..Default::default()
            })
            .await
            .map_err(Error::create)?;
        Ok(relay)
    }

    fn share(&self, relay: &Relay) -> Option<Relay> {
        Some(relay.clone())
    }
}

/// Topics are not created on first use by every broker (tansu does not): make ours.
async fn create_topic(brokers: &str) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> =
        nebula_resource_kafka::rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .map_err(Error::create)?;
    let topic = NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(5)));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(Error::create)?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(Error::create(format!("create topic {topic}: {code}")));
            }
        }
    }
    Ok(())
}

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();

    let brokers = env("KAFKA_BROKERS", "127.0.0.1:9092");
    create_topic(&brokers).await?;

    let pool = |max_size| {
        Policy::default().pool(
            PoolConfig::default()
                .max_size(max_size)
                .acquire_timeout(Duration::from_secs(5)),
        )
    };
    let manager = ResourceManager::builder()
        .register(OutboxRelay, RelayConfig)
        .register_with(
            Postgres,
            PostgresConfig::new(env(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/test",
            )),
            pool(4),
        )
        .register(
            RabbitMq,
            RabbitMqConfig::new(env("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"))
                .connection_name("events-relay"),
        )
        .register_with(RabbitMqChannel, RabbitMqChannelConfig::default(), pool(4))
        .register(
            KafkaProducer::new(),
            KafkaConfig::new(brokers).client_id("events-relay"),
        )
        .register(
            Nats,
            NatsConfig::new(env("NATS_URL", "nats://127.0.0.1:4222")),
        )
        .register(JetStream, JetStreamConfig::default())
        .build()
        .await?;

    // The order service's side: events written to the outbox.
    let db = manager.handle::<Postgres>()?;
    let mut conn = db.acquire().await?;
    sqlx::query("INSERT INTO events_outbox (payload) SELECT format('{\"order\":%s}', n) FROM generate_series(1, $1) AS n")
        .bind(EVENTS)
        .execute(&mut *conn)
        .await
        .map_err(Error::check)?;
    drop(conn);
    println!("outbox: {EVENTS} events written");

    // The relay's side: pass after pass until the outbox is empty.
    let relay = manager.acquire::<OutboxRelay>().await?;
    let mut total = 0;
    loop {
        let relayed = relay.pass().await?;
        if relayed.events == 0 {
            break;
        }
        total += relayed.events;
        println!("relayed {} events (total {total})", relayed.events);
    }
    drop(relay);

    println!();
    println!(
        "{:<18} {:<9} {:<9} depends on",
        "resource", "topology", "health"
    );
    for resource in manager.status().resources {
        println!(
            "{:<18} {:<9} {:<9} {}",
            resource.key,
            format!("{:?}", resource.topology),
            resource.health.health.to_string(),
            resource.dependencies.join(", ")
        );
    }

    // Dependents first: the relay, then the channels and the JetStream context, then the
    // connections; the Kafka producer is flushed within the deadline.
    manager.shutdown(Duration::from_secs(10)).await?;
    println!("\nshut down: {total} events relayed to RabbitMQ, Kafka and NATS");
    Ok(())
}
