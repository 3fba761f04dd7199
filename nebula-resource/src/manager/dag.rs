//! The dependency graph over registrations: reject cycles (listing them whole) and missing
//! dependencies, then order initialization in layers whose members do not depend on each other.

use std::any::TypeId;
use std::collections::HashMap;
use std::sync::Arc;

use petgraph::algo::{tarjan_scc, toposort};
use petgraph::stable_graph::{NodeIndex, StableDiGraph};

use crate::error::{Error, ErrorKind};
use crate::resource::Dependency;

/// What the graph needs to know of one registration.
pub(crate) struct NodeSpec {
    pub(crate) type_id: TypeId,
    pub(crate) key: &'static str,
    pub(crate) name: Option<Arc<str>>,
    pub(crate) dependencies: Vec<Dependency>,
}

impl NodeSpec {
    fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{}({name})", self.key),
            None => self.key.to_owned(),
        }
    }
}

/// The result of planning: for each node the indices of its dependencies, and the layers.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) dependencies: Vec<Vec<usize>>,
    pub(crate) layers: Vec<Vec<usize>>,
}

/// Check `nodes` (duplicates, missing dependencies, cycles) and plan the initialization order.
pub(crate) fn plan(nodes: &[NodeSpec]) -> Result<Plan, Error> {
    let mut index: HashMap<(TypeId, Option<&str>), usize> = HashMap::with_capacity(nodes.len());
    for (i, node) in nodes.iter().enumerate() {
        if index
            .insert((node.type_id, node.name.as_deref()), i)
            .is_some()
        {
            let what = match &node.name {
                Some(name) => format!("`{}` is registered twice under the name `{name}`", node.key),
                None => format!(
                    "`{}` is registered twice (use register_named for more than one)",
                    node.key
                ),
            };
            return Err(Error::other(ErrorKind::Duplicate, what)
                .in_resource(node.key, node.name.as_deref()));
        }
    }

    // Edges point from a dependent to what it depends on.
    let mut graph: StableDiGraph<usize, ()> =
        StableDiGraph::with_capacity(nodes.len(), nodes.len());
    let ids: Vec<NodeIndex> = (0..nodes.len()).map(|i| graph.add_node(i)).collect();
    let mut dependencies = vec![Vec::new(); nodes.len()];
    for (i, node) in nodes.iter().enumerate() {
        for dep in &node.dependencies {
            let Some(&target) = index.get(&(dep.type_id, dep.name)) else {
                let wanted = match dep.name {
                    Some(name) => format!("`{}` named `{name}` ({})", dep.key, dep.type_name),
                    None => format!("`{}` ({})", dep.key, dep.type_name),
                };
                return Err(Error::other(
                    ErrorKind::MissingDependency,
                    format!("depends on {wanted}, which is not registered"),
                )
                .in_resource(node.key, node.name.as_deref()));
            };
            graph.add_edge(ids[i], ids[target], ());
            dependencies[i].push(target);
        }
    }

    let order = match toposort(&graph, None) {
        Ok(order) => order,
        Err(_) => return Err(cycle_error(&graph, nodes)),
    };

    // toposort puts dependents before their dependencies; walk it backwards to place every node
    // one layer after its deepest dependency.
    let mut depth = vec![0usize; nodes.len()];
    for id in order.iter().rev() {
        let i = graph[*id];
        depth[i] = dependencies[i]
            .iter()
            .map(|&d| depth[d] + 1)
            .max()
            .unwrap_or(0);
    }
    let layer_count = depth.iter().max().map_or(0, |d| d + 1);
    let mut layers = vec![Vec::new(); layer_count];
    for (i, d) in depth.iter().enumerate() {
        layers[*d].push(i);
    }
    Ok(Plan {
        dependencies,
        layers,
    })
}

/// Find one cycle and list it whole: `a -> b -> c -> a`, each arrow reading "depends on".
fn cycle_error(graph: &StableDiGraph<usize, ()>, nodes: &[NodeSpec]) -> Error {
    let path = tarjan_scc(graph)
        .into_iter()
        .find(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0]))
        .map(|scc| cycle_in(graph, &scc))
        .unwrap_or_default();
    let listed: Vec<String> = path.iter().map(|id| nodes[graph[*id]].label()).collect();
    let first = path.first().map(|id| &nodes[graph[*id]]);
    let err = Error::other(ErrorKind::Cycle, listed.join(" -> "));
    match first {
        Some(node) => err.in_resource(node.key, node.name.as_deref()),
        None => err,
    }
}

/// A closed path through the strongly connected component `scc`, starting and ending at its
/// first node.
fn cycle_in(graph: &StableDiGraph<usize, ()>, scc: &[NodeIndex]) -> Vec<NodeIndex> {
    let start = scc[0];
    let mut path = vec![start];
    let mut visited = vec![start];
    // Depth-first search inside the component for a way back to `start`.
    let mut stack = vec![graph.neighbors(start).collect::<Vec<_>>()];
    while let Some(frontier) = stack.last_mut() {
        let Some(next) = frontier.pop() else {
            stack.pop();
            path.pop();
            continue;
        };
        if next == start {
            path.push(start);
            return path;
        }
        if scc.contains(&next) && !visited.contains(&next) {
            visited.push(next);
            path.push(next);
            stack.push(graph.neighbors(next).collect());
        }
    }
    vec![start, start]
}

#[cfg(test)]
mod tests {
    use super::*;

    struct A;
    struct B;
    struct C;
    struct D;

    fn spec<T: 'static>(key: &'static str, deps: &[(TypeId, &'static str)]) -> NodeSpec {
        NodeSpec {
            type_id: TypeId::of::<T>(),
            key,
            name: None,
            dependencies: deps
                .iter()
                .map(|&(type_id, key)| Dependency {
                    type_id,
                    type_name: key,
                    key,
                    name: None,
                })
                .collect(),
        }
    }

    #[test]
    fn diamond_is_layered() {
        let a = (TypeId::of::<A>(), "a");
        let b = (TypeId::of::<B>(), "b");
        let c = (TypeId::of::<C>(), "c");
        let nodes = [
            spec::<D>("d", &[b, c]),
            spec::<B>("b", &[a]),
            spec::<C>("c", &[a]),
            spec::<A>("a", &[]),
        ];
        let plan = plan(&nodes).unwrap();
        assert_eq!(plan.layers, vec![vec![3], vec![1, 2], vec![0]]);
    }

    #[test]
    fn cycle_is_listed_whole() {
        let a = (TypeId::of::<A>(), "a");
        let b = (TypeId::of::<B>(), "b");
        let c = (TypeId::of::<C>(), "c");
        let nodes = [
            spec::<A>("a", &[b]),
            spec::<B>("b", &[c]),
            spec::<C>("c", &[a]),
        ];
        let err = plan(&nodes).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cycle);
        let text = err.to_string();
        assert!(
            text.contains("a -> b -> c -> a")
                || text.contains("b -> c -> a -> b")
                || text.contains("c -> a -> b -> c"),
            "{text}"
        );
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let a = (TypeId::of::<A>(), "a");
        let err = plan(&[spec::<A>("a", &[a])]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Cycle);
        assert!(err.to_string().contains("a -> a"), "{err}");
    }
}
