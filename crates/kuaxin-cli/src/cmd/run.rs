use crate::progress::spinner;
use anyhow::{anyhow, Context, Result};
use kuaxin::{HostValue, Tensor};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Model file (.onnx).
    pub model: PathBuf,
    /// An input from a .npy file: NAME=FILE.npy (repeatable). Others get seeded random values.
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    /// A value for a symbolic dim of the inputs: NAME=V (repeatable), e.g. --dim batch=1.
    #[arg(long = "dim", value_name = "NAME=V")]
    pub dims: Vec<String>,
    /// Seed for random inputs.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write each output to DIR/NAME.npy.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Device to run on: cpu, cuda[:N], wgpu[:N].
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Threads for the CPU back end (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run primitives one by one, without kernel fusion (to compare against the fused path).
    #[arg(long)]
    pub no_fuse: bool,
}

/// File name for an output: characters outside [A-Za-z0-9._-] become `_`.
pub fn output_file_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{}.npy", if s.is_empty() { "_".to_string() } else { s })
}

fn summary(t: &Tensor) -> String {
    let v = t.to_f64_vec();
    let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:.6}")).collect();
    let finite: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    let mean = if finite.is_empty() {
        f64::NAN
    } else {
        finite.iter().sum::<f64>() / finite.len() as f64
    };
    format!(
        "[{}{}] mean {mean:.6}",
        head.join(", "),
        if v.len() > 6 { ", ..." } else { "" }
    )
}

pub fn main(a: Args) -> Result<i32> {
    let t0 = Instant::now();
    let sp = spinner("loading");
    let model = kuaxin::load_model(&a.model)?;
    let inputs = super::inputs::prepare(&model, &a.inputs, &a.dims, a.seed)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    sp.set_message("compiling and running");
    let device = kuaxin::open_device(&a.device, a.threads)?;
    let opts = kuaxin::SessionOptions {
        fuse: !a.no_fuse,
        ..Default::default()
    };
    let session = kuaxin::Session::with_options(model, device, opts)?;
    let t1 = Instant::now();
    let outputs = session
        .run(&inputs)
        .map_err(|e| anyhow!("{}: {e}", a.model.display()))?;
    let run_ms = t1.elapsed().as_secs_f64() * 1e3;
    sp.finish_and_clear();
    if let Some(dir) = &a.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    for (name, v) in &outputs {
        match v {
            HostValue::Tensor(t) => {
                println!("{name}: {} {}", t.type_string(), summary(t));
                if let Some(dir) = &a.output_dir {
                    let path = dir.join(output_file_name(name));
                    kuaxin_npy::write_npy(&path, t)?;
                }
            }
            other => println!(
                "{name}: {} (not written: only tensors are saved as .npy)",
                other.describe()
            ),
        }
    }
    let stats = session.last_stats();
    eprintln!(
        "load {load_ms:.1} ms, compile+run {run_ms:.1} ms on {}, {} primitive instructions{}",
        session.device().name(),
        stats.instructions,
        if stats.host_ops.is_empty() {
            String::new()
        } else {
            format!(", host ops: {}", stats.host_ops.join("; "))
        }
    );
    Ok(0)
}
