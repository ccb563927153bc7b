//! A planted fault for testing `check` itself: the device under test runs a model in which one
//! node's first output `y` is replaced by `y * 1.01 + 0.01` (in y's own dtype, so integer
//! outputs are unchanged). Set by `KUAXIN_PERTURB=NODE_NAME` (or `--perturb`); never applied
//! to the reference.
use kuaxin_core::graph::{Model, Node};
use kuaxin_core::patch::GraphPatch;
use kuaxin_core::{Error, Result, Tensor};
use std::sync::Arc;

/// Relative and absolute size of the planted error.
pub const SCALE: f64 = 1.01;
pub const SHIFT: f64 = 0.01;

fn node(name: String, op: &str, inputs: Vec<String>, output: String) -> Node {
    Node {
        name,
        op_type: op.into(),
        domain: String::new(),
        inputs,
        outputs: vec![output],
        attrs: Default::default(),
    }
}

/// The patch that perturbs node `target`'s first output. Errors when no node has that name.
pub fn perturb_patch(model: &Model, target: &str) -> Result<GraphPatch> {
    if target.is_empty() {
        return Err(Error::invalid("perturb: empty node name"));
    }
    let (i, n) = model
        .graph
        .nodes
        .iter()
        .enumerate()
        .find(|(_, n)| n.name == target)
        .ok_or_else(|| {
            Error::invalid(format!(
                "perturb: the model ({}) has no node named '{target}'",
                model.source
            ))
        })?;
    let y = n
        .outputs
        .first()
        .filter(|o| !o.is_empty())
        .ok_or_else(|| Error::invalid(format!("perturb: {} has no first output", n.describe())))?
        .clone();
    let p = |s: &str| format!("{y}.__perturb_{s}");
    let mut moved = n.clone();
    moved.outputs[0] = p("raw");
    let mut patch = GraphPatch::default();
    patch.remove_nodes.insert(i);
    patch.add_nodes = vec![
        moved,
        node(
            p("scale_like"),
            "CastLike",
            vec![p("scale"), p("raw")],
            p("scale_cast"),
        ),
        node(
            p("shift_like"),
            "CastLike",
            vec![p("shift"), p("raw")],
            p("shift_cast"),
        ),
        node(
            p("mul"),
            "Mul",
            vec![p("raw"), p("scale_cast")],
            p("scaled"),
        ),
        node(
            p("add"),
            "Add",
            vec![p("scaled"), p("shift_cast")],
            y.clone(),
        ),
    ];
    patch.add_initializers = vec![
        (p("scale"), Arc::new(Tensor::scalar(SCALE))),
        (p("shift"), Arc::new(Tensor::scalar(SHIFT))),
    ];
    Ok(patch)
}

/// `model` with node `target` perturbed.
pub fn perturb(model: &Model, target: &str) -> Result<Model> {
    let patch = perturb_patch(model, target)?;
    let mut m = model.clone();
    m.graph.apply(patch);
    Ok(m)
}

/// `model` perturbed when `target` names one of its nodes; unchanged otherwise (a one-node
/// model of another node).
pub fn perturb_if_present(model: &Model, target: Option<&str>) -> Result<Model> {
    match target {
        Some(t) if model.graph.nodes.iter().any(|n| n.name == t) => perturb(model, t),
        _ => Ok(model.clone()),
    }
}
