//! `Prim::SoftmaxRows`: softmax along the last axis, one row at a time while it is in cache:
//! the row's max, `exp(x - max)` written to the output, their sum, then the division. Each
//! exponential is the primitives' bits (the shared `exp`), and so is the max (`fold`'s, or
//! sixteen lanes' where a NaN in the row makes every output NaN either way); with AVX2 the
//! exponentials and their sum are one pass of eight lanes ([`row_avx2`]), with AVX-512 of
//! sixteen ([`row_avx512`]), the sum in f32 lanes, and the division a multiply by the sum's
//! reciprocal, as onnxruntime's kernel does: within an accumulation's rounding of the
//! primitives (the f64 sum and the division), which the row-op tests hold it to.
use crate::fold;
use crate::scalar::FMath;
use kuaxin_core::prim::ReduceOp;
use kuaxin_core::prim::{strided_in_bounds, ViewMap};
use kuaxin_core::{Data, Error, Result};
use std::mem::MaybeUninit;

pub fn softmax_rows(x: &Data, shape: &[usize]) -> Result<Data> {
    let Data::F32(x) = x else {
        return Err(Error::unsupported(format!(
            "SoftmaxRows runs on f32, not {}",
            x.dtype()
        )));
    };
    let Some(&n) = shape.last() else {
        return Err(Error::invalid("SoftmaxRows needs at least one axis"));
    };
    Ok(Data::F32(crate::rows::map_rows(
        x,
        n,
        || (),
        #[inline(always)]
        |_, _, x, out| row(x, out),
    )?))
}

/// `Prim::MaskedSoftmaxRows`: each row's scores `x / scale + mask` (`x * scale + mask`
/// when not `divide`) made in a scratch row, the mask's row read through its view, then
/// [`row`] on them.
pub fn masked_softmax_rows(
    x: &Data,
    mask: &Data,
    shape: &[usize],
    (scale, divide): (f32, bool),
    view: &ViewMap,
) -> Result<Data> {
    let (Data::F32(x), Data::F32(m)) = (x, mask) else {
        return Err(Error::unsupported("MaskedSoftmaxRows runs on f32"));
    };
    let (Some(&n), rank) = (shape.last(), shape.len()) else {
        return Err(Error::invalid("MaskedSoftmaxRows needs at least one axis"));
    };
    if view.shape != shape
        || !strided_in_bounds(&view.shape, &view.strides, view.offset, m.len())
        || x.len() != shape.iter().product::<usize>()
    {
        return Err(Error::invalid(format!(
            "MaskedSoftmaxRows: a mask of {} elements read through {view:?} for rows of {shape:?}",
            m.len()
        )));
    }
    // x / 2^k is x * 2^-k exactly (both correctly rounded, and 2^-k exact): a multiply.
    let exact_reciprocal =
        scale.is_normal() && scale.to_bits() & 0x7f_ffff == 0 && (1.0 / scale).is_normal();
    let (divide, scale) = if divide && exact_reciprocal {
        (false, 1.0 / scale)
    } else {
        (divide, scale)
    };
    let (outer, last) = view.strides.split_at(rank - 1);
    let last = last[0];
    Ok(Data::F32(crate::rows::map_rows(
        x,
        n,
        || (vec![0f32; n], vec![0f32; n]),
        #[inline(always)]
        |(scores, gathered), r, x, out| {
            // The mask row's first element: row r's index over the outer axes.
            let (mut at, mut q) = (view.offset as isize, r);
            for (&d, &stride) in shape[..rank - 1].iter().zip(outer).rev() {
                at += (q % d) as isize * stride;
                q /= d;
            }
            // In bounds: the view was checked against the mask above.
            let mrow: &[f32] = if last == 1 {
                &m[at as usize..at as usize + n]
            } else {
                for (j, g) in gathered.iter_mut().enumerate() {
                    *g = m[(at + j as isize * last) as usize];
                }
                gathered
            };
            if divide {
                for ((s, &v), &k) in scores.iter_mut().zip(x).zip(mrow) {
                    *s = v / scale + k;
                }
            } else {
                for ((s, &v), &k) in scores.iter_mut().zip(x).zip(mrow) {
                    *s = v * scale + k;
                }
            }
            row(scores, out)
        },
    )?))
}

#[inline(always)]
fn row(x: &[f32], out: &mut [MaybeUninit<f32>]) {
    #[cfg(target_arch = "x86_64")]
    match crate::simd::level() {
        crate::simd::Level::Avx512 => {
            // SAFETY: the CPU has AVX-512F.
            unsafe { row_avx512(x, out) };
            return;
        }
        crate::simd::Level::Avx2Fma => {
            // SAFETY: the CPU has AVX2 and FMA.
            unsafe { row_avx2(x, out) };
            return;
        }
        crate::simd::Level::Baseline => {}
    }
    // Already compiled for the vector level (`map_rows`): the folds inline here.
    let max = fold::row_any(ReduceOp::Max, fold::init(ReduceOp::Max), x) as f32;
    for (o, &v) in out.iter_mut().zip(x) {
        o.write(<f32 as FMath>::exp(v - max));
    }
    // SAFETY: the loop above wrote the whole row (`out` is as long as `x`).
    let out = unsafe { crate::par::assume_init_mut(out) };
    let sum = fold::row_any(ReduceOp::Sum, fold::init(ReduceOp::Sum), out) as f32;
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// [`row`] with the exponentials and their sum in one pass: eight lanes of
/// [`crate::vmath_avx2::exp8`] (each the bits of `exp`) summed into four vectors of partial
/// sums (two from 16 values on), the tail one at a time; then every value times the sum's
/// reciprocal. Per-kernel minima on a Zen 3 core, MiniLM-L3's 12 x 128 rows of 128 (with the
/// output no longer zeroed first): 0.225 -> 0.199 ms a layer (onnxruntime 0.104); with the
/// scale and mask, four sums instead of two 0.231 -> 0.211 ms: each exponential is a chain of
/// a dozen dependent operations, and four independent ones in flight hide more of it (its
/// polynomial in pairs instead of one Horner chain measured no faster).
///
/// # Safety
/// The CPU has AVX2 and FMA; `out` is as long as `x`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2(x: &[f32], out: &mut [MaybeUninit<f32>]) {
    use crate::vmath_avx2::exp8;
    use std::arch::x86_64::*;
    let n = x.len().min(out.len());
    let max = fold::row_any(ReduceOp::Max, fold::init(ReduceOp::Max), x) as f32;
    let vmax = _mm256_set1_ps(max);
    let (xp, op) = (x.as_ptr(), out.as_mut_ptr().cast::<f32>());
    // Several sums (one would make each exponential wait for the add before it), in
    // registers.
    let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let exp_at = |i: usize| {
        // SAFETY: the callers' i + 8 <= n: elements i .. i + 8 lie in both rows.
        unsafe {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(xp.add(i)), vmax));
            _mm256_storeu_ps(op.add(i), e);
            e
        }
    };
    let (mut s2, mut s3) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 32 <= n {
        s0 = _mm256_add_ps(s0, exp_at(i));
        s1 = _mm256_add_ps(s1, exp_at(i + 8));
        s2 = _mm256_add_ps(s2, exp_at(i + 16));
        s3 = _mm256_add_ps(s3, exp_at(i + 24));
        i += 32;
    }
    s0 = _mm256_add_ps(s0, s2);
    s1 = _mm256_add_ps(s1, s3);
    while i + 16 <= n {
        s0 = _mm256_add_ps(s0, exp_at(i));
        s1 = _mm256_add_ps(s1, exp_at(i + 8));
        i += 16;
    }
    if i + 8 <= n {
        s0 = _mm256_add_ps(s0, exp_at(i));
        i += 8;
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds eight floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), _mm256_add_ps(s0, s1)) };
    let mut sum: f32 = lanes.iter().sum();
    for j in i..n {
        let e = <f32 as FMath>::exp(x[j] - max);
        out[j].write(e);
        sum += e;
    }
    // SAFETY: the loops above wrote elements 0 .. n.
    let out = unsafe { crate::par::assume_init_mut(&mut out[..n]) };
    // From the initialised row itself, which the tail below uses too.
    let op = out.as_mut_ptr();
    let inv = _mm256_set1_ps(1.0 / sum);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: elements i .. i + 8 lie in `out`.
        unsafe { _mm256_storeu_ps(op.add(i), _mm256_mul_ps(_mm256_loadu_ps(op.add(i)), inv)) };
        i += 8;
    }
    let inv = 1.0 / sum;
    for o in &mut out[i..n] {
        *o *= inv;
    }
}

/// The row's largest value, sixteen lanes at a time; -inf for an empty row. A NaN may or may
/// not come through (`max_ps` returns its second operand when either is NaN), and need not:
/// its exponential makes the row's sum NaN and so every output, as with the primitives.
/// (The fold, compiled for any x86-64, compared four lanes at a time with blends: a third of
/// the row's time.)
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_max_avx512(x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let low = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut m = low;
    for chunk in x.chunks(16) {
        let lanes = ((1u32 << chunk.len()) - 1) as u16;
        // SAFETY: the lanes read hold the chunk's elements.
        m = _mm512_max_ps(m, unsafe {
            _mm512_mask_loadu_ps(low, lanes, chunk.as_ptr())
        });
    }
    _mm512_reduce_max_ps(m)
}

/// [`row_avx2`] on sixteen lanes ([`crate::vmath_avx512::exp16`], the same bits), the
/// row's last few under a mask, so no element is left to the scalar function. Per-kernel
/// minima on an Ice Lake core, MiniLM-L3's 12 x 128 rows of 128 with the scale and mask,
/// interleaved: 0.31 ms a layer on the AVX2 row, 0.26 with these exponentials, 0.18 with the
/// max in sixteen lanes too (onnxruntime's softmax: under 0.09).
///
/// # Safety
/// The CPU has AVX-512F; `out` is as long as `x`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_avx512(x: &[f32], out: &mut [MaybeUninit<f32>]) {
    use crate::vmath_avx512::exp16;
    use std::arch::x86_64::*;
    let n = x.len().min(out.len());
    let (xp, op) = (x.as_ptr(), out.as_mut_ptr().cast::<f32>());
    let vmax = _mm512_set1_ps(row_max_avx512(&x[..n]));
    // The exponentials of elements i .. i + 16 under `lanes`, stored; zeros elsewhere.
    let exp_at = |i: usize, lanes: __mmask16| {
        // SAFETY: the callers' lanes hold elements below n: they lie in both rows.
        unsafe {
            let e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(lanes, xp.add(i)), vmax));
            _mm512_mask_storeu_ps(op.add(i), lanes, e);
            _mm512_maskz_mov_ps(lanes, e)
        }
    };
    // Four sums in registers (one would make each exponential wait for the add before it).
    let all = u16::MAX;
    let mut s = [_mm512_setzero_ps(); 4];
    let mut i = 0;
    while i + 64 <= n {
        for (q, s) in s.iter_mut().enumerate() {
            *s = _mm512_add_ps(*s, exp_at(i + 16 * q, all));
        }
        i += 64;
    }
    while i < n {
        let lanes = if n - i >= 16 {
            all
        } else {
            ((1u32 << (n - i)) - 1) as u16
        };
        s[0] = _mm512_add_ps(s[0], exp_at(i, lanes));
        i += 16;
    }
    let sum = _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(s[0], s[1]),
        _mm512_add_ps(s[2], s[3]),
    ));
    let inv = _mm512_set1_ps(1.0 / sum);
    let mut i = 0;
    while i < n {
        let lanes = if n - i >= 16 {
            all
        } else {
            ((1u32 << (n - i)) - 1) as u16
        };
        // SAFETY: the lanes hold elements below n of `out`, which the loops above wrote.
        unsafe {
            let v = _mm512_maskz_loadu_ps(lanes, op.add(i));
            _mm512_mask_storeu_ps(op.add(i), lanes, _mm512_mul_ps(v, inv));
        }
        i += 16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mask_view_past_the_mask_is_an_error() {
        let x = Data::F32(vec![0.0; 2 * 4]);
        let mask = Data::F32(vec![0.0; 4]);
        let view = |offset: usize| ViewMap {
            shape: vec![2, 4],
            strides: vec![0, 1],
            offset,
        };
        assert!(masked_softmax_rows(&x, &mask, &[2, 4], (8.0, true), &view(0)).is_ok());
        assert!(masked_softmax_rows(&x, &mask, &[2, 4], (8.0, true), &view(1)).is_err());
        let short = Data::F32(vec![0.0; 3]);
        assert!(masked_softmax_rows(&x, &short, &[2, 4], (8.0, true), &view(0)).is_err());
        // A view of another shape than the rows.
        let other = ViewMap {
            shape: vec![4, 2],
            strides: vec![1, 0],
            offset: 0,
        };
        assert!(masked_softmax_rows(&x, &mask, &[2, 4], (8.0, true), &other).is_err());
    }
}
