//! Short reductions read straight from the source: pooling windows. When a fused reduction's
//! body is one load, output `j` of a row segment is `op` over the window positions `r` of
//! `src[base + offs[r] + j * stride]`. Sixteen outputs are folded at once in registers, the
//! window positions in order, so nothing is staged in a buffer and the result equals the
//! blocked path's bit for bit (sums in f64, NaN propagating through max and min).
use kuaxin_core::prim::ReduceOp;
use kuaxin_core::{Error, Result};

/// Folds `out.len()` outputs: `out[j] = op_r src[base + offs[r] + j * stride]`. Returns false
/// (leaving `out` alone) for an op this path does not take (`Prod`).
pub fn fold(
    op: ReduceOp,
    src: &[f32],
    base: usize,
    stride: usize,
    offs: &[usize],
    out: &mut [f32],
) -> Result<bool> {
    let Some(last) = out.len().checked_sub(1) else {
        return Ok(true);
    };
    let reach = offs.iter().max().copied().unwrap_or(0) + last * stride;
    if base.checked_add(reach).is_none_or(|end| end >= src.len()) {
        return Err(Error::backend(format!(
            "pooling window reaches past its source ({} + {reach} of {})",
            base,
            src.len()
        )));
    }
    let src = &src[base..=base + reach];
    match op {
        ReduceOp::Max => by_stride(src, stride, offs, out, f32::NEG_INFINITY, max, |a| a),
        ReduceOp::Min => by_stride(src, stride, offs, out, f32::INFINITY, min, |a| a),
        ReduceOp::Sum => by_stride(
            src,
            stride,
            offs,
            out,
            0f64,
            |a, x| a + x as f64,
            |a| a as f32,
        ),
        ReduceOp::Prod => return Ok(false),
    }
    Ok(true)
}

/// NaN-propagating max and min: a NaN accumulator stays NaN (`x > NaN` is false).
#[inline(always)]
fn max(a: f32, x: f32) -> f32 {
    if (x > a) | x.is_nan() {
        x
    } else {
        a
    }
}

#[inline(always)]
fn min(a: f32, x: f32) -> f32 {
    if (x < a) | x.is_nan() {
        x
    } else {
        a
    }
}

/// The common strides (unit rows, pooling strides 2 to 4) as constants, so their loads compile
/// to wide loads and shuffles; any other stride as a variable.
#[inline(always)]
fn by_stride<A: Copy>(
    src: &[f32],
    stride: usize,
    offs: &[usize],
    out: &mut [f32],
    init: A,
    step: impl Fn(A, f32) -> A + Copy,
    finish: impl Fn(A) -> f32 + Copy,
) {
    crate::simd::vectorized(
        #[inline(always)]
        || match stride {
            1 => outputs::<A, 1>(src, 1, offs, out, init, step, finish),
            2 => outputs::<A, 2>(src, 2, offs, out, init, step, finish),
            3 => outputs::<A, 3>(src, 3, offs, out, init, step, finish),
            4 => outputs::<A, 4>(src, 4, offs, out, init, step, finish),
            s => outputs::<A, 0>(src, s, offs, out, init, step, finish),
        },
    )
}

/// Chunks of 16 outputs (8 in a shorter row, one at a time in a row under 8). `S` is the
/// stride when non-zero.
#[inline(always)]
fn outputs<A: Copy, const S: usize>(
    src: &[f32],
    stride: usize,
    offs: &[usize],
    out: &mut [f32],
    init: A,
    step: impl Fn(A, f32) -> A + Copy,
    finish: impl Fn(A) -> f32 + Copy,
) {
    let stride = if S == 0 { stride } else { S };
    let n = out.len();
    // A row's last chunk overlaps the one before it rather than running one output at a time
    // (a 55-wide pooling row is three chunks and a tail of seven): the outputs it repeats are
    // the same values written again.
    if n >= 16 {
        let j = chunks::<A, S, 16>(src, stride, offs, out, 0, init, step, finish);
        if j < n {
            chunks::<A, S, 16>(src, stride, offs, out, n - 16, init, step, finish);
        }
    } else if n >= 8 {
        chunks::<A, S, 8>(src, stride, offs, out, 0, init, step, finish);
        chunks::<A, S, 8>(src, stride, offs, out, n - 8, init, step, finish);
    } else {
        chunks::<A, S, 1>(src, stride, offs, out, 0, init, step, finish);
    }
}

/// Folds outputs from `j` in chunks of `W` held in registers; returns where it stopped.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn chunks<A: Copy, const S: usize, const W: usize>(
    src: &[f32],
    stride: usize,
    offs: &[usize],
    out: &mut [f32],
    mut j: usize,
    init: A,
    step: impl Fn(A, f32) -> A + Copy,
    finish: impl Fn(A) -> f32 + Copy,
) -> usize {
    let stride = if S == 0 { stride } else { S };
    while j + W <= out.len() {
        let mut acc = [init; W];
        for &o in offs {
            let start = o + j * stride;
            let row = &src[start..=start + (W - 1) * stride];
            for (l, a) in acc.iter_mut().enumerate() {
                *a = step(*a, row[l * stride]);
            }
        }
        for (o, &a) in out[j..j + W].iter_mut().zip(&acc) {
            *o = finish(a);
        }
        j += W;
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one output and one window position at a time.
    fn reference(
        op: ReduceOp,
        src: &[f32],
        base: usize,
        stride: usize,
        offs: &[usize],
        n: usize,
    ) -> Vec<f32> {
        (0..n)
            .map(|j| {
                let vals = offs.iter().map(|&o| src[base + o + j * stride]);
                match op {
                    ReduceOp::Sum => vals.map(|v| v as f64).sum::<f64>() as f32,
                    ReduceOp::Max => vals.fold(f32::NEG_INFINITY, |a, v| {
                        if a.is_nan() || v.is_nan() {
                            f32::NAN
                        } else {
                            a.max(v)
                        }
                    }),
                    ReduceOp::Min => vals.fold(f32::INFINITY, |a, v| {
                        if a.is_nan() || v.is_nan() {
                            f32::NAN
                        } else {
                            a.min(v)
                        }
                    }),
                    ReduceOp::Prod => unreachable!(),
                }
            })
            .collect()
    }

    #[test]
    fn every_stride_and_length_folds_each_window() {
        let src: Vec<f32> = (0..400)
            .map(|v| ((v * 37 % 101) as f32 - 50.0) * 0.25)
            .collect();
        let offs = [0usize, 1, 2, 19, 20, 21, 38, 39, 40];
        for op in [ReduceOp::Max, ReduceOp::Min, ReduceOp::Sum] {
            for stride in 0..=5 {
                for n in [0usize, 1, 7, 8, 15, 16, 17, 25, 40] {
                    for base in [0usize, 3] {
                        let mut out = vec![-7f32; n];
                        assert!(fold(op, &src, base, stride, &offs, &mut out).unwrap());
                        let want = reference(op, &src, base, stride, &offs, n);
                        assert_eq!(out, want, "{op:?} stride {stride}, {n} outputs from {base}");
                    }
                }
            }
        }
    }

    #[test]
    fn nan_propagates_through_max_and_min() {
        let mut src: Vec<f32> = (0..64).map(|v| v as f32).collect();
        src[21] = f32::NAN;
        for op in [ReduceOp::Max, ReduceOp::Min] {
            let mut out = vec![0f32; 20];
            fold(op, &src, 0, 2, &[0, 1, 2], &mut out).unwrap();
            // Output j reads 2j..2j+2: outputs 9 (18..20) misses 21, 10 (20..22) holds it.
            assert!(
                out[10].is_nan() && !out[9].is_nan() && !out[11].is_nan(),
                "{op:?} {out:?}"
            );
        }
    }

    #[test]
    fn a_window_past_the_source_is_an_error() {
        let src = vec![0f32; 10];
        let mut out = vec![0f32; 4];
        assert!(fold(ReduceOp::Max, &src, 0, 2, &[0, 4], &mut out).is_err());
        assert!(fold(ReduceOp::Max, &src, 1, 2, &[0, 2], &mut out).unwrap());
        assert!(!fold(ReduceOp::Prod, &src, 0, 1, &[0], &mut out).unwrap());
    }
}
