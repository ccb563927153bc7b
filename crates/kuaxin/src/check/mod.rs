//! `kuaxin check`: runs a model on several devices with the same inputs, compares every output
//! with a reference (a device, f64 on the CPU, or a saved bundle) using op-class tolerances,
//! and, when a device fails, compares node by node to name the first node that diverges (and
//! the fused kernel it ran in). With `fusion_check`, each device also runs with kernel fusion
//! off, and its fused outputs are compared with the unfused ones.
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
use bisect::{
    program_kernels, program_row_ops, trace_nodes, BisectMode, NodeContext, NodeStatus, NodeTrace,
};
use kuaxin_core::graph::Model;
use kuaxin_core::kernel::Kernel;
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
    /// Also run each device with fusion off and compare fused against unfused outputs.
    pub fusion_check: bool,
}

impl CheckOptions {
    pub fn new(devices: Vec<String>, reference: Reference) -> CheckOptions {
        CheckOptions {
            devices,
            reference,
            iters: 10,
            bisect_mode: BisectMode::Isolated,
            node_trace_always: false,
            perturb: None,
            threads: None,
            fusion_check: false,
        }
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
    /// The fused kernels of the program the device ran (products' epilogues included), in
    /// program order.
    pub kernels: Vec<Arc<Kernel>>,
    /// Its row primitives (name, the node each replaced), in program order.
    pub row_ops: Vec<(String, String)>,
    pub nodes: Option<NodeTrace>,
    /// Fused against unfused on this device (with `fusion_check`).
    pub fusion: Option<FusionCheck>,
}

/// One device's fused outputs compared with its unfused outputs (same inputs, same device).
#[derive(Debug, Clone)]
pub struct FusionCheck {
    /// Pass: every output within the model's op-class tolerance; Error: a run failed.
    pub verdict: Verdict,
    pub error: Option<String>,
    /// Fused kernels and products' epilogues in the fused program (0: fusion found nothing to
    /// fuse on this device).
    pub kernels: usize,
    /// Instructions of the fused and the unfused program.
    pub fused_instructions: usize,
    pub unfused_instructions: usize,
    /// Each output of the fused run against the unfused run.
    pub outputs: Vec<OutputCheck>,
    pub summary: Metrics,
    /// Median latency with fusion off (the fused latency is the device's).
    pub unfused_latency: Option<Latency>,
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
    /// 0 when every device is within tolerance (and, with the fusion check, agrees fused with
    /// unfused), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        let fusion_ok =
            |d: &DeviceReport| d.fusion.as_ref().is_none_or(|f| f.verdict == Verdict::Pass);
        if self
            .devices
            .iter()
            .all(|d| d.verdict == Verdict::Pass && fusion_ok(d))
        {
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
        self.devices
            .iter()
            .filter(|d| d.verdict != Verdict::Error)
            .min_by(|a, b| a.summary.nmse.total_cmp(&b.summary.nmse))
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
    v.iter()
        .map(|(n, v)| format!("{n}: {}", v.describe()))
        .collect()
}

/// Largest input, as the accumulation length of a whole model's tolerance (as the
/// conformance harness does for its test models).
fn acc_len(inputs: &[(String, HostValue)]) -> usize {
    inputs
        .iter()
        .filter_map(|(_, v)| v.as_tensor().map(|t| t.numel()))
        .max()
        .unwrap_or(1)
}

/// Checks `model` on every device of `opts` with `inputs` (already complete: see
/// [`inputs::resolve_inputs`]). Errors are usage or load errors (a device that cannot be
/// opened, a reference that cannot run); a device failing to run the model is a verdict.
pub fn run_check(
    model: &Model,
    inputs: &[(String, HostValue)],
    opts: &CheckOptions,
) -> Result<CheckReport> {
    let model = graph_views::live(model);
    if let Some(p) = &opts.perturb {
        perturb::perturb_patch(&model, p)?;
    }
    let devices: Vec<(String, Arc<dyn Backend>)> = opts
        .devices
        .iter()
        .map(|d| Ok((d.clone(), crate::open_device(d, opts.threads)?)))
        .collect::<Result<_>>()?;
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
            kernels: vec![],
            row_ops: vec![],
            nodes: None,
            fusion: None,
        };
        match timed_run(&session, inputs, opts.iters) {
            Err(e) => {
                r.verdict = Verdict::Error;
                r.error = Some(e.to_string());
            }
            Ok((out, latency)) => {
                r.outputs =
                    compare_outputs(&out, &|n| reference.outputs.get(n).cloned(), class, acc);
                r.summary = aggregate(&r.outputs);
                r.latency = Some(latency);
                let stats = session.last_stats();
                r.instructions = stats.instructions;
                r.host_ops = stats.host_ops;
                let program = match session.program_for(inputs) {
                    Some(p) => Some(p),
                    // Programs that depend on input data are not cached: trace once more.
                    None => device_program(&runnable, device, inputs, opts.threads)
                        .ok()
                        .map(Arc::new),
                };
                if let Some(p) = &program {
                    r.kernels = program_kernels(p);
                    r.row_ops = program_row_ops(p);
                }
                if !r.outputs.iter().all(|o| o.passed()) {
                    r.verdict = Verdict::Fail;
                }
                if opts.fusion_check {
                    r.fusion = Some(fusion_check(
                        &runnable,
                        device,
                        inputs,
                        &out,
                        r.instructions,
                        r.kernels.len(),
                        class,
                        acc,
                        opts,
                    ));
                }
            }
        }
        if opts.fusion_check && r.fusion.is_none() {
            // The fused run failed: a fusion bug when the unfused run works.
            let unfused = crate::Session::with_options(
                runnable.clone(),
                device.clone(),
                crate::SessionOptions {
                    host_threads: opts.threads,
                    fuse: false,
                },
            )
            .and_then(|s| s.run(inputs));
            let e = r.error.clone().unwrap_or_default();
            r.fusion = Some(FusionCheck {
                verdict: Verdict::Error,
                error: Some(match unfused {
                    Ok(_) => format!("fails with fusion on but runs with fusion off: {e}"),
                    Err(_) => format!("fails with and without fusion: {e}"),
                }),
                kernels: 0,
                fused_instructions: 0,
                unfused_instructions: 0,
                outputs: vec![],
                summary: Metrics::default(),
                unfused_latency: None,
            });
        }
        reports.push(r);
    }
    let need_nodes = opts.node_trace_always || reports.iter().any(|r| r.verdict != Verdict::Pass);
    if need_nodes {
        let values: HashMap<String, HostValue> =
            reference_values(&opts.reference, &model, inputs, opts.threads)?;
        let cx = NodeContext {
            model: &model,
            inputs,
            reference: &values,
            perturb: opts.perturb.as_deref(),
            host: Arc::new(kuaxin_cpu::CpuBackend::new(opts.threads)?),
        };
        for (r, (_, device)) in reports.iter_mut().zip(&devices) {
            if opts.node_trace_always || r.verdict != Verdict::Pass {
                r.nodes = Some(trace_nodes(
                    &cx,
                    device,
                    opts.bisect_mode,
                    (&r.kernels, &r.row_ops),
                )?);
            }
        }
    }
    // Speed-ups against the reference device, else against `cpu` or the first device.
    let (baseline, base_ms) = match (&opts.reference, &reference.latency) {
        (Reference::Device(d), Some(l)) => (Some(d.clone()), Some(l.median_ms)),
        _ => {
            let b = reports
                .iter()
                .find(|r| r.device == "cpu")
                .or(reports.first());
            (
                b.map(|r| r.device.clone()),
                b.and_then(|r| r.latency.as_ref().map(|l| l.median_ms)),
            )
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

/// The fused program `model` runs as on `device` for `inputs` (traced afresh).
fn device_program(
    model: &Model,
    device: &Arc<dyn Backend>,
    inputs: &[(String, HostValue)],
    threads: Option<usize>,
) -> Result<kuaxin_compile::Program> {
    let host = kuaxin_cpu::CpuBackend::new(threads)?;
    Ok(
        kuaxin_compile::compile_and_run(model, &**device, &host, inputs, true)?
            .0
            .program,
    )
}

/// Runs `model` on `device` with fusion off and compares the fused run's outputs (`fused`) with
/// the unfused ones, by the model's op class.
#[allow(clippy::too_many_arguments)]
fn fusion_check(
    model: &Model,
    device: &Arc<dyn Backend>,
    inputs: &[(String, HostValue)],
    fused: &[(String, HostValue)],
    fused_instructions: usize,
    kernels: usize,
    class: crate::compare::OpClass,
    acc: usize,
    opts: &CheckOptions,
) -> FusionCheck {
    let mut f = FusionCheck {
        verdict: Verdict::Pass,
        error: None,
        kernels,
        fused_instructions,
        unfused_instructions: 0,
        outputs: vec![],
        summary: Metrics::default(),
        unfused_latency: None,
    };
    let unfused = crate::Session::with_options(
        model.clone(),
        device.clone(),
        crate::SessionOptions {
            host_threads: opts.threads,
            fuse: false,
        },
    )
    .and_then(|s| timed_run(&s, inputs, opts.iters).map(|(out, l)| (out, l, s.last_stats())));
    match unfused {
        Err(e) => {
            f.verdict = Verdict::Error;
            f.error = Some(format!("with fusion off: {e}"));
        }
        Ok((out, latency, stats)) => {
            let want: HashMap<String, HostValue> = out.into_iter().collect();
            f.outputs = compare_outputs(fused, &|n| want.get(n).cloned(), class, acc);
            f.summary = aggregate(&f.outputs);
            f.unfused_latency = Some(latency);
            f.unfused_instructions = stats.instructions;
            if !f.outputs.iter().all(|o| o.passed()) {
                f.verdict = Verdict::Fail;
            }
        }
    }
    f
}

/// The reference's value of every input and node output, for `--save-reference` bundles
/// (tensors only).
pub fn reference_bundle(
    model: &Model,
    inputs: &[(String, HostValue)],
    reference: &Reference,
    threads: Option<usize>,
) -> Result<Vec<(String, kuaxin_core::Tensor)>> {
    let model = graph_views::live(model);
    let values = reference_values(reference, &model, inputs, threads)?;
    // Inputs as given (the f64 reference holds promoted copies).
    let mut out: Vec<(String, kuaxin_core::Tensor)> = inputs
        .iter()
        .filter_map(|(n, v)| v.as_tensor().map(|t| (n.clone(), t.clone())))
        .collect();
    for n in graph_views::node_values(&model)? {
        if let Some(HostValue::Tensor(t)) = values.get(&n) {
            out.push((n, t.clone()));
        }
    }
    Ok(out)
}
