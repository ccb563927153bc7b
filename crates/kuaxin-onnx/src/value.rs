//! Runtime values stored as protobuf files: the `test_data_set_*/input_*.pb` and
//! `output_*.pb` files of the ONNX backend tests.
//!
//! The bytes do not say which message they hold, so the caller passes the declared type of
//! the graph input or output the file belongs to: a sequence is a `SequenceProto`, an
//! optional an `OptionalProto`, anything else a `TensorProto`.
use crate::decode::decode;
use crate::external::ExternalFiles;
use crate::model::model_dir;
use crate::proto::{OptionalProto, SequenceProto, TensorProto};
use crate::tensor::convert_tensor;
use kuaxin_core::error::ResultExt;
use kuaxin_core::graph::ValueType;
use kuaxin_core::{Error, HostValue, Result};
use std::path::Path;

/// Element kinds of `SequenceProto.DataType` / `OptionalProto.DataType` (same numbering).
const TENSOR: i32 = 1;
const SPARSE_TENSOR: i32 = 2;
const SEQUENCE: i32 = 3;
const MAP: i32 = 4;
const OPTIONAL: i32 = 5;

/// Reads a serialized `TensorProto` file as a tensor value.
pub fn load_value_file(path: &Path) -> Result<HostValue> {
    load_value_file_as(path, &ValueType::Unknown)
}

/// Reads a value file whose message kind follows `ty` (sequence, optional, else tensor).
/// Errors start with the path.
pub fn load_value_file_as(path: &Path, ty: &ValueType) -> Result<HostValue> {
    let source = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("{source}: cannot read: {e}")))?;
    // One budget for the whole file, as for a model (see `external`).
    let base = &ExternalFiles::new(Some(model_dir(path)));
    let value = match ty {
        ValueType::Sequence(_) => {
            decode::<SequenceProto>(&bytes, "SequenceProto").and_then(|s| sequence(&s, base))
        }
        ValueType::Optional(_) => {
            decode::<OptionalProto>(&bytes, "OptionalProto").and_then(|o| optional(&o, base))
        }
        ValueType::Tensor { .. } | ValueType::Unknown => {
            decode::<TensorProto>(&bytes, "TensorProto")
                .and_then(|t| convert_tensor(&t, base))
                .map(HostValue::Tensor)
        }
    };
    value.ctx(source)
}

fn sequence(s: &SequenceProto, base: &ExternalFiles) -> Result<HostValue> {
    if !s.sparse_tensor_values.is_empty() || !s.map_values.is_empty() {
        return Err(unsupported_elem(if s.map_values.is_empty() {
            SPARSE_TENSOR
        } else {
            MAP
        }));
    }
    // elem_type picks the field; an empty or untyped sequence uses whichever is filled.
    let kind = match s.elem_type() {
        0 if !s.tensor_values.is_empty() => TENSOR,
        0 if !s.sequence_values.is_empty() => SEQUENCE,
        0 if !s.optional_values.is_empty() => OPTIONAL,
        k => k,
    };
    let items = match kind {
        0 => Vec::new(),
        TENSOR => s
            .tensor_values
            .iter()
            .map(|t| convert_tensor(t, base).map(HostValue::Tensor))
            .collect::<Result<_>>()?,
        SEQUENCE => s
            .sequence_values
            .iter()
            .map(|v| sequence(v, base))
            .collect::<Result<_>>()?,
        OPTIONAL => s
            .optional_values
            .iter()
            .map(|v| optional(v, base))
            .collect::<Result<_>>()?,
        k => return Err(unsupported_elem(k)),
    };
    Ok(HostValue::Sequence(items))
}

fn optional(o: &OptionalProto, base: &ExternalFiles) -> Result<HostValue> {
    // The value that is present decides; elem_type alone (no value) is an empty optional.
    let inner = if let Some(t) = &o.tensor_value {
        HostValue::Tensor(convert_tensor(t, base)?)
    } else if let Some(s) = &o.sequence_value {
        sequence(s, base)?
    } else if let Some(v) = &o.optional_value {
        optional(v, base)?
    } else if o.sparse_tensor_value.is_some() {
        return Err(unsupported_elem(SPARSE_TENSOR));
    } else if o.map_value.is_some() {
        return Err(unsupported_elem(MAP));
    } else {
        return Ok(HostValue::Optional(None));
    };
    Ok(HostValue::Optional(Some(Box::new(inner))))
}

fn unsupported_elem(kind: i32) -> Error {
    match kind {
        SPARSE_TENSOR => Error::unsupported("sparse tensor values are not supported"),
        MAP => Error::unsupported("map values are not supported"),
        k => Error::invalid(format!("unknown element type {k}")),
    }
}
