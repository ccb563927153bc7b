//! `Prim::ArgReduce`: i64 index of the max / min along one axis (kept as size 1).
//!
//! Ties pick the first index, or the last with `select_last`. NaN wins (like numpy's argmax
//! and argmin): the first NaN, or the last one with `select_last`.
use crate::par;
use crate::scalar::Scalar;
use crate::shape::split_at_axis;
use kuaxin_core::{Data, Result};

pub fn argreduce(
    x: &Data,
    shape: &[usize],
    axis: usize,
    max: bool,
    select_last: bool,
) -> Result<Data> {
    let (outer, n, inner) = split_at_axis(shape, axis);
    Ok(Data::I64(
        dispatch1!(x, v, any => arg_typed(v, outer, n, inner, max, select_last)),
    ))
}

#[inline]
fn better<T: Scalar>(x: T, best: T, max: bool, last: bool) -> bool {
    if last {
        x.is_nan() || (!best.is_nan() && if max { x >= best } else { x <= best })
    } else {
        !best.is_nan() && (x.is_nan() || if max { x > best } else { x < best })
    }
}

fn arg_typed<T: Scalar>(
    v: &[T],
    outer: usize,
    n: usize,
    inner: usize,
    max: bool,
    last: bool,
) -> Vec<i64> {
    let mut out = vec![0i64; outer * inner];
    if n == 0 || inner == 0 {
        return out;
    }
    par::for_chunks(&mut out, inner, n * inner, |o, idx| {
        let lane = &v[o * n * inner..(o + 1) * n * inner];
        let mut best = lane[..inner].to_vec();
        for j in 1..n {
            let row = &lane[j * inner..(j + 1) * inner];
            for i in 0..inner {
                if better(row[i], best[i], max, last) {
                    best[i] = row[i];
                    idx[i] = j as i64;
                }
            }
        }
    });
    out
}
