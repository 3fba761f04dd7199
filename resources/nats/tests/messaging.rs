//! Messaging through the resources against the real server: exact counts from many tasks on the
//! one resident client, publish/subscribe/request through guards, and JetStream publishes whose
//! acknowledgements match what the stream stored.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, eventually, observer, unique};
use futures_util::StreamExt;
use nebula_resource::{Policy, Resource};
use nebula_resource_nats::{JetStream, Nats, NatsErrorKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_tasks_on_the_resident_client_deliver_exactly_what_they_publish() {
    const TASKS: usize = 64;
    const EACH: usize = 250;
    let manager = common::manager_with(config(), Policy::default()).await;
    let subject = format!("nebula.test.{}", unique("fanin"));
    let watcher = observer().await;
    let mut inbox = watcher.subscribe(subject.clone()).await.unwrap();
    common::synced(&watcher).await;
    // Counted as they come, per publishing task.
    let seen = Arc::new(std::sync::Mutex::new(vec![0_usize; TASKS]));
    let counter = tokio::spawn({
        let seen = Arc::clone(&seen);
        async move {
            while let Some(message) = inbox.next().await {
                let text = std::str::from_utf8(&message.payload).unwrap();
                let task: usize = text.split(':').next().unwrap().parse().unwrap();
                seen.lock().unwrap()[task] += 1;
            }
        }
    });

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let manager = manager.clone();
        let subject = subject.clone();
        tasks.push(tokio::spawn(async move {
            let nats = manager.acquire::<Nats>().await.unwrap();
            for n in 0..EACH {
                nats.publish_bounded(subject.clone(), format!("{task}:{n}").into())
                    .await
                    .unwrap();
            }
            nats.flush_bounded().await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }

    let total = || seen.lock().unwrap().iter().sum::<usize>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while total() < TASKS * EACH && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And nothing more: no duplicate was delivered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    counter.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|&n| n == EACH),
        "{} of {} messages arrived within 10 s; per task: {seen:?}",
        seen.iter().sum::<usize>(),
        TASKS * EACH
    );

    let pool = manager.status().resource("nats").unwrap().pool;
    assert_eq!(
        (pool.created, pool.destroyed, pool.in_use),
        (1, 0, 0),
        "{pool:?}"
    );
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_and_request_through_guards() {
    let manager = common::manager_with(config(), Policy::default()).await;
    let subject = format!("nebula.test.{}", unique("guards"));

    let subscriber = manager.acquire::<Nats>().await.unwrap();
    let mut inbox = subscriber.subscribe(subject.clone()).await.unwrap();
    subscriber.flush_bounded().await.unwrap();
    let publisher = manager.acquire::<Nats>().await.unwrap();
    for n in 0..10 {
        publisher
            .publish_bounded(subject.clone(), n.to_string().into())
            .await
            .unwrap();
    }
    publisher.flush_bounded().await.unwrap();
    for n in 0..10 {
        let message = tokio::time::timeout(Duration::from_secs(5), inbox.next())
            .await
            .expect("delivered")
            .expect("open");
        assert_eq!(&message.payload[..], n.to_string().as_bytes());
    }

    // Request/reply between two guards.
    let service_subject = format!("{subject}.service");
    let mut requests = subscriber.subscribe(service_subject.clone()).await.unwrap();
    subscriber.flush_bounded().await.unwrap();
    let responder = {
        let client = subscriber.client().clone();
        tokio::spawn(async move {
            let request = requests.next().await.expect("a request");
            let reply = request.reply.expect("a reply subject");
            let mut answer = b"re: ".to_vec();
            answer.extend_from_slice(&request.payload);
            client.publish(reply, answer.into()).await.unwrap();
            client.flush().await.unwrap();
        })
    };
    let answer = publisher
        .request(service_subject, "ping".into())
        .await
        .unwrap();
    assert_eq!(&answer.payload[..], b"re: ping");
    responder.await.unwrap();

    // An invalid subject is a typed rejection, not a hang or a panic.
    let err = publisher
        .publish_bounded("has space", "x".into())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), NatsErrorKind::Rejected, "{err}");
    drop((subscriber, publisher));
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_check_is_a_round_trip_to_the_server() {
    let check_timeout = Duration::from_millis(500);
    // A prefix of this test's own: its listeners below must not answer (or silence) the health
    // checks of the other tests, which run at the same time against the same server.
    let prefix = format!("_nebula.health.{}", unique("check"));
    let manager = common::manager_with(
        config()
            .check_timeout(check_timeout)
            .health_subject_prefix(prefix.clone()),
        Policy::default(),
    )
    .await;
    let mut nats = manager.acquire::<Nats>().await.unwrap().detach();

    // Nobody listens: the server answers "no responders", well before the timeout.
    let started = tokio::time::Instant::now();
    Nats.check(&mut nats).await.unwrap();
    assert!(started.elapsed() < check_timeout, "{:?}", started.elapsed());
    assert_eq!(Nats.degraded(&nats), None);
    assert!(!Nats.is_broken(&nats));

    // A listener that never answers: the check waits for an answer, and fails without one.
    let watcher = observer().await;
    let mut probes = watcher.subscribe(format!("{prefix}.>")).await.unwrap();
    common::synced(&watcher).await;
    let err = Nats.check(&mut nats).await.unwrap_err();
    assert_eq!(err.kind(), nebula_resource::ErrorKind::Check);
    assert!(err.to_string().contains("timed out"), "{err}");
    let seen = tokio::time::timeout(Duration::from_secs(2), probes.next())
        .await
        .expect("the check's request reached the server")
        .expect("open");
    assert!(
        seen.subject.starts_with(&format!("{prefix}.")),
        "{}",
        seen.subject
    );

    // A listener that answers: a round trip, the check passes.
    let answering = tokio::spawn({
        let watcher = watcher.clone();
        async move {
            let request = probes.next().await.expect("a request");
            watcher
                .publish(request.reply.expect("a reply subject"), "pong".into())
                .await
                .unwrap();
            watcher.flush().await.unwrap();
        }
    });
    Nats.check(&mut nats).await.unwrap();
    answering.await.unwrap();
    drop(nats);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_acknowledged_publishes_are_all_stored() {
    const TASKS: usize = 16;
    const EACH: usize = 50;
    let manager = common::with_jetstream().await;
    let name = unique("NEBULA_ACKED");
    let subject = format!("nebula.js.{name}");
    let watcher = observer().await;
    common::stream(&watcher, &name, &subject).await;

    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let manager = manager.clone();
        let subject = subject.clone();
        let acked = Arc::clone(&acked);
        tasks.push(tokio::spawn(async move {
            let js = manager.acquire::<JetStream>().await.unwrap();
            for n in 0..EACH {
                let ack = js
                    .publish_acked(format!("{subject}.{task}"), n.to_string().into())
                    .await
                    .unwrap();
                assert!(!ack.duplicate);
                acked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let acked = acked.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(acked, (TASKS * EACH) as u64);
    assert_eq!(common::stored(&watcher, &name).await, acked);

    // A subject no stream covers: a typed rejection.
    let js = manager.acquire::<JetStream>().await.unwrap();
    let err = js
        .publish_acked(format!("nebula.nostream.{name}"), "x".into())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), NatsErrorKind::Rejected, "{err}");
    drop(js);

    let status = manager.status();
    let js_pool = status.resource("nats-jetstream").unwrap().pool;
    assert_eq!(js_pool.created, 1, "{js_pool:?}");
    common::delete_stream(&watcher, &name).await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_rounds_report_healthy_against_a_live_server() {
    use nebula_resource::{Health, HealthConfig};
    let manager = common::manager_with(
        config(),
        Policy::default().health(HealthConfig::default().interval(Duration::from_millis(50))),
    )
    .await;
    eventually(Duration::from_secs(5), "two good health rounds", || {
        let report = manager.status().resource("nats").unwrap().health.clone();
        async move { report.health == Health::Healthy && report.consecutive_successes >= 2 }
    })
    .await;
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jetstream_check_asks_jetstream_itself() {
    use nebula_resource::{ErrorKind, ResourceManager};
    use nebula_resource_nats::JetStreamConfig;
    let manager = common::with_jetstream().await;
    let mut js = manager.acquire::<JetStream>().await.unwrap().detach();
    JetStream.check(&mut js).await.unwrap();
    js.ping().await.unwrap();
    assert_eq!(JetStream.degraded(&js), None);
    drop(js);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();

    // A domain nobody serves: core NATS works, the JetStream check fails, typed and at once.
    let manager = ResourceManager::builder()
        .register(Nats, config())
        .register(
            JetStream,
            JetStreamConfig::default()
                .domain("nowhere")
                .check_timeout(Duration::from_secs(1)),
        )
        .build()
        .await
        .unwrap_or_else(|err| common::unreachable(err));
    let mut js = manager.acquire::<JetStream>().await.unwrap().detach();
    js.nats().ping().await.unwrap();
    let started = tokio::time::Instant::now();
    let err = js.ping().await.unwrap_err();
    assert_eq!(err.kind(), NatsErrorKind::Rejected, "{err}");
    assert!(err.to_string().contains("$JS.nowhere.API"), "{err}");
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let err = JetStream.check(&mut js).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Check, "{err}");
    drop(js);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}
