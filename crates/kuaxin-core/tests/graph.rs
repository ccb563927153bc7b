//! The portable graph's own rules: ordering, cycles, undefined values, patches, DCE.
use kuaxin_core::graph::{Graph, Node, ValueInfo, ValueType};
use kuaxin_core::patch::GraphPatch;
use kuaxin_core::{DType, Tensor};
use std::collections::HashSet;
use std::sync::Arc;

fn node(name: &str, op: &str, ins: &[&str], outs: &[&str]) -> Node {
    Node {
        name: name.into(),
        op_type: op.into(),
        domain: String::new(),
        inputs: ins.iter().map(|s| s.to_string()).collect(),
        outputs: outs.iter().map(|s| s.to_string()).collect(),
        attrs: Default::default(),
    }
}

fn vi(name: &str) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        ty: ValueType::Tensor {
            dtype: DType::F32,
            shape: None,
        },
    }
}

fn graph(nodes: Vec<Node>, outputs: &[&str]) -> Graph {
    Graph {
        name: "g".into(),
        nodes,
        inputs: vec![vi("x")],
        outputs: outputs.iter().map(|o| vi(o)).collect(),
        ..Default::default()
    }
}

#[test]
fn topo_order_puts_producers_first() {
    // Nodes listed consumer-first.
    let g = graph(
        vec![
            node("b", "Relu", &["t"], &["y"]),
            node("a", "Neg", &["x"], &["t"]),
        ],
        &["y"],
    );
    let order = g.topo_order(&HashSet::new()).unwrap();
    assert_eq!(order, vec![1, 0]);
}

#[test]
fn cycles_and_undefined_inputs_are_named() {
    let g = graph(
        vec![
            node("a", "Add", &["x", "q"], &["p"]),
            node("b", "Neg", &["p"], &["q"]),
        ],
        &["q"],
    );
    let e = g.topo_order(&HashSet::new()).unwrap_err().to_string();
    assert!(e.contains("cycle"), "{e}");
    let g = graph(vec![node("r", "Relu", &["nope"], &["y"])], &["y"]);
    let e = g.topo_order(&HashSet::new()).unwrap_err().to_string();
    assert!(e.contains("'nope'") && e.contains("node 'r' (Relu)"), "{e}");
    let g = graph(
        vec![
            node("a", "Neg", &["x"], &["y"]),
            node("b", "Neg", &["x"], &["y"]),
        ],
        &["y"],
    );
    assert!(g
        .topo_order(&HashSet::new())
        .unwrap_err()
        .to_string()
        .contains("more than one node"));
}

#[test]
fn outer_scope_names_count_as_defined() {
    let g = graph(vec![node("r", "Add", &["x", "from_outer"], &["y"])], &["y"]);
    let outer: HashSet<String> = ["from_outer".to_string()].into();
    assert!(g.topo_order(&outer).is_ok());
    assert_eq!(g.free_inputs(), vec!["from_outer".to_string()]);
}

#[test]
fn dead_code_patch_removes_only_unreachable_nodes() {
    let mut g = graph(
        vec![
            node("live", "Neg", &["x"], &["y"]),
            node("dead", "Exp", &["x"], &["unused"]),
            node("dead2", "Log", &["unused"], &["unused2"]),
        ],
        &["y"],
    );
    let p = g.dead_code();
    assert_eq!(p.remove_nodes.len(), 2);
    g.apply(p);
    assert_eq!(g.nodes.len(), 1);
    assert_eq!(g.nodes[0].name, "live");
}

#[test]
fn patches_rename_uses_and_rebind_outputs() {
    let mut g = graph(
        vec![
            node("a", "Identity", &["x"], &["t"]),
            node("b", "Relu", &["t"], &["y"]),
        ],
        &["t", "y"],
    );
    let mut p = GraphPatch::default();
    p.remove_nodes.insert(0);
    p.rename_uses.insert("t".into(), "x".into());
    p.add_initializers
        .push(("w".into(), Arc::new(Tensor::scalar(1f32))));
    g.apply(p);
    // b now reads x directly; output 't' is re-bound by an Identity so its name survives.
    let b = g.nodes.iter().find(|n| n.name == "b").unwrap();
    assert_eq!(b.inputs, vec!["x".to_string()]);
    assert!(g.nodes.iter().any(|n| n.op_type == "Identity"
        && n.outputs == vec!["t".to_string()]
        && n.inputs == vec!["x".to_string()]));
    assert!(g.initializer("w").is_some());
    assert!(g.topo_order(&HashSet::new()).is_ok());
}

#[test]
fn wrong_attribute_types_are_errors_not_panics() {
    let mut n = node("t", "Transpose", &["x"], &["y"]);
    n.attrs
        .insert("perm".into(), kuaxin_core::graph::Attr::Float(1.5));
    let e = n.attr_ints("perm").unwrap_err().to_string();
    assert!(
        e.contains("'perm'") && e.contains("ints") && e.contains("float"),
        "{e}"
    );
}
