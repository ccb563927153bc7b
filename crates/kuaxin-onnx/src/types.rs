//! `TypeProto` / `ValueInfoProto` -> [`ValueType`] / [`ValueInfo`].
//!
//! A dim is known (`dim_value`), named (`dim_param`, e.g. "batch") or unknown (neither);
//! a missing shape means unknown rank. Negative dims are malformed, not unknown.
use crate::dtype::{dtype_from_onnx, dtype_name_onnx};
use crate::proto::tensor_shape_proto::dimension::Value as DimValue;
use crate::proto::type_proto::Value;
use crate::proto::{TensorShapeProto, TypeProto, ValueInfoProto};
use kuaxin_core::error::ResultExt;
use kuaxin_core::graph::{Dim, ValueInfo, ValueType};
use kuaxin_core::{Error, Result};

/// The declared type of a value. Map, sparse and opaque types and non-kuaxin element types
/// are `Unsupported`; an absent type is [`ValueType::Unknown`].
pub(crate) fn value_type(tp: &TypeProto) -> Result<ValueType> {
    match &tp.value {
        None => Ok(ValueType::Unknown),
        Some(Value::TensorType(t)) => {
            let code = t.elem_type.unwrap_or(0);
            if code == 0 {
                // Some exporters leave intermediate value_info untyped.
                return Ok(ValueType::Unknown);
            }
            let dtype = dtype_from_onnx(code).ok_or_else(|| {
                Error::unsupported(format!("dtype {} is not supported", dtype_name_onnx(code)))
            })?;
            let shape = t.shape.as_ref().map(shape).transpose()?;
            Ok(ValueType::Tensor { dtype, shape })
        }
        Some(Value::SequenceType(s)) => {
            Ok(ValueType::Sequence(Box::new(elem(s.elem_type.as_deref())?)))
        }
        Some(Value::OptionalType(o)) => {
            Ok(ValueType::Optional(Box::new(elem(o.elem_type.as_deref())?)))
        }
        Some(Value::MapType(_)) => Err(Error::unsupported("map types are not supported")),
        Some(Value::SparseTensorType(_)) => {
            Err(Error::unsupported("sparse tensor types are not supported"))
        }
        Some(Value::OpaqueType(_)) => Err(Error::unsupported("opaque types are not supported")),
    }
}

fn elem(tp: Option<&TypeProto>) -> Result<ValueType> {
    tp.map(value_type).unwrap_or(Ok(ValueType::Unknown))
}

fn shape(s: &TensorShapeProto) -> Result<Vec<Dim>> {
    s.dim
        .iter()
        .enumerate()
        .map(|(axis, d)| match &d.value {
            Some(DimValue::DimValue(v)) => usize::try_from(*v)
                .map(Dim::Known)
                .map_err(|_| Error::invalid(format!("negative dimension {v} at axis {axis}"))),
            Some(DimValue::DimParam(p)) if !p.is_empty() => Ok(Dim::Sym(p.clone())),
            _ => Ok(Dim::Unknown),
        })
        .collect()
}

/// A named, typed graph value; errors name the value ("value 'x': ...").
pub(crate) fn value_info(v: &ValueInfoProto) -> Result<ValueInfo> {
    let ty = v
        .r#type
        .as_ref()
        .map(value_type)
        .transpose()
        .with_ctx(|| format!("value '{}'", v.name()))?;
    Ok(ValueInfo {
        name: v.name().to_string(),
        ty: ty.unwrap_or(ValueType::Unknown),
    })
}
