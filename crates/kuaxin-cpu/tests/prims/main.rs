//! Tests for the CPU back end: each primitive on small hand-worked examples (expected values
//! by hand or from numpy / the ONNX node tests), dtype edge cases, gemm-based kernels against
//! naive loops on random data, and error cases.
mod common;

mod backend;
mod conv;
mod dtypes;
mod elementwise;
mod host;
mod index;
mod matmul;
mod matmul_epilogue;
mod movement;
mod reduce;
