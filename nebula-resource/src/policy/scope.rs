//! [`Scope`]: how long the instances of a registration live.

/// How long the instances of a registration live, set with [`Policy::scope`](super::Policy::scope).
///
/// Scopes nest: an execution belongs to a workflow, and every scope lives inside the manager's
/// life. A resource may depend only on resources of its own scope or a wider one
/// (`build()` rejects an [`Global`](Scope::Global) resource that depends on an
/// [`Execution`](Scope::Execution) one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Scope {
    /// One pool for the manager's whole life (the default).
    #[default]
    Global,
    /// A pool per workflow (per tenant, if the context names one), ended by `end_scope` in a
    /// context naming that workflow.
    Workflow,
    /// A pool per execution (of a workflow, per tenant), ended by `end_scope` in a context
    /// naming that execution — or its workflow.
    Execution,
}

impl Scope {
    /// The scope's name, as in errors.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Workflow => "workflow",
            Self::Execution => "execution",
        }
    }
}
