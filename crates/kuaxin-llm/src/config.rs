//! A Hugging Face `config.json`, read into what the graph builders need. Both the classic
//! layout (`rope_theta` + `rope_scaling`) and transformers 5's `rope_parameters` are accepted.
use kuaxin_core::{Error, Result};
use serde_json::Value;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Qwen3Moe,
    Mixtral,
    DeepseekV3,
}

impl Arch {
    pub const SUPPORTED: &'static [&'static str] = &[
        "LlamaForCausalLM",
        "MistralForCausalLM",
        "Qwen2ForCausalLM",
        "Qwen3ForCausalLM",
        "Qwen3MoeForCausalLM",
        "MixtralForCausalLM",
        "DeepseekV3ForCausalLM",
    ];

    fn from_name(name: &str) -> Option<Arch> {
        Some(match name {
            "LlamaForCausalLM" => Arch::Llama,
            "MistralForCausalLM" => Arch::Mistral,
            "Qwen2ForCausalLM" => Arch::Qwen2,
            "Qwen3ForCausalLM" => Arch::Qwen3,
            "Qwen3MoeForCausalLM" => Arch::Qwen3Moe,
            "MixtralForCausalLM" => Arch::Mixtral,
            "DeepseekV3ForCausalLM" => Arch::DeepseekV3,
            _ => return None,
        })
    }
}

/// How rotary frequencies are scaled (`rope_type`).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    Default,
    Linear {
        factor: f64,
    },
    /// NTK-aware scaling by the running length; built for the context the graph is made for.
    Dynamic {
        factor: f64,
        original_max: usize,
    },
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max: usize,
    },
    Yarn {
        factor: f64,
        original_max: usize,
        beta_fast: f64,
        beta_slow: f64,
        mscale: Option<f64>,
        mscale_all_dim: Option<f64>,
        attention_factor: Option<f64>,
        truncate: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Rope {
    pub theta: f64,
    pub scaling: RopeScaling,
    /// Rotary dims = head_dim * partial_rotary_factor.
    pub partial: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Routing {
    /// softmax over all experts, top-k, optionally renormalised (Mixtral, Qwen3-MoE).
    Softmax { renormalize: bool },
    /// DeepSeek-V3: sigmoid scores plus a correction bias choose the experts, restricted to the
    /// best `topk_group` of `n_group` groups; weights are the plain sigmoid scores.
    GroupedSigmoid {
        n_group: usize,
        topk_group: usize,
        renormalize: bool,
        scaling: f64,
    },
}

#[derive(Debug, Clone)]
pub struct Moe {
    pub experts: usize,
    pub top_k: usize,
    pub intermediate: usize,
    pub routing: Routing,
    /// Intermediate size of the always-on shared expert (0: none).
    pub shared_intermediate: usize,
    /// Which layers use the mixture (the others a dense MLP).
    pub sparse_layers: Vec<bool>,
}

/// Multi-head latent attention (DeepSeek-V2/V3).
#[derive(Debug, Clone)]
pub struct Mla {
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope: usize,
    pub qk_rope: usize,
    pub v_head: usize,
    pub interleaved: bool,
}

#[derive(Debug, Clone)]
pub struct LlmConfig {
    pub arch: Arch,
    pub arch_name: String,
    pub vocab: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rms_eps: f64,
    pub tie_embeddings: bool,
    pub qkv_bias: bool,
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub act: String,
    pub qk_norm: bool,
    pub max_positions: usize,
    pub rope: Rope,
    /// Per layer: attend only to the last `w` positions.
    pub sliding_window: Vec<Option<usize>>,
    pub moe: Option<Moe>,
    pub mla: Option<Mla>,
    pub eos_token_ids: Vec<u32>,
}

struct Fields<'a> {
    v: &'a Value,
    file: String,
}

impl Fields<'_> {
    fn err(&self, key: &str, want: &str) -> Error {
        Error::invalid(format!(
            "{}: field '{key}' is missing or not {want}",
            self.file
        ))
    }
    fn get(&self, key: &str) -> Option<&Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }
    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(key, "a non-negative integer"))
    }
    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&n| n <= u32::MAX as u64)
                .map(|n| Some(n as usize))
                .ok_or_else(|| self.err(key, "a non-negative integer below 2^32")),
        }
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| self.err(key, "a number")),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| self.err(key, "true or false")),
        }
    }
    fn str_or(&self, key: &str, default: &str) -> Result<String> {
        match self.get(key) {
            None => Ok(default.into()),
            Some(v) => v
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| self.err(key, "a string")),
        }
    }
}

fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => vec![],
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::invalid(format!("{} is not valid JSON: {e}", path.display())))
}

fn rope(f: &Fields, max_positions: usize) -> Result<Rope> {
    // transformers 5 keeps everything in rope_parameters; older configs split theta and scaling.
    let params = f.get("rope_parameters").or_else(|| f.get("rope_scaling"));
    let p = Fields {
        v: params.unwrap_or(&Value::Null),
        file: format!("{} (rope parameters)", f.file),
    };
    let theta = match p.get("rope_theta") {
        Some(_) => p.f64_or("rope_theta", 10000.0)?,
        None => f.f64_or("rope_theta", 10000.0)?,
    };
    let kind = match p.get("rope_type") {
        Some(_) => p.str_or("rope_type", "default")?,
        None => p.str_or("type", "default")?,
    };
    let original = || -> Result<usize> {
        Ok(p.opt_usize("original_max_position_embeddings")?
            .unwrap_or(max_positions))
    };
    let scaling = match kind.as_str() {
        "default" => RopeScaling::Default,
        "linear" => RopeScaling::Linear {
            factor: p.f64_or("factor", 1.0)?,
        },
        "dynamic" => RopeScaling::Dynamic {
            factor: p.f64_or("factor", 1.0)?,
            original_max: original()?,
        },
        "llama3" => RopeScaling::Llama3 {
            factor: p.f64_or("factor", 8.0)?,
            low_freq_factor: p.f64_or("low_freq_factor", 1.0)?,
            high_freq_factor: p.f64_or("high_freq_factor", 4.0)?,
            original_max: original()?,
        },
        "yarn" => RopeScaling::Yarn {
            factor: p.f64_or("factor", max_positions as f64 / original()? as f64)?,
            original_max: original()?,
            beta_fast: p.f64_or("beta_fast", 32.0)?,
            beta_slow: p.f64_or("beta_slow", 1.0)?,
            mscale: p.get("mscale").and_then(|v| v.as_f64()),
            mscale_all_dim: p.get("mscale_all_dim").and_then(|v| v.as_f64()),
            attention_factor: p.get("attention_factor").and_then(|v| v.as_f64()),
            truncate: p.bool_or("truncate", true)?,
        },
        other => {
            return Err(Error::unsupported(format!(
            "{}: rope type '{other}' is not supported (default, linear, dynamic, llama3, yarn are)",
            f.file
        )))
        }
    };
    let partial = match p.get("partial_rotary_factor") {
        Some(_) => p.f64_or("partial_rotary_factor", 1.0)?,
        None => f.f64_or("partial_rotary_factor", 1.0)?,
    };
    Ok(Rope {
        theta,
        scaling,
        partial,
    })
}

impl LlmConfig {
    /// Reads `dir/config.json` (and `generation_config.json` for the stop tokens).
    pub fn load(dir: &Path) -> Result<LlmConfig> {
        let path = dir.join("config.json");
        let v = read_json(&path)?;
        let mut cfg = LlmConfig::from_json(&v, &path.display().to_string())?;
        let gen = dir.join("generation_config.json");
        if gen.exists() {
            let g = read_json(&gen)?;
            for id in token_ids(g.get("eos_token_id")) {
                if !cfg.eos_token_ids.contains(&id) {
                    cfg.eos_token_ids.push(id);
                }
            }
        }
        Ok(cfg)
    }

    pub fn from_json(v: &Value, file: &str) -> Result<LlmConfig> {
        let f = Fields {
            v,
            file: file.into(),
        };
        let arch_name = f
            .get("architectures")
            .and_then(|a| a.as_array())
            .and_then(|a| a.first())
            .and_then(|a| a.as_str())
            .ok_or_else(|| f.err("architectures", "a list with the model class"))?
            .to_string();
        let arch = Arch::from_name(&arch_name).ok_or_else(|| {
            Error::unsupported(format!(
                "{file}: architecture '{arch_name}' is not supported; kuaxin builds {}",
                Arch::SUPPORTED.join(", ")
            ))
        })?;
        let hidden = f.usize("hidden_size")?;
        let heads = f.usize("num_attention_heads")?;
        let layers = f.usize("num_hidden_layers")?;
        let vocab = f.usize("vocab_size")?;
        if heads == 0 || hidden == 0 || vocab == 0 || layers == 0 {
            return Err(Error::invalid(format!(
                "{file}: hidden_size, num_attention_heads, num_hidden_layers and vocab_size must be positive"
            )));
        }
        let kv_heads = f.opt_usize("num_key_value_heads")?.unwrap_or(heads);
        if kv_heads == 0 || heads % kv_heads != 0 {
            return Err(Error::invalid(format!(
                "{file}: {heads} attention heads are not a multiple of {kv_heads} key/value heads"
            )));
        }
        let head_dim = match (arch, f.opt_usize("head_dim")?) {
            // DeepSeek's head_dim is the rotary part; its heads are described by the MLA fields.
            (Arch::DeepseekV3, _) | (_, None) => hidden / heads,
            (_, Some(d)) => d,
        };
        let max_positions = f.opt_usize("max_position_embeddings")?.unwrap_or(4096);
        let rope = rope(&f, max_positions)?;
        let window = f.opt_usize("sliding_window")?;
        let use_window = match arch {
            Arch::Mistral | Arch::Mixtral => window.is_some(),
            Arch::Qwen2 | Arch::Qwen3 | Arch::Qwen3Moe => f.bool_or("use_sliding_window", false)?,
            _ => false,
        };
        let layer_types: Option<Vec<String>> = f.get("layer_types").and_then(|t| {
            t.as_array().map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap_or("").to_string())
                    .collect()
            })
        });
        let max_window_layers = f.opt_usize("max_window_layers")?.unwrap_or(layers);
        let sliding_window = (0..layers)
            .map(|i| {
                let sliding = match &layer_types {
                    Some(t) => t.get(i).is_some_and(|s| s == "sliding_attention"),
                    None => {
                        use_window
                            && (arch == Arch::Mistral
                                || arch == Arch::Mixtral
                                || i < max_window_layers)
                    }
                };
                if sliding && use_window {
                    window
                } else {
                    None
                }
            })
            .collect();
        let moe = match arch {
            Arch::Qwen3Moe => {
                // transformers 5 writes num_local_experts; released checkpoints num_experts.
                let experts = match f.opt_usize("num_experts")? {
                    Some(e) => e,
                    None => f.usize("num_local_experts")?,
                };
                let step = f.opt_usize("decoder_sparse_step")?.unwrap_or(1).max(1);
                let dense: Vec<usize> = f
                    .get("mlp_only_layers")
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_u64())
                            .map(|x| x as usize)
                            .collect()
                    })
                    .unwrap_or_default();
                Some(Moe {
                    experts,
                    top_k: f.usize("num_experts_per_tok")?,
                    intermediate: f.usize("moe_intermediate_size")?,
                    routing: Routing::Softmax {
                        renormalize: f.bool_or("norm_topk_prob", false)?,
                    },
                    shared_intermediate: 0,
                    sparse_layers: (0..layers)
                        .map(|i| !dense.contains(&i) && experts > 0 && (i + 1) % step == 0)
                        .collect(),
                })
            }
            Arch::Mixtral => Some(Moe {
                experts: f.usize("num_local_experts")?,
                top_k: f.usize("num_experts_per_tok")?,
                intermediate: f.usize("intermediate_size")?,
                routing: Routing::Softmax { renormalize: true },
                shared_intermediate: 0,
                sparse_layers: vec![true; layers],
            }),
            Arch::DeepseekV3 => {
                let first_dense = f.opt_usize("first_k_dense_replace")?.unwrap_or(0);
                let freq = f.opt_usize("moe_layer_freq")?.unwrap_or(1).max(1);
                let inter = f.usize("moe_intermediate_size")?;
                let experts = f.usize("n_routed_experts")?;
                let n_group = f.opt_usize("n_group")?.unwrap_or(1).max(1);
                if experts % n_group != 0 {
                    return Err(Error::invalid(format!(
                        "{file}: {experts} routed experts do not split into {n_group} groups"
                    )));
                }
                Some(Moe {
                    experts,
                    top_k: f.usize("num_experts_per_tok")?,
                    intermediate: inter,
                    routing: Routing::GroupedSigmoid {
                        n_group,
                        topk_group: f.opt_usize("topk_group")?.unwrap_or(n_group),
                        renormalize: f.bool_or("norm_topk_prob", true)?,
                        scaling: f.f64_or("routed_scaling_factor", 1.0)?,
                    },
                    shared_intermediate: inter * f.opt_usize("n_shared_experts")?.unwrap_or(0),
                    sparse_layers: (0..layers)
                        .map(|i| i >= first_dense && i % freq == 0)
                        .collect(),
                })
            }
            _ => None,
        };
        if let Some(m) = &moe {
            if m.top_k == 0 || m.top_k > m.experts {
                return Err(Error::invalid(format!(
                    "{file}: num_experts_per_tok {} must be between 1 and the {} experts",
                    m.top_k, m.experts
                )));
            }
        }
        let mla = match arch {
            Arch::DeepseekV3 => Some(Mla {
                q_lora_rank: f.opt_usize("q_lora_rank")?,
                kv_lora_rank: f.usize("kv_lora_rank")?,
                qk_nope: f.usize("qk_nope_head_dim")?,
                qk_rope: f.usize("qk_rope_head_dim")?,
                v_head: f.usize("v_head_dim")?,
                interleaved: f.bool_or("rope_interleave", true)?,
            }),
            _ => None,
        };
        let qkv_bias = match arch {
            Arch::Qwen2 => true,
            _ => f.bool_or("attention_bias", false)?,
        };
        let o_bias = match arch {
            Arch::Qwen2 => false,
            _ => f.bool_or("attention_bias", false)?,
        };
        Ok(LlmConfig {
            arch,
            arch_name,
            vocab,
            hidden,
            intermediate: f.opt_usize("intermediate_size")?.unwrap_or(4 * hidden),
            layers,
            heads,
            kv_heads,
            head_dim,
            rms_eps: f.f64_or("rms_norm_eps", 1e-6)?,
            tie_embeddings: f.bool_or("tie_word_embeddings", false)?,
            qkv_bias,
            o_bias,
            mlp_bias: f.bool_or("mlp_bias", false)?,
            act: f.str_or("hidden_act", "silu")?,
            qk_norm: matches!(arch, Arch::Qwen3 | Arch::Qwen3Moe),
            max_positions,
            rope,
            sliding_window,
            moe,
            mla,
            eos_token_ids: token_ids(f.get("eos_token_id")),
        })
    }

    /// Rotary dims per head.
    pub fn rotary_dim(&self) -> usize {
        match &self.mla {
            Some(m) => m.qk_rope,
            None => ((self.head_dim as f64 * self.rope.partial) as usize) & !1,
        }
    }
}
