use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model file (.onnx).
    pub model: PathBuf,
    /// Also compile for the given inputs and list the program: fused kernels with the ops each
    /// holds, counts before and after fusion, and the planned peak memory.
    #[arg(long)]
    pub plan: bool,
    /// With --plan: value for a symbolic input dim, NAME=V (repeatable).
    #[arg(long = "dim", value_name = "NAME=V")]
    pub dims: Vec<String>,
    /// With --plan: an input from a .npy file, NAME=FILE.npy (repeatable).
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    pub inputs: Vec<String>,
    /// With --plan: the device to plan for.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// With --plan: show the program without fusion.
    #[arg(long)]
    pub no_fuse: bool,
    /// With --plan: print each kernel's code (fused kernels and products' epilogues).
    #[arg(long)]
    pub kernels: bool,
}

pub fn main(a: Args) -> Result<i32> {
    let m = kuaxin::load_model(&a.model)?;
    let g = &m.graph;
    println!("model    {}", a.model.display());
    if !m.producer.is_empty() {
        println!("producer {}", m.producer);
    }
    let opsets: Vec<String> = m
        .opsets
        .iter()
        .map(|(d, v)| format!("{}={v}", if d.is_empty() { "ai.onnx" } else { d }))
        .collect();
    println!("opsets   {}", opsets.join(", "));
    println!("inputs");
    for vi in g.real_inputs() {
        println!("  {:<24} {}", vi.name, vi.ty);
    }
    println!("outputs");
    for vi in &g.outputs {
        println!("  {:<24} {}", vi.name, vi.ty);
    }
    let params = g.parameter_count();
    println!("parameters {} ({} tensors)", params, g.initializers.len());
    let mut hist = BTreeMap::new();
    g.op_histogram(&mut hist);
    let mut ops: Vec<(String, usize)> = hist.into_iter().collect();
    ops.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!(
        "ops      {} nodes",
        ops.iter().map(|(_, n)| n).sum::<usize>()
    );
    for (op, n) in ops {
        println!("  {op:<24} {n}");
    }
    if a.plan {
        print_plan(&a, &m)?;
    }
    Ok(0)
}

fn print_plan(a: &Args, m: &kuaxin_core::graph::Model) -> Result<()> {
    let inputs = super::inputs::prepare(m, &a.inputs, &a.dims, 0)?;
    let device = kuaxin::open_device(&a.device, None)?;
    let p = kuaxin::plan::plan(m, &*device, &inputs, !a.no_fuse)?;
    println!(
        "plan on {} ({})",
        device.name(),
        if a.no_fuse { "fusion off" } else { "fused" }
    );
    for line in p.describe() {
        println!("  {line}");
    }
    if a.kernels {
        print!("{}", p.kernel_code());
    }
    let rows = p
        .program
        .instrs
        .iter()
        .filter(|i| i.prim.is_row_op())
        .count();
    println!(
        "instructions: {} before fusion, {} after ({} kernels replacing {} primitives, {} row \
         normalisations)",
        p.unfused_instrs,
        p.program.instrs.len(),
        p.kernels,
        p.fused_instrs,
        rows
    );
    println!(
        "planned peak of intermediates: {:.2} MiB",
        p.peak_bytes as f64 / (1024.0 * 1024.0)
    );
    if !p.program.host_ops.is_empty() {
        println!("ran on the host: {}", p.program.host_ops.join("; "));
    }
    Ok(())
}
