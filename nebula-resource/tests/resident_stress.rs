//! A randomized schedule over a resident's lanes: tasks and threads of their own acquire, hold,
//! release on other threads, taint and reconfigure at random. Afterwards nothing is counted in
//! use, only the current instance is alive (no lane keeps a retired one), and shutdown lets it go.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nebula_resource::{
    BreakerConfig, Config, CreateContext, Error, HealthConfig, Policy, Resource, ResourceManager,
    Topology,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;

#[derive(Clone, Default)]
struct NoConfig;
impl Config for NoConfig {}

/// A handle to one instance; every handle of an instance holds its marker, so the marker lives
/// exactly as long as some handle of the instance does.
#[derive(Clone)]
struct Client {
    generation: usize,
    _marker: Arc<()>,
}

struct Tracked {
    /// One marker per instance ever created.
    made: Arc<Mutex<Vec<Weak<()>>>>,
    creates: AtomicUsize,
}

impl Resource for Tracked {
    type Config = NoConfig;
    type Instance = Client;
    const KEY: &'static str = "tracked";
    const TOPOLOGY: Topology = Topology::Resident;

    async fn create(&self, _: &NoConfig, _: &CreateContext) -> Result<Client, Error> {
        let alive = Arc::new(());
        self.made
            .lock()
            .expect("the markers")
            .push(Arc::downgrade(&alive));
        Ok(Client {
            generation: self.creates.fetch_add(1, Ordering::SeqCst) + 1,
            _marker: alive,
        })
    }

    fn share(&self, client: &Client) -> Option<Client> {
        Some(client.clone())
    }
}

fn alive(made: &Mutex<Vec<Weak<()>>>) -> usize {
    made.lock()
        .expect("the markers")
        .iter()
        .filter(|marker| marker.strong_count() > 0)
        .count()
}

async fn wait_until_alive(made: &Mutex<Vec<Weak<()>>>, expected: usize) -> usize {
    for _ in 0..400 {
        if alive(made) == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    alive(made)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_acquires_taints_and_reconfigures_leave_nothing_counted_or_alive() {
    let (seed, ops) = common::stress_settings("resident stress", 3_000);
    let made = Arc::new(Mutex::new(Vec::new()));
    let manager = ResourceManager::builder()
        .register_with(
            Tracked {
                made: Arc::clone(&made),
                creates: AtomicUsize::new(0),
            },
            NoConfig,
            // Taints would open the breaker; this test is about the lanes.
            Policy::default()
                .breaker(BreakerConfig::disabled())
                .health(HealthConfig::disabled()),
        )
        .build()
        .await
        .expect("build");

    let mut load = JoinSet::new();
    for task in 0..32_u64 {
        let manager = manager.clone();
        load.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(task));
            let mut held = Vec::new();
            for _ in 0..ops {
                let client = manager.acquire::<Tracked>().await.expect("acquire");
                assert!(client.generation >= 1);
                match rng.random_range(0..100_u32) {
                    0 => client.taint(),
                    1 => {
                        drop(client);
                        manager
                            .reconfigure::<Tracked>(NoConfig)
                            .expect("reconfigure");
                    }
                    // Released on a thread that did not acquire it.
                    2..=9 => tokio::task::spawn_blocking(move || drop(client))
                        .await
                        .expect("release elsewhere"),
                    10..=29 => held.push(client),
                    _ => {
                        tokio::task::yield_now().await;
                        drop(client);
                    }
                }
                if held.len() > 4 || rng.random_bool(0.1) {
                    held.clear();
                }
            }
        });
    }
    // Threads of their own, each with its own lane.
    for _ in 0..8 {
        let manager = manager.clone();
        let runtime = tokio::runtime::Handle::current();
        load.spawn_blocking(move || {
            for _ in 0..ops {
                let client = runtime
                    .block_on(manager.acquire::<Tracked>())
                    .expect("acquire on a thread of its own");
                drop(client);
            }
        });
    }
    while let Some(done) = load.join_next().await {
        done.expect("a load task");
    }

    let status = manager.status();
    let pool = &status.resource("tracked").expect("the resource").pool;
    assert_eq!(pool.in_use, 0, "every released handle is counted back");
    let generations = made.lock().expect("the markers").len();
    assert!(
        generations > 1,
        "the schedule retired instances ({generations} made)"
    );
    assert_eq!(
        wait_until_alive(&made, 1).await,
        1,
        "only the current instance may be alive once retired ones are destroyed"
    );
    manager
        .shutdown(Duration::from_secs(5))
        .await
        .expect("shutdown");
    assert_eq!(wait_until_alive(&made, 0).await, 0, "shutdown lets it go");
}
