//! `Prim::Cumulative`: running sum or product along one axis, optionally exclusive (each
//! output leaves its own element out) and/or reversed (accumulating from the end).
//! Floats accumulate in f64; integers wrap.
use crate::par;
use crate::scalar::Scalar;
use crate::shape::split_at_axis;
use kuaxin_core::tensor::Element;
use kuaxin_core::{Data, Result};

pub fn cumulative(
    x: &Data,
    shape: &[usize],
    axis: usize,
    prod: bool,
    exclusive: bool,
    reverse: bool,
) -> Result<Data> {
    let (outer, n, inner) = split_at_axis(shape, axis);
    let g = Geometry {
        outer,
        n,
        inner,
        exclusive,
        reverse,
    };
    Ok(dispatch1!(x, v, any => {
        let out = if prod { cum_typed(v, &g, Scalar::ONE, Scalar::mul) } else { cum_typed(v, &g, Scalar::ZERO, Scalar::add) };
        Element::wrap(out)
    }))
}

struct Geometry {
    outer: usize,
    n: usize,
    inner: usize,
    exclusive: bool,
    reverse: bool,
}

fn cum_typed<T, F>(v: &[T], g: &Geometry, init: T::Acc, comb: F) -> Vec<T>
where
    T: Scalar,
    F: Fn(T::Acc, T::Acc) -> T::Acc + Sync + Send,
{
    let lane = g.n * g.inner;
    let mut out = vec![T::ZERO; g.outer * lane];
    if lane == 0 {
        return out;
    }
    par::for_chunks(&mut out, lane, lane, |o, dst| {
        let src = &v[o * lane..(o + 1) * lane];
        let mut acc = vec![init; g.inner];
        for step in 0..g.n {
            let j = if g.reverse { g.n - 1 - step } else { step };
            let row = &src[j * g.inner..(j + 1) * g.inner];
            let orow = &mut dst[j * g.inner..(j + 1) * g.inner];
            for ((a, &x), y) in acc.iter_mut().zip(row).zip(orow.iter_mut()) {
                if g.exclusive {
                    *y = T::from_acc(*a);
                    *a = comb(*a, x.to_acc());
                } else {
                    *a = comb(*a, x.to_acc());
                    *y = T::from_acc(*a);
                }
            }
        }
    });
    out
}
