//! ONNX front end: parses `.onnx` files into kuaxin's portable [`Model`].
//!
//! The protobuf types are generated from the official `onnx.proto` (see [`proto`]); the
//! loader translates them field by field, then checks the graph structure, so that a
//! malformed or hostile file fails here with one clear error naming the file (and the node
//! or tensor) instead of panicking, hanging or allocating without bound later on.
//!
//! What is deliberately *not* checked here: whether ops and domains exist and whether
//! attributes have the right kinds for their op — the compiler knows the op set and reports
//! those.
//!
//! [`Model`]: kuaxin_core::graph::Model
mod attr;
mod decode;
mod dtype;
mod external;
mod graph;
mod model;
pub mod proto;
mod tensor;
mod types;
mod validate;
mod value;

pub use dtype::{dtype_from_onnx, dtype_name_onnx, dtype_to_onnx};
pub use model::{load_model, load_model_bytes};
/// The protobuf runtime the [`proto`] types use (for `encode_to_vec` / `decode` in tests
/// and tools without a separate dependency).
pub use prost;
pub use proto::TensorProto;
pub use tensor::{save_tensor_pb, tensor_from_proto, tensor_to_proto, MAX_BYTES, MAX_ELEMENTS};
pub use value::{load_value_file, load_value_file_as};
