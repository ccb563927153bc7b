//! Small builders for ONNX protobuf messages, shared by the integration tests.
#![allow(dead_code)]
use kuaxin_onnx::proto::attribute_proto::AttributeType;
use kuaxin_onnx::proto::tensor_shape_proto::{dimension, Dimension};
use kuaxin_onnx::proto::type_proto::{self, Value};
use kuaxin_onnx::proto::*;
use std::path::PathBuf;

pub const FLOAT: i32 = 1;
pub const INT64: i32 = 7;

/// A dim for [`tensor_vi`]: a number, a name, or unknown.
pub enum D {
    N(i64),
    S(&'static str),
    U,
}

pub fn tensor_type(elem: i32, dims: Option<&[D]>) -> TypeProto {
    let shape = dims.map(|ds| TensorShapeProto {
        dim: ds
            .iter()
            .map(|d| Dimension {
                value: match d {
                    D::N(n) => Some(dimension::Value::DimValue(*n)),
                    D::S(s) => Some(dimension::Value::DimParam(s.to_string())),
                    D::U => None,
                },
                denotation: None,
            })
            .collect(),
    });
    TypeProto {
        value: Some(Value::TensorType(type_proto::Tensor {
            elem_type: Some(elem),
            shape,
        })),
        denotation: None,
    }
}

pub fn vi(name: &str, ty: TypeProto) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(ty),
        ..Default::default()
    }
}

pub fn tensor_vi(name: &str, elem: i32, dims: &[D]) -> ValueInfoProto {
    vi(name, tensor_type(elem, Some(dims)))
}

pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(name.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(ty as i32),
        ..Default::default()
    }
}

pub fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(FLOAT),
        dims: dims.to_vec(),
        float_data: values.to_vec(),
        ..Default::default()
    }
}

pub fn graph(
    name: &str,
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    initializers: Vec<TensorProto>,
) -> GraphProto {
    GraphProto {
        name: Some(name.into()),
        node: nodes,
        input: inputs,
        output: outputs,
        initializer: initializers,
        ..Default::default()
    }
}

pub fn model(g: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        producer_name: Some("kuaxin-tests".into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(g),
        ..Default::default()
    }
}

/// x[2] -> Relu -> y[2]: the smallest valid model, base for the malformed ones.
pub fn relu_model() -> ModelProto {
    model(graph(
        "relu",
        vec![node("Relu", "r", &["x"], &["y"])],
        vec![tensor_vi("x", FLOAT, &[D::N(2)])],
        vec![tensor_vi("y", FLOAT, &[D::N(2)])],
        vec![],
    ))
}

/// A fresh, empty scratch directory for one test.
pub fn scratch(test: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("kuaxin-onnx")
        .join(test);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
