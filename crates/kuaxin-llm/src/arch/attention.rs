//! Attention blocks: grouped-query attention (Llama, Mistral, Qwen2/3, Mixtral) and DeepSeek's
//! multi-head latent attention, both over a fixed-length KV cache written at the token positions.
use super::net::Net;
use crate::config::{Mla, RopeScaling};
use crate::rope;
use kuaxin_core::graph::Attr;
use kuaxin_core::Result;
use std::collections::HashMap;

/// What every layer's attention shares: positions, where to write the cache, rotary tables and
/// the allowed-key masks (one per distinct sliding window).
pub(super) struct AttnContext {
    pos: String,
    write_at: String,
    cos: String,
    sin: String,
    masks: HashMap<Option<usize>, String>,
}

/// DeepSeek's latent norms use their class default, not the config's rms_norm_eps.
const LATENT_NORM_EPS: f64 = 1e-6;

impl Net<'_> {
    pub fn attention_context(&mut self, pos: &str) -> Result<AttnContext> {
        let rd = self.cfg.rotary_dim();
        let (cos, sin) = rope::tables(&self.cfg.rope, rd, self.context)?;
        let cos = self.g.constant("rope.cos", cos);
        let sin = self.g.constant("rope.sin", sin);
        // The cache is written from each row's first position on.
        let zero = self.index0("index0", 0);
        let write_at = self
            .g
            .node("Gather", &[pos, &zero], vec![("axis", Attr::Int(1))]);
        // allowed[b, 0, i, j] = j <= pos[b, i] (and j > pos[b, i] - window).
        let keys: Vec<i64> = (0..self.context as i64).collect();
        let keys = self.g.ints("cache_positions", &keys);
        let axes = self.shape_const("axes[1,3]", &[1, 3]);
        let p4 = self.g.node("Unsqueeze", &[pos, &axes], vec![]);
        let causal = self.g.node("LessOrEqual", &[&keys, &p4], vec![]);
        let mut masks = HashMap::new();
        masks.insert(None, causal.clone());
        let windows: Vec<usize> = self.cfg.sliding_window.iter().flatten().copied().collect();
        for w in windows {
            if masks.contains_key(&Some(w)) {
                continue;
            }
            let wc = self.g.ints(&format!("window{w}"), &[w as i64]);
            let lo = self.g.node("Sub", &[&p4, &wc], vec![]);
            let recent = self.g.node("Greater", &[&keys, &lo], vec![]);
            let m = self.g.node("And", &[&causal, &recent], vec![]);
            masks.insert(Some(w), m);
        }
        Ok(AttnContext {
            pos: pos.to_string(),
            write_at,
            cos,
            sin,
            masks,
        })
    }

    /// Rotates the first `rotary_dim` dims of each head (all of them unless the config has a
    /// partial rotary factor).
    fn rotary(&mut self, x: &str, ctx: &AttnContext, interleaved: bool) -> String {
        let mut attrs = vec![("interleaved", Attr::Int(interleaved as i64))];
        if self.cfg.mla.is_none() && self.cfg.rotary_dim() < self.cfg.head_dim {
            attrs.push((
                "rotary_embedding_dim",
                Attr::Int(self.cfg.rotary_dim() as i64),
            ));
        }
        self.g
            .node("RotaryEmbedding", &[x, &ctx.cos, &ctx.sin, &ctx.pos], attrs)
    }

    /// `[B, S, heads * dim]` -> `[B, heads, S, dim]`, with an optional per-head RMS norm.
    fn heads(&mut self, x: &str, heads: usize, dim: usize, norm: Option<&str>) -> Result<String> {
        let mut y = self.reshape(x, &[0, 0, heads as i64, dim as i64]);
        if let Some(w) = norm {
            y = self.rms_norm(&y, w, dim)?;
        }
        Ok(self.transpose(&y, &[0, 2, 1, 3]))
    }

    /// `[B, heads, S, dim]` -> `[B, S, heads * dim]`.
    fn merge(&mut self, y: &str, heads: usize, dim: usize) -> String {
        let t = self.transpose(y, &[0, 2, 1, 3]);
        self.reshape(&t, &[0, 0, (heads * dim) as i64])
    }

    fn attend(&mut self, q: &str, k: &str, v: &str, mask: &str, scale: Option<f64>) -> String {
        let mut attrs = vec![];
        if let Some(s) = scale {
            attrs.push(("scale", Attr::Float(s as f32)));
        }
        self.g.node("Attention", &[q, k, v, mask], attrs)
    }

    /// Grouped-query attention with rotary embeddings (and Qwen3's q/k norms).
    pub fn attention(&mut self, x: &str, layer: usize, ctx: &AttnContext) -> Result<String> {
        let c = self.cfg;
        let p = format!("model.layers.{layer}.self_attn");
        let (h, kvh, d) = (c.heads, c.kv_heads, c.head_dim);
        let q = self.linear(x, &format!("{p}.q_proj"), c.hidden, h * d, c.qkv_bias)?;
        let k = self.linear(x, &format!("{p}.k_proj"), c.hidden, kvh * d, c.qkv_bias)?;
        let v = self.linear(x, &format!("{p}.v_proj"), c.hidden, kvh * d, c.qkv_bias)?;
        let (qn, kn) = (format!("{p}.q_norm.weight"), format!("{p}.k_norm.weight"));
        let q = self.heads(&q, h, d, c.qk_norm.then_some(qn.as_str()))?;
        let k = self.heads(&k, kvh, d, c.qk_norm.then_some(kn.as_str()))?;
        let v = self.heads(&v, kvh, d, None)?;
        let q = self.rotary(&q, ctx, false);
        let k = self.rotary(&k, ctx, false);
        let kc = self.cache_input(&format!("cache.{layer}.key"), kvh, d);
        let vc = self.cache_input(&format!("cache.{layer}.value"), kvh, d);
        let keys = self.cache_write(&kc, &k, &ctx.write_at);
        let values = self.cache_write(&vc, &v, &ctx.write_at);
        let mask = ctx.masks[&c.sliding_window[layer]].clone();
        let y = self.attend(&q, &keys, &values, &mask, None);
        let y = self.merge(&y, h, d);
        self.linear(&y, &format!("{p}.o_proj"), h * d, c.hidden, c.o_bias)
    }

    /// DeepSeek multi-head latent attention. The cache holds the compressed latent (after its
    /// norm) and the shared rotary key, as transformers does; keys and values are expanded from
    /// the latent at every step.
    pub fn latent_attention(
        &mut self,
        x: &str,
        layer: usize,
        m: &Mla,
        ctx: &AttnContext,
    ) -> Result<String> {
        let c = self.cfg;
        let p = format!("model.layers.{layer}.self_attn");
        let h = c.heads;
        let qk = m.qk_nope + m.qk_rope;
        let q = match m.q_lora_rank {
            Some(r) => {
                let a = self.linear(x, &format!("{p}.q_a_proj"), c.hidden, r, c.qkv_bias)?;
                let a = self.rms_norm_eps(
                    &a,
                    &format!("{p}.q_a_layernorm.weight"),
                    r,
                    LATENT_NORM_EPS,
                )?;
                self.linear(&a, &format!("{p}.q_b_proj"), r, h * qk, false)?
            }
            None => self.linear(x, &format!("{p}.q_proj"), c.hidden, h * qk, false)?,
        };
        let q = self.heads(&q, h, qk, None)?;
        let qs = self.split_last(&q, &[m.qk_nope, m.qk_rope]);
        let q_rot = self.rotary(&qs[1], ctx, m.interleaved);
        let q = self
            .g
            .node("Concat", &[&qs[0], &q_rot], vec![("axis", Attr::Int(-1))]);

        let kv = self.linear(
            x,
            &format!("{p}.kv_a_proj_with_mqa"),
            c.hidden,
            m.kv_lora_rank + m.qk_rope,
            c.qkv_bias,
        )?;
        let kvs = self.split_last(&kv, &[m.kv_lora_rank, m.qk_rope]);
        let latent = self.rms_norm_eps(
            &kvs[0],
            &format!("{p}.kv_a_layernorm.weight"),
            m.kv_lora_rank,
            LATENT_NORM_EPS,
        )?;
        let latent = self.heads(&latent, 1, m.kv_lora_rank, None)?;
        let k_rot = self.heads(&kvs[1], 1, m.qk_rope, None)?;
        let k_rot = self.rotary(&k_rot, ctx, m.interleaved);
        let lc = self.cache_input(&format!("cache.{layer}.latent"), 1, m.kv_lora_rank);
        let rc = self.cache_input(&format!("cache.{layer}.rope_key"), 1, m.qk_rope);
        let latent = self.cache_write(&lc, &latent, &ctx.write_at);
        let k_rot = self.cache_write(&rc, &k_rot, &ctx.write_at);

        // [B, 1, ctx, r] -> [B, ctx, r] -> kv_b_proj -> [B, heads, ctx, nope + v].
        let axis1 = self.shape_const("axes[1]", &[1]);
        let lat = self.g.node("Squeeze", &[&latent, &axis1], vec![]);
        let kv = self.linear(
            &lat,
            &format!("{p}.kv_b_proj"),
            m.kv_lora_rank,
            h * (m.qk_nope + m.v_head),
            false,
        )?;
        let kv = self.heads(&kv, h, m.qk_nope + m.v_head, None)?;
        let kvs = self.split_last(&kv, &[m.qk_nope, m.v_head]);
        let heads_shape = self.shape_const(&format!("expand[1,{h},1,1]"), &[1, h as i64, 1, 1]);
        let k_rot = self.g.node("Expand", &[&k_rot, &heads_shape], vec![]);
        let k = self
            .g
            .node("Concat", &[&kvs[0], &k_rot], vec![("axis", Attr::Int(-1))]);

        let mut scale = 1.0 / (qk as f64).sqrt();
        if let RopeScaling::Yarn {
            factor,
            mscale_all_dim: Some(ma),
            ..
        } = c.rope.scaling
        {
            if ma != 0.0 && factor > 1.0 {
                let ms = 0.1 * ma * factor.ln() + 1.0;
                scale *= ms * ms;
            }
        }
        let mask = ctx.masks[&c.sliding_window[layer]].clone();
        let y = self.attend(&q, &k, &kvs[1], &mask, Some(scale));
        let y = self.merge(&y, h, m.v_head);
        self.linear(&y, &format!("{p}.o_proj"), h * m.v_head, c.hidden, c.o_bias)
    }
}
