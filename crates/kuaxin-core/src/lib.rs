//! kuaxin-core: what every other crate shares.
//!
//! - [`DType`], [`Tensor`]: host tensors with typed storage.
//! - [`graph`]: the portable model graph (front ends produce it, the compiler consumes it).
//! - [`prim`]: the primitive op set every high-level op lowers to.
//! - [`backend`]: the small contract a chip implements.
pub mod backend;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod graph_builder;
pub mod kernel;
pub mod limits;
pub mod patch;
pub mod prim;
pub mod prim_kernel;
pub mod tensor;
pub mod value;

pub use backend::{Backend, DeviceTensor};
pub use dtype::DType;
pub use error::{Error, Result};
pub use tensor::{Data, Tensor};
pub use value::HostValue;
