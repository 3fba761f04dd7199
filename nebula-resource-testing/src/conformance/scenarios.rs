//! The scenarios of the [`Conformance`] suite, each a function that builds its own manager
//! and returns what was wrong.

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use nebula_resource::{
    BreakerConfig, Error, ErrorKind, Guard, HealthConfig, Policy, PoolConfig, PoolStats, Resource,
    ResourceManager, RetryPolicy, Topology,
};
use tokio::time::Instant;

use super::Conformance;
use super::faulty::{Fault, Faults, Faulty, Hook};

/// The bound of every acquire of the suite's pools.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long one exercise may take before the suite calls it hung.
const EXERCISE_BOUND: Duration = Duration::from_secs(5);

/// The most polls a cancelled acquire gets before the suite gives up waiting for it to finish.
const MAX_POLLS: usize = 200;

/// What a scenario found wrong.
type Outcome = Result<(), String>;

/// Run every scenario; the failures, each naming its scenario.
pub(super) async fn run_all<R: Resource>(suite: &Conformance<R>) -> Vec<String> {
    let mut failures = Vec::new();
    let mut note = |name: &str, outcome: Outcome| match outcome {
        Ok(()) => eprintln!("conformance {}: {name} ok", R::KEY),
        Err(why) => {
            eprintln!("conformance {}: {name} FAILED: {why}", R::KEY);
            failures.push(format!("- {name}: {why}"));
        }
    };
    note("contention", contention(suite).await);
    note("cancellation", cancellation(suite).await);
    note("create_faults", create_faults(suite).await);
    note("check_faults", check_faults(suite).await);
    if R::TOPOLOGY == Topology::Pooled {
        note("recycle_faults", recycle_faults(suite).await);
    }
    note("destroy_faults", destroy_faults(suite).await);
    if suite.proxied.is_some() {
        note("backend_killed", backend_killed(suite).await);
    }
    note("shutdown", shutdown(suite).await);
    failures
}

/// One manager around the resource under test.
struct Run<R: Resource> {
    manager: ResourceManager,
    faults: Arc<Faults>,
    exercise: Option<super::Exercise<R::Instance>>,
    patience: Duration,
}

impl<R: Resource> Run<R> {
    /// Build a manager with the resource under test registered with `config` and `policy`.
    async fn build(
        suite: &Conformance<R>,
        config: &R::Config,
        policy: Policy,
    ) -> Result<Self, String> {
        let faulty = Faulty::new(&suite.resource);
        let faults = Arc::clone(&faulty.faults);
        let mut builder = ResourceManager::builder();
        if let Some(register) = &suite.dependencies {
            builder = register(builder);
        }
        let manager = builder
            .register_with(faulty, config.clone(), policy)
            .build()
            .await
            .map_err(|err| format!("the manager did not build: {err}"))?;
        Ok(Self {
            manager,
            faults,
            exercise: suite.exercise.clone(),
            patience: suite.patience,
        })
    }

    fn stats(&self) -> Result<PoolStats, String> {
        self.manager
            .handle::<Faulty<R>>()
            .map(|handle| handle.stats())
            .map_err(|err| err.to_string())
    }

    /// Acquire, bounded by the pool's acquire timeout and a second more; run in a task of its
    /// own, so that a panic escaping the acquire is reported, not propagated.
    async fn acquire(&self) -> Result<Result<Guard<Faulty<R>>, Error>, String> {
        let manager = self.manager.clone();
        let task = tokio::spawn(async move { manager.acquire::<Faulty<R>>().await });
        match tokio::time::timeout(ACQUIRE_TIMEOUT + Duration::from_secs(1), task).await {
            Ok(Ok(acquired)) => Ok(acquired),
            Ok(Err(join)) => Err(format!("a panic escaped the acquire: {join}")),
            Err(_) => Err(format!(
                "the acquire did not return within its timeout ({ACQUIRE_TIMEOUT:?}) and a second"
            )),
        }
    }

    /// The author's operation on `guard`'s instance, bounded by [`EXERCISE_BOUND`].
    async fn exercise(&self, guard: &mut Guard<Faulty<R>>) -> Result<Result<(), Error>, String> {
        let Some(exercise) = &self.exercise else {
            return Ok(Ok(()));
        };
        tokio::time::timeout(EXERCISE_BOUND, exercise(&mut guard.instance))
            .await
            .map_err(|_| format!("the exercise did not finish within {EXERCISE_BOUND:?}"))
    }

    /// Acquire and exercise once; both must succeed.
    async fn use_once(&self) -> Outcome {
        let mut guard = self
            .acquire()
            .await?
            .map_err(|err| format!("acquire failed: {err}"))?;
        self.exercise(&mut guard)
            .await?
            .map_err(|err| format!("exercise failed: {err}"))
    }

    /// Acquire and exercise until both succeed, within the patience.
    async fn served(&self, when: &str) -> Outcome {
        let deadline = Instant::now() + self.patience;
        loop {
            match self.use_once().await {
                Ok(()) => return Ok(()),
                Err(why) if Instant::now() >= deadline => {
                    return Err(format!(
                        "not served {when} within {:?}; last: {why}",
                        self.patience
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Wait until nothing is in use, waiting, being created or released, and exactly as many
    /// instances are alive as the pool holds.
    async fn settled(&self, when: &str) -> Outcome {
        let deadline = Instant::now() + self.patience;
        loop {
            let stats = self.stats()?;
            let alive = self.faults.alive();
            let quiet = stats.in_use == 0
                && stats.waiters == 0
                && stats.creating == 0
                && stats.releasing == 0;
            if quiet && alive == stats.size {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{when}: not settled within {:?}: size {}, idle {}, in use {}, waiters {}, \
                     creating {}, releasing {}; {alive} instance(s) alive",
                    self.patience,
                    stats.size,
                    stats.idle,
                    stats.in_use,
                    stats.waiters,
                    stats.creating,
                    stats.releasing,
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shut down (drain deadline: the patience) and wait until no instance is alive.
    async fn shut_down(self) -> Outcome {
        tokio::time::timeout(self.patience * 2, self.manager.shutdown(self.patience))
            .await
            .map_err(|_| "shutdown did not return".to_owned())?
            .map_err(|err| format!("shutdown failed: {err}"))?;
        self.gone("after shutdown").await
    }

    /// Wait until no instance is alive.
    async fn gone(&self, when: &str) -> Outcome {
        let deadline = Instant::now() + self.patience;
        while self.faults.alive() > 0 {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{when}: {} instance(s) still alive after {:?}",
                    self.faults.alive(),
                    self.patience
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

/// The policy of most scenarios: the pool's own mechanics, no retry, breaker or health
/// rounds, so that each fault shows in the call it hits.
fn plain<R: Resource>(suite: &Conformance<R>) -> Policy {
    Policy::default()
        .pool(pool(suite))
        .retry(RetryPolicy::none())
        .breaker(BreakerConfig::disabled())
        .health(HealthConfig::disabled())
}

fn pool<R: Resource>(suite: &Conformance<R>) -> PoolConfig {
    PoolConfig::default()
        .max_size(suite.max_size)
        .min_idle(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .create_timeout(ACQUIRE_TIMEOUT)
        .recycle_timeout(Duration::from_secs(2))
}

/// Poll `future` once; `Some` if it finished.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    poll_fn(|cx| {
        Poll::Ready(match std::pin::Pin::new(&mut *future).poll(cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    })
    .await
}

async fn contention<R: Resource>(suite: &Conformance<R>) -> Outcome {
    const TASKS: usize = 16;
    const ROUNDS: usize = 8;
    let run = Arc::new(Run::build(suite, &suite.config, plain(suite)).await?);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let run = Arc::clone(&run);
            tokio::spawn(async move {
                for _ in 0..ROUNDS {
                    run.use_once().await?;
                }
                Ok::<(), String>(())
            })
        })
        .collect();
    for task in tasks {
        task.await
            .map_err(|join| format!("a task panicked: {join}"))??;
    }
    run.settled("after the load").await?;
    let stats = run.stats()?;
    match R::TOPOLOGY {
        Topology::Pooled if stats.size > suite.max_size => {
            return Err(format!(
                "size {} above max_size {}",
                stats.size, suite.max_size
            ));
        }
        Topology::Resident if run.faults.created() != 1 => {
            return Err(format!(
                "a resident made {} instances for one backend that never failed",
                run.faults.created()
            ));
        }
        _ => {}
    }
    Arc::into_inner(run)
        .ok_or("a task kept the run")?
        .shut_down()
        .await
}

async fn cancellation<R: Resource>(suite: &Conformance<R>) -> Outcome {
    let run = Run::build(suite, &suite.config, plain(suite)).await?;
    // A cold acquire (the instance replaced first, so the acquire creates), cancelled after
    // 0, 1, 2, … polls a millisecond apart, until one completes.
    let mut completed = false;
    for polls in 0..MAX_POLLS {
        run.acquire()
            .await?
            .map_err(|err| format!("acquire failed: {err}"))?
            .taint();
        run.settled("after a taint").await?;
        {
            let mut acquire = pin!(run.manager.acquire::<Faulty<R>>());
            for _ in 0..polls {
                if let Some(acquired) = poll_once(&mut acquire).await {
                    // Served: the guard goes back at once.
                    drop(acquired.map_err(|err| format!("acquire failed: {err}"))?);
                    completed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        run.settled(&format!("a cold acquire cancelled after {polls} poll(s)"))
            .await?;
        if completed {
            break;
        }
    }
    if !completed {
        return Err(format!(
            "a cold acquire did not complete within {MAX_POLLS} polls 1 ms apart"
        ));
    }
    if R::TOPOLOGY == Topology::Pooled {
        // Cancelled while waiting for a full pool.
        let mut held = Vec::new();
        for _ in 0..suite.max_size {
            held.push(
                run.acquire()
                    .await?
                    .map_err(|err| format!("acquire failed: {err}"))?,
            );
        }
        for polls in 1..=3 {
            let mut acquire = pin!(run.manager.acquire::<Faulty<R>>());
            for _ in 0..polls {
                if poll_once(&mut acquire).await.is_some() {
                    return Err("an acquire was served from a full pool".to_owned());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        drop(held);
        run.settled("after acquires cancelled while waiting")
            .await?;
        run.use_once().await?;
    }
    run.shut_down().await
}

async fn create_faults<R: Resource>(suite: &Conformance<R>) -> Outcome {
    let run = Run::build(suite, &suite.config, plain(suite)).await?;
    for fault in Fault::INJECTED {
        run.faults.set(Hook::Create, fault);
        // A resident keeps its instance: replace it, so the acquire must create.
        if let Ok(Ok(guard)) = run.acquire().await {
            guard.taint();
        }
        match run.acquire().await? {
            Ok(_) => {
                return Err(format!(
                    "an acquire succeeded while create fails ({fault:?})"
                ));
            }
            Err(err) if err.kind() == ErrorKind::Create => {}
            Err(err) => {
                return Err(format!(
                    "create {fault:?}: the acquire failed with {:?}, not Create: {err}",
                    err.kind()
                ));
            }
        }
        run.settled(&format!("after create {fault:?}")).await?;
    }
    run.faults.set(Hook::Create, Fault::None);
    run.served("once create heals").await?;
    run.settled("after create healed").await?;
    run.shut_down().await
}

async fn check_faults<R: Resource>(suite: &Conformance<R>) -> Outcome {
    match R::TOPOLOGY {
        Topology::Pooled => check_faults_pooled(suite).await,
        Topology::Resident => check_faults_resident(suite).await,
    }
}

/// An idle instance is checked on acquire (`validate_after_idle` 1 ms); a failed check
/// replaces it and the acquire is served.
async fn check_faults_pooled<R: Resource>(suite: &Conformance<R>) -> Outcome {
    let policy = plain(suite).pool(pool(suite).validate_after_idle(Duration::from_millis(1)));
    let run = Run::build(suite, &suite.config, policy).await?;
    for fault in Fault::INJECTED {
        run.use_once().await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
        let before = run.faults.created();
        run.faults.set(Hook::Check, fault);
        let served = run.use_once().await;
        run.faults.set(Hook::Check, Fault::None);
        served.map_err(|why| format!("check {fault:?}: {why}"))?;
        if run.faults.created() == before {
            return Err(format!(
                "check {fault:?}: the instance that failed its check was handed out"
            ));
        }
        run.settled(&format!("after check {fault:?}")).await?;
    }
    run.shut_down().await
}

/// A health round checks the resident instance; a failed check retires it, and the next
/// acquire gets a new one.
async fn check_faults_resident<R: Resource>(suite: &Conformance<R>) -> Outcome {
    let policy = plain(suite).health(
        HealthConfig::default()
            .interval(Duration::from_millis(100))
            .timeout(Duration::from_secs(2))
            .failure_threshold(1000),
    );
    let run = Run::build(suite, &suite.config, policy).await?;
    for fault in Fault::INJECTED {
        run.use_once().await?;
        let before = run.faults.created();
        run.faults.set(Hook::Check, fault);
        let deadline = Instant::now() + suite.patience;
        while run.faults.created() == before {
            if Instant::now() >= deadline {
                run.faults.set(Hook::Check, Fault::None);
                return Err(format!(
                    "check {fault:?}: the instance was not replaced within {:?}",
                    suite.patience
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            // Served all along: a retired instance is made anew on acquire.
            run.use_once()
                .await
                .map_err(|why| format!("check {fault:?}: {why}"))?;
        }
        run.faults.set(Hook::Check, Fault::None);
        run.settled(&format!("after check {fault:?}")).await?;
    }
    run.shut_down().await
}

async fn recycle_faults<R: Resource>(suite: &Conformance<R>) -> Outcome {
    let run = Run::build(suite, &suite.config, plain(suite)).await?;
    for fault in Fault::INJECTED {
        run.faults.set(Hook::Recycle, fault);
        run.use_once().await?;
        run.settled(&format!("after recycle {fault:?}")).await?;
        let stats = run.stats()?;
        if stats.idle != 0 {
            return Err(format!(
                "recycle {fault:?}: an instance whose recycle failed was kept idle"
            ));
        }
    }
    run.faults.set(Hook::Recycle, Fault::None);
    run.use_once().await?;
    run.settled("after recycle healed").await?;
    run.shut_down().await
}

async fn destroy_faults<R: Resource>(suite: &Conformance<R>) -> Outcome {
    let run = Run::build(suite, &suite.config, plain(suite)).await?;
    for fault in Fault::INJECTED {
        run.faults.set(Hook::Destroy, fault);
        run.acquire()
            .await?
            .map_err(|err| format!("acquire failed: {err}"))?
            .taint();
        run.settled(&format!("after destroy {fault:?}")).await?;
        run.use_once()
            .await
            .map_err(|why| format!("after destroy {fault:?}: {why}"))?;
    }
    // Shutdown destroys what is left with `destroy` still panicking.
    run.faults.set(Hook::Destroy, Fault::Panic);
    run.shut_down().await
}

async fn backend_killed<R: Resource>(suite: &Conformance<R>) -> Outcome {
    let Some((proxy, config)) = &suite.proxied else {
        return Ok(());
    };
    proxy.pass();
    let run = Run::build(suite, config, plain(suite)).await?;
    run.served("through the proxy").await?;

    // Every connection reset: a call on an instance from before fails or recovers, but
    // returns; then the pool serves again.
    let mut held = run
        .acquire()
        .await?
        .map_err(|err| format!("acquire failed: {err}"))?;
    proxy.reset();
    run.exercise(&mut held)
        .await
        .map_err(|why| format!("after a reset: {why}"))?
        .ok();
    drop(held);
    run.served("after every connection was reset").await?;

    // The server refuses: calls fail, within their bounds.
    proxy.refuse();
    let mut failed = false;
    for _ in 0..3 {
        match run.acquire().await? {
            Err(_) => failed = true,
            Ok(mut guard) => {
                let exercised = run
                    .exercise(&mut guard)
                    .await
                    .map_err(|why| format!("while refused: {why}"))?;
                failed |= exercised.is_err();
            }
        }
    }
    if run.exercise.is_some() && !failed {
        proxy.pass();
        return Err("served while the server refused every connection".to_owned());
    }
    proxy.pass();
    run.served("after the server came back").await?;

    // A black hole: acquires return within their bound, and so does an exercise (it may
    // fail, by its own deadline: nothing else ends a call on a silent link).
    proxy.blackhole();
    let blackholed = async {
        for _ in 0..2 {
            if let Ok(mut guard) = run.acquire().await? {
                run.exercise(&mut guard).await?.ok();
            }
        }
        Ok::<_, String>(())
    }
    .await;
    proxy.pass();
    blackholed.map_err(|why| format!("in a black hole: {why}"))?;
    run.served("after the black hole healed").await?;
    run.settled("after the faults").await?;
    run.shut_down().await
}

async fn shutdown<R: Resource>(suite: &Conformance<R>) -> Outcome {
    // Within the drain deadline: shutdown waits for the guards.
    let run = Run::build(suite, &suite.config, plain(suite)).await?;
    let mut held = Vec::new();
    for _ in 0..suite.max_size.min(2) {
        let mut guard = run
            .acquire()
            .await?
            .map_err(|err| format!("acquire failed: {err}"))?;
        run.exercise(&mut guard)
            .await?
            .map_err(|err| format!("exercise failed: {err}"))?;
        held.push(guard);
    }
    let manager = run.manager.clone();
    let drain = suite.patience;
    let shutting = tokio::spawn(async move { manager.shutdown(drain).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    match run.acquire().await? {
        Err(err) if err.kind() == ErrorKind::ShuttingDown => {}
        Err(err) => {
            return Err(format!(
                "an acquire during shutdown failed with {:?}, not ShuttingDown: {err}",
                err.kind()
            ));
        }
        Ok(_) => return Err("an acquire during shutdown was served".to_owned()),
    }
    if shutting.is_finished() {
        return Err("shutdown returned while guards were held within its deadline".to_owned());
    }
    drop(held);
    tokio::time::timeout(drain * 2, shutting)
        .await
        .map_err(|_| "shutdown did not return once the guards were dropped".to_owned())?
        .map_err(|join| format!("shutdown panicked: {join}"))?
        .map_err(|err| format!("shutdown failed: {err}"))?;
    run.gone("after shutdown").await?;

    // Past the drain deadline: shutdown returns, and the guard's instance is dropped when the
    // guard is.
    let run = Run::build(suite, &suite.config, plain(suite)).await?;
    let guard = run
        .acquire()
        .await?
        .map_err(|err| format!("acquire failed: {err}"))?;
    tokio::time::timeout(
        Duration::from_secs(5),
        run.manager.shutdown(Duration::from_millis(200)),
    )
    .await
    .map_err(|_| "shutdown with a guard held past its deadline did not return".to_owned())?
    .ok();
    drop(guard);
    run.gone("after a guard outlived the shutdown").await
}
