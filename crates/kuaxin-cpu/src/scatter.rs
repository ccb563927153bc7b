//! `Prim::ScatterElements` and `Prim::ScatterNd`: a copy of the data with updates written (or
//! combined, with a reduction) at indexed positions. Updates apply in index order, so with
//! duplicate indices and no reduction the last one wins.
use crate::gather::{check_inner_dims, indices, resolve};
use crate::scalar::Scalar;
use crate::shape::{next_index, strides};
use crate::typed::Typed;
use kuaxin_core::prim::ScatterReduction;
use kuaxin_core::tensor::Element;
use kuaxin_core::{Data, Result, Tensor};

#[inline]
fn combine<T: Scalar>(r: ScatterReduction, old: T, new: T) -> T {
    match r {
        ScatterReduction::None => new,
        ScatterReduction::Add => old.add(new),
        ScatterReduction::Mul => old.mul(new),
        ScatterReduction::Max => old.max_nan(new),
        ScatterReduction::Min => old.min_nan(new),
    }
}

/// Applies `updates[k]` (slices of `slice` elements) at `targets[k]`.
fn apply<T: Scalar + Typed>(
    data: &[T],
    updates: &Data,
    targets: &[usize],
    slice: usize,
    r: ScatterReduction,
) -> Result<Vec<T>> {
    let upd = T::expect(updates, "scatter updates")?;
    let mut out = data.to_vec();
    for (k, &t) in targets.iter().enumerate() {
        let src = &upd[k * slice..(k + 1) * slice];
        for (o, &u) in out[t..t + slice].iter_mut().zip(src) {
            *o = combine(r, *o, u);
        }
    }
    Ok(out)
}

pub fn scatter_elements(
    data: &Tensor,
    idx: &Tensor,
    upd: &Tensor,
    axis: usize,
    r: ScatterReduction,
) -> Result<Data> {
    check_inner_dims("ScatterElements", &data.shape, &idx.shape, axis)?;
    let n = data.shape[axis];
    let dstr = strides(&data.shape);
    let ii = indices(&idx.data)?;
    let mut targets = Vec::with_capacity(ii.len());
    let mut pos = vec![0usize; idx.shape.len()];
    for &i in &ii {
        let j = resolve(i, n, "ScatterElements", axis)?;
        targets.push(
            pos.iter()
                .zip(&dstr)
                .enumerate()
                .map(|(d, (&p, &s))| if d == axis { j * s } else { p * s })
                .sum(),
        );
        next_index(&mut pos, &idx.shape);
    }
    Ok(dispatch1!(&data.data, v, any => Element::wrap(apply(v, &upd.data, &targets, 1, r)?)))
}

pub fn scatter_nd(data: &Tensor, idx: &Tensor, upd: &Tensor, r: ScatterReduction) -> Result<Data> {
    let last = *idx.shape.last().unwrap_or(&0);
    let slice: usize = data.shape[last..].iter().product();
    let dstr = strides(&data.shape);
    let ii = indices(&idx.data)?;
    let tuples: usize = idx.shape[..idx.shape.len().saturating_sub(1)]
        .iter()
        .product();
    let mut targets = Vec::with_capacity(tuples);
    for k in 0..tuples {
        let mut off = 0;
        for j in 0..last {
            off += resolve(ii[k * last + j], data.shape[j], "ScatterND", j)? * dstr[j];
        }
        targets.push(off);
    }
    Ok(dispatch1!(&data.data, v, any => Element::wrap(apply(v, &upd.data, &targets, slice, r)?)))
}
