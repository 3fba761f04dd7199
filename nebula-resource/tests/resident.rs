//! Topology::Resident: one instance shared by every acquirer, replaced once when broken.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use nebula_resource::{
    Config, CreateContext, Error, ErrorKind, Resource, ResourceManager, Topology,
};

#[derive(Clone, Default)]
struct NoConfig;
impl Config for NoConfig {}

#[derive(Clone)]
struct Client {
    generation: usize,
    broken: Arc<AtomicBool>,
}

struct Shared {
    creates: Arc<AtomicUsize>,
}

impl Resource for Shared {
    type Config = NoConfig;
    type Instance = Client;
    const KEY: &'static str = "shared";
    const TOPOLOGY: Topology = Topology::Resident;

    async fn create(&self, _: &NoConfig, _: &CreateContext) -> Result<Client, Error> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let generation = self.creates.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(Client {
            generation,
            broken: Arc::new(AtomicBool::new(false)),
        })
    }

    fn is_broken(&self, client: &Client) -> bool {
        client.broken.load(Ordering::SeqCst)
    }

    fn share(&self, client: &Client) -> Option<Client> {
        Some(client.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_serves_many_concurrent_acquirers() {
    let creates = Arc::new(AtomicUsize::new(0));
    let manager = ResourceManager::builder()
        .register(
            Shared {
                creates: Arc::clone(&creates),
            },
            NoConfig,
        )
        .build()
        .await
        .unwrap();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move {
                let client = manager.acquire::<Shared>().await.unwrap();
                tokio::task::yield_now().await;
                client.generation
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 1);
    }
    assert_eq!(creates.load(Ordering::SeqCst), 1);

    // Held handles are counted; a broken instance is replaced exactly once, however many notice.
    let first = manager.acquire::<Shared>().await.unwrap();
    assert_eq!(manager.status().resource("shared").unwrap().pool.in_use, 1);
    first.broken.store(true, Ordering::SeqCst);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let manager = manager.clone();
            tokio::spawn(async move { manager.acquire::<Shared>().await.unwrap().generation })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), 2);
    }
    assert_eq!(creates.load(Ordering::SeqCst), 2);
    drop(first);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(manager.status().resource("shared").unwrap().pool.size, 0);
}

#[tokio::test]
async fn tainting_a_resident_handle_replaces_the_instance() {
    let creates = Arc::new(AtomicUsize::new(0));
    let manager = ResourceManager::builder()
        .register(
            Shared {
                creates: Arc::clone(&creates),
            },
            NoConfig,
        )
        .build()
        .await
        .unwrap();
    let client = manager.acquire::<Shared>().await.unwrap();
    assert_eq!(client.generation, 1);
    client.taint();
    assert_eq!(manager.acquire::<Shared>().await.unwrap().generation, 2);
}

struct NotShareable;
impl Resource for NotShareable {
    type Config = NoConfig;
    type Instance = u8;
    const KEY: &'static str = "lonely";
    const TOPOLOGY: Topology = Topology::Resident;
    async fn create(&self, _: &NoConfig, _: &CreateContext) -> Result<u8, Error> {
        Ok(1)
    }
}

#[tokio::test]
async fn resident_without_share_fails_build_with_a_config_error() {
    let err = ResourceManager::builder()
        .register(NotShareable, NoConfig)
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(err.field(), Some("topology"));
    assert!(err.to_string().contains("resource `lonely`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_from_many_threads_are_counted_and_a_retired_instance_is_let_go() {
    let manager = ResourceManager::builder()
        .register(
            Shared {
                creates: Arc::new(AtomicUsize::new(0)),
            },
            NoConfig,
        )
        .build()
        .await
        .unwrap();
    // Eight threads alive at once, so eight lanes; each acquires and hands its guard back.
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let acquiring: Vec<_> = (0..8)
        .map(|_| {
            let manager = manager.clone();
            let barrier = Arc::clone(&barrier);
            let runtime = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                barrier.wait();
                runtime.block_on(manager.acquire::<Shared>()).unwrap()
            })
        })
        .collect();
    let mut guards = Vec::new();
    for acquired in acquiring {
        guards.push(acquired.await.unwrap());
    }
    assert!(guards.iter().all(|client| client.generation == 1));
    let in_use =
        |manager: &ResourceManager| manager.status().resource("shared").unwrap().pool.in_use;
    assert_eq!(in_use(&manager), 8);
    let first = Arc::downgrade(&guards[0].broken);
    // Released here, on a thread that acquired none of them.
    drop(guards);
    assert_eq!(in_use(&manager), 0);

    manager.reconfigure::<Shared>(NoConfig).unwrap();
    let client = manager.acquire::<Shared>().await.unwrap();
    assert_eq!(client.generation, 2);
    for _ in 0..200 {
        if first.strong_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        first.strong_count(),
        0,
        "a handle of the retired instance is still alive (kept by a lane?)"
    );
    drop(client);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(in_use(&manager), 0);
}

/// Counts of a [`Gated`] resource's instances.
#[derive(Default)]
struct GateCounts {
    alive: AtomicUsize,
    created: AtomicUsize,
    destroy_calls: AtomicUsize,
}

impl GateCounts {
    /// A new instance, counted alive until its last handle is dropped.
    fn made(counts: &Arc<Self>, config: &Label) -> GatedClient {
        counts.alive.fetch_add(1, Ordering::SeqCst);
        counts.created.fetch_add(1, Ordering::SeqCst);
        GatedClient {
            label: config.0.clone(),
            _token: Arc::new(Token(Arc::clone(counts))),
        }
    }
}

/// Dropped with the last handle of an instance.
struct Token(Arc<GateCounts>);

impl Drop for Token {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct GatedClient {
    label: String,
    _token: Arc<Token>,
}

#[derive(Clone, Default)]
struct Label(String);
impl Config for Label {}

/// While `hold` is set, `create` signals `entered` and waits for a permit of `open`.
struct Gate {
    hold: AtomicBool,
    entered: tokio::sync::Semaphore,
    open: tokio::sync::Semaphore,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            hold: AtomicBool::new(false),
            entered: tokio::sync::Semaphore::new(0),
            open: tokio::sync::Semaphore::new(0),
        }
    }
}

impl Gate {
    async fn entered(&self) {
        self.entered.acquire().await.unwrap().forget();
    }
}

/// A resident whose creates the test can hold at a gate.
struct Gated {
    counts: Arc<GateCounts>,
    gate: Arc<Gate>,
}

impl Resource for Gated {
    type Config = Label;
    type Instance = GatedClient;
    const KEY: &'static str = "gated";
    const TOPOLOGY: Topology = Topology::Resident;

    async fn create(&self, config: &Label, _: &CreateContext) -> Result<GatedClient, Error> {
        if self.gate.hold.load(Ordering::SeqCst) {
            self.gate.entered.add_permits(1);
            self.gate.open.acquire().await.unwrap().forget();
        }
        Ok(GateCounts::made(&self.counts, config))
    }

    async fn destroy(&self, client: GatedClient) {
        self.counts.destroy_calls.fetch_add(1, Ordering::SeqCst);
        drop(client);
    }

    fn share(&self, client: &GatedClient) -> Option<GatedClient> {
        Some(client.clone())
    }
}

async fn gated(policy: nebula_resource::Policy) -> (ResourceManager, Arc<GateCounts>, Arc<Gate>) {
    let counts = Arc::new(GateCounts::default());
    let gate = Arc::new(Gate::default());
    let manager = ResourceManager::builder()
        .register_with(
            Gated {
                counts: Arc::clone(&counts),
                gate: Arc::clone(&gate),
            },
            Label("old".into()),
            policy,
        )
        .build()
        .await
        .unwrap();
    (manager, counts, gate)
}

fn quiet_policy() -> nebula_resource::Policy {
    nebula_resource::Policy::default()
        .retry(nebula_resource::RetryPolicy::none())
        .breaker(nebula_resource::BreakerConfig::disabled())
        .health(nebula_resource::HealthConfig::disabled())
}

/// Regression (faults #5): a resident create read config and credentials when it started and
/// installed its instance unconditionally: a reconfigure during the create was lost, and every
/// later acquire kept the old config.
#[tokio::test(start_paused = true)]
async fn a_reconfigure_during_an_in_flight_resident_create_is_not_lost() {
    let (manager, counts, gate) = gated(quiet_policy()).await;
    // Retire the instance made by build(): the next acquire creates one.
    manager.acquire::<Gated>().await.unwrap().taint();
    gate.hold.store(true, Ordering::SeqCst);
    let in_flight = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.acquire::<Gated>().await.map(|c| c.label.clone()) })
    };
    gate.entered().await;

    // Reconfigured while that create (with the old config) is in flight.
    manager.reconfigure::<Gated>(Label("new".into())).unwrap();
    gate.hold.store(false, Ordering::SeqCst);
    gate.open.add_permits(1);
    let _ = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the in-flight acquire finishes")
        .unwrap();

    let client = tokio::time::timeout(Duration::from_secs(5), manager.acquire::<Gated>())
        .await
        .expect("acquire finishes")
        .unwrap();
    assert_eq!(
        client.label, "new",
        "the reconfigure was lost: acquires after it still get the old config"
    );
    drop(client);
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(counts.alive.load(Ordering::SeqCst), 0);
}

/// Regression (faults #6): a health-probe create that timed out was dropped between
/// `creating += 1` and `creating -= 1`, leaking `creating` (and so `size` above max_size 1).
#[tokio::test(start_paused = true)]
async fn a_timed_out_resident_health_probe_create_leaks_no_creating_count() {
    let (manager, counts, gate) = gated(
        nebula_resource::Policy::default()
            .retry(nebula_resource::RetryPolicy::none())
            .breaker(nebula_resource::BreakerConfig::disabled())
            .health(
                nebula_resource::HealthConfig::default()
                    .interval(Duration::from_secs(1))
                    .timeout(Duration::from_millis(100))
                    .failure_threshold(5),
            ),
    )
    .await;
    // No instance: the next health round probes by creating, and that create hangs past the
    // health timeout (100 ms).
    manager.acquire::<Gated>().await.unwrap().taint();
    gate.hold.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(5), gate.entered())
        .await
        .expect("the health round probes by creating");
    tokio::time::sleep(Duration::from_millis(200)).await;
    gate.hold.store(false, Ordering::SeqCst);
    gate.open.add_permits(10);

    let client = tokio::time::timeout(Duration::from_secs(5), manager.acquire::<Gated>())
        .await
        .expect("acquire finishes")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let pool = manager.status().resource("gated").unwrap().pool;
    assert_eq!(
        (pool.size, pool.creating, pool.max_size),
        (1, 0, 1),
        "{pool:?}"
    );
    drop(client);
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(counts.alive.load(Ordering::SeqCst), 0);
}

/// Regression (faults #7): resident shutdown did not wait for an in-flight create, which then
/// installed its instance into the closed resident, never to be destroyed.
#[tokio::test(start_paused = true)]
async fn resident_shutdown_destroys_the_instance_of_a_create_in_flight() {
    let (manager, counts, gate) = gated(quiet_policy()).await;
    manager.acquire::<Gated>().await.unwrap().taint();
    gate.hold.store(true, Ordering::SeqCst);
    let in_flight = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.acquire::<Gated>().await.map(drop) })
    };
    gate.entered().await;

    let shutdown = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.shutdown(Duration::from_secs(2)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.hold.store(false, Ordering::SeqCst);
    gate.open.add_permits(1);
    let _ = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the in-flight acquire finishes");
    tokio::time::timeout(Duration::from_secs(5), shutdown)
        .await
        .expect("shutdown finishes")
        .unwrap()
        .expect("nothing in use: shutdown succeeds");
    tokio::time::sleep(Duration::from_millis(50)).await;

    // The create in flight either finished before the close (its instance is destroyed with
    // the rest) or was abandoned by it (it made nothing): every instance made is destroyed.
    let pool = manager.status().resource("gated").unwrap().pool;
    let created = counts.created.load(Ordering::SeqCst);
    assert_eq!(
        (
            counts.destroy_calls.load(Ordering::SeqCst),
            counts.alive.load(Ordering::SeqCst)
        ),
        (created, 0),
        "(destroyed, alive) after shutdown, of {created} created; pool {pool:?}"
    );
    assert_eq!(pool.size, 0, "{pool:?}");
}

/// Regression (messaging conformance): a shutdown whose drain deadline passed with a handle
/// still held returned, and nothing destroyed the instance when that handle was dropped later:
/// it stayed live in the closed resident until the manager itself was dropped.
#[tokio::test(start_paused = true)]
async fn a_handle_outliving_the_shutdown_deadline_destroys_the_instance_when_dropped() {
    let (manager, counts, _gate) = gated(quiet_policy()).await;
    let held = manager.acquire::<Gated>().await.unwrap();
    let stats = manager
        .shutdown(Duration::from_millis(200))
        .await
        .expect_err("a handle is held past the deadline");
    assert!(stats.to_string().contains("gated"), "{stats}");
    assert_eq!(counts.destroy_calls.load(Ordering::SeqCst), 0);

    drop(held);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pool = manager.status().resource("gated").unwrap().pool;
    assert_eq!(
        (
            counts.destroy_calls.load(Ordering::SeqCst),
            counts.alive.load(Ordering::SeqCst),
            pool.size,
            pool.destroyed,
        ),
        (1, 0, 0, 1),
        "(destroy calls, alive, size, destroyed) once the last handle is dropped; pool {pool:?}"
    );
}

/// A resident whose `share` can be made to block (a plain thread wait) once, so that an
/// acquire stops between its `closed` check and counting its handle in use.
struct SlowShare {
    counts: Arc<GateCounts>,
    block: Arc<AtomicBool>,
    entered: std::sync::mpsc::SyncSender<()>,
    open: parking_lot::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Resource for SlowShare {
    type Config = Label;
    type Instance = GatedClient;
    const KEY: &'static str = "slow-share";
    const TOPOLOGY: Topology = Topology::Resident;

    async fn create(&self, config: &Label, _: &CreateContext) -> Result<GatedClient, Error> {
        Ok(GateCounts::made(&self.counts, config))
    }

    async fn destroy(&self, client: GatedClient) {
        self.counts.destroy_calls.fetch_add(1, Ordering::SeqCst);
        drop(client);
    }

    fn share(&self, client: &GatedClient) -> Option<GatedClient> {
        if self.block.swap(false, Ordering::SeqCst) {
            self.entered.send(()).unwrap();
            self.open.lock().recv().unwrap();
        }
        Some(client.clone())
    }
}

/// Regression (faults #8): close raced an acquire already past its `closed` check: shutdown
/// returned Ok after destroying the instance the user then held.
#[test]
fn resident_shutdown_never_destroys_an_instance_a_racing_acquire_hands_out() {
    let counts = Arc::new(GateCounts::default());
    let block = Arc::new(AtomicBool::new(false));
    let (entered_tx, entered_rx) = std::sync::mpsc::sync_channel(1);
    let (open_tx, open_rx) = std::sync::mpsc::sync_channel(1);
    let main = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let manager = main.block_on(async {
        ResourceManager::builder()
            .register_with(
                SlowShare {
                    counts: Arc::clone(&counts),
                    block: Arc::clone(&block),
                    entered: entered_tx,
                    open: parking_lot::Mutex::new(open_rx),
                },
                Label("only".into()),
                quiet_policy(),
            )
            .build()
            .await
            .unwrap()
    });

    // The acquirer, on a thread (and lane) of its own: one acquire fills its lane, the second
    // stops inside `share`, past the `closed` check.
    let acquirer = {
        let manager = manager.clone();
        let counts = Arc::clone(&counts);
        let block = Arc::clone(&block);
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                drop(manager.acquire::<SlowShare>().await.unwrap());
                block.store(true, Ordering::SeqCst);
                match manager.acquire::<SlowShare>().await {
                    Ok(client) => {
                        // Hold the handle a while: the instance must not be destroyed under it.
                        std::thread::sleep(Duration::from_millis(300));
                        let destroyed_while_held = counts.destroy_calls.load(Ordering::SeqCst);
                        drop(client);
                        Ok(destroyed_while_held)
                    }
                    Err(err) => Err(err.kind()),
                }
            })
        })
    };
    entered_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the acquire reached share");
    // Let the acquire go on once shutdown has begun.
    let opener = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let _ = open_tx.send(());
    });
    let shutdown = main.block_on(manager.shutdown(Duration::from_secs(3)));
    let acquired = acquirer.join().unwrap();
    opener.join().unwrap();
    match acquired {
        Ok(destroyed_while_held) => assert_eq!(
            destroyed_while_held, 0,
            "shutdown ({shutdown:?}) destroyed the instance while an acquire that raced it held a handle"
        ),
        Err(kind) => assert_eq!(kind, ErrorKind::ShuttingDown),
    }
    shutdown.expect("shutdown succeeds once the handle is back");
    main.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
    assert_eq!(counts.alive.load(Ordering::SeqCst), 0);
}

/// A resident whose `check` never finishes.
struct HungCheck;

impl Resource for HungCheck {
    type Config = NoConfig;
    type Instance = Arc<()>;
    const KEY: &'static str = "hung-check";
    const TOPOLOGY: Topology = Topology::Resident;

    async fn create(&self, _: &NoConfig, _: &CreateContext) -> Result<Arc<()>, Error> {
        Ok(Arc::new(()))
    }

    async fn check(&self, _: &mut Arc<()>) -> Result<(), Error> {
        std::future::pending().await
    }

    fn share(&self, client: &Arc<()>) -> Option<Arc<()>> {
        Some(Arc::clone(client))
    }
}

/// Found by the resident fault-schedule test: shutdown stops the health scheduler, dropping a
/// round in the middle of its check; the handle the round held stayed counted in use, and
/// shutdown then waited for it until its deadline.
#[tokio::test(start_paused = true)]
async fn shutdown_during_a_resident_health_check_does_not_wait_for_its_handle() {
    let manager = ResourceManager::builder()
        .register_with(
            HungCheck,
            NoConfig,
            nebula_resource::Policy::default().health(
                nebula_resource::HealthConfig::default()
                    .interval(Duration::from_secs(1))
                    .timeout(Duration::from_secs(3600)),
            ),
        )
        .build()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = manager.status().resource("hung-check").unwrap().pool;
    assert_eq!(
        during.in_use, 1,
        "the round's handle is counted while it checks"
    );

    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("nothing in use but the dropped round's handle");
    let after = manager.status().resource("hung-check").unwrap().pool;
    assert_eq!((after.in_use, after.size), (0, 0), "{after:?}");
}

/// A resident client that works but says it is impaired (`degraded`), as a broker client does
/// during a resource alarm or while it reconnects.
struct Impaired {
    reason: Arc<parking_lot::Mutex<Option<String>>>,
}

impl Resource for Impaired {
    type Config = NoConfig;
    type Instance = Client;
    const KEY: &'static str = "impaired";
    const TOPOLOGY: Topology = Topology::Resident;

    async fn create(&self, _: &NoConfig, _: &CreateContext) -> Result<Client, Error> {
        Ok(Client {
            generation: 1,
            broken: Arc::new(AtomicBool::new(false)),
        })
    }

    fn degraded(&self, _: &Client) -> Option<String> {
        self.reason.lock().clone()
    }

    fn share(&self, client: &Client) -> Option<Client> {
        Some(client.clone())
    }
}

#[tokio::test(start_paused = true)]
async fn an_impaired_resident_reports_degraded_and_keeps_serving() {
    use nebula_resource::{BreakerState, Health, HealthConfig, Policy};
    let reason = Arc::new(parking_lot::Mutex::new(None));
    let manager = ResourceManager::builder()
        .register_with(
            Impaired {
                reason: Arc::clone(&reason),
            },
            NoConfig,
            Policy::default().health(HealthConfig::default().interval(Duration::from_secs(1))),
        )
        .build()
        .await
        .unwrap();
    let health = |manager: &ResourceManager| manager.status().resource("impaired").unwrap().clone();
    drop(manager.acquire::<Impaired>().await.unwrap());
    *reason.lock() = Some("broker alarm: memory".to_owned());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let entry = health(&manager);
    assert_eq!(entry.health.health, Health::Degraded, "{:?}", entry.health);
    assert_eq!(entry.health.reason.as_deref(), Some("broker alarm: memory"));
    assert_eq!(entry.health.consecutive_failures, 0);
    assert_eq!(entry.breaker.state, BreakerState::Closed);
    let client = manager.acquire::<Impaired>().await.expect("still serves");
    assert_eq!(client.generation, 1, "not replaced");
    drop(client);

    *reason.lock() = None;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(health(&manager).health.health, Health::Healthy);
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
}
