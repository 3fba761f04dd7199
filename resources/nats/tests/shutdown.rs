//! Shutdown under load: every message whose JetStream publish was acknowledged is on the stream,
//! and every core message `publish_bounded` queued is delivered before the client closes (the
//! drain flushes it), however many were in flight when shutdown began.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{observer, unique};
use futures_util::StreamExt;
use nebula_resource::ErrorKind;
use nebula_resource_nats::{JetStream, Nats};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_under_load_loses_no_acknowledged_or_queued_message() {
    let manager = common::with_jetstream().await;
    let name = unique("NEBULA_SHUTDOWN");
    let subject = format!("nebula.js.{name}");
    let core_subject = format!("nebula.test.{name}");
    let watcher = observer().await;
    common::stream(&watcher, &name, &subject).await;
    let mut inbox = watcher.subscribe(core_subject.clone()).await.unwrap();
    common::synced(&watcher).await;
    // Counted as they come: a subscription left unread drops what overflows its buffer.
    let received = Arc::new(AtomicU64::new(0));
    let counter = tokio::spawn({
        let received = Arc::clone(&received);
        async move {
            while inbox.next().await.is_some() {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
    });

    let acked = Arc::new(AtomicU64::new(0));
    let queued = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for task in 0..16 {
        let manager = manager.clone();
        let (subject, core_subject) = (subject.clone(), core_subject.clone());
        let (acked, queued) = (Arc::clone(&acked), Arc::clone(&queued));
        tasks.push(tokio::spawn(async move {
            loop {
                if task % 2 == 0 {
                    let js = match manager.acquire::<JetStream>().await {
                        Ok(js) => js,
                        Err(err) => {
                            assert_eq!(err.kind(), ErrorKind::ShuttingDown, "{err}");
                            return;
                        }
                    };
                    js.publish_acked(format!("{subject}.{task}"), "m".into())
                        .await
                        .expect("a publish under way finishes: shutdown waits for its guard");
                    acked.fetch_add(1, Ordering::Relaxed);
                } else {
                    let nats = match manager.acquire::<Nats>().await {
                        Ok(nats) => nats,
                        Err(err) => {
                            assert_eq!(err.kind(), ErrorKind::ShuttingDown, "{err}");
                            return;
                        }
                    };
                    for _ in 0..20 {
                        nats.publish_bounded(core_subject.clone(), "m".into())
                            .await
                            .expect("queued");
                        queued.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(nats);
                    // A pace the watcher's one subscription keeps up with on a loaded machine
                    // (core NATS drops what a slow subscriber cannot take): about 20,000
                    // messages a second, with bursts still in flight when shutdown begins.
                    tokio::time::sleep(Duration::from_millis(8)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    manager.shutdown(Duration::from_secs(10)).await.unwrap();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("every task ends after shutdown")
            .unwrap();
    }

    let acked = acked.load(Ordering::Relaxed);
    assert!(acked > 0);
    assert_eq!(
        common::stored(&watcher, &name).await,
        acked,
        "acked vs stored"
    );

    let queued = queued.load(Ordering::Relaxed);
    assert!(queued > 0);
    common::eventually(
        Duration::from_secs(10),
        "every queued message arrives",
        || {
            let done = received.load(Ordering::Relaxed) >= queued;
            async move { done }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = received.load(Ordering::Relaxed);
    counter.abort();
    assert_eq!(
        received, queued,
        "every queued core message delivered by the drain"
    );
    common::delete_stream(&watcher, &name).await;
}
