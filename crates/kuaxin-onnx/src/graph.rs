//! `GraphProto` / `NodeProto` -> [`Graph`] / [`Node`]: a field-by-field translation.
//!
//! Only what the proto itself gets wrong is checked here (empty op types, duplicate
//! names, bad tensors and types); whether the graph is a well-formed DAG is
//! [`crate::validate`]'s job, and whether ops and domains exist is the compiler's.
use crate::attr::convert_attr;
use crate::external::ExternalFiles;
use crate::proto::{GraphProto, NodeProto, ValueInfoProto};
use crate::tensor::convert_tensor;
use crate::types::value_info;
use kuaxin_core::error::ResultExt;
use kuaxin_core::graph::{Graph, Node, ValueInfo, ValueType};
use kuaxin_core::{Error, Result};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// The default-domain spellings: "" and "ai.onnx" mean the same op set; kuaxin uses "".
pub(crate) fn normalize_domain(d: &str) -> String {
    if d == "ai.onnx" {
        String::new()
    } else {
        d.to_string()
    }
}

/// Converts a graph (and, through attributes, its subgraphs). Errors name the value,
/// node or initializer at fault; the caller names the graph or file.
pub(crate) fn convert_graph(g: &GraphProto, ext: &ExternalFiles) -> Result<Graph> {
    if let Some(s) = g.sparse_initializer.first() {
        let name = s.values.as_ref().map(|v| v.name()).unwrap_or("");
        return Err(Error::unsupported(format!(
            "sparse initializer '{name}' is not supported"
        )));
    }
    let mut seen = HashSet::new();
    let mut initializers = Vec::with_capacity(g.initializer.len());
    for t in &g.initializer {
        if t.name().is_empty() {
            return Err(Error::invalid("an initializer has no name"));
        }
        if !seen.insert(t.name()) {
            return Err(Error::invalid(format!(
                "initializer '{}' is defined twice",
                t.name()
            )));
        }
        let tensor = convert_tensor(t, ext)?;
        initializers.push((t.name().to_string(), Arc::new(tensor)));
    }
    let inputs = declared_values(&g.input, "input")?;
    let outputs = declared_values(&g.output, "output")?;
    // value_info only hints at intermediate types: one kuaxin cannot represent (a map, a
    // string tensor) is dropped to Unknown rather than failing a model that may never use it.
    let mut hints = Vec::with_capacity(g.value_info.len());
    for v in &g.value_info {
        match value_info(v) {
            Err(e) if e.is_unsupported() => hints.push(ValueInfo {
                name: v.name().to_string(),
                ty: ValueType::Unknown,
            }),
            r => hints.push(r?),
        }
    }
    let nodes = g
        .node
        .iter()
        .map(|n| convert_node(n, ext))
        .collect::<Result<Vec<_>>>()?;
    Ok(Graph {
        name: g.name().to_string(),
        nodes,
        inputs,
        outputs,
        initializers,
        value_info: hints,
    })
}

/// Graph inputs or outputs: named, each name once.
fn declared_values(vs: &[ValueInfoProto], what: &str) -> Result<Vec<ValueInfo>> {
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(vs.len());
    for v in vs {
        if v.name().is_empty() {
            return Err(Error::invalid(format!("a graph {what} has no name")));
        }
        if !seen.insert(v.name()) {
            return Err(Error::invalid(format!(
                "graph {what} '{}' is declared twice",
                v.name()
            )));
        }
        out.push(value_info(v).with_ctx(|| format!("graph {what}"))?);
    }
    Ok(out)
}

/// Converts one node; errors are prefixed with [`Node::describe`].
fn convert_node(n: &NodeProto, ext: &ExternalFiles) -> Result<Node> {
    let mut node = Node {
        name: n.name().to_string(),
        op_type: n.op_type().to_string(),
        domain: normalize_domain(n.domain()),
        inputs: n.input.clone(),
        outputs: n.output.clone(),
        attrs: BTreeMap::new(),
    };
    if node.op_type.is_empty() {
        return Err(Error::invalid(format!(
            "{}: op_type is empty",
            node.describe()
        )));
    }
    for a in &n.attribute {
        let name = a.name();
        if name.is_empty() {
            return Err(Error::invalid(format!(
                "{}: an attribute has no name",
                node.describe()
            )));
        }
        if node.attrs.contains_key(name) {
            return Err(Error::invalid(format!(
                "{}: attribute '{name}' appears twice",
                node.describe()
            )));
        }
        let value =
            convert_attr(a, ext).with_ctx(|| format!("{}: attribute '{name}'", node.describe()))?;
        node.attrs.insert(name.to_string(), value);
    }
    Ok(node)
}
