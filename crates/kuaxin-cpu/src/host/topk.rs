//! TopK: the `k` largest (or smallest) values along `axis` with their i64 indices, always in
//! sorted order; equal values keep the lower index first; NaN ranks above every number.
use crate::limits;
use crate::scalar::total_cmp;
use crate::shape::split_at_axis;
use kuaxin_core::tensor::Element;
use kuaxin_core::{DType, Data, Error, Result, Tensor};
use std::cmp::Ordering;

pub fn topk(x: &Tensor, k: usize, axis: usize, largest: bool) -> Result<Vec<Tensor>> {
    if axis >= x.shape.len() {
        return Err(Error::invalid(format!(
            "TopK: axis {axis} out of range for {}",
            x.type_string()
        )));
    }
    let n = x.shape[axis];
    if k > n {
        return Err(Error::invalid(format!(
            "TopK: k = {k} is larger than axis {axis} of size {n}"
        )));
    }
    let mut shape = x.shape.clone();
    shape[axis] = k;
    let len: usize = shape.iter().product();
    limits::check_alloc(x.dtype(), len)?;
    limits::check_alloc(DType::I64, len)?;
    let (outer, _, inner) = split_at_axis(&x.shape, axis);
    let mut indices = vec![0i64; len];
    let values = dispatch1!(&x.data, v, any => Element::wrap(select(v, outer, n, inner, k, largest, &mut indices)));
    Ok(vec![
        Tensor::new(shape.clone(), values)?,
        Tensor::new(shape, Data::I64(indices))?,
    ])
}

fn select<T: Element + PartialOrd>(
    v: &[T],
    outer: usize,
    n: usize,
    inner: usize,
    k: usize,
    largest: bool,
    indices: &mut [i64],
) -> Vec<T> {
    let mut values = vec![T::default(); outer * k * inner];
    let order = |a: &(T, usize), b: &(T, usize)| -> Ordering {
        let by_value = if largest {
            total_cmp(&b.0, &a.0)
        } else {
            total_cmp(&a.0, &b.0)
        };
        by_value.then(a.1.cmp(&b.1))
    };
    let mut lane: Vec<(T, usize)> = Vec::with_capacity(n);
    if k == 0 {
        return values;
    }
    for o in 0..outer {
        for i in 0..inner {
            lane.clear();
            lane.extend((0..n).map(|j| (v[(o * n + j) * inner + i], j)));
            if k < n {
                lane.select_nth_unstable_by(k - 1, order);
            }
            let top = &mut lane[..k];
            top.sort_unstable_by(order);
            for (j, &(val, idx)) in top.iter().enumerate() {
                let dst = (o * k + j) * inner + i;
                values[dst] = val;
                indices[dst] = idx as i64;
            }
        }
    }
    values
}
