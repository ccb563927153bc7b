//! Generates the ONNX protobuf types from the checked-in official `proto/onnx.proto`.
//!
//! protox parses the .proto in pure Rust, so building kuaxin needs no system `protoc`.
fn main() {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = match protox::compile(["onnx.proto"], ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("proto/onnx.proto does not compile: {e}"),
    };
    if let Err(e) = prost_build::Config::new().compile_fds(fds) {
        panic!("prost-build failed on proto/onnx.proto: {e}");
    }
}
