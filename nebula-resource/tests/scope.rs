//! Workflow- and execution-scoped registrations: a pool per scope, ended by `end_scope`
//! dependents first; scope rules checked at build; abandoned scopes ended by maintenance.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nebula_resource::{
    Config, Context, CreateContext, Dependencies, Error, ErrorKind, Guard, Policy, PoolConfig,
    Resource, ResourceManager, Scope, TimeoutPhase,
};
use parking_lot::Mutex;

#[derive(Clone, Default)]
struct NoConfig;
impl Config for NoConfig {}

/// What happened, in order: "create workspace w1", "destroy session e1", ...
type Log = Arc<Mutex<Vec<String>>>;

/// One scratch workspace per workflow.
struct Workspace {
    log: Log,
    ids: Arc<AtomicU64>,
}

struct WorkspaceDir {
    id: u64,
    workflow: String,
}

impl Resource for Workspace {
    type Config = NoConfig;
    type Instance = WorkspaceDir;
    const KEY: &'static str = "workspace";

    async fn create(&self, _: &NoConfig, ctx: &CreateContext) -> Result<WorkspaceDir, Error> {
        let workflow = ctx.workflow().unwrap_or("none").to_owned();
        self.log.lock().push(format!("create workspace {workflow}"));
        Ok(WorkspaceDir {
            id: self.ids.fetch_add(1, Ordering::SeqCst),
            workflow,
        })
    }

    async fn destroy(&self, dir: WorkspaceDir) {
        self.log
            .lock()
            .push(format!("destroy workspace {}", dir.workflow));
    }
}

/// One session per execution; it holds its workflow's workspace while it lives.
struct Session {
    log: Log,
    ids: Arc<AtomicU64>,
}

struct SessionConn {
    id: u64,
    execution: String,
    workspace: Guard<Workspace>,
}

impl Resource for Session {
    type Config = NoConfig;
    type Instance = SessionConn;
    const KEY: &'static str = "session";

    fn dependencies() -> Dependencies {
        Dependencies::none().on::<Workspace>()
    }

    async fn create(&self, _: &NoConfig, ctx: &CreateContext) -> Result<SessionConn, Error> {
        let workspace = ctx
            .dependency::<Workspace>()?
            .acquire_in(&ctx.context())
            .await?;
        let execution = ctx.execution().unwrap_or("none").to_owned();
        self.log.lock().push(format!("create session {execution}"));
        Ok(SessionConn {
            id: self.ids.fetch_add(1, Ordering::SeqCst),
            execution,
            workspace,
        })
    }

    async fn destroy(&self, conn: SessionConn) {
        self.log
            .lock()
            .push(format!("destroy session {}", conn.execution));
    }
}

async fn manager(log: &Log) -> ResourceManager {
    let ids = Arc::new(AtomicU64::new(0));
    ResourceManager::builder()
        .register_with(
            Session {
                log: Arc::clone(log),
                ids: Arc::clone(&ids),
            },
            NoConfig,
            Policy::default().scope(Scope::Execution),
        )
        .register_with(
            Workspace {
                log: Arc::clone(log),
                ids,
            },
            NoConfig,
            Policy::default().scope(Scope::Workflow),
        )
        .build()
        .await
        .expect("build")
}

fn scopes(manager: &ResourceManager, key: &str) -> usize {
    manager.status().resource(key).expect("registered").scopes
}

#[tokio::test(start_paused = true)]
async fn each_scope_gets_its_own_instances_and_end_scope_destroys_dependents_first() {
    let log: Log = Arc::default();
    let manager = manager(&log).await;
    let e1 = Context::tenant("acme")
        .with_workflow("w1")
        .with_execution("e1");
    let e2 = Context::tenant("acme")
        .with_workflow("w1")
        .with_execution("e2");

    let first = manager.acquire_in::<Session>(&e1).await.expect("e1");
    let (first_id, workspace_id) = (first.id, first.workspace.id);
    drop(first);
    let again = manager.acquire_in::<Session>(&e1).await.expect("e1 again");
    assert_eq!(
        again.id, first_id,
        "the execution's pool reuses its instance"
    );
    drop(again);
    let other = manager.acquire_in::<Session>(&e2).await.expect("e2");
    assert_ne!(
        other.id, first_id,
        "another execution gets its own instance"
    );
    assert_ne!(
        other.workspace.id, workspace_id,
        "e1's session still holds its workspace: e2's comes from the same workflow pool"
    );
    assert_eq!(other.workspace.workflow, "w1");
    assert_eq!(
        scopes(&manager, "workspace"),
        1,
        "one pool for the workflow"
    );
    drop(other);
    assert_eq!(scopes(&manager, "session"), 2);
    assert_eq!(scopes(&manager, "workspace"), 1);

    manager.end_scope(&e1).await.expect("end e1");
    assert_eq!(scopes(&manager, "session"), 1);
    assert_eq!(scopes(&manager, "workspace"), 1, "the workflow goes on");
    assert_eq!(
        log.lock().last().map(String::as_str),
        Some("destroy session e1")
    );

    // Ending the workflow ends its remaining execution, then the workspace it held.
    manager
        .end_scope(&Context::tenant("acme").with_workflow("w1"))
        .await
        .expect("end w1");
    assert_eq!(scopes(&manager, "session"), 0);
    assert_eq!(scopes(&manager, "workspace"), 0);
    let log = log.lock().clone();
    // Two workspaces: e1's session held one when e2's session was created.
    let tail: Vec<&str> = log.iter().rev().take(3).rev().map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            "destroy session e2",
            "destroy workspace w1",
            "destroy workspace w1"
        ]
    );
    // The ended scopes' pools are gone, their lifetime counts are not.
    let status = manager.status();
    for key in ["session", "workspace"] {
        let pool = status.resource(key).expect("registered").pool;
        assert_eq!(
            (pool.size, pool.created, pool.destroyed),
            (0, 2, 2),
            "{key}: {pool:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn tenants_and_workflows_never_share_a_scope() {
    let log: Log = Arc::default();
    let manager = manager(&log).await;
    let a = manager
        .acquire_in::<Workspace>(&Context::tenant("a").with_workflow("w"))
        .await
        .expect("a");
    let b = manager
        .acquire_in::<Workspace>(&Context::tenant("b").with_workflow("w"))
        .await
        .expect("b");
    let c = manager
        .acquire_in::<Workspace>(&Context::tenant("a").with_workflow("w2"))
        .await
        .expect("c");
    assert_ne!(a.id, b.id);
    assert_ne!(a.id, c.id);
    assert_eq!(scopes(&manager, "workspace"), 3);
}

#[tokio::test(start_paused = true)]
async fn end_scope_waits_for_a_guard_in_use_until_the_deadline() {
    let log: Log = Arc::default();
    let manager = manager(&log).await;
    let ctx = Context::global().with_workflow("w").with_execution("e");
    let held = manager.acquire_in::<Session>(&ctx).await.expect("acquire");

    let deadline = ctx
        .clone()
        .with_deadline(tokio::time::Instant::now() + Duration::from_millis(200));
    let err = manager
        .end_scope(&deadline)
        .await
        .expect_err("a guard is held");
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.timeout_phase(), Some(TimeoutPhase::Shutdown));
    assert!(err.to_string().contains("session"), "{err}");

    // Without a deadline it waits for the guard; dropping it lets the scope end.
    let ending = {
        let manager = manager.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move { manager.end_scope(&ctx).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!ending.is_finished(), "waits for the guard in use");
    drop(held);
    ending.await.expect("task").expect("ended");
    assert!(log.lock().contains(&"destroy session e".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_scope_is_ended_by_maintenance_after_idle_timeout() {
    let log: Log = Arc::default();
    let ids = Arc::new(AtomicU64::new(0));
    let manager = ResourceManager::builder()
        .register_with(
            Workspace {
                log: Arc::clone(&log),
                ids,
            },
            NoConfig,
            Policy::default().scope(Scope::Workflow).pool(
                PoolConfig::default()
                    .idle_timeout(Duration::from_secs(60))
                    .maintenance_interval(Duration::from_secs(1)),
            ),
        )
        .build()
        .await
        .expect("build");
    let ctx = Context::global().with_workflow("forgotten");
    drop(
        manager
            .acquire_in::<Workspace>(&ctx)
            .await
            .expect("acquire"),
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(scopes(&manager, "workspace"), 1, "not idle long enough");
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(scopes(&manager, "workspace"), 0);
    assert_eq!(
        log.lock().last().map(String::as_str),
        Some("destroy workspace forgotten")
    );
}

#[tokio::test]
async fn scoped_acquires_and_end_scope_need_a_scope() {
    let log: Log = Arc::default();
    let manager = manager(&log).await;
    let err = manager.acquire::<Session>().await.expect_err("no scope");
    assert_eq!(err.kind(), ErrorKind::ScopeRequired);
    assert_eq!(err.resource_key(), Some("session"));
    let err = manager
        .acquire_in::<Session>(&Context::tenant("acme").with_workflow("w"))
        .await
        .expect_err("no execution");
    assert_eq!(err.kind(), ErrorKind::ScopeRequired);
    assert!(err.to_string().contains("execution id"), "{err}");
    let err = manager
        .acquire_in::<Workspace>(&Context::tenant("bad id").with_workflow("w"))
        .await
        .expect_err("bad tenant");
    assert_eq!(err.kind(), ErrorKind::TenantRejected);
    let err = manager
        .end_scope(&Context::tenant("acme"))
        .await
        .expect_err("no workflow");
    assert_eq!(err.kind(), ErrorKind::ScopeRequired);
}

#[tokio::test]
async fn build_rejects_a_resource_depending_on_a_narrower_scope() {
    let log: Log = Arc::default();
    let ids = Arc::new(AtomicU64::new(0));
    let err = ResourceManager::builder()
        .register(
            Session {
                log: Arc::clone(&log),
                ids: Arc::clone(&ids),
            },
            NoConfig,
        )
        .register_with(
            Workspace { log, ids },
            NoConfig,
            Policy::default().scope(Scope::Execution),
        )
        .build()
        .await
        .expect_err("global depends on execution");
    assert_eq!(err.kind(), ErrorKind::Config);
    assert_eq!(err.field(), Some("scope"));
    let text = err.to_string();
    assert!(
        text.contains("`session` (global scope) depends on `workspace` (execution scope)"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_ends_every_live_scope_and_waits_for_its_guards() {
    let log: Log = Arc::default();
    let manager = manager(&log).await;
    let ctx = Context::tenant("acme")
        .with_workflow("w")
        .with_execution("e");
    let held = manager.acquire_in::<Session>(&ctx).await.expect("acquire");
    let shutting_down = {
        let manager = manager.clone();
        tokio::spawn(async move { manager.shutdown(Duration::from_secs(60)).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!shutting_down.is_finished(), "waits for the session in use");
    let err = manager
        .acquire_in::<Session>(&ctx)
        .await
        .expect_err("shutting down");
    assert_eq!(err.kind(), ErrorKind::ShuttingDown);
    drop(held);
    shutting_down.await.expect("task").expect("shutdown");
    let log = log.lock().clone();
    let tail: Vec<&str> = log.iter().rev().take(2).rev().map(String::as_str).collect();
    assert_eq!(tail, ["destroy session e", "destroy workspace w"]);
    assert_eq!(scopes(&manager, "session"), 0);
}

/// A scoped resource whose create takes 90 s.
struct SlowScoped;

impl Resource for SlowScoped {
    type Config = NoConfig;
    type Instance = u64;
    const KEY: &'static str = "slow-scoped";

    async fn create(&self, _: &NoConfig, _: &CreateContext) -> Result<u64, Error> {
        tokio::time::sleep(Duration::from_secs(90)).await;
        Ok(7)
    }
}

/// Regression (faults #11): scope maintenance ended a scope whose first acquire was still in
/// flight (last_used is touched only on success), failing it with a misleading "the manager is
/// shutting down".
#[tokio::test(start_paused = true)]
async fn scope_maintenance_does_not_end_a_scope_with_an_acquire_in_flight() {
    let manager = ResourceManager::builder()
        .register_with(
            SlowScoped,
            NoConfig,
            Policy::default()
                .scope(Scope::Workflow)
                .retry(nebula_resource::RetryPolicy::none())
                .breaker(nebula_resource::BreakerConfig::disabled())
                .health(nebula_resource::HealthConfig::disabled())
                .pool(
                    PoolConfig::default()
                        .max_size(1)
                        .idle_timeout(Duration::from_secs(60))
                        .create_timeout(Duration::from_secs(120))
                        .acquire_timeout(Duration::from_secs(120))
                        .maintenance_interval(Duration::from_secs(1)),
                ),
        )
        .build()
        .await
        .expect("build");
    let ctx = Context::global().with_workflow("busy");
    // The acquire waits 90 s for its create, past the 60 s idle_timeout: the scope is in use.
    let acquired = tokio::time::timeout(
        Duration::from_secs(150),
        manager.acquire_in::<SlowScoped>(&ctx),
    )
    .await
    .expect("the acquire finishes");
    let guard = acquired.expect("the scope's in-flight acquire is served, not ended");
    assert_eq!(*guard, 7);
    assert_eq!(scopes(&manager, "slow-scoped"), 1);
    drop(guard);
    manager.shutdown(Duration::from_secs(1)).await.unwrap();
}
