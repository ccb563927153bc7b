//! Building a [`Model`] in code: front ends that do not parse a graph file (the built-in demo,
//! Hugging Face checkpoints) describe their model as ONNX-style nodes through this.
use crate::dtype::DType;
use crate::graph::{Attr, Dim, Graph, Model, Node, ValueInfo, ValueType};
use crate::tensor::{Data, Tensor};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// The default-domain opset built graphs are written against (Attention, RotaryEmbedding,
/// RMSNormalization and TensorScatter need 23/24).
pub const BUILDER_OPSET: i64 = 24;

pub struct GraphBuilder {
    g: Graph,
    n: usize,
    /// Names of the constants added so far (lookups stay O(1) in models with many weights).
    constants: HashSet<String>,
}

impl GraphBuilder {
    pub fn new(name: &str) -> Self {
        GraphBuilder {
            g: Graph {
                name: name.into(),
                ..Default::default()
            },
            n: 0,
            constants: HashSet::new(),
        }
    }

    /// Adds a node with one output and returns the output's (fresh) name.
    pub fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.node_n(op, inputs, attrs, 1).remove(0)
    }

    /// Adds a node with `outputs` outputs and returns their fresh names.
    pub fn node_n(
        &mut self,
        op: &str,
        inputs: &[&str],
        attrs: Vec<(&str, Attr)>,
        outputs: usize,
    ) -> Vec<String> {
        self.n += 1;
        let base = format!("{}_{}", op.to_lowercase(), self.n);
        let outs: Vec<String> = (0..outputs)
            .map(|i| {
                if i == 0 {
                    base.clone()
                } else {
                    format!("{base}:{i}")
                }
            })
            .collect();
        self.g.nodes.push(Node {
            name: format!("{op}_{}", self.n),
            op_type: op.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outs.clone(),
            attrs: attrs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<BTreeMap<_, _>>(),
        });
        outs
    }

    /// Renames the last node's first output (for readable names of graph outputs).
    pub fn rename_last_output(&mut self, name: &str) -> String {
        if let Some(n) = self.g.nodes.last_mut() {
            n.outputs[0] = name.into();
        }
        name.into()
    }

    /// Adds a constant tensor and returns its name.
    pub fn constant(&mut self, name: &str, t: impl Into<Arc<Tensor>>) -> String {
        self.constants.insert(name.into());
        self.g.initializers.push((name.into(), t.into()));
        name.into()
    }

    pub fn has_constant(&self, name: &str) -> bool {
        self.constants.contains(name)
    }

    /// An i64 vector constant (shapes, axes, indices).
    pub fn ints(&mut self, name: &str, v: &[i64]) -> String {
        self.constant(
            name,
            Tensor {
                shape: vec![v.len()],
                data: Data::I64(v.to_vec()),
            },
        )
    }

    /// A one-element constant of `dtype` (shape `[1]`, broadcasts).
    pub fn scalar(&mut self, name: &str, dtype: DType, v: f64) -> String {
        self.constant(name, Tensor::full(dtype, vec![1], v))
    }

    pub fn input(&mut self, name: &str, dtype: DType, dims: Vec<Dim>) -> String {
        self.g.inputs.push(ValueInfo {
            name: name.into(),
            ty: ValueType::Tensor {
                dtype,
                shape: Some(dims),
            },
        });
        name.into()
    }

    pub fn output(&mut self, name: &str, dtype: DType, dims: Option<Vec<Dim>>) {
        self.g.outputs.push(ValueInfo {
            name: name.into(),
            ty: ValueType::Tensor { dtype, shape: dims },
        });
    }

    pub fn finish(self, producer: &str, source: &str) -> Model {
        let mut opsets = BTreeMap::new();
        opsets.insert(String::new(), BUILDER_OPSET);
        Model {
            graph: self.g,
            opsets,
            producer: producer.into(),
            source: source.into(),
        }
    }
}
