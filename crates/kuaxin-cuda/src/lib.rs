//! kuaxin-cuda: the back-end contract on NVIDIA GPUs.
//!
//! Every primitive and fused kernel is rendered to CUDA C ([`kernel`], [`prims`] over the
//! shared kernel text of [`text`]), compiled at run time by NVRTC for the GPU's architecture and
//! launched through the driver API on one stream; matmul goes to cuBLAS. cudarc loads libcuda,
//! libnvrtc and libcublas at run time, so this builds anywhere, and a machine without the driver
//! gets an error, not a panic. Everything that differs between CUDA-like languages (HIP, MUSA,
//! MACA) is a [`dialect::Dialect`] table; the renderer itself is shared.
//!
//! [`CodegenCheck`] (`--device cuda-codegen`) runs on another back end but compiles every
//! kernel this back end would launch: CI proves the generator without a GPU.
mod alloc;
mod backend;
mod blas;
mod bytes;
mod codegen;
pub mod ctype;
pub mod dialect;
mod driver;
#[cfg(test)]
mod emulate_rows_tests;
#[cfg(test)]
mod emulate_tests;
pub mod kernel;
mod nvrtc;
mod plan;
mod plan_cache;
mod prelude;
pub mod prims;
pub mod rows;
mod scalar;
pub mod text;
mod timing;

pub use backend::CudaBackend;
pub use codegen::CodegenCheck;
pub use driver::{driver_present, list, GpuSummary};
