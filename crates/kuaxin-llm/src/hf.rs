//! A Hugging Face model folder: config, weights and tokenizer.
use crate::arch::{self, BuildOptions, LlmGraph};
use crate::checkpoint::Checkpoint;
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

    /// Builds the model's graph for `opts`.
    pub fn build(&self, opts: &BuildOptions) -> Result<LlmGraph> {
        arch::build(&self.config, &self.checkpoint, opts)
            .map_err(|e| e.context(format!("building {}", self.dir.display())))
    }

    pub fn tokenizer(&self) -> Result<TextTokenizer> {
        TextTokenizer::open(&self.dir)
    }
}
