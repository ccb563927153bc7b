//! `kuaxin bench-llm`: prompt processing (pp) and token generation (tg) rates, llama.cpp style,
//! with the weight bandwidth generation implies beside a memcpy measured in the same run.
use super::llm_args::ModelArgs;
use anyhow::{anyhow, Result};
use kuaxin_llm::arch::BuildOptions;
use kuaxin_llm::{GenerateOptions, Generator};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub m: ModelArgs,
    /// Prompt tokens.
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    pub n_prompt: usize,
    /// Generated tokens.
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    pub n_gen: usize,
    /// Timed repetitions (after one untimed warm-up that compiles).
    #[arg(short = 'r', long, default_value_t = 3)]
    pub repetitions: usize,
    /// Write the results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n;
    (m, var.sqrt())
}

pub fn main(a: Args) -> Result<i32> {
    if a.n_prompt == 0 || a.repetitions == 0 {
        return Err(anyhow!("-p and -r must be at least 1"));
    }
    let model = a.m.open()?;
    let dtype = a.m.dtype()?;
    let device = kuaxin::open_device(&a.m.device, a.m.threads)?;
    let context = a.n_prompt + a.n_gen.max(1);
    eprintln!(
        "building {} ({dtype}, context {context}) ...",
        model.config.arch_name
    );
    let mut gen = Generator::new(&model, device, &BuildOptions::generation(dtype, context))?;
    // A fixed pseudo-random prompt inside the vocabulary.
    let vocab = model.config.vocab as u64;
    let prompt: Vec<u32> = (0..a.n_prompt as u64)
        .map(|i| ((i * 2_654_435_761 + 12345) % vocab) as u32)
        .collect();
    let opts = GenerateOptions {
        max_tokens: a.n_gen.max(1),
        ignore_eos: true,
        ..Default::default()
    };
    eprintln!("warm-up (compiles the prefill and decode programs) ...");
    gen.generate(
        &[prompt.clone()],
        &GenerateOptions {
            max_tokens: 3,
            ..opts.clone()
        },
        &mut |_, _| {},
    )?;
    let (mut pp, mut tg) = (Vec::new(), Vec::new());
    for _ in 0..a.repetitions {
        let g = gen.generate(&[prompt.clone()], &opts, &mut |_, _| {})?;
        pp.push(a.n_prompt as f64 / g.prefill_secs);
        if g.decode_steps > 0 {
            tg.push(g.decode_steps as f64 / g.decode_secs);
        }
    }
    let gbps = kuaxin_llm::bandwidth::memcpy_gbps(512 << 20, 5);
    let (ppm, pps) = mean_sd(&pp);
    let (tgm, tgs) = mean_sd(&tg);
    let weights_gb = gen.weight_bytes as f64 / 1e9;
    let implied = weights_gb * tgm;
    let name =
        a.m.model
            .as_ref()
            .or(a.m.random_weights.as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
    println!("| model | dtype | weights | device | test | t/s |");
    println!("| --- | --- | ---: | --- | --- | ---: |");
    println!(
        "| {name} | {dtype} | {weights_gb:.2} GB | {} | pp{} | {ppm:.2} ± {pps:.2} |",
        a.m.device, a.n_prompt
    );
    if !tg.is_empty() {
        println!(
            "| {name} | {dtype} | {weights_gb:.2} GB | {} | tg{} | {tgm:.2} ± {tgs:.2} |",
            a.m.device, a.n_gen
        );
    }
    println!();
    if let Some(rss) = super::bench::peak_rss() {
        println!("peak memory (RSS) {:.2} GB", rss as f64 / 1e9);
    }
    println!(
        "generation reads {weights_gb:.2} GB of weights per token: {implied:.1} GB/s; memcpy in this run {gbps:.1} GB/s (read + write): ratio {:.2}",
        implied / gbps
    );
    if let Some(path) = &a.json {
        let v = serde_json::json!({
            "model": name, "dtype": dtype.to_string(), "device": a.m.device, "threads": a.m.threads,
            "n_prompt": a.n_prompt, "n_gen": a.n_gen, "pp_tps": pp, "tg_tps": tg,
            "weight_bytes": gen.weight_bytes, "implied_gbps": implied, "memcpy_gbps": gbps,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v)?)?;
    }
    Ok(0)
}
