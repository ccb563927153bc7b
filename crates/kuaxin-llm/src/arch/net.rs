//! The graph under construction: weights from the checkpoint, and the few building blocks
//! every architecture shares (linear layers, RMS norms, activations, KV-cache slots).
use super::{BuildOptions, CacheSpec, LlmGraph};
use crate::checkpoint::Checkpoint;
use crate::config::LlmConfig;
use kuaxin_core::graph::{Attr, Dim};
use kuaxin_core::graph_builder::GraphBuilder;
use kuaxin_core::{DType, Error, Result, Tensor};

pub(super) struct Net<'a> {
    pub g: GraphBuilder,
    pub ck: &'a Checkpoint,
    pub cfg: &'a LlmConfig,
    pub dtype: DType,
    pub context: usize,
    pub caches: Vec<CacheSpec>,
    pub weight_bytes: u64,
}

/// ONNX dtype codes for Cast's `to`.
pub(super) fn onnx_code(d: DType) -> i64 {
    match d {
        DType::F32 => 1,
        DType::F16 => 10,
        DType::BF16 => 16,
        DType::I64 => 7,
        _ => 1,
    }
}

impl<'a> Net<'a> {
    pub fn new(cfg: &'a LlmConfig, ck: &'a Checkpoint, opts: &BuildOptions) -> Result<Self> {
        Ok(Net {
            g: GraphBuilder::new(&cfg.arch_name),
            ck,
            cfg,
            dtype: opts.dtype,
            context: opts.context,
            caches: Vec::new(),
            weight_bytes: 0,
        })
    }

    /// Adds a checkpoint tensor as a constant named like in the checkpoint.
    pub fn weight(&mut self, name: &str, shape: &[usize]) -> Result<String> {
        let t = self.ck.tensor(name, shape, self.dtype)?;
        self.weight_bytes += (t.numel() * self.dtype.size()) as u64;
        Ok(self.g.constant(name, t))
    }

    /// A weight in a dtype other than the model's (routers, score biases).
    pub fn weight_as(&mut self, name: &str, shape: &[usize], dtype: DType) -> Result<String> {
        let t = self.ck.tensor(name, shape, dtype)?;
        self.weight_bytes += (t.numel() * dtype.size()) as u64;
        Ok(self.g.constant(name, t))
    }

    /// `x @ W (+ b)` for a PyTorch linear layer `prefix.weight` of shape `[out, inp]`.
    pub fn linear(
        &mut self,
        x: &str,
        prefix: &str,
        inp: usize,
        out: usize,
        bias: bool,
    ) -> Result<String> {
        let wname = format!("{prefix}.weight");
        let w = self.ck.linear(&wname, inp, out, self.dtype)?;
        self.weight_bytes += (w.numel() * self.dtype.size()) as u64;
        let w = self.g.constant(&wname, w);
        let y = self.g.node("MatMul", &[x, &w], vec![]);
        if !bias {
            return Ok(y);
        }
        let b = self.weight(&format!("{prefix}.bias"), &[out])?;
        Ok(self.g.node("Add", &[&y, &b], vec![]))
    }

    pub fn rms_norm(&mut self, x: &str, weight: &str, dim: usize) -> Result<String> {
        self.rms_norm_eps(x, weight, dim, self.cfg.rms_eps)
    }

    pub fn rms_norm_eps(&mut self, x: &str, weight: &str, dim: usize, eps: f64) -> Result<String> {
        let w = self.weight(weight, &[dim])?;
        Ok(self.g.node(
            "RMSNormalization",
            &[x, &w],
            vec![
                ("axis", Attr::Int(-1)),
                ("epsilon", Attr::Float(eps as f32)),
                ("stash_type", Attr::Int(1)),
            ],
        ))
    }

    /// The configured activation (`hidden_act`).
    pub fn act(&mut self, x: &str) -> Result<String> {
        Ok(match self.cfg.act.as_str() {
            "silu" | "swish" => {
                let s = self.g.node("Sigmoid", &[x], vec![]);
                self.g.node("Mul", &[x, &s], vec![])
            }
            "gelu" => self
                .g
                .node("Gelu", &[x], vec![("approximate", Attr::String(b"none".to_vec()))]),
            "gelu_pytorch_tanh" | "gelu_new" => self
                .g
                .node("Gelu", &[x], vec![("approximate", Attr::String(b"tanh".to_vec()))]),
            "relu" => self.g.node("Relu", &[x], vec![]),
            other => {
                return Err(Error::unsupported(format!(
                    "activation '{other}' (hidden_act) is not supported: silu, gelu, gelu_pytorch_tanh, relu are"
                )))
            }
        })
    }

    pub fn reshape(&mut self, x: &str, dims: &[i64]) -> String {
        let key: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        let s = self.shape_const(&format!("shape[{}]", key.join(",")), dims);
        self.g.node("Reshape", &[x, &s], vec![])
    }

    pub fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.g
            .node("Transpose", &[x], vec![("perm", Attr::Ints(perm.to_vec()))])
    }

    /// An i64 vector constant, added once per distinct name.
    pub fn shape_const(&mut self, name: &str, v: &[i64]) -> String {
        if !self.has_const(name) {
            self.g.ints(name, v);
        }
        name.to_string()
    }

    fn has_const(&self, name: &str) -> bool {
        self.g.has_constant(name)
    }

    /// Splits the last axis into parts of the given sizes.
    pub fn split_last(&mut self, x: &str, sizes: &[usize]) -> Vec<String> {
        let v: Vec<i64> = sizes.iter().map(|&s| s as i64).collect();
        let key: Vec<String> = v.iter().map(|d| d.to_string()).collect();
        let s = self.shape_const(&format!("split[{}]", key.join(",")), &v);
        self.g.node_n(
            "Split",
            &[x, &s],
            vec![("axis", Attr::Int(-1))],
            sizes.len(),
        )
    }

    /// Registers a KV-cache tensor and returns its graph input name.
    pub fn cache_input(&mut self, name: &str, heads: usize, dim: usize) -> String {
        self.g.input(
            name,
            self.dtype,
            vec![
                Dim::Sym("batch".into()),
                Dim::Known(heads),
                Dim::Known(self.context),
                Dim::Known(dim),
            ],
        );
        self.caches.push(CacheSpec {
            name: name.into(),
            heads,
            dim,
        });
        name.into()
    }

    /// Writes `update` `[B, H, S, D]` into the cache at each row's first position and declares
    /// the updated cache as a graph output.
    pub fn cache_write(&mut self, cache: &str, update: &str, write_at: &str) -> String {
        let out_name = format!("{cache}.out");
        self.g.node(
            "TensorScatter",
            &[cache, update, write_at],
            vec![("axis", Attr::Int(-2))],
        );
        self.g.rename_last_output(&out_name);
        let spec = self.caches.iter().find(|c| c.name == cache).cloned();
        let dims = spec.map(|c| {
            vec![
                Dim::Sym("batch".into()),
                Dim::Known(c.heads),
                Dim::Known(self.context),
                Dim::Known(c.dim),
            ]
        });
        self.g.output(&out_name, self.dtype, dims);
        out_name
    }

    pub fn embedding(&mut self) -> Result<String> {
        let name = "model.embed_tokens.weight";
        self.weight(name, &[self.cfg.vocab, self.cfg.hidden])
    }

    /// `[hidden, vocab]`: `lm_head.weight` transposed, or the embedding's when tied.
    pub fn lm_head(&mut self) -> Result<String> {
        let (h, v) = (self.cfg.hidden, self.cfg.vocab);
        let tied = self.cfg.tie_embeddings || !self.ck.contains("lm_head.weight");
        let name = if tied {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        let w = self.ck.linear(name, h, v, self.dtype)?;
        self.weight_bytes += (w.numel() * self.dtype.size()) as u64;
        Ok(self.g.constant("lm_head.weight.t", w))
    }

    pub fn finish(self, cfg: &LlmConfig) -> Result<LlmGraph> {
        // The embedding is read one row per token, not whole.
        let embed_bytes = (cfg.vocab * cfg.hidden * self.dtype.size()) as u64;
        let model = self
            .g
            .finish("kuaxin-llm", &format!("{} checkpoint", cfg.arch_name));
        Ok(LlmGraph {
            model,
            caches: self.caches,
            context: self.context,
            dtype: self.dtype,
            weight_bytes: self.weight_bytes.saturating_sub(embed_bytes),
        })
    }

    /// Casts to `to` unless already there.
    pub fn cast(&mut self, x: &str, from: DType, to: DType) -> String {
        if from == to {
            return x.to_string();
        }
        self.g
            .node("Cast", &[x], vec![("to", Attr::Int(onnx_code(to)))])
    }

    pub fn scalar(&mut self, name: &str, dtype: DType, v: f64) -> String {
        if !self.has_const(name) {
            self.g.scalar(name, dtype, v);
        }
        name.to_string()
    }

    /// A rank-0 i64 constant.
    pub fn index0(&mut self, name: &str, v: i64) -> String {
        if !self.has_const(name) {
            self.g.constant(
                name,
                Tensor {
                    shape: vec![],
                    data: kuaxin_core::Data::I64(vec![v]),
                },
            );
        }
        name.to_string()
    }
}
