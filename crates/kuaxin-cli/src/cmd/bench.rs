//! `kuaxin bench`: load, compile and run a model repeatedly; report latency percentiles,
//! throughput and memory (planned peak of intermediates, and the process's measured peak RSS).
use crate::progress::bar;
use anyhow::{anyhow, Context, Result};
use kuaxin_core::Tensor;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Model file (.onnx).
    pub model: PathBuf,
    /// Device to run on.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Threads for the CPU back end (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run primitives one by one, without kernel fusion (to compare against the fused path).
    #[arg(long)]
    pub no_fuse: bool,
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    #[arg(long = "dim", value_name = "NAME=V")]
    pub dims: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Untimed runs after the first (compiling) one.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// The process's peak resident memory so far (Linux), in bytes.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn main(a: Args) -> Result<i32> {
    if a.iters == 0 {
        return Err(anyhow!("--iters must be at least 1"));
    }
    let t0 = Instant::now();
    let model = kuaxin::load_model(&a.model)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let inputs = super::inputs::prepare(&model, &a.inputs, &a.dims, a.seed)?;
    let rss_before = peak_rss();
    let device = kuaxin::open_device(&a.device, a.threads)?;
    let opts = kuaxin::SessionOptions {
        fuse: !a.no_fuse,
        ..Default::default()
    };
    let session = kuaxin::Session::with_options(model, device, opts)?;
    // Tensor inputs are shared with the runs, not copied into each (as onnxruntime binds a
    // caller's arrays); sequences and optionals go through `Session::run`.
    let shared: Option<Vec<(String, Arc<Tensor>)>> = inputs
        .iter()
        .map(|(n, v)| Some((n.clone(), Arc::new(v.as_tensor()?.clone()))))
        .collect();
    let run = || match &shared {
        Some(s) => session.run_shared(s),
        None => session.run(&inputs),
    };
    let t1 = Instant::now();
    run().map_err(|e| anyhow!("{}: {e}", a.model.display()))?;
    let compile_ms = t1.elapsed().as_secs_f64() * 1e3;
    let stats = session.last_stats();
    let pb = bar((a.warmup + a.iters) as u64, "bench");
    for _ in 0..a.warmup {
        run()?;
        pb.inc(1);
    }
    let mut times = Vec::with_capacity(a.iters);
    for _ in 0..a.iters {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        pb.inc(1);
    }
    pb.finish_and_clear();
    times.sort_by(|x, y| x.total_cmp(y));
    let (min, median, p90) = (times[0], percentile(&times, 0.5), percentile(&times, 0.9));
    let rss = peak_rss();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!("model      {}", a.model.display());
    println!(
        "device     {} ({} threads)",
        session.device().name(),
        a.threads
            .map(|t| t.to_string())
            .unwrap_or_else(|| "all".into())
    );
    println!("load       {load_ms:.1} ms");
    println!("compile    {compile_ms:.1} ms (first run: trace, fold, run)");
    println!(
        "latency    min {min:.3} ms, median {median:.3} ms, p90 {p90:.3} ms ({} runs)",
        a.iters
    );
    println!("throughput {:.1} runs/s", 1e3 / median);
    println!(
        "program    {} instructions, {} fused kernels{}",
        stats.instructions,
        stats.kernels,
        if stats.reusable {
            ""
        } else {
            " (re-traced every run: data-dependent shapes)"
        }
    );
    if let Some(p) = stats.planned_peak_bytes {
        println!("memory     planned peak of intermediates {:.1} MiB", mib(p));
    }
    if let (Some(b), Some(r)) = (rss_before, rss) {
        println!(
            "memory     measured peak RSS {:.1} MiB ({:.1} MiB before the first run)",
            mib(r),
            mib(b)
        );
    }
    if let Some(path) = &a.json {
        let j = serde_json::json!({
            "model": a.model.display().to_string(), "device": session.device().name(), "threads": a.threads,
            "load_ms": load_ms, "compile_ms": compile_ms, "min_ms": min, "median_ms": median, "p90_ms": p90,
            "runs_per_s": 1e3 / median, "instructions": stats.instructions, "kernels": stats.kernels, "fused": !a.no_fuse, "times_ms": times,
            "planned_peak_bytes": stats.planned_peak_bytes, "peak_rss_bytes": rss,
        });
        std::fs::write(path, serde_json::to_string_pretty(&j)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(0)
}
