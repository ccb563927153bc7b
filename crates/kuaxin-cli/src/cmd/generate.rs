//! `kuaxin generate`: stream a model's continuation of a prompt to standard output.
use super::llm_args::ModelArgs;
use anyhow::{anyhow, Result};
use kuaxin_llm::arch::BuildOptions;
use kuaxin_llm::tokenizer::StreamDecoder;
use kuaxin_llm::{GenerateOptions, Generator, Sampling};
use std::io::Write;
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub m: ModelArgs,
    /// The prompt. Repeat it to generate for several prompts as one batch (their
    /// continuations are printed when all are done, one block per prompt).
    #[arg(long, short, required = true)]
    pub prompt: Vec<String>,
    /// Wrap the prompt as a user message with the model's chat template.
    #[arg(long)]
    pub chat: bool,
    /// New tokens at most.
    #[arg(long, short = 'n', default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 means greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the text contains this (repeatable).
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Keep generating through end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Positions the KV cache holds (default: prompt + max tokens).
    #[arg(long)]
    pub context: Option<usize>,
}

pub fn main(a: Args) -> Result<i32> {
    let t0 = Instant::now();
    let model = a.m.open()?;
    let tok = model.tokenizer()?;
    let prompts = a
        .prompt
        .iter()
        .map(|p| {
            let text = if a.chat {
                tok.apply_chat_template(&[("user", p.as_str())], true)?
            } else {
                p.clone()
            };
            let ids = tok.encode_with(&text, !a.chat)?;
            if ids.is_empty() {
                return Err(anyhow!("the prompt '{p}' has no tokens"));
            }
            Ok(ids)
        })
        .collect::<Result<Vec<_>>>()?;
    let longest = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    let context = a.context.unwrap_or(longest + a.max_tokens);
    let device = kuaxin::open_device(&a.m.device, a.m.threads)?;
    let mut gen = Generator::new(
        &model,
        device,
        &BuildOptions::generation(a.m.dtype()?, context),
    )?;
    let load_s = t0.elapsed().as_secs_f64();
    let opts = GenerateOptions {
        max_tokens: a.max_tokens,
        sampling: Sampling {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            repetition_penalty: a.repetition_penalty,
            seed: a.seed,
        },
        stop_strings: a.stop.clone(),
        ignore_eos: a.ignore_eos,
    };
    let batched = prompts.len() > 1;
    let mut stream = StreamDecoder::new();
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    let g = gen.generate(&prompts, &opts, &mut |_, id| {
        if batched {
            return;
        }
        match stream.push(&tok, id) {
            Ok(Some(piece)) => {
                let _ = out.write_all(piece.as_bytes());
                let _ = out.flush();
            }
            Ok(None) => {}
            Err(e) => failed = Some(e),
        }
    })?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    if batched {
        for (i, t) in g.tokens.iter().enumerate() {
            let _ = writeln!(out, "[{i}] {}", tok.decode(t)?);
        }
    } else {
        let _ = writeln!(out);
    }
    let n: usize = g.tokens.iter().map(|t| t.len()).sum();
    eprintln!(
        "[{} on {}: load {:.2} s, prompt {} tokens in {:.3} s ({:.1} t/s), generated {n} tokens, {:.1} steps/s]",
        model.config.arch_name,
        a.m.device,
        load_s,
        g.prompt_tokens,
        g.prefill_secs,
        g.prompt_tokens as f64 / g.prefill_secs.max(1e-9),
        g.decode_steps as f64 / g.decode_secs.max(1e-9),
    );
    Ok(0)
}
