//! `kuaxin demo`: the main job on an embedded default. Builds a transformer block in memory,
//! runs it in f32 on the chosen device, and checks it against the same block in f64 on the CPU.
use anyhow::Result;
use kuaxin::compare::{metrics, Tolerance};
use kuaxin::demo::{transformer_block, BlockConfig};
use kuaxin::{DType, HostValue, Session, Tensor};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// Device to run on.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Batch size.
    #[arg(long, default_value_t = 2)]
    pub batch: usize,
    /// Sequence length.
    #[arg(long, default_value_t = 32)]
    pub seq: usize,
    /// Timed runs after the first.
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run primitives one by one, without kernel fusion (to compare against the fused path).
    #[arg(long)]
    pub no_fuse: bool,
}

pub fn main(a: Args) -> Result<i32> {
    let cfg = BlockConfig::default();
    let model = transformer_block(&cfg, DType::F32, a.seed);
    let reference = transformer_block(&cfg, DType::F64, a.seed);
    let mut rng = kuaxin::random::Rng::new(a.seed + 1);
    let x64 = kuaxin::random::random_tensor(&mut rng, DType::F64, vec![a.batch, a.seq, cfg.hidden]);
    let x32 = x64.cast(DType::F32);
    println!("kuaxin demo: transformer block (hidden {}, {} heads, ffn {}), input x f32[{}, {}, {}], {} nodes",
        cfg.hidden, cfg.heads, cfg.ffn, a.batch, a.seq, cfg.hidden, model.graph.nodes.len());
    let device = kuaxin::open_device(&a.device, None)?;
    let opts = kuaxin::SessionOptions {
        fuse: !a.no_fuse,
        ..Default::default()
    };
    let session = Session::with_options(model, device, opts)?;
    let t0 = Instant::now();
    let out = session.run(&[("x".into(), HostValue::Tensor(x32.clone()))])?;
    let first_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut times = Vec::new();
    for _ in 0..a.iters {
        let t = Instant::now();
        session.run(&[("x".into(), HostValue::Tensor(x32.clone()))])?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let median = times.get(times.len() / 2).copied().unwrap_or(first_ms);
    let ref_session = Session::new(reference, kuaxin::open_device("cpu", None)?)?;
    let want = ref_session.run(&[("x".into(), HostValue::Tensor(x64))])?;
    let got: &Tensor = out[0]
        .1
        .as_tensor()
        .ok_or_else(|| anyhow::anyhow!("output is not a tensor"))?;
    let want: Tensor = want[0]
        .1
        .as_tensor()
        .ok_or_else(|| anyhow::anyhow!("reference is not a tensor"))?
        .cast(DType::F32);
    let scale = want.to_f64_vec().iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let tol = Tolerance::for_class(
        kuaxin::compare::OpClass::Accumulating,
        DType::F32,
        cfg.ffn,
        scale,
    );
    let m = metrics(got, &want, tol);
    let stats = session.last_stats();
    println!("device {}: first run (trace + compile + run) {first_ms:.2} ms, median of {} runs {median:.3} ms, {} instructions ({} fused kernels)",
        session.device().name(), a.iters, stats.instructions, stats.kernels);
    println!(
        "vs f64 reference: max abs {:.2e}, max rel {:.2e}, cosine {:.9}, nmse {:.2e} -> {}",
        m.max_abs,
        m.max_rel,
        m.cosine,
        m.nmse,
        if m.mismatches == 0 { "PASS" } else { "FAIL" }
    );
    Ok(if m.mismatches == 0 { 0 } else { 1 })
}
