//! ONNX `TensorProto.DataType` codes <-> kuaxin [`DType`].
//!
//! ONNX has more element types than kuaxin computes with (strings, complex, 8/6/4/2-bit
//! floats and ints). Those map to `None` here so every caller can reject them with
//! [`kuaxin_core::Error::unsupported`] naming the ONNX type.
use crate::proto::tensor_proto::DataType as OnnxType;
use kuaxin_core::DType;

/// The kuaxin element type of an ONNX data-type code, or `None` when kuaxin has none.
pub fn dtype_from_onnx(code: i32) -> Option<DType> {
    Some(match OnnxType::try_from(code).ok()? {
        OnnxType::Float => DType::F32,
        OnnxType::Double => DType::F64,
        OnnxType::Float16 => DType::F16,
        OnnxType::Bfloat16 => DType::BF16,
        OnnxType::Int8 => DType::I8,
        OnnxType::Int16 => DType::I16,
        OnnxType::Int32 => DType::I32,
        OnnxType::Int64 => DType::I64,
        OnnxType::Uint8 => DType::U8,
        OnnxType::Uint16 => DType::U16,
        OnnxType::Uint32 => DType::U32,
        OnnxType::Uint64 => DType::U64,
        OnnxType::Bool => DType::Bool,
        _ => return None,
    })
}

/// The ONNX data-type code of a kuaxin element type (every [`DType`] has one).
pub fn dtype_to_onnx(dtype: DType) -> i32 {
    let t = match dtype {
        DType::F32 => OnnxType::Float,
        DType::F64 => OnnxType::Double,
        DType::F16 => OnnxType::Float16,
        DType::BF16 => OnnxType::Bfloat16,
        DType::I8 => OnnxType::Int8,
        DType::I16 => OnnxType::Int16,
        DType::I32 => OnnxType::Int32,
        DType::I64 => OnnxType::Int64,
        DType::U8 => OnnxType::Uint8,
        DType::U16 => OnnxType::Uint16,
        DType::U32 => OnnxType::Uint32,
        DType::U64 => OnnxType::Uint64,
        DType::Bool => OnnxType::Bool,
    };
    t as i32
}

/// The ONNX spelling of a data-type code ("FLOAT8E4M3FN"), for error messages.
/// Codes this proto does not define read as "UNKNOWN".
pub fn dtype_name_onnx(code: i32) -> &'static str {
    OnnxType::try_from(code)
        .map(|t| t.as_str_name())
        .unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_round_trips() {
        for d in DType::ALL {
            assert_eq!(dtype_from_onnx(dtype_to_onnx(d)), Some(d));
        }
    }

    #[test]
    fn exotic_types_are_named_not_mapped() {
        assert_eq!(dtype_from_onnx(17), None);
        assert_eq!(dtype_name_onnx(17), "FLOAT8E4M3FN");
        assert_eq!(dtype_name_onnx(8), "STRING");
        assert_eq!(dtype_name_onnx(1000), "UNKNOWN");
    }
}
