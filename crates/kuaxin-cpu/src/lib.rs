//! kuaxin-cpu: the CPU back end and the reference semantics of every primitive.
//!
//! - [`eval`] / [`eval_infer`]: run one [`Prim`](kuaxin_core::prim::Prim) on host tensors. This
//!   is the definition of what each primitive computes (numpy / ONNX-reference semantics); the
//!   compiler uses it for constant folding and other back ends are tested against it.
//! - [`CpuBackend`]: implements [`Backend`](kuaxin_core::Backend) on its own rayon pool.
//!
//! Kernels take contiguous row-major inputs; only `View` reads strided windows. Outputs are
//! checked against the `KUAXIN_MAX_TENSOR_BYTES` limit (see [`limits`]) before allocation, and
//! every user-provided index is bounds-checked: bad data gives an `Err`, never a panic.
#[macro_use]
mod dispatch;
#[macro_use]
mod float_ops;

mod argreduce;
mod backend;
mod binary;
mod block;
mod cast;
mod concat;
mod conv;
mod conv_blocked;
#[cfg(test)]
mod conv_cases;
mod conv_direct;
mod conv_finish;
mod conv_rows;
mod cumulative;
mod direct_product;
mod erf;
mod eval;
mod fold;
mod fused;
mod gather;
mod gemm;
mod host;
mod huge_pages;
mod huge_regions;
mod im2col;
mod layer_norm;
pub use kuaxin_core::limits;
mod matmul;
mod pad;
mod panels;
mod par;
mod reduce;
mod round;
mod row_product;
mod rows;
mod scalar;
mod scatter;
mod scratch;
mod select;
mod shape;
mod simd;
mod skinny;
mod softmax;
mod spread_rows;
mod tile;
mod tile_avx2;
mod tile_blocked_avx512;
mod tile_direct;
mod tile_direct_avx512;
mod tile_rows_avx512;
mod transpose_avx512;
mod typed;
mod unary;
mod view;
mod vmath;
mod vmath_avx2;
mod vmath_avx512;
mod walk;
mod warm;
mod weights;
mod window;
mod window_avx2;
mod window_avx512;
mod window_lanes;

pub use backend::{host_tensor, wrap, CpuBackend};
pub use erf::{erf, erf_f32};
pub use eval::{eval, eval_infer};
pub use huge_pages::HugePageAlloc;
