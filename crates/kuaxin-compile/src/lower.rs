//! The graph walker: binds values by name, visits nodes in dependency order and calls each
//! op's lowering. Subgraphs (If, Loop, Scan) are walked with a nested scope.
use crate::ops::{registry, LowerFn};
use crate::trace::Trace;
use crate::value::{TVal, Value};
use kuaxin_core::graph::{Graph, Node};
use kuaxin_core::{Error, Result};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The lowering context every op receives: the trace plus where we are in the model.
pub struct Cx<'t, 'a> {
    pub trace: &'t mut Trace<'a>,
    /// Default-domain opset the model was written for.
    pub opset: i64,
    scopes: Vec<HashMap<String, Value>>,
}

impl<'t, 'a> Cx<'t, 'a> {
    pub fn new(trace: &'t mut Trace<'a>, opset: i64) -> Self {
        Cx {
            trace,
            opset,
            scopes: vec![HashMap::new()],
        }
    }

    pub fn bind(&mut self, name: &str, v: Value) {
        if let Some(s) = self.scopes.last_mut() {
            s.insert(name.to_string(), v);
        }
    }

    pub fn lookup(&self, name: &str) -> Option<&Value> {
        self.scopes.iter().rev().find_map(|s| s.get(name))
    }

    fn visible_names(&self) -> HashSet<String> {
        self.scopes.iter().flat_map(|s| s.keys().cloned()).collect()
    }

    /// Runs a graph whose inputs are already bound (in the current scope), returning its outputs.
    pub fn run_graph(&mut self, graph: &Graph) -> Result<Vec<Value>> {
        for (name, t) in &graph.initializers {
            // ONNX lets a graph input override an initializer of the same name.
            if self.scopes.last().is_none_or(|s| !s.contains_key(name)) {
                self.bind(
                    name,
                    Value::Tensor(TVal {
                        ty: kuaxin_core::prim::TensorType::new(t.dtype(), t.shape.clone()),
                        src: crate::value::Src::Const(t.clone()),
                    }),
                );
            }
        }
        let outer = self.visible_names();
        let order = graph.topo_order(&outer)?;
        let reg = registry();
        for i in order {
            let node = &graph.nodes[i];
            self.run_node(node, reg)
                .map_err(|e| e.context(node.describe()))?;
        }
        graph
            .outputs
            .iter()
            .map(|o| {
                self.lookup(&o.name).cloned().ok_or_else(|| {
                    Error::invalid(format!("graph output '{}' was not computed", o.name))
                })
            })
            .collect()
    }

    /// Runs a subgraph in a fresh scope with its inputs bound to `args`.
    pub fn run_subgraph(&mut self, graph: &Graph, args: Vec<Value>) -> Result<Vec<Value>> {
        if args.len() > graph.inputs.len() {
            return Err(Error::invalid(format!(
                "subgraph '{}' takes {} inputs, given {}",
                graph.name,
                graph.inputs.len(),
                args.len()
            )));
        }
        self.scopes.push(HashMap::new());
        for (vi, a) in graph.inputs.iter().zip(args) {
            self.bind(&vi.name, a);
        }
        let out = self.run_graph(graph);
        self.scopes.pop();
        out
    }

    fn run_node(&mut self, node: &Node, reg: &HashMap<&'static str, LowerFn>) -> Result<()> {
        // ai.onnx.preview holds ops on their way into the default domain (FlexAttention).
        if !(node.domain.is_empty() || node.domain == "ai.onnx" || node.domain == "ai.onnx.preview")
        {
            return Err(Error::unsupported(format!(
                "op domain '{}' is not supported",
                node.domain
            )));
        }
        let lower = reg
            .get(node.op_type.as_str())
            .ok_or_else(|| Error::unsupported(format!("op {} is not supported", node.op_type)))?;
        let inputs: Vec<Option<Value>> = node
            .inputs
            .iter()
            .map(|n| {
                if n.is_empty() {
                    Ok(None)
                } else {
                    self.lookup(n)
                        .cloned()
                        .map(Some)
                        .ok_or_else(|| Error::invalid(format!("input '{n}' is not defined")))
                }
            })
            .collect::<Result<_>>()?;
        self.trace.origin = Arc::from(node.describe());
        let outputs = lower(self, node, &inputs)?;
        for (i, name) in node.outputs.iter().enumerate() {
            if name.is_empty() {
                continue;
            }
            match outputs.get(i) {
                Some(v) => self.bind(name, v.clone()),
                None => {
                    return Err(Error::unsupported(format!(
                        "output {i} ('{name}') is not produced by this lowering"
                    )))
                }
            }
        }
        Ok(())
    }
}
