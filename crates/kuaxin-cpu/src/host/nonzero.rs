//! NonZero: i64 `[rank, nnz]` coordinates of the non-zero elements in row-major order (NaN
//! counts as non-zero). A scalar reads as a 1-element vector (numpy's behaviour).
use crate::limits;
use crate::scalar::Scalar;
use crate::shape::unravel;
use kuaxin_core::{DType, Data, Result, Tensor};

pub fn nonzero(x: &Tensor) -> Result<Vec<Tensor>> {
    let flat: Vec<usize> = dispatch1!(&x.data, v, any => positions(v));
    let shape: Vec<usize> = if x.shape.is_empty() {
        vec![1]
    } else {
        x.shape.clone()
    };
    let (rank, nnz) = (shape.len(), flat.len());
    limits::check_alloc(DType::I64, rank * nnz)?;
    let mut out = vec![0i64; rank * nnz];
    let mut idx = vec![0usize; rank];
    for (j, &f) in flat.iter().enumerate() {
        unravel(f, &shape, &mut idx);
        for d in 0..rank {
            out[d * nnz + j] = idx[d] as i64;
        }
    }
    Ok(vec![Tensor::new(vec![rank, nnz], Data::I64(out))?])
}

fn positions<T: Scalar>(v: &[T]) -> Vec<usize> {
    v.iter()
        .enumerate()
        .filter(|(_, x)| !x.is_zero())
        .map(|(i, _)| i)
        .collect()
}
