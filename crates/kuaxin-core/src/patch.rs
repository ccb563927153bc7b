//! Rewrites as patches: a pass describes what to change, and [`Graph::apply`] is the one place
//! that changes a graph, so no pass ever leaves a graph half-rewritten.
use crate::graph::{Graph, Node};
use crate::tensor::Tensor;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[derive(Debug, Default, Clone)]
pub struct GraphPatch {
    /// Indices (into `graph.nodes`) of nodes to drop.
    pub remove_nodes: HashSet<usize>,
    /// Nodes to add.
    pub add_nodes: Vec<Node>,
    /// Values that become constants (e.g. by constant folding).
    pub add_initializers: Vec<(String, Arc<Tensor>)>,
    /// Rename uses of a value to another value (`from` -> `to`).
    pub rename_uses: HashMap<String, String>,
}

impl GraphPatch {
    pub fn is_empty(&self) -> bool {
        self.remove_nodes.is_empty()
            && self.add_nodes.is_empty()
            && self.add_initializers.is_empty()
            && self.rename_uses.is_empty()
    }
}

impl Graph {
    /// Applies a patch. Graph outputs keep their names: a renamed output is re-bound.
    pub fn apply(&mut self, patch: GraphPatch) {
        let old = std::mem::take(&mut self.nodes);
        self.nodes = old
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !patch.remove_nodes.contains(i))
            .map(|(_, n)| n)
            .chain(patch.add_nodes)
            .collect();
        let resolve = |name: &str| -> String {
            let mut cur = name.to_string();
            let mut hops = 0;
            while let Some(next) = patch.rename_uses.get(&cur) {
                cur = next.clone();
                hops += 1;
                if hops > patch.rename_uses.len() {
                    break;
                }
            }
            cur
        };
        for n in &mut self.nodes {
            for i in &mut n.inputs {
                if !i.is_empty() {
                    *i = resolve(i);
                }
            }
        }
        for (name, t) in patch.add_initializers {
            self.initializers.retain(|(n, _)| *n != name);
            self.initializers.push((name, t));
        }
        let mut identities = Vec::new();
        for o in &self.outputs {
            let r = resolve(&o.name);
            if r != o.name {
                identities.push(Node {
                    name: format!("{}_rebind", o.name),
                    op_type: "Identity".into(),
                    domain: String::new(),
                    inputs: vec![r],
                    outputs: vec![o.name.clone()],
                    attrs: Default::default(),
                });
            }
        }
        self.nodes.extend(identities);
    }

    /// Dead-code elimination as a patch: nodes none of whose outputs reach a graph output.
    pub fn dead_code(&self) -> GraphPatch {
        let mut live: HashSet<String> = self.outputs.iter().map(|o| o.name.clone()).collect();
        let mut keep = vec![false; self.nodes.len()];
        loop {
            let mut changed = false;
            for (i, n) in self.nodes.iter().enumerate() {
                if !keep[i] && n.outputs.iter().any(|o| live.contains(o)) {
                    keep[i] = true;
                    changed = true;
                    live.extend(n.inputs.iter().filter(|s| !s.is_empty()).cloned());
                    for a in n.attrs.values() {
                        if let crate::graph::Attr::Graph(g) = a {
                            live.extend(g.free_inputs());
                        }
                    }
                }
            }
            if !changed {
                break;
            }
        }
        GraphPatch {
            remove_nodes: (0..self.nodes.len()).filter(|&i| !keep[i]).collect(),
            ..Default::default()
        }
    }
}
