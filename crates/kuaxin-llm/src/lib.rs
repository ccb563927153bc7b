//! kuaxin-llm: large language models from Hugging Face folders, built as kuaxin graphs and run
//! by the same compiler and back ends as every other model.
//!
//! ```no_run
//! use kuaxin_llm::{Generator, GenerateOptions, HfModel, arch::BuildOptions};
//! let m = HfModel::open(std::path::Path::new("tests/llm/qwen2"))?;
//! let device = kuaxin::open_device("cpu", None)?;
//! let mut gen = Generator::new(&m, device, &BuildOptions::generation(kuaxin::DType::F32, 256))?;
//! let ids = m.tokenizer()?.encode("Hello")?;
//! let out = gen.generate(&[ids], &GenerateOptions::default(), &mut |_, _| {})?;
//! # Ok::<(), kuaxin_core::Error>(())
//! ```
pub mod arch;
pub mod bandwidth;
pub mod checkpoint;
pub mod config;
pub mod generate;
pub mod hf;
pub mod rope;
pub mod sampler;
pub mod tokenizer;

pub use generate::{GenerateOptions, Generated, Generator};
pub use hf::HfModel;
pub use sampler::Sampling;
pub use tokenizer::TextTokenizer;
