//! The portable model graph: high-level ops with typed, possibly symbolic values.
//!
//! Front ends (ONNX, later Hugging Face checkpoints) produce a [`Model`]; the compiler lowers it
//! to primitives. Nodes are pure: every effect is an explicit input or output, which keeps
//! autodiff a graph transformation later.
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

/// One dimension: known, named (symbolic, e.g. `batch`), or unknown.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    Known(usize),
    Sym(String),
    Unknown,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Known(n) => write!(f, "{n}"),
            Dim::Sym(s) => f.write_str(s),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// The declared type of a graph value.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueType {
    /// `shape` is `None` when the rank is unknown.
    Tensor {
        dtype: DType,
        shape: Option<Vec<Dim>>,
    },
    Sequence(Box<ValueType>),
    Optional(Box<ValueType>),
    Unknown,
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueType::Tensor {
                dtype,
                shape: Some(s),
            } => {
                let dims: Vec<String> = s.iter().map(|d| d.to_string()).collect();
                write!(f, "{dtype}[{}]", dims.join(", "))
            }
            ValueType::Tensor { dtype, shape: None } => write!(f, "{dtype}[..]"),
            ValueType::Sequence(t) => write!(f, "seq<{t}>"),
            ValueType::Optional(t) => write!(f, "optional<{t}>"),
            ValueType::Unknown => f.write_str("?"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub ty: ValueType,
}

/// A node attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    Float(f32),
    Int(i64),
    String(Vec<u8>),
    Tensor(Arc<Tensor>),
    Graph(Arc<Graph>),
    Type(ValueType),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<Vec<u8>>),
    Tensors(Vec<Arc<Tensor>>),
    Graphs(Vec<Arc<Graph>>),
}

impl Attr {
    pub fn kind(&self) -> &'static str {
        match self {
            Attr::Float(_) => "float",
            Attr::Int(_) => "int",
            Attr::String(_) => "string",
            Attr::Tensor(_) => "tensor",
            Attr::Graph(_) => "graph",
            Attr::Type(_) => "type",
            Attr::Floats(_) => "floats",
            Attr::Ints(_) => "ints",
            Attr::Strings(_) => "strings",
            Attr::Tensors(_) => "tensors",
            Attr::Graphs(_) => "graphs",
        }
    }
}

/// A high-level op (e.g. an ONNX node). Empty input names mean "optional input not given".
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: BTreeMap<String, Attr>,
}

impl Node {
    /// "node 'name' (OpType)" for error messages.
    pub fn describe(&self) -> String {
        if self.name.is_empty() {
            format!("node ({}) -> {:?}", self.op_type, self.outputs)
        } else {
            format!("node '{}' ({})", self.name, self.op_type)
        }
    }
    fn attr_err(&self, name: &str, want: &str, got: &Attr) -> Error {
        // The graph walker prefixes errors with the node, so only the attribute is named here.
        Error::invalid(format!(
            "attribute '{name}' should be {want}, found {}",
            got.kind()
        ))
    }
    pub fn attr(&self, name: &str) -> Option<&Attr> {
        self.attrs.get(name)
    }
    pub fn attr_int(&self, name: &str) -> Result<Option<i64>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(*v)),
            Some(a) => Err(self.attr_err(name, "int", a)),
        }
    }
    pub fn int_or(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self.attr_int(name)?.unwrap_or(default))
    }
    pub fn attr_float(&self, name: &str) -> Result<Option<f32>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Float(v)) => Ok(Some(*v)),
            Some(Attr::Int(v)) => Ok(Some(*v as f32)),
            Some(a) => Err(self.attr_err(name, "float", a)),
        }
    }
    pub fn float_or(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self.attr_float(name)?.unwrap_or(default))
    }
    pub fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(Attr::Int(v)) => Ok(Some(vec![*v])),
            Some(a) => Err(self.attr_err(name, "ints", a)),
        }
    }
    pub fn attr_floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v.clone())),
            Some(Attr::Float(v)) => Ok(Some(vec![*v])),
            Some(a) => Err(self.attr_err(name, "floats", a)),
        }
    }
    pub fn attr_string(&self, name: &str) -> Result<Option<String>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::String(v)) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            Some(a) => Err(self.attr_err(name, "string", a)),
        }
    }
    pub fn string_or(&self, name: &str, default: &str) -> Result<String> {
        Ok(self
            .attr_string(name)?
            .unwrap_or_else(|| default.to_string()))
    }
    pub fn attr_tensor(&self, name: &str) -> Result<Option<Arc<Tensor>>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Tensor(t)) => Ok(Some(t.clone())),
            Some(a) => Err(self.attr_err(name, "tensor", a)),
        }
    }
    pub fn attr_graph(&self, name: &str) -> Result<Option<Arc<Graph>>> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Graph(g)) => Ok(Some(g.clone())),
            Some(a) => Err(self.attr_err(name, "graph", a)),
        }
    }
    /// Name of input `i`, or `None` when absent or empty (an omitted optional input).
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
    }
}

/// A graph: nodes in any order (see [`Graph::topo_order`]), named values.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    /// Constant tensors (weights), by name.
    pub initializers: Vec<(String, Arc<Tensor>)>,
    /// Declared intermediate types (hints; never trusted over concrete inputs).
    pub value_info: Vec<ValueInfo>,
}

/// A model: a graph plus the op-set versions it was written against.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub graph: Graph,
    /// Domain ("" = default ONNX domain) to version.
    pub opsets: BTreeMap<String, i64>,
    pub producer: String,
    /// Where it was loaded from, for messages.
    pub source: String,
}

impl Model {
    /// The default-domain opset version (the one ONNX ops are interpreted at).
    pub fn default_opset(&self) -> i64 {
        self.opsets
            .get("")
            .or_else(|| self.opsets.get("ai.onnx"))
            .copied()
            .unwrap_or(1)
    }
}

impl Graph {
    /// Node indices in an order where every node comes after the producers of its inputs.
    /// Names that are graph inputs, initializers, or in `outer` (values of enclosing graphs)
    /// need no producer. Fails on cycles and undefined inputs, naming the node.
    pub fn topo_order(&self, outer: &HashSet<String>) -> Result<Vec<usize>> {
        let mut producer: HashMap<&str, usize> = HashMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                if producer.insert(o.as_str(), i).is_some() {
                    return Err(Error::invalid(format!(
                        "{}: output '{o}' is produced by more than one node",
                        n.describe()
                    )));
                }
            }
        }
        let mut available: HashSet<&str> = self.inputs.iter().map(|v| v.name.as_str()).collect();
        available.extend(self.initializers.iter().map(|(n, _)| n.as_str()));
        // Kahn's algorithm over node dependencies (implicit inputs of subgraphs included).
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); self.nodes.len()];
        let mut indeg = vec![0usize; self.nodes.len()];
        for (i, n) in self.nodes.iter().enumerate() {
            let mut needed: Vec<String> =
                n.inputs.iter().filter(|s| !s.is_empty()).cloned().collect();
            for a in n.attrs.values() {
                match a {
                    Attr::Graph(g) => needed.extend(g.free_inputs()),
                    Attr::Graphs(gs) => gs.iter().for_each(|g| needed.extend(g.free_inputs())),
                    _ => {}
                }
            }
            let mut seen = HashSet::new();
            for name in needed {
                if !seen.insert(name.clone()) {
                    continue;
                }
                if let Some(&p) = producer.get(name.as_str()) {
                    if p == i {
                        return Err(Error::invalid(format!(
                            "{}: consumes its own output '{name}' (cycle)",
                            n.describe()
                        )));
                    }
                    deps[p].push(i);
                    indeg[i] += 1;
                } else if !available.contains(name.as_str()) && !outer.contains(&name) {
                    return Err(Error::invalid(format!(
                        "{}: input '{name}' is not defined by any node, input or initializer",
                        n.describe()
                    )));
                }
            }
        }
        let mut ready: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| indeg[i] == 0)
            .rev()
            .collect();
        let mut order = Vec::with_capacity(self.nodes.len());
        while let Some(i) = ready.pop() {
            order.push(i);
            for &j in deps[i].iter().rev() {
                indeg[j] -= 1;
                if indeg[j] == 0 {
                    ready.push(j);
                }
            }
        }
        if order.len() != self.nodes.len() {
            let stuck = (0..self.nodes.len())
                .find(|&i| indeg[i] > 0)
                .map(|i| self.nodes[i].describe());
            return Err(Error::invalid(format!(
                "graph '{}' has a cycle through {}",
                self.name,
                stuck.unwrap_or_default()
            )));
        }
        // Outputs must be defined too.
        for o in &self.outputs {
            if !producer.contains_key(o.name.as_str())
                && !available.contains(o.name.as_str())
                && !outer.contains(&o.name)
            {
                return Err(Error::invalid(format!(
                    "graph output '{}' is never defined",
                    o.name
                )));
            }
        }
        Ok(order)
    }

    /// Names a graph reads but does not define (captured from enclosing graphs).
    pub fn free_inputs(&self) -> Vec<String> {
        let mut defined: HashSet<String> = self.inputs.iter().map(|v| v.name.clone()).collect();
        defined.extend(self.initializers.iter().map(|(n, _)| n.clone()));
        for n in &self.nodes {
            defined.extend(n.outputs.iter().cloned());
        }
        let mut free = Vec::new();
        let mut seen = HashSet::new();
        let mut consider = |name: &String, free: &mut Vec<String>| {
            if !name.is_empty() && !defined.contains(name) && seen.insert(name.clone()) {
                free.push(name.clone());
            }
        };
        for n in &self.nodes {
            for i in &n.inputs {
                consider(i, &mut free);
            }
            for a in n.attrs.values() {
                let subs: Vec<&Arc<Graph>> = match a {
                    Attr::Graph(g) => vec![g],
                    Attr::Graphs(gs) => gs.iter().collect(),
                    _ => vec![],
                };
                for g in subs {
                    for f in g.free_inputs() {
                        consider(&f, &mut free);
                    }
                }
            }
        }
        for o in &self.outputs {
            consider(&o.name, &mut free);
        }
        free
    }

    pub fn initializer(&self, name: &str) -> Option<&Arc<Tensor>> {
        self.initializers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
    }

    /// Inputs that are not also initializers (ONNX allows initializers as overridable inputs).
    pub fn real_inputs(&self) -> Vec<&ValueInfo> {
        let inits: HashSet<&str> = self.initializers.iter().map(|(n, _)| n.as_str()).collect();
        self.inputs
            .iter()
            .filter(|v| !inits.contains(v.name.as_str()))
            .collect()
    }

    /// Total element count of the initializers.
    pub fn parameter_count(&self) -> usize {
        self.initializers.iter().map(|(_, t)| t.numel()).sum()
    }

    /// Op type histogram, including subgraphs.
    pub fn op_histogram(&self, into: &mut BTreeMap<String, usize>) {
        for n in &self.nodes {
            let key = if n.domain.is_empty() || n.domain == "ai.onnx" {
                n.op_type.clone()
            } else {
                format!("{}:{}", n.domain, n.op_type)
            };
            *into.entry(key).or_default() += 1;
            for a in n.attrs.values() {
                match a {
                    Attr::Graph(g) => g.op_histogram(into),
                    Attr::Graphs(gs) => gs.iter().for_each(|g| g.op_histogram(into)),
                    _ => {}
                }
            }
        }
    }
}
