//! `Prim::LayerNormRows`: LayerNorm along the last axis, one row at a time while it is in
//! cache, with the f32 steps of the primitives it replaces: the mean (an f64 sum, rounded,
//! divided by n), the centred row, its squares summed the same way, `1 / sqrt(var + eps)`,
//! then `(d * r) * scale + bias`. The three fused kernels it replaces each walked the whole
//! tensor and recomputed their input.
use crate::fold;
use kuaxin_core::prim::ReduceOp;
use kuaxin_core::{Data, Error, Result};
use std::mem::MaybeUninit;

pub fn layer_norm_rows(
    x: &Data,
    shape: &[usize],
    (scale, bias): (&Data, &Data),
    eps: f32,
) -> Result<Data> {
    let (Data::F32(x), Data::F32(scale), Data::F32(bias)) = (x, scale, bias) else {
        return Err(Error::unsupported("LayerNormRows runs on f32"));
    };
    let Some(&n) = shape.last() else {
        return Err(Error::invalid("LayerNormRows needs at least one axis"));
    };
    if scale.len() != n || bias.len() != n {
        return Err(Error::invalid(format!(
            "LayerNormRows: a scale of {} and a bias of {} for rows of {n}",
            scale.len(),
            bias.len()
        )));
    }
    Ok(Data::F32(crate::rows::map_rows(
        x,
        n,
        || vec![0f32; n],
        #[inline(always)]
        |squares, _, x, out| row(x, out, squares, (scale, bias), eps),
    )?))
}

#[inline(always)]
fn row(
    x: &[f32],
    out: &mut [MaybeUninit<f32>],
    squares: &mut [f32],
    (scale, bias): (&[f32], &[f32]),
    eps: f32,
) {
    let count = x.len() as f32;
    // Already compiled for the vector level (`map_rows`): the folds inline here.
    let mean = fold::row_any(ReduceOp::Sum, fold::init(ReduceOp::Sum), x) as f32 / count;
    for ((o, s), &v) in out.iter_mut().zip(squares.iter_mut()).zip(x) {
        let d = v - mean;
        o.write(d);
        *s = d * d;
    }
    // SAFETY: the loop above wrote the whole row (`out`, `squares` and `x` are as long).
    let out = unsafe { crate::par::assume_init_mut(out) };
    let var = fold::row_any(ReduceOp::Sum, fold::init(ReduceOp::Sum), squares) as f32 / count;
    let r = 1.0 / (var + eps).sqrt();
    for ((o, &s), &b) in out.iter_mut().zip(scale).zip(bias) {
        *o = *o * r * s + b;
    }
}
