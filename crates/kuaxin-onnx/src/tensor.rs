//! `TensorProto` <-> [`Tensor`]: dims, dtype and the several places ONNX may keep the data.
//!
//! A tensor's bytes live in exactly one of: `raw_data` (little-endian), a typed repeated
//! field (`float_data`, `int32_data`, ...), or an external file. Every size is checked
//! against what the declared dims need *before* anything is allocated, so a hostile file
//! cannot make the loader reserve more memory than the bytes it actually carries (external
//! data is bounded by the file's real length and by [`MAX_ELEMENTS`] / [`MAX_BYTES`]).
use crate::dtype::{dtype_from_onnx, dtype_name_onnx, dtype_to_onnx};
use crate::external::ExternalFiles;
use crate::proto::{tensor_proto::DataLocation, TensorProto};
use half::{bf16, f16};
use kuaxin_core::error::ResultExt;
use kuaxin_core::tensor::checked_numel;
use kuaxin_core::{DType, Data, Error, Result, Tensor};
use prost::Message;
use std::path::Path;

/// Largest element count one tensor may declare (2^34). Far above any real weight, far
/// below what would exhaust memory by accident.
pub const MAX_ELEMENTS: usize = 1 << 34;
/// Largest byte size one tensor may declare (16 GiB).
pub const MAX_BYTES: usize = 16 << 30;

/// Decodes one ONNX tensor. `base_dir` is the model's directory, where external data lives;
/// `None` makes external data an error. Errors start with "tensor 'name': ".
pub fn tensor_from_proto(t: &TensorProto, base_dir: Option<&Path>) -> Result<Tensor> {
    convert_tensor(t, &ExternalFiles::new(base_dir))
}

/// [`tensor_from_proto`] sharing one model's external-file budget.
pub(crate) fn convert_tensor(t: &TensorProto, ext: &ExternalFiles) -> Result<Tensor> {
    decode(t, ext).with_ctx(|| format!("tensor '{}'", t.name()))
}

/// Encodes `t` as a `TensorProto` (dims, data type, little-endian `raw_data`).
pub fn tensor_to_proto(t: &Tensor, name: &str) -> TensorProto {
    TensorProto {
        dims: t.shape.iter().map(|&d| d as i64).collect(),
        data_type: Some(dtype_to_onnx(t.dtype())),
        name: Some(name.to_string()),
        raw_data: Some(to_le_bytes(&t.data)),
        ..Default::default()
    }
}

/// `t` as serialized `TensorProto` bytes, the format of the ONNX test-data `.pb` files.
pub fn save_tensor_pb(t: &Tensor, name: &str) -> Vec<u8> {
    tensor_to_proto(t, name).encode_to_vec()
}

/// Declared dims as a shape: non-negative, element count and byte size within limits.
/// Returns the shape and its element count.
pub(crate) fn checked_shape(dims: &[i64], dtype: DType) -> Result<(Vec<usize>, usize)> {
    let mut shape = Vec::with_capacity(dims.len());
    for &d in dims {
        match usize::try_from(d) {
            Ok(d) => shape.push(d),
            Err(_) => {
                return Err(Error::invalid(format!(
                    "negative dimension {d} in dims {dims:?}"
                )))
            }
        }
    }
    let numel = checked_numel(&shape).ok_or_else(|| {
        Error::invalid(format!("dims {dims:?} overflow (element count too large)"))
    })?;
    if numel > MAX_ELEMENTS {
        return Err(Error::invalid(format!(
            "dims {dims:?} declare {numel} elements, more than the limit of 2^34"
        )));
    }
    match numel.checked_mul(dtype.size()) {
        Some(b) if b <= MAX_BYTES => Ok((shape, numel)),
        _ => Err(Error::invalid(format!(
            "dims {dims:?} of {dtype} need more than the 16 GiB limit per tensor"
        ))),
    }
}

fn decode(t: &TensorProto, ext: &ExternalFiles) -> Result<Tensor> {
    if t.segment.is_some() {
        return Err(Error::unsupported("segmented tensors are not supported"));
    }
    let code = t.data_type.unwrap_or(0);
    let dtype = match dtype_from_onnx(code) {
        Some(d) => d,
        None if code == 0 => return Err(Error::invalid("data_type is missing (UNDEFINED)")),
        None => {
            return Err(Error::unsupported(format!(
                "dtype {} is not supported",
                dtype_name_onnx(code)
            )))
        }
    };
    let (shape, numel) = checked_shape(&t.dims, dtype)?;
    let nbytes = numel * dtype.size(); // cannot overflow: checked_shape bounded it
    let data = match t.data_location {
        None => inline_data(t, dtype, numel, nbytes)?,
        Some(l) if l == DataLocation::Default as i32 => inline_data(t, dtype, numel, nbytes)?,
        Some(l) if l == DataLocation::External as i32 => {
            let bytes = ext.read(&t.external_data, nbytes)?;
            from_le_bytes(dtype, &bytes)
        }
        Some(l) => return Err(Error::invalid(format!("unknown data_location {l}"))),
    };
    Ok(Tensor { shape, data })
}

/// Data stored in the message itself: `raw_data` when non-empty, else the typed field.
fn inline_data(t: &TensorProto, dtype: DType, numel: usize, nbytes: usize) -> Result<Data> {
    match &t.raw_data {
        Some(raw) if !raw.is_empty() => {
            if raw.len() != nbytes {
                return Err(Error::invalid(format!(
                    "dims {:?} of {dtype} need {nbytes} bytes but raw_data holds {}",
                    t.dims,
                    raw.len()
                )));
            }
            Ok(from_le_bytes(dtype, raw))
        }
        _ => typed_data(t, dtype, numel),
    }
}

/// Data in the typed repeated fields, per the ONNX spec: 8/16-bit types, bool and the
/// bit patterns of f16/bf16 ride in `int32_data`; u32 and u64 in `uint64_data`.
fn typed_data(t: &TensorProto, dtype: DType, numel: usize) -> Result<Data> {
    let (field, len) = match dtype {
        DType::F32 => ("float_data", t.float_data.len()),
        DType::F64 => ("double_data", t.double_data.len()),
        DType::I64 => ("int64_data", t.int64_data.len()),
        DType::U32 | DType::U64 => ("uint64_data", t.uint64_data.len()),
        _ => ("int32_data", t.int32_data.len()),
    };
    if len != numel {
        return Err(Error::invalid(format!(
            "dims {:?} need {numel} elements but {} (and raw_data) hold {len}",
            t.dims, field
        )));
    }
    let i32s = &t.int32_data;
    Ok(match dtype {
        DType::F32 => Data::F32(t.float_data.clone()),
        DType::F64 => Data::F64(t.double_data.clone()),
        DType::I64 => Data::I64(t.int64_data.clone()),
        DType::U64 => Data::U64(t.uint64_data.clone()),
        DType::U32 => Data::U32(t.uint64_data.iter().map(|&v| v as u32).collect()),
        DType::I32 => Data::I32(i32s.clone()),
        DType::I16 => Data::I16(i32s.iter().map(|&v| v as i16).collect()),
        DType::I8 => Data::I8(i32s.iter().map(|&v| v as i8).collect()),
        DType::U16 => Data::U16(i32s.iter().map(|&v| v as u16).collect()),
        DType::U8 => Data::U8(i32s.iter().map(|&v| v as u8).collect()),
        DType::Bool => Data::Bool(i32s.iter().map(|&v| v != 0).collect()),
        DType::F16 => Data::F16(i32s.iter().map(|&v| f16::from_bits(v as u16)).collect()),
        DType::BF16 => Data::BF16(i32s.iter().map(|&v| bf16::from_bits(v as u16)).collect()),
    })
}

/// Splits `b` into `N`-byte little-endian chunks. The caller has checked the length, so a
/// ragged tail (which `chunks_exact` would drop) cannot occur.
fn chunks<const N: usize, T>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    b.chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect()
}

/// Little-endian bytes (exactly `numel * dtype.size()` of them) to typed storage.
pub(crate) fn from_le_bytes(dtype: DType, b: &[u8]) -> Data {
    match dtype {
        DType::F32 => Data::F32(chunks(b, f32::from_le_bytes)),
        DType::F64 => Data::F64(chunks(b, f64::from_le_bytes)),
        DType::F16 => Data::F16(chunks(b, |a| f16::from_bits(u16::from_le_bytes(a)))),
        DType::BF16 => Data::BF16(chunks(b, |a| bf16::from_bits(u16::from_le_bytes(a)))),
        DType::I8 => Data::I8(b.iter().map(|&x| x as i8).collect()),
        DType::I16 => Data::I16(chunks(b, i16::from_le_bytes)),
        DType::I32 => Data::I32(chunks(b, i32::from_le_bytes)),
        DType::I64 => Data::I64(chunks(b, i64::from_le_bytes)),
        DType::U8 => Data::U8(b.to_vec()),
        DType::U16 => Data::U16(chunks(b, u16::from_le_bytes)),
        DType::U32 => Data::U32(chunks(b, u32::from_le_bytes)),
        DType::U64 => Data::U64(chunks(b, u64::from_le_bytes)),
        DType::Bool => Data::Bool(b.iter().map(|&x| x != 0).collect()),
    }
}

/// Typed storage to little-endian bytes (bool as one 0/1 byte, as ONNX requires).
fn to_le_bytes(d: &Data) -> Vec<u8> {
    fn flat<T, const N: usize>(v: &[T], f: impl Fn(&T) -> [u8; N]) -> Vec<u8> {
        v.iter().flat_map(f).collect()
    }
    match d {
        Data::F32(v) => flat(v, |x| x.to_le_bytes()),
        Data::F64(v) => flat(v, |x| x.to_le_bytes()),
        Data::F16(v) => flat(v, |x| x.to_bits().to_le_bytes()),
        Data::BF16(v) => flat(v, |x| x.to_bits().to_le_bytes()),
        Data::I8(v) => v.iter().map(|&x| x as u8).collect(),
        Data::I16(v) => flat(v, |x| x.to_le_bytes()),
        Data::I32(v) => flat(v, |x| x.to_le_bytes()),
        Data::I64(v) => flat(v, |x| x.to_le_bytes()),
        Data::U8(v) => v.clone(),
        Data::U16(v) => flat(v, |x| x.to_le_bytes()),
        Data::U32(v) => flat(v, |x| x.to_le_bytes()),
        Data::U64(v) => flat(v, |x| x.to_le_bytes()),
        Data::Bool(v) => v.iter().map(|&x| x as u8).collect(),
    }
}
