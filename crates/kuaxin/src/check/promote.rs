//! The f64 reference as a graph transformation: every float value of a model becomes f64.
//!
//! Float initializers, declared float inputs and outputs, `Constant` values, float `Cast`
//! targets and float dtype attributes (including the ones that default to f32 when absent:
//! window functions, `RandomNormal`, `ConstantOfShape`) are promoted, in subgraphs too.
//! `CastLike` follows its (promoted) second input. Integer and bool computation is unchanged.
//! Nodes and initializers are rewritten through a [`GraphPatch`]; declared types, which a
//! patch does not cover, are promoted alongside.
use kuaxin_core::graph::{Attr, Graph, Model, Node, ValueInfo, ValueType};
use kuaxin_core::patch::GraphPatch;
use kuaxin_core::{DType, Tensor};
use std::sync::Arc;

/// ONNX dtype codes of float types (FLOAT, FLOAT16, BFLOAT16) and of DOUBLE.
const FLOAT_CODES: [i64; 3] = [1, 10, 16];
const DOUBLE: i64 = 11;

/// Integer attributes that name an output dtype.
const DTYPE_ATTRS: [&str; 4] = ["to", "dtype", "output_datatype", "output_dtype"];

/// Ops whose output dtype attribute defaults to FLOAT when absent.
const DEFAULT_FLOAT: [(&str, &str); 6] = [
    ("HannWindow", "output_datatype"),
    ("HammingWindow", "output_datatype"),
    ("BlackmanWindow", "output_datatype"),
    ("MelWeightMatrix", "output_datatype"),
    ("RandomNormal", "dtype"),
    ("RandomUniform", "dtype"),
];

fn promote_tensor(t: &Arc<Tensor>) -> Option<Arc<Tensor>> {
    (t.dtype().is_float() && t.dtype() != DType::F64).then(|| Arc::new(t.cast(DType::F64)))
}

fn promote_type(ty: &ValueType) -> ValueType {
    match ty {
        ValueType::Tensor { dtype, shape } if dtype.is_float() => ValueType::Tensor {
            dtype: DType::F64,
            shape: shape.clone(),
        },
        ValueType::Sequence(t) => ValueType::Sequence(Box::new(promote_type(t))),
        ValueType::Optional(t) => ValueType::Optional(Box::new(promote_type(t))),
        other => other.clone(),
    }
}

fn promote_infos(v: &[ValueInfo]) -> Vec<ValueInfo> {
    v.iter()
        .map(|vi| ValueInfo {
            name: vi.name.clone(),
            ty: promote_type(&vi.ty),
        })
        .collect()
}

fn promote_attr(name: &str, a: &Attr) -> Option<Attr> {
    match a {
        Attr::Int(code) if DTYPE_ATTRS.contains(&name) && FLOAT_CODES.contains(code) => {
            Some(Attr::Int(DOUBLE))
        }
        Attr::Tensor(t) => promote_tensor(t).map(Attr::Tensor),
        Attr::Tensors(ts) if ts.iter().any(|t| promote_tensor(t).is_some()) => Some(Attr::Tensors(
            ts.iter()
                .map(|t| promote_tensor(t).unwrap_or_else(|| t.clone()))
                .collect(),
        )),
        Attr::Type(ty) => Some(Attr::Type(promote_type(ty))),
        Attr::Graph(g) => Some(Attr::Graph(Arc::new(promote_graph(g)))),
        Attr::Graphs(gs) => Some(Attr::Graphs(
            gs.iter().map(|g| Arc::new(promote_graph(g))).collect(),
        )),
        _ => None,
    }
}

/// The promoted node, or `None` when it has nothing to promote.
fn promote_node(n: &Node) -> Option<Node> {
    let mut out = n.clone();
    let mut changed = false;
    for (k, a) in &n.attrs {
        if let Some(p) = promote_attr(k, a) {
            out.attrs.insert(k.clone(), p);
            changed = true;
        }
    }
    if n.op_type == "Constant" {
        let floats = match (n.attr("value_float"), n.attr("value_floats")) {
            (Some(Attr::Float(v)), _) => Some(Tensor::scalar(*v as f64)),
            (_, Some(Attr::Floats(v))) => {
                Tensor::from_vec(vec![v.len()], v.iter().map(|&x| x as f64).collect()).ok()
            }
            _ => None,
        };
        if let Some(t) = floats {
            out.attrs.remove("value_float");
            out.attrs.remove("value_floats");
            out.attrs.insert("value".into(), Attr::Tensor(Arc::new(t)));
            changed = true;
        }
    }
    if n.op_type == "ConstantOfShape" && n.attr("value").is_none() {
        out.attrs.insert(
            "value".into(),
            Attr::Tensor(Arc::new(Tensor::zeros(DType::F64, vec![1]))),
        );
        changed = true;
    }
    for (op, attr) in DEFAULT_FLOAT {
        if n.op_type == op && n.attr(attr).is_none() {
            out.attrs.insert(attr.into(), Attr::Int(DOUBLE));
            changed = true;
        }
    }
    changed.then_some(out)
}

/// The patch that promotes a graph's nodes and initializers (declared types aside).
pub fn promotion_patch(g: &Graph) -> GraphPatch {
    let mut patch = GraphPatch::default();
    for (i, n) in g.nodes.iter().enumerate() {
        if let Some(p) = promote_node(n) {
            patch.remove_nodes.insert(i);
            patch.add_nodes.push(p);
        }
    }
    patch.add_initializers = g
        .initializers
        .iter()
        .filter_map(|(n, t)| promote_tensor(t).map(|p| (n.clone(), p)))
        .collect();
    patch
}

fn promote_graph(g: &Graph) -> Graph {
    let mut out = g.clone();
    out.apply(promotion_patch(g));
    out.inputs = promote_infos(&g.inputs);
    out.outputs = promote_infos(&g.outputs);
    out.value_info = promote_infos(&g.value_info);
    out
}

/// The model with all float computation in f64.
pub fn promote_to_f64(model: &Model) -> Model {
    Model {
        graph: promote_graph(&model.graph),
        ..model.clone()
    }
}

/// Inputs for the promoted model: float tensors become f64.
pub fn promote_value(v: &kuaxin_core::HostValue) -> kuaxin_core::HostValue {
    use kuaxin_core::HostValue as H;
    match v {
        H::Tensor(t) if t.dtype().is_float() => H::Tensor(t.cast(DType::F64)),
        H::Tensor(t) => H::Tensor(t.clone()),
        H::Sequence(s) => H::Sequence(s.iter().map(promote_value).collect()),
        H::Optional(o) => H::Optional(o.as_ref().map(|v| Box::new(promote_value(v)))),
    }
}
