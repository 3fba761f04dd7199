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
