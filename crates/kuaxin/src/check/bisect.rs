//! Node-by-node comparison of a device with the reference, naming the first node that diverges.
//!
//! - isolated (default): every node runs alone on the device, fed the reference's values for its
//!   inputs, so an error is pinned to the op that made it;
//! - cumulative: the device runs the whole model and each node's own output is compared, so
//!   errors carried forward from earlier nodes count.
//!
//! Each node's outputs are compared with the tolerance of its op class. The report names the
//! fused kernels a node ran in: the `Prim::Fused` instructions and products' epilogues of the
//! device's whole-model program whose `Kernel::origins` hold the node (none: the node ran
//! unfused, as its own primitive instructions).
use super::graph_views::{expose, node_order, node_reads, node_values, single_node_model};
use super::measure::{compare_tensor, flatten};
use super::perturb::perturb_if_present;
use crate::compare::{op_class, Metrics, OpClass};
use crate::session::Session;
use kuaxin_compile::program::{Instr, Program};
use kuaxin_compile::{compile_and_run, Src};
use kuaxin_core::graph::{Model, Node};
use kuaxin_core::kernel::Kernel;
use kuaxin_core::prim::Prim;
use kuaxin_core::{Backend, DType, Error, HostValue, Result};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BisectMode {
    Isolated,
    Cumulative,
}

impl BisectMode {
    pub fn parse(s: &str) -> Result<BisectMode> {
        match s {
            "isolated" => Ok(BisectMode::Isolated),
            "cumulative" => Ok(BisectMode::Cumulative),
            _ => Err(Error::invalid(format!(
                "--bisect-mode '{s}': use isolated or cumulative"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            BisectMode::Isolated => "isolated",
            BisectMode::Cumulative => "cumulative",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    Pass,
    /// Outside its op's tolerance.
    Fail,
    /// The device (or the lowering) does not support it.
    Unsupported,
    /// Running it failed.
    Error,
    /// No reference value for an input or output.
    NoReference,
}

impl NodeStatus {
    pub fn name(self) -> &'static str {
        match self {
            NodeStatus::Pass => "pass",
            NodeStatus::Fail => "FAIL",
            NodeStatus::Unsupported => "unsupported",
            NodeStatus::Error => "ERROR",
            NodeStatus::NoReference => "no reference",
        }
    }
    pub fn diverges(self) -> bool {
        matches!(
            self,
            NodeStatus::Fail | NodeStatus::Unsupported | NodeStatus::Error
        )
    }
}

#[derive(Debug, Clone)]
pub struct NodeCheck {
    /// Position in dependency order.
    pub index: usize,
    pub name: String,
    pub op_type: String,
    /// `name: f32[1, 128, 384]` for each value the node read.
    pub inputs: Vec<String>,
    pub status: NodeStatus,
    pub message: String,
    /// Worst output of the node (largest NMSE).
    pub metrics: Option<Metrics>,
    /// Whether part of it ran on the host.
    pub on_host: bool,
    /// The primitive instructions it lowered to (isolated mode, and the first divergence);
    /// a fused group of them shows as its kernel's name.
    pub kernel: Vec<String>,
    /// The fused kernels of the device's whole-model program that hold this node, in program
    /// order (a node may lower to several); empty when it ran unfused.
    pub fused: Vec<Arc<Kernel>>,
    /// The row primitives of that program that run this node (`SoftmaxRows`,
    /// `LayerNormRows`: fusion's replacement for a whole normalisation).
    pub rows: Vec<String>,
}

impl NodeCheck {
    /// The kernels and row primitives it ran in, by name: `k3_mul, SoftmaxRows`, or
    /// `(unfused)`.
    pub fn kernel_names(&self) -> String {
        let names: Vec<&str> = self
            .fused
            .iter()
            .map(|k| k.name.as_str())
            .chain(self.rows.iter().map(|r| r.as_str()))
            .collect();
        if names.is_empty() {
            "(unfused)".into()
        } else {
            names.join(", ")
        }
    }
}

/// The row primitives of a program, in program order: each one's name and a node it
/// replaced (`node 'x' (Softmax)`), once per node (a masked softmax runs three).
pub fn program_row_ops(p: &Program) -> Vec<(String, String)> {
    p.instrs
        .iter()
        .filter(|i| i.prim.is_row_op())
        .flat_map(|i| {
            i.origin
                .split(kuaxin_compile::program::ORIGINS_JOINED_BY)
                .map(|o| (i.prim.name(), o.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The fused kernels of a program, in program order: the `Fused` instructions and the
/// epilogues of products (`ConvEpilogue`, `MatMulEpilogue`), whose origins name the product's
/// node first and then the nodes the epilogue computes.
pub fn program_kernels(p: &Program) -> Vec<Arc<Kernel>> {
    p.instrs
        .iter()
        .filter_map(|i| i.prim.kernel().cloned())
        .collect()
}

/// The kernels among `kernels` that hold `node` (whose origins name its `describe()`).
pub fn kernels_of(node: &Node, kernels: &[Arc<Kernel>]) -> Vec<Arc<Kernel>> {
    let d = node.describe();
    kernels
        .iter()
        .filter(|k| k.origins.contains(&d))
        .cloned()
        .collect()
}

#[derive(Debug, Clone)]
pub struct NodeTrace {
    pub mode: BisectMode,
    pub nodes: Vec<NodeCheck>,
    /// Index into `nodes` of the first node that diverges.
    pub first_divergence: Option<usize>,
    /// Why the trace is partial (the device could not run the whole model, ...).
    pub note: Option<String>,
}

/// What a node-by-node comparison needs besides the device.
pub struct NodeContext<'a> {
    /// The live model, unperturbed.
    pub model: &'a Model,
    pub inputs: &'a [(String, HostValue)],
    /// Reference values by name (node outputs and inputs).
    pub reference: &'a HashMap<String, HostValue>,
    pub perturb: Option<&'a str>,
    pub host: Arc<dyn Backend>,
}

fn src_type(p: &Program, s: &Src) -> String {
    match s {
        Src::Slot(i) => p
            .slot_types
            .get(*i)
            .map(|t| t.to_string())
            .unwrap_or_else(|| "?".into()),
        Src::Const(t) => format!("const {}", t.type_string()),
    }
}

/// One line per primitive instruction: `MatMul(f32[..], f32[..]) -> f32[..]`.
pub fn kernel_lines(p: &Program) -> Vec<String> {
    p.instrs
        .iter()
        .map(|i: &Instr| {
            let ins: Vec<String> = i.inputs.iter().map(|s| src_type(p, s)).collect();
            let outs: Vec<String> = i.out_types.iter().map(|t| t.to_string()).collect();
            let prim = match &i.prim {
                Prim::Fused(k) => format!("Fused kernel {}", k.name),
                p => format!("{p:?}"),
            };
            format!("{prim}({}) -> {}", ins.join(", "), outs.join(", "))
        })
        .collect()
}

fn describe_inputs(reads: &[(String, HostValue)]) -> Vec<String> {
    reads
        .iter()
        .map(|(n, v)| format!("{n}: {}", v.describe()))
        .collect()
}

/// Compares a node's outputs; returns the status, message and worst metrics.
fn compare_node(
    node: &Node,
    class: OpClass,
    got: &dyn Fn(&str) -> Option<HostValue>,
    reference: &HashMap<String, HostValue>,
    acc_len: usize,
) -> (NodeStatus, String, Option<Metrics>) {
    let mut worst: Option<Metrics> = None;
    let mut compared = 0;
    for out in node.outputs.iter().filter(|o| !o.is_empty()) {
        let (Some(g), Some(w)) = (got(out), reference.get(out)) else {
            continue;
        };
        let (mut gs, mut ws) = (Vec::new(), Vec::new());
        flatten(out, &g, &mut gs);
        flatten(out, w, &mut ws);
        if gs.len() != ws.len() {
            return (
                NodeStatus::Fail,
                format!(
                    "output '{out}': {} but the reference is {}",
                    g.describe(),
                    w.describe()
                ),
                worst,
            );
        }
        for ((n, gt), (_, wt)) in gs.iter().zip(&ws) {
            compared += 1;
            match compare_tensor(gt, wt, class, acc_len) {
                Err(e) => return (NodeStatus::Fail, format!("output '{n}': {e}"), worst),
                Ok((m, tol)) => {
                    if m.mismatches > 0 {
                        let (i, a, b) = m.first_mismatch.unwrap_or_default();
                        let msg = format!(
                            "output '{n}': {} of {} elements outside tolerance (first at {i}: got {a}, reference {b}; max abs {:.3e}, max rel {:.3e}; rtol {:.1e}, atol {:.1e})",
                            m.mismatches, gt.numel(), m.max_abs, m.max_rel, tol.rtol, tol.atol
                        );
                        return (NodeStatus::Fail, msg, Some(m));
                    }
                    if worst.as_ref().is_none_or(|w| m.nmse > w.nmse) {
                        worst = Some(m);
                    }
                }
            }
        }
    }
    if compared == 0 {
        return (
            NodeStatus::NoReference,
            "no reference value for its outputs".into(),
            None,
        );
    }
    (NodeStatus::Pass, String::new(), worst)
}

fn largest(reads: &[(String, HostValue)]) -> usize {
    reads
        .iter()
        .filter_map(|(_, v)| v.as_tensor().map(|t| t.numel()))
        .max()
        .unwrap_or(1)
}

/// Casts a reference value to the dtype the device uses for that value.
fn as_dtype(v: &HostValue, dtype: Option<DType>) -> HostValue {
    match (v, dtype) {
        (HostValue::Tensor(t), Some(d))
            if t.dtype() != d && t.dtype().is_float() && d.is_float() =>
        {
            HostValue::Tensor(t.cast(d))
        }
        _ => v.clone(),
    }
}

fn dtype_of(v: Option<&HostValue>) -> Option<DType> {
    v.and_then(|v| v.as_tensor()).map(|t| t.dtype())
}

fn error_status(e: &Error) -> NodeStatus {
    if e.is_unsupported() {
        NodeStatus::Unsupported
    } else {
        NodeStatus::Error
    }
}

fn new_check(index: usize, node: &Node) -> NodeCheck {
    NodeCheck {
        index,
        name: node.name.clone(),
        op_type: node.op_type.clone(),
        inputs: vec![],
        status: NodeStatus::Pass,
        message: String::new(),
        metrics: None,
        on_host: false,
        kernel: vec![],
        fused: vec![],
        rows: vec![],
    }
}

/// Runs `node` alone on `device` with the given input values.
pub fn run_node_alone(
    cx: &NodeContext,
    node: &Node,
    device: &dyn Backend,
    reads: &[(String, HostValue)],
) -> Result<(Program, HashMap<String, HostValue>)> {
    let m = perturb_if_present(&single_node_model(node, cx.model), cx.perturb)?;
    let (compiled, outs) = compile_and_run(&m, device, &*cx.host, reads, true)?;
    Ok((compiled.program, outs.into_iter().collect()))
}

/// The values `node` reads: initializers from the model, inputs as given, the rest from the
/// reference (cast to the device's dtype for that value). `None` names a value with no reference.
fn node_inputs(
    cx: &NodeContext,
    node: &Node,
    dtypes: &dyn Fn(&str) -> Option<DType>,
) -> std::result::Result<Vec<(String, HostValue)>, String> {
    node_reads(node)
        .into_iter()
        .map(|r| {
            let v = if let Some(t) = cx.model.graph.initializer(&r) {
                HostValue::Tensor((**t).clone())
            } else if let Some((_, v)) = cx.inputs.iter().find(|(n, _)| *n == r) {
                v.clone()
            } else {
                as_dtype(cx.reference.get(&r).ok_or_else(|| r.clone())?, dtypes(&r))
            };
            Ok((r, v))
        })
        .collect()
}

/// The device's own value of every node output (one run of the whole, perturbed model).
fn device_values(
    cx: &NodeContext,
    device: &Arc<dyn Backend>,
) -> Result<HashMap<String, HostValue>> {
    let m = perturb_if_present(cx.model, cx.perturb)?;
    let exposed = expose(&m, &node_values(cx.model)?);
    let session = Session::new(exposed, device.clone())?;
    let mut all: HashMap<String, HostValue> = session.run(cx.inputs)?.into_iter().collect();
    all.extend(cx.inputs.iter().cloned());
    Ok(all)
}

/// The node an error message names ("node 'x' (Op): ...").
fn node_in_error(nodes: &[&Node], e: &Error) -> Option<usize> {
    nodes
        .iter()
        .position(|n| e.message.starts_with(&n.describe()))
}

/// Compares `device` with the reference node by node. `kernels` and `rows` are the fused
/// kernels and row primitives of the device's whole-model program (see [`program_kernels`],
/// [`program_row_ops`]): each node is matched to those that hold it.
pub fn trace_nodes(
    cx: &NodeContext,
    device: &Arc<dyn Backend>,
    mode: BisectMode,
    (kernels, rows): (&[Arc<Kernel>], &[(String, String)]),
) -> Result<NodeTrace> {
    let nodes = node_order(cx.model)?;
    let (own, own_err) = match device_values(cx, device) {
        Ok(v) => (v, None),
        Err(e) => (HashMap::new(), Some(e)),
    };
    let mut trace = NodeTrace {
        mode,
        nodes: vec![],
        first_divergence: None,
        note: None,
    };
    if let Some(e) = &own_err {
        trace.note = Some(format!("the device could not run the whole model: {e}"));
    }
    let dtypes = |n: &str| dtype_of(own.get(n)).or_else(|| dtype_of(cx.reference.get(n)));
    match (mode, &own_err) {
        (BisectMode::Isolated, _) => {
            for (k, node) in nodes.iter().enumerate() {
                let mut c = new_check(k, node);
                match node_inputs(cx, node, &dtypes) {
                    Err(missing) => {
                        c.status = NodeStatus::NoReference;
                        c.message = format!("no reference value for input '{missing}'");
                    }
                    Ok(reads) => {
                        c.inputs = describe_inputs(&reads);
                        match run_node_alone(cx, node, &**device, &reads) {
                            Err(e) => {
                                c.status = error_status(&e);
                                c.message = e.to_string();
                            }
                            Ok((p, outs)) => {
                                c.kernel = kernel_lines(&p);
                                c.on_host = !p.host_ops.is_empty();
                                (c.status, c.message, c.metrics) = compare_node(
                                    node,
                                    op_class(&node.op_type),
                                    &|n| outs.get(n).cloned(),
                                    cx.reference,
                                    largest(&reads),
                                );
                            }
                        }
                    }
                }
                trace.nodes.push(c);
            }
        }
        (BisectMode::Cumulative, Some(e)) => {
            // Only the node the error names is known.
            if let Some(k) = node_in_error(&nodes, e) {
                let mut c = new_check(k, nodes[k]);
                c.status = error_status(e);
                c.message = e.to_string();
                trace.nodes.push(c);
            }
        }
        (BisectMode::Cumulative, None) => {
            // Errors carried forward keep the loosest class they passed through: a Reshape
            // after a MatMul moves MatMul-sized errors and is judged by the MatMul tolerance.
            let mut carried: HashMap<String, OpClass> = HashMap::new();
            for (k, node) in nodes.iter().enumerate() {
                let class = node_reads(node)
                    .iter()
                    .filter_map(|r| carried.get(r))
                    .fold(op_class(&node.op_type), |a, &b| a.max(b));
                for o in &node.outputs {
                    carried.insert(o.clone(), class);
                }
                let mut c = new_check(k, node);
                let reads: Vec<(String, HostValue)> = node_reads(node)
                    .into_iter()
                    .filter_map(|r| {
                        let v = own.get(&r).cloned().or_else(|| {
                            cx.model
                                .graph
                                .initializer(&r)
                                .map(|t| HostValue::Tensor((**t).clone()))
                        })?;
                        Some((r, v))
                    })
                    .collect();
                c.inputs = describe_inputs(&reads);
                (c.status, c.message, c.metrics) = compare_node(
                    node,
                    class,
                    &|n| own.get(n).cloned(),
                    cx.reference,
                    largest(&reads),
                );
                trace.nodes.push(c);
            }
        }
    }
    for c in &mut trace.nodes {
        c.fused = kernels_of(nodes[c.index], kernels);
        let own = nodes[c.index].describe();
        c.rows = rows
            .iter()
            .filter(|(_, origin)| *origin == own)
            .map(|(name, _)| name.clone())
            .collect();
    }
    trace.first_divergence = trace.nodes.iter().position(|c| c.status.diverges());
    // The kernel of the first divergence, also in cumulative mode.
    if let Some(i) = trace.first_divergence {
        if trace.nodes[i].kernel.is_empty() {
            let node = nodes[trace.nodes[i].index];
            if let Ok(reads) = node_inputs(cx, node, &dtypes) {
                if let Ok((p, _)) = run_node_alone(cx, node, &**device, &reads) {
                    trace.nodes[i].kernel = kernel_lines(&p);
                }
            }
        }
    }
    Ok(trace)
}
