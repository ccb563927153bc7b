//! kuaxin-compile: from the portable graph to primitive programs.
//!
//! [`lower::Cx`] walks a graph and calls each op's lowering ([`ops`]); lowerings speak the
//! numpy-like vocabulary of [`builder`]; primitives go to a [`trace::Trace`], which folds
//! constants and records the rest into a [`program::Program`] that runs on any back end.
pub mod blocked;
pub mod builder;
pub mod compile;
pub mod epilogues;
pub mod fold_bn;
pub mod fuse;
pub mod inline;
pub mod lower;
pub mod matmul_views;
pub mod ops;
pub mod program;
pub mod reshape_outputs;
pub mod residual_bias;
pub mod row_ops;
pub mod trace;
pub mod value;

pub use compile::{compile_and_run, Compiled};
pub use program::Program;
pub use value::{Src, TVal, Value};
