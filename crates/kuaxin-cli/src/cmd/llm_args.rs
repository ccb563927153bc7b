//! Arguments shared by the LLM commands: which model, device, dtype and context.
use anyhow::{anyhow, Result};
use kuaxin::DType;
use kuaxin_llm::HfModel;
use std::path::PathBuf;

#[derive(clap::Args, Clone)]
pub struct ModelArgs {
    /// Hugging Face model folder (config.json, *.safetensors, tokenizer.json).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Instead of --model: a config.json whose shape is built with seeded random weights.
    #[arg(long, value_name = "CONFIG.json", conflicts_with = "model")]
    pub random_weights: Option<PathBuf>,
    /// Device to run on.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Threads for the CPU back end (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Weight and activation type: f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    pub dtype: String,
}

impl ModelArgs {
    pub fn dtype(&self) -> Result<DType> {
        match self.dtype.as_str() {
            "f32" => Ok(DType::F32),
            "f16" => Ok(DType::F16),
            "bf16" => Ok(DType::BF16),
            d => Err(anyhow!("--dtype {d}: use f32, f16 or bf16")),
        }
    }

    pub fn open(&self) -> Result<HfModel> {
        match (&self.model, &self.random_weights) {
            (Some(dir), _) => Ok(HfModel::open(dir)?),
            (None, Some(cfg)) => Ok(HfModel::random(cfg, 0)?),
            (None, None) => Err(anyhow!(
                "give --model DIR (or --random-weights CONFIG.json)"
            )),
        }
    }
}
