//! ONNX front end (being written).
pub mod proto;
