//! Host tensors to and from the bytes device memory holds: every dtype in its own width,
//! little-endian, bool as one byte 0/1.
use kuaxin_core::prim::TensorType;
use kuaxin_core::{DType, Data, Error, Result, Tensor};

pub fn to_bytes(t: &Tensor) -> Vec<u8> {
    fn le<T, const N: usize>(v: &[T], f: impl Fn(&T) -> [u8; N]) -> Vec<u8> {
        v.iter().flat_map(f).collect()
    }
    match &t.data {
        Data::F32(v) => le(v, |x| x.to_le_bytes()),
        Data::F64(v) => le(v, |x| x.to_le_bytes()),
        Data::F16(v) => le(v, |x| x.to_le_bytes()),
        Data::BF16(v) => le(v, |x| x.to_le_bytes()),
        Data::I8(v) => le(v, |x| x.to_le_bytes()),
        Data::I16(v) => le(v, |x| x.to_le_bytes()),
        Data::I32(v) => le(v, |x| x.to_le_bytes()),
        Data::I64(v) => le(v, |x| x.to_le_bytes()),
        Data::U8(v) => v.clone(),
        Data::U16(v) => le(v, |x| x.to_le_bytes()),
        Data::U32(v) => le(v, |x| x.to_le_bytes()),
        Data::U64(v) => le(v, |x| x.to_le_bytes()),
        Data::Bool(v) => v.iter().map(|&b| b as u8).collect(),
    }
}

pub fn from_bytes(ty: &TensorType, b: &[u8]) -> Result<Tensor> {
    let size = ty.dtype.size();
    if b.len() != ty.numel() * size {
        return Err(Error::backend(format!(
            "cuda: {} bytes read back for {ty}",
            b.len()
        )));
    }
    fn de<T, const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
        b.chunks_exact(N)
            .map(|c| f(c.try_into().unwrap_or([0; N])))
            .collect()
    }
    let data = match ty.dtype {
        DType::F32 => Data::F32(de(b, f32::from_le_bytes)),
        DType::F64 => Data::F64(de(b, f64::from_le_bytes)),
        DType::F16 => Data::F16(de(b, half::f16::from_le_bytes)),
        DType::BF16 => Data::BF16(de(b, half::bf16::from_le_bytes)),
        DType::I8 => Data::I8(de(b, i8::from_le_bytes)),
        DType::I16 => Data::I16(de(b, i16::from_le_bytes)),
        DType::I32 => Data::I32(de(b, i32::from_le_bytes)),
        DType::I64 => Data::I64(de(b, i64::from_le_bytes)),
        DType::U8 => Data::U8(b.to_vec()),
        DType::U16 => Data::U16(de(b, u16::from_le_bytes)),
        DType::U32 => Data::U32(de(b, u32::from_le_bytes)),
        DType::U64 => Data::U64(de(b, u64::from_le_bytes)),
        DType::Bool => Data::Bool(b.iter().map(|&x| x != 0).collect()),
    };
    Tensor::new(ty.shape.clone(), data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_dtype_round_trips() {
        for d in DType::ALL {
            let t = Tensor::new(
                vec![2, 3],
                Data::from_f64_iter(d, [0.0, 1.0, -2.0, 3.5, 0.0, 7.0].into_iter()),
            )
            .unwrap();
            let b = to_bytes(&t);
            assert_eq!(b.len(), 6 * d.size(), "{d}");
            let back = from_bytes(&TensorType::new(d, vec![2, 3]), &b).unwrap();
            assert_eq!(back, t, "{d}");
        }
        assert!(from_bytes(&TensorType::new(DType::F32, vec![2]), &[0; 7]).is_err());
    }
}
