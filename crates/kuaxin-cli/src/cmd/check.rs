//! `kuaxin check`: the same model on several devices against a reference, node by node when a
//! device fails. Exit codes: 0 all devices within tolerance, 1 a mismatch, 2 a usage or load
//! error. The work is `kuaxin::check`; this parses flags and writes the reports.
use super::{parse_dims, split_pair};
use anyhow::{anyhow, Context, Result};
use kuaxin::check::bisect::BisectMode;
use kuaxin::check::inputs::resolve_inputs;
use kuaxin::check::reference::Reference;
use kuaxin::check::{reference_bundle, report_html, run_check, table, CheckOptions};
use kuaxin::HostValue;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Model file (.onnx).
    pub model: PathBuf,
    /// Devices to check: a comma-separated list (cpu,wgpu,cuda:1) or `all` (every device found).
    #[arg(long, default_value = "all")]
    pub devices: String,
    /// What the devices are compared with: a device name, `f64` (every float op in f64 on the
    /// CPU), or BUNDLE.npz (saved values named like the model's inputs, outputs, intermediates).
    #[arg(long, default_value = "cpu")]
    pub reference: String,
    /// An input from a .npy file: NAME=FILE.npy (repeatable). Others get seeded random values.
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    /// A value for a symbolic dim of the inputs: NAME=V (repeatable), e.g. --dim batch=1.
    #[arg(long = "dim", value_name = "NAME=V")]
    pub dims: Vec<String>,
    /// Seed for random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the report as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the report as one self-contained HTML page (includes the node-by-node comparison).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Timed runs per device after the first.
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Node-by-node comparison: `isolated` feeds each node the reference's inputs, `cumulative`
    /// compares each device's own values.
    #[arg(long, default_value = "isolated", value_parser = ["isolated", "cumulative"])]
    pub bisect_mode: String,
    /// Compare node by node even when every device passes.
    #[arg(long)]
    pub bisect: bool,
    /// Print the fused kernel the first diverging node ran in (its primitive instructions when
    /// it ran unfused).
    #[arg(long)]
    pub show_kernel: bool,
    /// Also run each device with kernel fusion off and compare fused against unfused outputs
    /// (exit 1 when they differ beyond tolerance).
    #[arg(long)]
    pub fusion_check: bool,
    /// Save the reference's inputs, outputs and intermediates as an .npz bundle (usable later
    /// as --reference BUNDLE.npz).
    #[arg(long, value_name = "FILE.npz")]
    pub save_reference: Option<PathBuf>,
    /// Threads for the CPU back end (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Planted fault for testing check itself: perturb this node's output on the devices
    /// (also KUAXIN_PERTURB=NODE).
    #[arg(long, hide = true)]
    pub perturb: Option<String>,
}

/// Usage and load errors exit 2 (mismatches exit 1).
fn usage_error(e: anyhow::Error) -> i32 {
    eprintln!("error: {e:#}");
    2
}

fn device_list(spec: &str) -> Result<Vec<String>> {
    let known: Vec<String> = kuaxin::list_devices().into_iter().map(|d| d.name).collect();
    if spec == "all" {
        return Ok(known);
    }
    let list: Vec<String> = spec
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() {
        return Err(anyhow!(
            "--devices '{spec}': no device named (available: {})",
            known.join(", ")
        ));
    }
    Ok(list)
}

fn write(path: &Path, body: &str) -> Result<()> {
    std::fs::write(path, body).with_context(|| format!("writing {}", path.display()))
}

/// The model, its complete inputs and the check's options.
type Prepared = (
    kuaxin_core::graph::Model,
    Vec<(String, HostValue)>,
    CheckOptions,
);

fn prepare(a: &Args) -> Result<Prepared> {
    let model = kuaxin::load_model(&a.model)?;
    let reference = Reference::parse(&a.reference)?;
    let mut given = Vec::new();
    for s in &a.inputs {
        let (name, file) = split_pair(s, "--input")?;
        given.push((
            name,
            HostValue::Tensor(kuaxin_npy::read_npy(Path::new(&file))?),
        ));
    }
    for (n, v) in reference.bundle_inputs(&model) {
        if !given.iter().any(|(g, _)| *g == n) {
            given.push((n, v));
        }
    }
    let inputs = resolve_inputs(&model, given, &parse_dims(&a.dims)?, a.seed)
        .map_err(|e| anyhow!("{}: {e}", a.model.display()))?;
    let mut opts = CheckOptions::new(device_list(&a.devices)?, reference);
    opts.iters = a.iters;
    opts.bisect_mode = BisectMode::parse(&a.bisect_mode)?;
    opts.node_trace_always = a.bisect || a.html.is_some();
    opts.perturb = a.perturb.clone().or_else(|| {
        std::env::var("KUAXIN_PERTURB")
            .ok()
            .filter(|s| !s.is_empty())
    });
    opts.threads = a.threads;
    opts.fusion_check = a.fusion_check;
    Ok((model, inputs, opts))
}

pub fn main(a: Args) -> Result<i32> {
    let (model, inputs, opts) = match prepare(&a) {
        Ok(x) => x,
        Err(e) => return Ok(usage_error(e)),
    };
    if let Some(path) = &a.save_reference {
        let saved = reference_bundle(&model, &inputs, &opts.reference, opts.threads)
            .and_then(|arrays| kuaxin_npy::write_npz(path, &arrays).map(|_| arrays.len()));
        match saved {
            Ok(n) => eprintln!("saved {n} reference arrays to {}", path.display()),
            Err(e) => return Ok(usage_error(anyhow!("--save-reference: {e}"))),
        }
    }
    let report = match run_check(&model, &inputs, &opts) {
        Ok(r) => r,
        Err(e) => return Ok(usage_error(anyhow!("{}: {e}", a.model.display()))),
    };
    print!("{}", table::device_table(&report));
    print!("{}", table::fusion_table(&report));
    print!("{}", table::failures(&report, a.show_kernel));
    let written = (|| -> Result<()> {
        if let Some(p) = &a.json {
            write(
                p,
                &serde_json::to_string_pretty(&kuaxin::check::json::to_json(&report))?,
            )?;
        }
        if let Some(p) = &a.html {
            write(p, &report_html::to_html(&report, a.show_kernel))?;
        }
        Ok(())
    })();
    if let Err(e) = written {
        return Ok(usage_error(e));
    }
    Ok(report.exit_code())
}
