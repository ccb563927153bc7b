//! Loading a whole `.onnx` file: decode, convert, validate, and name the file in every error.
use crate::decode::decode;
use crate::external::ExternalFiles;
use crate::graph::{convert_graph, normalize_domain};
use crate::proto::ModelProto;
use crate::validate::check_model_graph;
use kuaxin_core::error::ResultExt;
use kuaxin_core::graph::Model;
use kuaxin_core::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// Loads an ONNX model file. External tensor data is read relative to the file's directory.
/// Every error message starts with the path.
pub fn load_model(path: &Path) -> Result<Model> {
    let source = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("{source}: cannot read: {e}")))?;
    let proto = decode_model(&bytes).ctx(&source)?;
    drop(bytes); // the file image is not needed once decoded: keep peak memory down
    convert(&proto, &source, Some(model_dir(path))).ctx(source)
}

/// The directory a file's relative references are resolved against ("." for a bare name).
pub(crate) fn model_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Loads a model from serialized `ModelProto` bytes. `source_name` names the model in
/// errors and becomes [`Model::source`]; `base_dir` is where external data is looked up
/// (`None`: a model with external data is an error).
pub fn load_model_bytes(bytes: &[u8], source_name: &str, base_dir: Option<&Path>) -> Result<Model> {
    decode_model(bytes)
        .and_then(|mp| convert(&mp, source_name, base_dir))
        .ctx(source_name)
}

fn decode_model(bytes: &[u8]) -> Result<ModelProto> {
    decode(bytes, "ONNX model")
}

fn convert(mp: &ModelProto, source_name: &str, base_dir: Option<&Path>) -> Result<Model> {
    let g = mp
        .graph
        .as_ref()
        .ok_or_else(|| Error::invalid("the model has no graph (empty or not an ONNX file?)"))?;
    let mut opsets = BTreeMap::new();
    for o in &mp.opset_import {
        opsets.insert(normalize_domain(o.domain()), o.version());
    }
    let graph = convert_graph(g, &ExternalFiles::new(base_dir))?;
    check_model_graph(&graph)?;
    let producer = format!("{} {}", mp.producer_name(), mp.producer_version())
        .trim()
        .to_string();
    Ok(Model {
        graph,
        opsets,
        producer,
        source: source_name.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::model_dir;
    use std::path::Path;

    #[test]
    fn bare_file_names_resolve_in_the_current_directory() {
        assert_eq!(model_dir(Path::new("model.onnx")), Path::new("."));
        assert_eq!(model_dir(Path::new("a/b/model.onnx")), Path::new("a/b"));
        assert_eq!(model_dir(Path::new("/m.onnx")), Path::new("/"));
    }
}
