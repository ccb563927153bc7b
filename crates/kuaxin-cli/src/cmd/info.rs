use anyhow::Result;
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Model file (.onnx).
    pub model: PathBuf,
}

pub fn main(a: Args) -> Result<i32> {
    let m = kuaxin::load_model(&a.model)?;
    let g = &m.graph;
    println!("model    {}", a.model.display());
    if !m.producer.is_empty() {
        println!("producer {}", m.producer);
    }
    let opsets: Vec<String> = m.opsets.iter().map(|(d, v)| format!("{}={v}", if d.is_empty() { "ai.onnx" } else { d })).collect();
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
    println!("ops      {} nodes", ops.iter().map(|(_, n)| n).sum::<usize>());
    for (op, n) in ops {
        println!("  {op:<24} {n}");
    }
    Ok(0)
}
