//! Network faults between the client and the server, through the test kit's `FaultProxy`:
//! resets (the client reconnects by itself, the instance is kept), a refused server (degraded
//! while reconnecting, then closed for good and replaced), and a black hole (checks fail, the
//! breaker opens and fails fast, a half-open probe closes it once healed). Every call returns,
//! typed, within its bound.

mod common;

use std::time::Duration;

use common::{eventually, observer, unique};
use futures_util::StreamExt;
use nebula_resource::{
    BreakerConfig, BreakerState, ErrorKind, Event, HealthConfig, Policy, PoolConfig, Resource,
    ResourceManager, RetryPolicy,
};
use nebula_resource_nats::{Nats, NatsConfig, NatsErrorKind};
use nebula_resource_testing::FaultProxy;
use tokio::time::Instant;

async fn proxy() -> FaultProxy {
    let upstream = common::nats_url()
        .trim_start_matches("nats://")
        .parse()
        .expect("NEBULA_TEST_NATS_URL is nats://<ip>:<port> for the fault tests");
    FaultProxy::start(upstream).await.expect("start the proxy")
}

fn through(proxy: &FaultProxy) -> NatsConfig {
    NatsConfig::new(format!("nats://127.0.0.1:{}", proxy.port()))
        .connect_timeout(Duration::from_millis(300))
        .check_timeout(Duration::from_millis(300))
        .publish_timeout(Duration::from_millis(300))
        .drain_timeout(Duration::from_millis(500))
        .reconnect_max_delay(Duration::from_millis(50))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections_reconnect_and_keep_subscriptions_on_the_same_instance() {
    let proxy = proxy().await;
    let manager = common::manager_with(through(&proxy), Policy::default()).await;
    let subject = format!("nebula.test.{}", unique("reset"));
    let nats = manager.acquire::<Nats>().await.unwrap();
    let mut inbox = nats.subscribe(subject.clone()).await.unwrap();
    nats.flush_bounded().await.unwrap();

    for round in 0..3 {
        proxy.reset();
        // Every call returns within its bound while the client reconnects, Ok or typed.
        let started = Instant::now();
        let mut delivered = false;
        while started.elapsed() < Duration::from_secs(5) {
            let call = Instant::now();
            let published = nats
                .publish_bounded(subject.clone(), format!("{round}").into())
                .await;
            let flushed = nats.flush_bounded().await;
            assert!(
                call.elapsed() < Duration::from_millis(900),
                "{:?}",
                call.elapsed()
            );
            for outcome in [published, flushed] {
                if let Err(err) = outcome {
                    assert_eq!(err.kind(), NatsErrorKind::TimedOut, "{err}");
                }
            }
            if let Ok(Some(message)) =
                tokio::time::timeout(Duration::from_millis(100), inbox.next()).await
            {
                assert_eq!(&message.payload[..], round.to_string().as_bytes());
                delivered = true;
                break;
            }
        }
        assert!(
            delivered,
            "round {round}: no message through the resubscribed subject"
        );
        // Drain what else of this round arrived.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), inbox.next()).await
        {
        }
    }
    assert!(!Nats.is_broken(&nats));
    drop(nats);
    let pool = manager.status().resource("nats").unwrap().pool;
    assert_eq!(
        (pool.created, pool.destroyed),
        (1, 0),
        "the driver reconnected: {pool:?}"
    );
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_server_is_degraded_then_closed_for_good_and_replaced() {
    let proxy = proxy().await;
    let manager = common::manager_with(
        through(&proxy).reconnect_attempts(15),
        Policy::default()
            .retry(RetryPolicy::none())
            .health(HealthConfig::disabled())
            .pool(PoolConfig::default().acquire_timeout(Duration::from_secs(1))),
    )
    .await;
    let nats = manager.acquire::<Nats>().await.unwrap();
    nats.ping().await.unwrap();

    proxy.refuse();
    // Reconnecting: degraded, not broken, and a round trip fails typed within its bound.
    eventually(
        Duration::from_secs(2),
        "the client reports it reconnects",
        || {
            let degraded = Nats.degraded(&nats);
            async move { degraded.is_some() }
        },
    )
    .await;
    let reason = Nats.degraded(&nats).unwrap();
    assert!(reason.contains("reconnecting"), "{reason}");
    let call = Instant::now();
    let err = nats.ping().await.unwrap_err();
    assert!(
        matches!(err.kind(), NatsErrorKind::TimedOut | NatsErrorKind::Closed),
        "{err}"
    );
    assert!(
        call.elapsed() < Duration::from_millis(600),
        "{:?}",
        call.elapsed()
    );

    // Out of reconnect attempts: closed for good, so broken.
    eventually(
        Duration::from_secs(5),
        "the client closes after its attempts",
        || {
            let closed = Nats.is_broken(&nats);
            async move { closed }
        },
    )
    .await;
    let err = nats
        .publish_bounded("nebula.test.closed", "x".into())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), NatsErrorKind::Closed, "{err}");
    drop(nats);

    // The manager replaces it; while refused, the create fails typed and fast.
    let call = Instant::now();
    let err = manager.acquire::<Nats>().await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(
        matches!(err.kind(), ErrorKind::Create | ErrorKind::Timeout),
        "{err}"
    );
    assert!(
        call.elapsed() < Duration::from_millis(1500),
        "{:?}",
        call.elapsed()
    );

    proxy.pass();
    let nats = manager.acquire::<Nats>().await.unwrap();
    nats.ping().await.unwrap();
    drop(nats);
    let pool = manager.status().resource("nats").unwrap().pool;
    assert_eq!(pool.created, 2, "{pool:?}");
    assert!(pool.create_errors >= 1, "{pool:?}");
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_while_reconnecting_times_publishes_out_at_their_bound() {
    const CAPACITY: usize = 16;
    const PUBLISH_TIMEOUT: Duration = Duration::from_millis(300);
    let proxy = proxy().await;
    let manager = common::manager_with(
        through(&proxy)
            .client_capacity(CAPACITY)
            .publish_timeout(PUBLISH_TIMEOUT),
        Policy::default().health(HealthConfig::disabled()),
    )
    .await;
    let nats = manager.acquire::<Nats>().await.unwrap();
    nats.ping().await.unwrap();

    proxy.refuse();
    eventually(
        Duration::from_secs(2),
        "the client reports it reconnects",
        || {
            let degraded = Nats.degraded(&nats);
            async move { degraded.is_some() }
        },
    )
    .await;
    // The queue takes what fits at once; the publish after it waits, and no longer than its
    // bound.
    let subject = format!("nebula.test.{}", unique("full"));
    let mut queued = 0;
    let filling = async {
        loop {
            let call = Instant::now();
            match nats.publish_bounded(subject.clone(), "x".into()).await {
                Ok(()) => {
                    queued += 1;
                    assert!(
                        call.elapsed() < Duration::from_millis(50),
                        "a publish with room in the queue waited {:?}",
                        call.elapsed()
                    );
                    assert!(queued <= 4 * CAPACITY, "{queued} publishes queued");
                }
                Err(err) => break (err, call.elapsed()),
            }
        }
    };
    let (err, waited) = tokio::time::timeout(Duration::from_secs(5), filling)
        .await
        .expect("a publish into the full queue returns");
    assert!(queued >= CAPACITY / 2, "only {queued} publishes queued");
    assert_eq!(err.kind(), NatsErrorKind::TimedOut, "{err}");
    assert_eq!(err.subject(), Some(subject.as_str()));
    assert!(
        waited >= PUBLISH_TIMEOUT && waited < PUBLISH_TIMEOUT + Duration::from_millis(300),
        "{waited:?}"
    );

    // Healed: the client reconnects and publishes go through again.
    proxy.pass();
    eventually(Duration::from_secs(3), "the client is back", || {
        let nats = nats.clone();
        async move { nats.ping().await.is_ok() }
    })
    .await;
    nats.publish_bounded(subject, "back".into()).await.unwrap();
    nats.flush_bounded().await.unwrap();
    drop(nats);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

/// Acquire and ping; a failed ping taints the handle, as an application would.
async fn ping(manager: &ResourceManager) -> Result<(), nebula_resource::Error> {
    let nats = manager.acquire::<Nats>().await?;
    if let Err(err) = nats.ping().await {
        nats.taint();
        return Err(nebula_resource::Error::check(err));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_opens_the_breaker_which_fails_fast_and_a_probe_closes_it_once_healed() {
    let proxy = proxy().await;
    let open_wait = Duration::from_millis(500);
    let manager = common::manager_with(
        through(&proxy),
        Policy::default()
            .retry(RetryPolicy::none())
            .pool(PoolConfig::default().acquire_timeout(Duration::from_secs(1)))
            // Checks every 100 ms; no quarantine, so what fails fast is the breaker.
            .health(
                HealthConfig::default()
                    .interval(Duration::from_millis(100))
                    .timeout(Duration::from_secs(1))
                    .failure_threshold(1000),
            )
            .breaker(
                BreakerConfig::default()
                    .window(4)
                    .minimum_calls(2)
                    .failure_rate_threshold(0.5)
                    .open_wait(open_wait)
                    .half_open_calls(1),
            ),
    )
    .await;
    ping(&manager).await.unwrap();
    let mut events = manager.events();

    proxy.blackhole();
    // Nothing fails by itself in a black hole: the checks' round trips time out, the health
    // rounds replace the client, the creates time out, and the breaker opens. Every call
    // meanwhile returns within its bound.
    let started = Instant::now();
    let retry_after = loop {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the breaker never opened"
        );
        let call = Instant::now();
        let result = ping(&manager).await;
        assert!(
            call.elapsed() < Duration::from_millis(1500),
            "{:?}",
            call.elapsed()
        );
        match result {
            Err(err) if err.kind() == ErrorKind::CircuitOpen => {
                break err.retry_after().expect("retry_after");
            }
            Err(err) => assert!(err.is_retryable(), "{err}"),
            Ok(()) => panic!("a round trip succeeded through a black hole"),
        }
    };
    assert!(retry_after <= open_wait, "{retry_after:?}");
    assert_eq!(
        manager.status().resource("nats").unwrap().breaker.state,
        BreakerState::Open
    );

    // Open: fails fast, without touching the network.
    let fast = Instant::now();
    for _ in 0..100 {
        let err = manager.acquire::<Nats>().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CircuitOpen, "{err}");
    }
    assert!(
        fast.elapsed() < Duration::from_millis(100),
        "{:?}",
        fast.elapsed()
    );

    proxy.pass();
    tokio::time::sleep(open_wait).await;
    // The half-open probe gets a working client and closes the breaker.
    eventually(
        Duration::from_secs(3),
        "a probe succeeds once healed",
        || {
            let manager = manager.clone();
            async move { ping(&manager).await.is_ok() }
        },
    )
    .await;
    let closed = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            if let Ok(Event::CircuitClosed(source)) = events.recv().await {
                return source;
            }
        }
    })
    .await
    .expect("CircuitClosed within 2 s");
    assert_eq!(closed.key, "nats");
    for _ in 0..10 {
        ping(&manager).await.expect("the closed breaker serves");
    }

    // And messages flow end to end again.
    let subject = format!("nebula.test.{}", unique("healed"));
    let watcher = observer().await;
    let mut inbox = watcher.subscribe(subject.clone()).await.unwrap();
    common::synced(&watcher).await;
    let nats = manager.acquire::<Nats>().await.unwrap();
    nats.publish_bounded(subject, "back".into()).await.unwrap();
    nats.flush_bounded().await.unwrap();
    let message = tokio::time::timeout(Duration::from_secs(2), inbox.next())
        .await
        .expect("delivered")
        .expect("open");
    assert_eq!(&message.payload[..], b"back");
    drop(nats);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}
