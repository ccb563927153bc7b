//! kuaxin-npy: NumPy `.npy` files as kuaxin [`Tensor`]s.
//!
//! Reading accepts format versions 1.0, 2.0 and 3.0, little-, big-endian and
//! byte-order-free descrs, and both C and Fortran order (Fortran-order data is
//! transposed into kuaxin's row-major layout). Supported descrs:
//!
//! | dtype | descr |
//! |-------|-------|
//! | f16, f32, f64 | `<f2`, `<f4`, `<f8` (or `>`) |
//! | i8, i16, i32, i64 | `|i1`, `<i2`, `<i4`, `<i8` |
//! | u8, u16, u32, u64 | `|u1`, `<u2`, `<u4`, `<u8` |
//! | bool | `|b1` |
//!
//! Anything else (complex, strings, objects, datetimes, structured dtypes) is an
//! [`ErrorKind::Unsupported`](kuaxin_core::error::ErrorKind) error naming the descr.
//!
//! Writing always produces little-endian, C-order files of format version 1.0
//! (2.0 only if the header would not fit in 64 KiB), laid out as numpy does
//! (data aligned to 64 bytes).
//!
//! **bf16:** numpy has no bfloat16, so bf16 tensors are written as `<f4`. The
//! upcast is exact (every bf16 is an f32), but reading the file back yields an
//! f32 tensor; cast it back with [`Tensor::cast`] if needed.
//!
//! Malformed or hostile input (truncated files, headers claiming more data than
//! present, shapes whose size overflows) returns an error whose message starts
//! with the file name; nothing panics and nothing is allocated before the data
//! is known to be present.
use std::path::Path;

use half::{bf16, f16};
use kuaxin_core::{DType, Data, Error, Result, Tensor};

mod header;
pub mod npz;

pub use npz::{read_npz, write_npz};

const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy aligns the start of the data to this many bytes.
const ALIGN: usize = 64;

/// Reads a `.npy` file.
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::io(format!("{}: cannot read: {e}", path.display())))?;
    read_npy_bytes(&bytes, &path.display().to_string())
}

/// Decodes the bytes of a `.npy` file; `name` (usually the file name) prefixes error messages.
pub fn read_npy_bytes(bytes: &[u8], name: &str) -> Result<Tensor> {
    decode(bytes).map_err(|e| e.context(name))
}

/// Writes `t` as a `.npy` file (bf16 is written as `<f4`, see the crate docs).
pub fn write_npy(path: &Path, t: &Tensor) -> Result<()> {
    std::fs::write(path, to_npy_bytes(t))
        .map_err(|e| Error::io(format!("{}: cannot write: {e}", path.display())))
}

/// Encodes `t` as the bytes of a `.npy` file (bf16 is written as `<f4`, see the crate docs).
pub fn to_npy_bytes(t: &Tensor) -> Vec<u8> {
    let descr = match t.dtype() {
        DType::F32 | DType::BF16 => "<f4",
        DType::F64 => "<f8",
        DType::F16 => "<f2",
        DType::I8 => "|i1",
        DType::I16 => "<i2",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::U8 => "|u1",
        DType::U16 => "<u2",
        DType::U32 => "<u4",
        DType::U64 => "<u8",
        DType::Bool => "|b1",
    };
    let text = header::format_header(descr, &t.shape);
    // Header text, then spaces and a final '\n' so that the data starts 64-byte aligned.
    let unpadded = text.len() + 1;
    let (version, prefix) = if 10 + unpadded + ALIGN <= u16::MAX as usize {
        (1u8, 10)
    } else {
        (2u8, 12)
    };
    let pad = ALIGN - (prefix + unpadded) % ALIGN;
    let hlen = unpadded + pad;
    let elem = if t.dtype() == DType::BF16 {
        4
    } else {
        t.dtype().size()
    };
    let mut out = Vec::with_capacity(prefix + hlen + t.numel() * elem);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(hlen as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(hlen as u32).to_le_bytes());
    }
    out.extend_from_slice(text.as_bytes());
    out.resize(out.len() + pad, b' ');
    out.push(b'\n');
    debug_assert_eq!(out.len() % ALIGN, 0);
    match &t.data {
        Data::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::BF16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_f32().to_le_bytes())),
        Data::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::F16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_bits().to_le_bytes())),
        Data::I8(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::I16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::U8(v) => out.extend_from_slice(v),
        Data::U16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::U32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::U64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::Bool(v) => v.iter().for_each(|&x| out.push(x as u8)),
    }
    out
}

/// Maps a descr to a dtype and whether its bytes are big-endian.
fn parse_descr(descr: &str) -> Result<(DType, bool)> {
    let unsupported = |why: &str| {
        Err(Error::unsupported(format!(
            "unsupported dtype descr '{descr}'{why}"
        )))
    };
    let mut chars = descr.chars();
    let order = chars.next();
    let rest = chars.as_str();
    let big = match order {
        Some('<') | Some('|') => false,
        Some('>') => true,
        Some('=') => cfg!(target_endian = "big"),
        _ => return unsupported(" (expected a byte-order character <, >, | or = first)"),
    };
    let dtype = match rest {
        "f2" => DType::F16,
        "f4" => DType::F32,
        "f8" => DType::F64,
        "i1" => DType::I8,
        "i2" => DType::I16,
        "i4" => DType::I32,
        "i8" => DType::I64,
        "u1" => DType::U8,
        "u2" => DType::U16,
        "u4" => DType::U32,
        "u8" => DType::U64,
        "b1" => DType::Bool,
        _ if rest.starts_with('c') => return unsupported(" (complex numbers are not supported)"),
        _ if rest.starts_with('O') => return unsupported(" (Python objects are not supported)"),
        _ if rest.starts_with(['U', 'S', 'a']) => return unsupported(" (strings are not supported)"),
        _ => {
            return unsupported(
                " (supported: f2 f4 f8 i1 i2 i4 i8 u1 u2 u4 u8 b1; numpy has no bf16, write bf16 data as <f4)",
            )
        }
    };
    Ok((dtype, big))
}

fn decode(bytes: &[u8]) -> Result<Tensor> {
    if bytes.len() < 8 {
        return Err(Error::invalid(format!(
            "not a .npy file: only {} bytes, too short for the magic string",
            bytes.len()
        )));
    }
    if &bytes[..6] != MAGIC {
        return Err(Error::invalid(
            "not a .npy file: it does not start with the magic string \\x93NUMPY",
        ));
    }
    let (major, minor) = (bytes[6], bytes[7]);
    let (len_size, utf8) = match (major, minor) {
        (1, 0) => (2, false),
        (2, 0) => (4, false),
        (3, 0) => (4, true),
        _ => {
            return Err(Error::unsupported(format!(
                ".npy format version {major}.{minor} is not supported (only 1.0, 2.0 and 3.0)"
            )))
        }
    };
    let prefix = 8 + len_size;
    if bytes.len() < prefix {
        return Err(Error::invalid(format!(
            "truncated header: the file ends after {} bytes, inside the header length",
            bytes.len()
        )));
    }
    let hlen = if len_size == 2 {
        u16::from_le_bytes([bytes[8], bytes[9]]) as usize
    } else {
        u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize
    };
    let data_start = prefix
        .checked_add(hlen)
        .filter(|&end| end <= bytes.len())
        .ok_or_else(|| {
            Error::invalid(format!(
                "truncated header: it claims {hlen} bytes but the file has only {} after the header length",
                bytes.len() - prefix
            ))
        })?;
    let raw = &bytes[prefix..data_start];
    let text: String = if utf8 {
        std::str::from_utf8(raw)
            .map_err(|e| Error::invalid(format!("header is not valid UTF-8: {e}")))?
            .to_string()
    } else {
        // Versions 1.0 and 2.0 are latin-1: every byte is the code point of the same value.
        raw.iter().map(|&b| b as char).collect()
    };
    let h = header::parse_header(&text).map_err(Error::invalid)?;
    let (dtype, big) = parse_descr(&h.descr)?;
    let numel = kuaxin_core::tensor::checked_numel(&h.shape).ok_or_else(|| {
        Error::invalid(format!(
            "shape {:?} has more elements than can be addressed",
            h.shape
        ))
    })?;
    let nbytes = numel.checked_mul(dtype.size()).ok_or_else(|| {
        Error::invalid(format!(
            "shape {:?} of {} needs more bytes than can be addressed",
            h.shape, dtype
        ))
    })?;
    let body = &bytes[data_start..];
    if body.len() < nbytes {
        return Err(Error::invalid(format!(
            "truncated data: header says {}{:?} ({nbytes} bytes) but only {} bytes follow the header",
            dtype,
            h.shape,
            body.len()
        )));
    }
    if body.len() > nbytes {
        return Err(Error::invalid(format!(
            "{} unexpected bytes after the data of {}{:?} ({nbytes} bytes)",
            body.len() - nbytes,
            dtype,
            h.shape
        )));
    }
    let data = decode_data(body, dtype, big);
    let data = if h.fortran_order && h.shape.len() > 1 {
        fortran_to_c(&data, &h.shape)
    } else {
        data
    };
    Tensor::new(h.shape, data)
}

fn decode_data(b: &[u8], dtype: DType, big: bool) -> Data {
    macro_rules! num {
        ($t:ty, $n:literal, $conv:expr) => {{
            b.chunks_exact($n)
                .map(|c| {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(c);
                    let v = if big {
                        <$t>::from_be_bytes(a)
                    } else {
                        <$t>::from_le_bytes(a)
                    };
                    $conv(v)
                })
                .collect()
        }};
    }
    match dtype {
        DType::F32 => Data::F32(num!(f32, 4, |x: f32| x)),
        DType::F64 => Data::F64(num!(f64, 8, |x: f64| x)),
        DType::F16 => Data::F16(num!(u16, 2, f16::from_bits)),
        DType::BF16 => Data::BF16(num!(u16, 2, bf16::from_bits)),
        DType::I8 => Data::I8(b.iter().map(|&x| x as i8).collect()),
        DType::I16 => Data::I16(num!(i16, 2, |x: i16| x)),
        DType::I32 => Data::I32(num!(i32, 4, |x: i32| x)),
        DType::I64 => Data::I64(num!(i64, 8, |x: i64| x)),
        DType::U8 => Data::U8(b.to_vec()),
        DType::U16 => Data::U16(num!(u16, 2, |x: u16| x)),
        DType::U32 => Data::U32(num!(u32, 4, |x: u32| x)),
        DType::U64 => Data::U64(num!(u64, 8, |x: u64| x)),
        DType::Bool => Data::Bool(b.iter().map(|&x| x != 0).collect()),
    }
}

/// Reorders column-major data of `shape` into row-major order.
fn fortran_to_c(data: &Data, shape: &[usize]) -> Data {
    let n = data.len();
    if n == 0 {
        return data.clone();
    }
    // Column-major strides: dimension 0 varies fastest.
    let mut fstride = vec![1usize; shape.len()];
    for k in 1..shape.len() {
        fstride[k] = fstride[k - 1] * shape[k - 1];
    }
    let mut idx = Vec::with_capacity(n);
    let mut counter = vec![0usize; shape.len()];
    let mut off = 0usize;
    for _ in 0..n {
        idx.push(off);
        // Advance the row-major odometer (last dimension fastest), tracking the column-major offset.
        for k in (0..shape.len()).rev() {
            counter[k] += 1;
            off += fstride[k];
            if counter[k] < shape[k] {
                break;
            }
            off -= fstride[k] * shape[k];
            counter[k] = 0;
        }
    }
    data.gather_flat(&idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descrs() {
        assert_eq!(parse_descr("<f4").unwrap(), (DType::F32, false));
        assert_eq!(parse_descr(">i8").unwrap(), (DType::I64, true));
        assert_eq!(parse_descr("|b1").unwrap(), (DType::Bool, false));
        for bad in [
            "<c8", "|O", "<U3", "|S4", "<M8[ns]", "f4", "", "<f16", "<V8", "<bf16",
        ] {
            let e = parse_descr(bad).unwrap_err();
            assert!(e.is_unsupported(), "{bad}: {e}");
            assert!(e.message.contains(bad), "{e}");
        }
    }

    #[test]
    fn fortran_reorder() {
        // A 2x3 array [[0,1,2],[3,4,5]] stored column-major is 0 3 1 4 2 5.
        let d = Data::I32(vec![0, 3, 1, 4, 2, 5]);
        assert_eq!(fortran_to_c(&d, &[2, 3]), Data::I32(vec![0, 1, 2, 3, 4, 5]));
        // 2x3x4, element (i,j,k) = 100i + 10j + k.
        let shape = [2, 3, 4];
        let mut f = vec![0i32; 24];
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..4 {
                    f[i + 2 * j + 6 * k] = (100 * i + 10 * j + k) as i32;
                }
            }
        }
        let c: Vec<i32> = (0..2)
            .flat_map(|i| (0..3).flat_map(move |j| (0..4).map(move |k| 100 * i + 10 * j + k)))
            .collect();
        assert_eq!(fortran_to_c(&Data::I32(f), &shape), Data::I32(c));
    }
}
