//! Graph builders shared by the integration tests: typed f32 values and single-output nodes.
use kuaxin::DType;
use kuaxin_core::graph::{Attr, Dim, Node, ValueInfo, ValueType};

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
