//! Hugging Face decoder models built as kuaxin graphs of standard ops (Gather, MatMul,
//! RMSNormalization, RotaryEmbedding, TensorScatter, Attention, TopK, ...). One skeleton serves
//! every architecture: embeddings, N blocks of attention (grouped-query or latent) plus a
//! feed-forward (dense or mixture of experts), a final norm and the LM head.
//!
//! The KV cache is a graph input and output per layer with a fixed context length, so every
//! decode step has the same input types and replays one compiled program. Each token's
//! position is an input; the cache is written at the positions and attention allows key `j`
//! for a query at position `p` when `j <= p` (and `j > p - window` with a sliding window).
mod attention;
mod ffn;
mod net;

use crate::checkpoint::Checkpoint;
use crate::config::LlmConfig;
use kuaxin_core::graph::{Dim, Model};
use kuaxin_core::{DType, Result};
use net::Net;

/// Which logits the graph returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// `[batch, seq, vocab]`: every position (tests, scoring).
    All,
    /// `[batch, 1, vocab]` at the flattened token rows given by the `logits_rows` input
    /// (`b * seq + last[b]`): generation.
    Rows,
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Weights and activations (f32, f16 or bf16). Norm statistics and routing stay in f32.
    pub dtype: DType,
    /// Positions the KV cache holds.
    pub context: usize,
    pub logits: Logits,
}

/// One KV-cache tensor: graph input `name`, output `name` + `.out`, shape
/// `[batch, heads, context, dim]`.
#[derive(Debug, Clone)]
pub struct CacheSpec {
    pub name: String,
    pub heads: usize,
    pub dim: usize,
}

pub struct LlmGraph {
    pub model: Model,
    pub caches: Vec<CacheSpec>,
    pub context: usize,
    pub dtype: DType,
    /// Bytes of weights one token's forward pass reads (for bandwidth reports).
    pub weight_bytes: u64,
}

pub const INPUT_IDS: &str = "input_ids";
pub const POSITIONS: &str = "positions";
pub const LOGITS_ROWS: &str = "logits_rows";
pub const LOGITS: &str = "logits";

/// Builds the graph of `cfg` with the weights from `ck`.
pub fn build(cfg: &LlmConfig, ck: &Checkpoint, opts: &BuildOptions) -> Result<LlmGraph> {
    if !matches!(
        opts.dtype,
        DType::F32 | DType::F16 | DType::BF16 | DType::F64
    ) {
        return Err(kuaxin_core::Error::unsupported(format!(
            "LLM dtype {} is not supported (f32, f16, bf16 are)",
            opts.dtype
        )));
    }
    if opts.context == 0 {
        return Err(kuaxin_core::Error::invalid(
            "the context length must be positive",
        ));
    }
    let mut net = Net::new(cfg, ck, opts)?;
    let ids = net.g.input(
        INPUT_IDS,
        DType::I64,
        vec![Dim::Sym("batch".into()), Dim::Sym("seq".into())],
    );
    let pos = net.g.input(
        POSITIONS,
        DType::I64,
        vec![Dim::Sym("batch".into()), Dim::Sym("seq".into())],
    );
    let embed = net.embedding()?;
    let mut x = net.g.node("Gather", &[&embed, &ids], vec![]);
    let attn_ctx = net.attention_context(&pos)?;
    for l in 0..cfg.layers {
        let p = format!("model.layers.{l}");
        let h = net.rms_norm(&x, &format!("{p}.input_layernorm.weight"), cfg.hidden)?;
        let a = match &cfg.mla {
            Some(m) => net.latent_attention(&h, l, m, &attn_ctx)?,
            None => net.attention(&h, l, &attn_ctx)?,
        };
        x = net.g.node("Add", &[&x, &a], vec![]);
        let h = net.rms_norm(
            &x,
            &format!("{p}.post_attention_layernorm.weight"),
            cfg.hidden,
        )?;
        let f = net.feed_forward(&h, l)?;
        x = net.g.node("Add", &[&x, &f], vec![]);
    }
    if opts.logits == Logits::Rows {
        let rows = net
            .g
            .input(LOGITS_ROWS, DType::I64, vec![Dim::Sym("batch".into())]);
        let flat_shape = net.g.ints("flat_tokens", &[-1, cfg.hidden as i64]);
        let flat = net.g.node("Reshape", &[&x, &flat_shape], vec![]);
        let picked = net.g.node("Gather", &[&flat, &rows], vec![]);
        let ax = net.g.ints("axis_1", &[1]);
        x = net.g.node("Unsqueeze", &[&picked, &ax], vec![]);
    }
    let x = net.rms_norm(&x, "model.norm.weight", cfg.hidden)?;
    let head = net.lm_head()?;
    net.g.node("MatMul", &[&x, &head], vec![]);
    net.g.rename_last_output(LOGITS);
    let seq = match opts.logits {
        Logits::All => Dim::Sym("seq".into()),
        Logits::Rows => Dim::Known(1),
    };
    net.g.output(
        LOGITS,
        opts.dtype,
        Some(vec![Dim::Sym("batch".into()), seq, Dim::Known(cfg.vocab)]),
    );
    net.finish(cfg)
}
