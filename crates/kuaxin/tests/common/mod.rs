//! Graph builders shared by the integration tests: typed f32 values and single-output nodes.
use kuaxin::DType;
use kuaxin_core::graph::{Attr, Dim, Graph, Model, Node, ValueInfo, ValueType};
use kuaxin_core::Tensor;
use std::sync::Arc;

pub fn vi(name: &str, shape: &[usize]) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        ty: ValueType::Tensor {
            dtype: DType::F32,
            shape: Some(shape.iter().map(|&d| Dim::Known(d)).collect()),
        },
    }
}

pub fn node(op: &str, ins: &[&str], out: &str, attrs: Vec<(&str, Attr)>) -> Node {
    Node {
        name: out.into(),
        op_type: op.into(),
        domain: String::new(),
        inputs: ins.iter().map(|s| s.to_string()).collect(),
        outputs: vec![out.into()],
        attrs: attrs.into_iter().map(|(k, a)| (k.to_string(), a)).collect(),
    }
}

/// A model (opset 17) named `name` of `nodes`, with these inputs, outputs and initializers.
#[allow(dead_code)] // each test binary compiles this module; not all of them build models
pub fn model(
    name: &str,
    nodes: Vec<Node>,
    (inputs, outputs): (Vec<ValueInfo>, Vec<ValueInfo>),
    initializers: Vec<(String, Arc<Tensor>)>,
) -> Model {
    Model {
        graph: Graph {
            name: name.into(),
            nodes,
            inputs,
            outputs,
            initializers,
            value_info: vec![],
        },
        opsets: [(String::new(), 17)].into(),
        producer: "test".into(),
        source: name.into(),
    }
}

/// The outputs of `model` for `inputs` on the CPU with `threads` threads, fused or not, and the
/// primitives of the program that ran (what fusion made of it).
#[allow(dead_code)] // each test binary compiles this module; not all of them run models
pub fn run_on_cpu(
    model: &kuaxin_core::graph::Model,
    inputs: &[(String, kuaxin::HostValue)],
    fuse: bool,
    threads: usize,
) -> (Vec<kuaxin::Tensor>, Vec<kuaxin_core::prim::Prim>) {
    let opts = kuaxin::session::SessionOptions {
        fuse,
        ..Default::default()
    };
    let device = kuaxin::open_device("cpu", Some(threads)).expect("a CPU device");
    let s = kuaxin::Session::with_options(model.clone(), device, opts).expect("a session");
    let outs = s
        .run(inputs)
        .expect("runs")
        .into_iter()
        .map(|(_, v)| v.as_tensor().expect("a tensor").clone())
        .collect();
    let program = s.program_for(inputs).expect("a cached program");
    let prims = program.instrs.iter().map(|i| i.prim.clone()).collect();
    (outs, prims)
}
