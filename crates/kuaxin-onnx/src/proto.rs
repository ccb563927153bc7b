//! The ONNX protobuf messages, generated at build time from the official `proto/onnx.proto`.
//!
//! Kept in its own module so the rest of the crate reads like plain Rust over these types.
#![allow(clippy::all, missing_docs, rustdoc::all)]
include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
