//! Who is acquiring: [`Context`] (tenant, workflow, execution, deadline), the validated
//! [`TenantId`], and the [`CreateContext`] a resource's `create` receives.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

use crate::credentials::Credentials;
use crate::error::Error;
use crate::events::Source;
pub use crate::tenant::{MAX_TENANT_ID_LEN, TenantId};

/// The scope an acquire runs in: global or a tenant, optionally a workflow and an execution,
/// optionally a deadline.
///
/// Building a context never fails; a bad tenant id is rejected when it is used to acquire.
///
/// ```
/// use nebula_resource::Context;
/// let ctx = Context::tenant("acme").with_execution("exec-42");
/// assert_eq!(ctx.tenant_id(), Some("acme"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Context {
    tenant: Option<Arc<str>>,
    workflow: Option<Arc<str>>,
    execution: Option<Arc<str>>,
    deadline: Option<Instant>,
}

impl Context {
    /// No tenant, no scope, no deadline.
    pub fn global() -> Self {
        Self::default()
    }

    /// Acquire on behalf of `tenant`.
    pub fn tenant(tenant: impl Into<String>) -> Self {
        Self {
            tenant: Some(Arc::from(tenant.into())),
            ..Self::default()
        }
    }

    /// Attach a workflow id (for logs and scope).
    #[must_use]
    pub fn with_workflow(mut self, workflow: impl Into<String>) -> Self {
        self.workflow = Some(Arc::from(workflow.into()));
        self
    }

    /// Attach an execution id (for logs and scope).
    #[must_use]
    pub fn with_execution(mut self, execution: impl Into<String>) -> Self {
        self.execution = Some(Arc::from(execution.into()));
        self
    }

    /// An acquire in this context never waits past `deadline` (nor past `acquire_timeout`).
    #[must_use]
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The tenant id as given, not yet validated.
    pub fn tenant_id(&self) -> Option<&str> {
        self.tenant.as_deref()
    }

    /// The workflow id, if any.
    pub fn workflow_id(&self) -> Option<&str> {
        self.workflow.as_deref()
    }

    /// The execution id, if any.
    pub fn execution_id(&self) -> Option<&str> {
        self.execution.as_deref()
    }

    /// The deadline, if any.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub(crate) fn workflow_arc(&self) -> Option<Arc<str>> {
        self.workflow.clone()
    }

    pub(crate) fn execution_arc(&self) -> Option<Arc<str>> {
        self.execution.clone()
    }
}

/// Handles to the declared dependencies of one registration, by (type, name).
pub(crate) type DependencyMap = HashMap<(TypeId, Option<&'static str>), Arc<dyn Any + Send + Sync>>;

/// What [`Resource::create`](crate::Resource::create) may use: its declared dependencies and its tenant.
pub struct CreateContext {
    key: &'static str,
    name: Option<Arc<str>>,
    tenant: Option<TenantId>,
    dependencies: Arc<DependencyMap>,
    credentials: ArcSwapOption<Credentials>,
    workflow: Option<Arc<str>>,
    execution: Option<Arc<str>>,
}

impl CreateContext {
    pub(crate) fn new(
        key: &'static str,
        name: Option<Arc<str>>,
        tenant: Option<TenantId>,
        dependencies: Arc<DependencyMap>,
    ) -> Self {
        Self {
            key,
            name,
            tenant,
            dependencies,
            credentials: ArcSwapOption::empty(),
            workflow: None,
            execution: None,
        }
    }

    /// For a scoped registration's pool: the workflow (and execution) it serves.
    pub(crate) fn in_scope(mut self, workflow: Arc<str>, execution: Option<Arc<str>>) -> Self {
        self.workflow = Some(workflow);
        self.execution = execution;
        self
    }

    /// For a workflow- or execution-scoped registration, the workflow the instance is created
    /// for.
    pub fn workflow(&self) -> Option<&str> {
        self.workflow.as_deref()
    }

    /// For an execution-scoped registration, the execution the instance is created for.
    pub fn execution(&self) -> Option<&str> {
        self.execution.as_deref()
    }

    /// The [`Context`] this instance is created for (tenant, workflow, execution): acquire a
    /// scoped dependency in it to get the same scope's instance.
    pub fn context(&self) -> Context {
        Context {
            tenant: self.tenant.as_ref().map(|t| Arc::clone(t.arc())),
            workflow: self.workflow.clone(),
            execution: self.execution.clone(),
            deadline: None,
        }
    }

    /// The credentials of the current generation, from the registration's
    /// [`CredentialProvider`](crate::CredentialProvider); `None` when it has none.
    pub fn credentials(&self) -> Option<Arc<Credentials>> {
        self.credentials.load_full()
    }

    pub(crate) fn set_credentials(&self, credentials: Credentials) {
        self.credentials.store(Some(Arc::new(credentials)));
    }

    /// What was registered for the declared dependency of type `type_id` named `name`: the
    /// manager turns it into a [`Handle`](crate::Handle) (see `CreateContext::dependency`).
    pub(crate) fn declared(
        &self,
        type_id: TypeId,
        name: Option<&'static str>,
    ) -> Option<&Arc<dyn Any + Send + Sync>> {
        self.dependencies.get(&(type_id, name))
    }

    /// The event source naming this context's registration.
    pub(crate) fn source(&self) -> Source {
        Source {
            key: self.key,
            name: self.name.clone(),
            tenant: self.tenant.clone(),
        }
    }

    /// Attribute `err` to the resource (key, name) and tenant of this context.
    pub(crate) fn attribute(&self, err: Error) -> Error {
        err.in_resource(self.key, self.name())
            .for_tenant(self.tenant.as_ref().map(TenantId::as_str))
    }

    /// The tenant this instance is created for, if any.
    pub fn tenant(&self) -> Option<&TenantId> {
        self.tenant.as_ref()
    }

    /// The key of the resource being created.
    pub fn key(&self) -> &'static str {
        self.key
    }

    /// The registration name, if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl fmt::Debug for CreateContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateContext")
            .field("key", &self.key)
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .field("workflow", &self.workflow)
            .field("execution", &self.execution)
            .field("dependencies", &self.dependencies.len())
            .finish()
    }
}
