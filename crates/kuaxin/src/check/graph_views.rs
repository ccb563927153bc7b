//! Model variants a node-by-node comparison needs: the live part of a model, the model with
//! chosen intermediate values exposed as outputs, and one node alone as a model.
use kuaxin_core::graph::{Attr, Model, Node, ValueInfo, ValueType};
use kuaxin_core::Result;
use std::collections::HashSet;

/// The model without nodes that no output depends on (what a session runs).
pub fn live(model: &Model) -> Model {
    let mut m = model.clone();
    let dead = m.graph.dead_code();
    m.graph.apply(dead);
    m
}

/// Top-level nodes in dependency order.
pub fn node_order(model: &Model) -> Result<Vec<&Node>> {
    let order = model.graph.topo_order(&HashSet::new())?;
    Ok(order.into_iter().map(|i| &model.graph.nodes[i]).collect())
}

/// Every value a top-level node produces, in dependency order.
pub fn node_values(model: &Model) -> Result<Vec<String>> {
    Ok(node_order(model)?
        .iter()
        .flat_map(|n| n.outputs.iter().filter(|o| !o.is_empty()).cloned())
        .collect())
}

/// The model with `names` added as graph outputs (those not already outputs).
pub fn expose(model: &Model, names: &[String]) -> Model {
    let mut m = model.clone();
    let mut have: HashSet<String> = m.graph.outputs.iter().map(|o| o.name.clone()).collect();
    for n in names {
        if have.insert(n.clone()) {
            m.graph.outputs.push(ValueInfo {
                name: n.clone(),
                ty: ValueType::Unknown,
            });
        }
    }
    m
}

/// What a node reads: its inputs and the values its subgraphs capture from the enclosing graph.
pub fn node_reads(node: &Node) -> Vec<String> {
    let mut v: Vec<String> = node
        .inputs
        .iter()
        .filter(|s| !s.is_empty())
        .cloned()
        .collect();
    for a in node.attrs.values() {
        match a {
            Attr::Graph(g) => v.extend(g.free_inputs()),
            Attr::Graphs(gs) => gs.iter().for_each(|g| v.extend(g.free_inputs())),
            _ => {}
        }
    }
    let mut seen = HashSet::new();
    v.retain(|s| seen.insert(s.clone()));
    v
}

/// One node as a model: what it reads are inputs of unknown type, what it writes are outputs.
pub fn single_node_model(node: &Node, parent: &Model) -> Model {
    let unknown = |name: &String| ValueInfo {
        name: name.clone(),
        ty: ValueType::Unknown,
    };
    let mut m = Model {
        opsets: parent.opsets.clone(),
        producer: parent.producer.clone(),
        source: parent.source.clone(),
        ..Default::default()
    };
    m.graph.name = format!("{} alone", node.describe());
    m.graph.nodes.push(node.clone());
    m.graph.inputs = node_reads(node).iter().map(unknown).collect();
    m.graph.outputs = node
        .outputs
        .iter()
        .filter(|o| !o.is_empty())
        .map(unknown)
        .collect();
    m
}
