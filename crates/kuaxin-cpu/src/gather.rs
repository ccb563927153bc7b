//! `Prim::Gather`, `GatherElements`, `GatherNd`, and the index checks the scatters share.
//! Negative indices count from the end; anything else out of range is an error naming the
//! index and the axis size.
use crate::shape::{next_index, strides};
use kuaxin_core::tensor::Element;
use kuaxin_core::{Data, Error, Result, Tensor};

/// Index tensor values as i64 (u64 beyond i64::MAX saturates, so it stays out of range).
pub fn indices(d: &Data) -> Result<Vec<i64>> {
    Ok(match d {
        Data::I64(v) => v.clone(),
        Data::U64(v) => v
            .iter()
            .map(|&x| i64::try_from(x).unwrap_or(i64::MAX))
            .collect(),
        Data::I8(_) | Data::I16(_) | Data::I32(_) | Data::U8(_) | Data::U16(_) | Data::U32(_) => {
            d.to_i64_vec()
        }
        _ => {
            return Err(Error::invalid(format!(
                "indices must be integers, got {}",
                d.dtype()
            )))
        }
    })
}

/// `i` resolved against an axis of size `n` (negative counts from the end).
#[inline]
pub fn resolve(i: i64, n: usize, op: &str, axis: usize) -> Result<usize> {
    let j = if i < 0 {
        i.checked_add(n as i64)
    } else {
        Some(i)
    };
    match j {
        Some(j) if j >= 0 && (j as u64) < n as u64 => Ok(j as usize),
        _ => Err(Error::invalid(format!(
            "{op}: index {i} is out of range for axis {axis} of size {n}"
        ))),
    }
}

/// Checks that an index tensor's dims other than `axis` fit inside the data's.
pub fn check_inner_dims(op: &str, data: &[usize], idx: &[usize], axis: usize) -> Result<()> {
    for (d, (&n, &m)) in data.iter().zip(idx).enumerate() {
        if d != axis && m > n {
            return Err(Error::invalid(format!(
                "{op}: indices {idx:?} exceed data {data:?} on axis {d}"
            )));
        }
    }
    Ok(())
}

pub fn gather(data: &Tensor, idx: &Tensor, axis: usize) -> Result<Data> {
    let n = data.shape[axis];
    let rows = indices(&idx.data)?
        .into_iter()
        .map(|i| resolve(i, n, "Gather", axis))
        .collect::<Result<Vec<_>>>()?;
    Ok(dispatch1!(&data.data, v, any => Element::wrap(gather_typed(v, &data.shape, axis, &rows))))
}

fn gather_typed<T: Element>(v: &[T], shape: &[usize], axis: usize, rows: &[usize]) -> Vec<T> {
    let outer: usize = shape[..axis].iter().product();
    let n = shape[axis];
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * rows.len() * inner);
    for o in 0..outer {
        for &r in rows {
            let s = (o * n + r) * inner;
            out.extend_from_slice(&v[s..s + inner]);
        }
    }
    out
}

pub fn gather_elements(data: &Tensor, idx: &Tensor, axis: usize) -> Result<Data> {
    check_inner_dims("GatherElements", &data.shape, &idx.shape, axis)?;
    let n = data.shape[axis];
    let dstr = strides(&data.shape);
    let ii = indices(&idx.data)?;
    // Flat source offset of every output element.
    let mut src = Vec::with_capacity(ii.len());
    let mut pos = vec![0usize; idx.shape.len()];
    for &i in &ii {
        let j = resolve(i, n, "GatherElements", axis)?;
        let off: usize = pos
            .iter()
            .zip(&dstr)
            .enumerate()
            .map(|(d, (&p, &s))| if d == axis { j * s } else { p * s })
            .sum();
        src.push(off);
        next_index(&mut pos, &idx.shape);
    }
    Ok(dispatch1!(&data.data, v, any => Element::wrap(src.iter().map(|&o| v[o]).collect())))
}

pub fn gather_nd(data: &Tensor, idx: &Tensor, batch_dims: usize) -> Result<Data> {
    let b = batch_dims;
    let ir = idx.shape.len();
    let last = idx.shape[ir - 1];
    let batches: usize = idx.shape[..b].iter().product();
    let per_batch: usize = idx.shape[b..ir - 1].iter().product();
    let slice: usize = data.shape[b + last..].iter().product();
    let batch_stride: usize = data.shape[b..].iter().product();
    let dstr = strides(&data.shape[b..]);
    let ii = indices(&idx.data)?;
    let mut starts = Vec::with_capacity(batches * per_batch);
    for bi in 0..batches {
        for m in 0..per_batch {
            let tuple = &ii[(bi * per_batch + m) * last..(bi * per_batch + m + 1) * last];
            let mut off = bi * batch_stride;
            for (j, &i) in tuple.iter().enumerate() {
                off += resolve(i, data.shape[b + j], "GatherND", b + j)? * dstr[j];
            }
            starts.push(off);
        }
    }
    Ok(dispatch1!(&data.data, v, any => {
        let mut out = Vec::with_capacity(starts.len() * slice);
        for &s in &starts {
            out.extend_from_slice(&v[s..s + slice]);
        }
        Element::wrap(out)
    }))
}
