//! Building the dependency DAG: layered, concurrent initialization; cycles, missing and
//! duplicate registrations rejected by name before anything is created; failed builds cleaned up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{Hook, Outcome, Probe, TestConfig, TestResource};
use nebula_resource::{
    Config, CreateContext, Dependencies, Error, ErrorKind, Phase, Policy, PoolConfig, Resource,
    ResourceManager,
};
use parking_lot::Mutex;
use tokio::sync::Barrier;

#[derive(Clone, Default)]
struct StepConfig;
impl Config for StepConfig {}

/// Four resources: 0 is the base, 1 and 2 depend on 0, 3 depends on 1 and 2 (a diamond).
/// 1 and 2 meet at a barrier inside `create`: build only finishes if they run concurrently.
struct Step<const N: usize> {
    log: Arc<Mutex<Vec<&'static str>>>,
    barrier: Arc<Barrier>,
    fail: bool,
}

const KEYS: [&str; 4] = ["base", "left", "right", "top"];

impl<const N: usize> Resource for Step<N> {
    type Config = StepConfig;
    type Instance = usize;
    const KEY: &'static str = KEYS[N];

    fn dependencies() -> Dependencies {
        match N {
            1 | 2 => Dependencies::none().on::<Step<0>>(),
            3 => Dependencies::none().on::<Step<1>>().on::<Step<2>>(),
            _ => Dependencies::none(),
        }
    }

    async fn create(&self, _config: &StepConfig, ctx: &CreateContext) -> Result<usize, Error> {
        if self.fail {
            return Err(Error::create("refused on purpose"));
        }
        if N == 1 || N == 2 {
            tokio::time::timeout(Duration::from_secs(5), self.barrier.wait())
                .await
                .map_err(|_| Error::create("left and right were not created concurrently"))?;
        }
        if N == 3 {
            // A declared dependency is reachable; an undeclared one is refused.
            let left = ctx.dependency::<Step<1>>()?;
            let guard = left.acquire().await?;
            assert_eq!(*guard, 1);
            let err = ctx.dependency::<Step<3>>().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::MissingDependency);
        }
        self.log.lock().push(KEYS[N]);
        Ok(N)
    }
}

fn warm() -> Policy {
    Policy::default().pool(PoolConfig::default().min_idle(1).max_size(2))
}

fn step<const N: usize>(
    log: &Arc<Mutex<Vec<&'static str>>>,
    barrier: &Arc<Barrier>,
    fail: bool,
) -> Step<N> {
    Step {
        log: Arc::clone(log),
        barrier: Arc::clone(barrier),
        fail,
    }
}

#[tokio::test]
async fn diamond_initializes_in_layers_with_concurrent_siblings() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let barrier = Arc::new(Barrier::new(2));
    // Registered in an order that is not the dependency order.
    let manager = ResourceManager::builder()
        .register_with(step::<3>(&log, &barrier, false), StepConfig, warm())
        .register_with(step::<1>(&log, &barrier, false), StepConfig, warm())
        .register_with(step::<0>(&log, &barrier, false), StepConfig, warm())
        .register_with(step::<2>(&log, &barrier, false), StepConfig, warm())
        .build()
        .await
        .expect("build");
    let order = log.lock().clone();
    assert_eq!(order.first(), Some(&"base"));
    assert_eq!(order.last(), Some(&"top"));
    assert_eq!(order.len(), 4);

    let status = manager.status();
    let keys: Vec<_> = status.resources.iter().map(|r| r.key).collect();
    assert_eq!(keys[0], "base");
    assert_eq!(keys[3], "top");
    assert!(status.resources.iter().all(|r| r.phase == Phase::Ready));
    assert_eq!(
        status.resource("top").unwrap().dependencies,
        vec!["left", "right"]
    );

    assert_eq!(*manager.acquire::<Step<3>>().await.unwrap(), 3);
    manager.shutdown(Duration::from_secs(5)).await.unwrap();
}

struct Cyc<const N: usize>;
impl<const N: usize> Resource for Cyc<N> {
    type Config = StepConfig;
    type Instance = ();
    const KEY: &'static str = ["alpha", "beta", "gamma"][N];
    fn dependencies() -> Dependencies {
        match N {
            0 => Dependencies::none().on::<Cyc<1>>(),
            1 => Dependencies::none().on::<Cyc<2>>(),
            _ => Dependencies::none().on::<Cyc<0>>(),
        }
    }
    async fn create(&self, _: &StepConfig, _: &CreateContext) -> Result<(), Error> {
        Ok(())
    }
}

#[tokio::test]
async fn cycle_is_rejected_with_the_whole_cycle_before_anything_is_created() {
    let probe = Probe::new();
    let err = ResourceManager::builder()
        .register_with(TestResource::new(&probe), TestConfig::default(), warm())
        .register(Cyc::<0>, StepConfig)
        .register(Cyc::<1>, StepConfig)
        .register(Cyc::<2>, StepConfig)
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cycle);
    let text = err.to_string();
    let cycles = [
        "alpha -> beta -> gamma -> alpha",
        "beta -> gamma -> alpha -> beta",
        "gamma -> alpha -> beta -> gamma",
    ];
    assert!(cycles.iter().any(|c| text.contains(c)), "{text}");
    assert_eq!(
        probe.create_calls.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

struct NeedsMissing;
impl Resource for NeedsMissing {
    type Config = StepConfig;
    type Instance = ();
    const KEY: &'static str = "user_store";
    fn dependencies() -> Dependencies {
        Dependencies::none()
            .on::<TestResource>()
            .on_named::<Cyc<0>>("replica")
    }
    async fn create(&self, _: &StepConfig, _: &CreateContext) -> Result<(), Error> {
        Ok(())
    }
}

#[tokio::test]
async fn missing_dependency_names_both_sides() {
    let err = ResourceManager::builder()
        .register(NeedsMissing, StepConfig)
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingDependency);
    assert_eq!(err.resource_key(), Some("user_store"));
    let text = err.to_string();
    assert!(
        text.contains("`user_store`") && text.contains("`test`"),
        "{text}"
    );

    // The unnamed registration does not satisfy a dependency on a named one.
    let probe = Probe::new();
    let err = ResourceManager::builder()
        .register(NeedsMissing, StepConfig)
        .register(TestResource::new(&probe), TestConfig::default())
        .register(Cyc::<0>, StepConfig)
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MissingDependency);
    assert!(err.to_string().contains("`alpha` named `replica`"), "{err}");
}

#[tokio::test]
async fn duplicate_registration_is_rejected_but_named_ones_coexist() {
    let probe = Probe::new();
    let err = ResourceManager::builder()
        .register(TestResource::new(&probe), TestConfig::default())
        .register(TestResource::new(&probe), TestConfig::default())
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Duplicate);
    assert!(
        err.to_string().contains("`test` is registered twice"),
        "{err}"
    );

    let manager = ResourceManager::builder()
        .register(TestResource::new(&probe), TestConfig::default())
        .register_named("replica", TestResource::new(&probe), TestConfig::default())
        .build()
        .await
        .unwrap();
    let primary = manager.acquire::<TestResource>().await.unwrap();
    let replica = manager
        .acquire_named::<TestResource>("replica")
        .await
        .unwrap();
    assert_ne!(primary.id, replica.id);
    let err = manager
        .acquire_named::<TestResource>("nope")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotRegistered);
    assert!(err.to_string().contains("named `nope`"), "{err}");
    let err = manager.acquire::<Cyc<0>>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotRegistered);
    assert_eq!(err.resource_key(), Some("alpha"));
    drop((primary, replica));
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
}

#[tokio::test]
async fn config_and_policy_errors_name_resource_and_field() {
    let probe = Probe::new();
    let err = ResourceManager::builder()
        .register_with(TestResource::new(&probe), TestConfig::default(), warm())
        .register_named(
            "bad",
            TestResource::new(&probe),
            TestConfig {
                label: "has space".into(),
            },
        )
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(err.field(), Some("label"));
    assert_eq!(
        err.to_string(),
        "resource `test` (name `bad`): invalid configuration in field `label`: must not contain spaces"
    );

    let err = ResourceManager::builder()
        .register_with(
            TestResource::new(&probe),
            TestConfig::default(),
            Policy::default().pool(PoolConfig::default().max_size(0)),
        )
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.field(), Some("pool.max_size"));
    assert!(
        err.to_string()
            .starts_with("resource `test`: invalid configuration in field `pool.max_size`"),
        "{err}"
    );
    assert_eq!(
        probe.create_calls.load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test]
async fn failed_build_shuts_down_what_it_created_and_names_dependents_not_started() {
    let log = Arc::new(Mutex::new(Vec::new()));
    // Siblings 1 and 2 would meet at a barrier; 1 fails at once, so 2 must not wait for it.
    let barrier = Arc::new(Barrier::new(1));
    let probe = Probe::new();
    let err = ResourceManager::builder()
        .register_with(TestResource::new(&probe), TestConfig::default(), warm())
        .register_with(step::<0>(&log, &barrier, false), StepConfig, warm())
        .register_with(step::<1>(&log, &barrier, true), StepConfig, warm())
        .register_with(step::<2>(&log, &barrier, false), StepConfig, warm())
        .register_with(step::<3>(&log, &barrier, false), StepConfig, warm())
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Create);
    let text = err.to_string();
    assert!(text.contains("resource `left`"), "{text}");
    assert!(text.contains("dependents not started: top"), "{text}");
    assert!(!log.lock().contains(&"top"));
    // The test resource was created during build and destroyed by the failed build.
    assert_eq!(probe.created.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(probe.alive(), 0);
}

#[tokio::test]
async fn panicking_config_validation_is_a_config_error() {
    #[derive(Clone)]
    struct Explodes;
    impl Config for Explodes {
        fn validate(&self) -> Result<(), Error> {
            panic!("validate exploded")
        }
    }
    struct Res;
    impl Resource for Res {
        type Config = Explodes;
        type Instance = ();
        const KEY: &'static str = "explosive";
        async fn create(&self, _: &Explodes, _: &CreateContext) -> Result<(), Error> {
            Ok(())
        }
    }
    let err = ResourceManager::builder()
        .register(Res, Explodes)
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("validate exploded"), "{err}");
    let _ = Hook::Create;
    let _ = Outcome::Ok;
}
