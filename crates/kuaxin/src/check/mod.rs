//! `kuaxin check`: runs a model on several devices with the same inputs, compares every output
//! with a reference (a device, f64 on the CPU, or a saved bundle) using op-class tolerances,
//! and, when a device fails, compares node by node to name the first node that diverges.
//!
//! Everything here is a library call returning a [`CheckReport`]; the command prints it
//! ([`table`]), and writes it as JSON ([`json`]) and as a self-contained HTML page
//! ([`report_html`]).
pub mod bisect;
pub mod graph_views;
pub mod inputs;
pub mod json;
pub mod measure;
pub mod perturb;
pub mod promote;
pub mod reference;
pub mod report_html;
pub mod table;

use crate::compare::Metrics;
use crate::conformance::model_class;
use crate::coverage::{Coverage, Outcome};
use bisect::{trace_nodes, BisectMode, NodeContext, NodeStatus, NodeTrace};
use kuaxin_core::graph::Model;
use kuaxin_core::{Backend, HostValue, Result};
use measure::{aggregate, compare_outputs, timed_run, Latency, OutputCheck};
use reference::{reference_values, run_reference, Reference};
use std::collections::HashMap;
use std::sync::Arc;

pub use reference::Reference as CheckReference;

#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Device names; each is opened with `open_device`.
    pub devices: Vec<String>,
    pub reference: Reference,
    /// Timed runs after the first, per device.
    pub iters: usize,
    pub bisect_mode: BisectMode,
    /// Compare node by node even when a device passes (the HTML report's per-node plot).
    pub node_trace_always: bool,
    /// The planted fault: the name of a node whose output the devices perturb.
    pub perturb: Option<String>,
    pub threads: Option<usize>,
}

impl CheckOptions {
    pub fn new(devices: Vec<String>, reference: Reference) -> CheckOptions {
        CheckOptions { devices, reference, iters: 10, bisect_mode: BisectMode::Isolated, node_trace_always: false, perturb: None, threads: None }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// The device could not run the model.
    Error,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Error => "ERROR",
        }
    }
}

#[derive(Debug, Clone)]
pub struct DeviceReport {
    pub device: String,
    pub verdict: Verdict,
    /// The run error, for `Verdict::Error`.
    pub error: Option<String>,
    pub outputs: Vec<OutputCheck>,
    /// All outputs together (see [`measure::aggregate`]).
    pub summary: Metrics,
    pub latency: Option<Latency>,
    /// Reference latency over this device's (when the reference is timed).
    pub speedup: Option<f64>,
    pub instructions: usize,
    pub host_ops: Vec<String>,
    pub nodes: Option<NodeTrace>,
}

#[derive(Debug, Clone)]
pub struct CheckReport {
    pub model: String,
    pub reference: String,
    pub reference_is_f64: bool,
    /// The device speed-ups are measured against.
    pub baseline: Option<String>,
    pub reference_latency: Option<Latency>,
    /// `NAME: f32[1, 128]` for each input.
    pub inputs: Vec<String>,
    pub devices: Vec<DeviceReport>,
    /// Op types of the model, for the coverage matrix.
    pub ops: Vec<String>,
    pub perturbed: Option<String>,
}

impl CheckReport {
    /// 0 when every device is within tolerance, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        if self.devices.iter().all(|d| d.verdict == Verdict::Pass) {
            0
        } else {
            1
        }
    }

    /// With the f64 reference: the device with the smallest NMSE.
    pub fn closest_to_f64(&self) -> Option<&DeviceReport> {
        if !self.reference_is_f64 {
            return None;
        }
        self.devices.iter().filter(|d| d.verdict != Verdict::Error).min_by(|a, b| a.summary.nmse.total_cmp(&b.summary.nmse))
    }

    /// Op x device coverage of the model, from the node-by-node comparisons.
    pub fn coverage(&self) -> Coverage {
        let mut cov = Coverage::new(self.devices.iter().map(|d| d.device.clone()).collect());
        for op in &self.ops {
            cov.add_op(op);
        }
        for (i, d) in self.devices.iter().enumerate() {
            for n in d.nodes.iter().flat_map(|t| &t.nodes) {
                let outcome = match n.status {
                    NodeStatus::Pass if n.on_host => Outcome::Host,
                    NodeStatus::Pass => Outcome::Pass,
                    NodeStatus::Fail | NodeStatus::Error => Outcome::Fail,
                    NodeStatus::Unsupported => Outcome::Unsupported,
                    NodeStatus::NoReference => continue,
                };
                cov.record(&n.op_type, i, outcome);
            }
        }
        cov
    }
}

fn describe_values(v: &[(String, HostValue)]) -> Vec<String> {
    v.iter().map(|(n, v)| format!("{n}: {}", v.describe())).collect()
}

/// Largest input, as the accumulation length of a whole model's tolerance (as the
/// conformance harness does for its test models).
fn acc_len(inputs: &[(String, HostValue)]) -> usize {
    inputs.iter().filter_map(|(_, v)| v.as_tensor().map(|t| t.numel())).max().unwrap_or(1)
}

/// Checks `model` on every device of `opts` with `inputs` (already complete: see
/// [`inputs::resolve_inputs`]). Errors are usage or load errors (a device that cannot be
/// opened, a reference that cannot run); a device failing to run the model is a verdict.
pub fn run_check(model: &Model, inputs: &[(String, HostValue)], opts: &CheckOptions) -> Result<CheckReport> {
    let model = graph_views::live(model);
    if let Some(p) = &opts.perturb {
        perturb::perturb_patch(&model, p)?;
    }
    let devices: Vec<(String, Arc<dyn Backend>)> =
        opts.devices.iter().map(|d| Ok((d.clone(), crate::open_device(d, opts.threads)?))).collect::<Result<_>>()?;
    let reference = run_reference(&opts.reference, &model, inputs, opts.iters, opts.threads)?;
    let class = model_class(&model);
    let acc = acc_len(inputs);
    let mut reports = Vec::new();
    let runnable = perturb::perturb_if_present(&model, opts.perturb.as_deref())?;
    for (name, device) in &devices {
        let session = crate::Session::new(runnable.clone(), device.clone())?;
        let mut r = DeviceReport {
            device: name.clone(),
            verdict: Verdict::Pass,
            error: None,
            outputs: vec![],
            summary: Metrics::default(),
            latency: None,
            speedup: None,
            instructions: 0,
            host_ops: vec![],
            nodes: None,
        };
        match timed_run(&session, inputs, opts.iters) {
            Err(e) => {
                r.verdict = Verdict::Error;
                r.error = Some(e.to_string());
            }
            Ok((out, latency)) => {
                r.outputs = compare_outputs(&out, &|n| reference.outputs.get(n).cloned(), class, acc);
                r.summary = aggregate(&r.outputs);
                r.latency = Some(latency);
                let stats = session.last_stats();
                r.instructions = stats.instructions;
                r.host_ops = stats.host_ops;
                if !r.outputs.iter().all(|o| o.passed()) {
                    r.verdict = Verdict::Fail;
                }
            }
        }
        reports.push(r);
    }
    let need_nodes = opts.node_trace_always || reports.iter().any(|r| r.verdict != Verdict::Pass);
    if need_nodes {
        let values: HashMap<String, HostValue> = reference_values(&opts.reference, &model, inputs, opts.threads)?;
        let cx = NodeContext {
            model: &model,
            inputs,
            reference: &values,
            perturb: opts.perturb.as_deref(),
            host: Arc::new(kuaxin_cpu::CpuBackend::new(opts.threads)?),
        };
        for (r, (_, device)) in reports.iter_mut().zip(&devices) {
            if opts.node_trace_always || r.verdict != Verdict::Pass {
                r.nodes = Some(trace_nodes(&cx, device, opts.bisect_mode)?);
            }
        }
    }
    // Speed-ups against the reference device, else against `cpu` or the first device.
    let (baseline, base_ms) = match (&opts.reference, &reference.latency) {
        (Reference::Device(d), Some(l)) => (Some(d.clone()), Some(l.median_ms)),
        _ => {
            let b = reports.iter().find(|r| r.device == "cpu").or(reports.first());
            (b.map(|r| r.device.clone()), b.and_then(|r| r.latency.as_ref().map(|l| l.median_ms)))
        }
    };
    for r in &mut reports {
        if let (Some(base), Some(l)) = (base_ms, &r.latency) {
            r.speedup = Some(base / l.median_ms.max(1e-9));
        }
    }
    let mut hist = std::collections::BTreeMap::new();
    model.graph.op_histogram(&mut hist);
    Ok(CheckReport {
        model: model.source.clone(),
        reference: opts.reference.describe(),
        reference_is_f64: opts.reference.is_f64(),
        baseline,
        reference_latency: reference.latency,
        inputs: describe_values(inputs),
        devices: reports,
        ops: hist.into_keys().collect(),
        perturbed: opts.perturb.clone(),
    })
}

/// The reference's value of every input and node output, for `--save-reference` bundles
/// (tensors only).
pub fn reference_bundle(model: &Model, inputs: &[(String, HostValue)], reference: &Reference, threads: Option<usize>) -> Result<Vec<(String, kuaxin_core::Tensor)>> {
    let model = graph_views::live(model);
    let values = reference_values(reference, &model, inputs, threads)?;
    // Inputs as given (the f64 reference holds promoted copies).
    let mut out: Vec<(String, kuaxin_core::Tensor)> = inputs.iter().filter_map(|(n, v)| v.as_tensor().map(|t| (n.clone(), t.clone()))).collect();
    for n in graph_views::node_values(&model)? {
        if let Some(HostValue::Tensor(t)) = values.get(&n) {
            out.push((n, t.clone()));
        }
    }
    Ok(out)
}
