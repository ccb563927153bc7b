//! A Hugging Face model folder: config, weights and tokenizer.
use crate::arch::{self, BuildOptions, LlmGraph};
use crate::checkpoint::{Checkpoint, RandomWeights};
use crate::config::LlmConfig;
use crate::tokenizer::TextTokenizer;
use kuaxin_core::{Error, Result};
use std::path::{Path, PathBuf};

pub struct HfModel {
    pub dir: PathBuf,
    pub config: LlmConfig,
    pub checkpoint: Checkpoint,
}

impl HfModel {
    pub fn open(dir: &Path) -> Result<HfModel> {
        if !dir.is_dir() {
            return Err(Error::io(format!(
                "{} is not a folder (a Hugging Face model folder holds config.json and *.safetensors)",
                dir.display()
            )));
        }
        Ok(HfModel {
            dir: dir.to_path_buf(),
            config: LlmConfig::load(dir)?,
            checkpoint: Checkpoint::open(dir)?,
        })
    }

    /// A model with `config.json`'s shape and seeded random weights (benchmarks): no weight
    /// files needed. The tokenizer is read from the config's folder when there is one.
    pub fn random(config: &Path, seed: u64) -> Result<HfModel> {
        let text = std::fs::read_to_string(config)
            .map_err(|e| Error::io(format!("cannot read {}: {e}", config.display())))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::invalid(format!("{} is not valid JSON: {e}", config.display())))?;
        let config_parsed = LlmConfig::from_json(&v, &config.display().to_string())?;
        let tied = config_parsed.tie_embeddings;
        Ok(HfModel {
            dir: config.parent().unwrap_or(Path::new(".")).to_path_buf(),
            config: config_parsed,
            checkpoint: Checkpoint::random(RandomWeights { seed, tied }),
        })
    }

    /// Builds the model's graph for `opts`.
    pub fn build(&self, opts: &BuildOptions) -> Result<LlmGraph> {
        arch::build(&self.config, &self.checkpoint, opts)
            .map_err(|e| e.context(format!("building {}", self.dir.display())))
    }

    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        TextTokenizer::open(&self.dir)
    }
}
