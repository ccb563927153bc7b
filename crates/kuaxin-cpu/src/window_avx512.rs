//! Max and min pooling windows of stride 1 or 2 on AVX-512: sixteen outputs per vector (a row's last few under a mask), each
//! window position one load (stride 2: two loads and a permute keeping the even lanes) and a
//! compare-and-select with the same rule as [`crate::fold::max`] / [`crate::fold::min`]
//! (take the new value when it is larger, or smaller, or NaN), so results equal the scalar
//! fold's bit for bit. The compiler turned the stride-2 reads of the portable fold into one
//! element at a time: ResNet's and SqueezeNet's 3 x 3 / 2 max pools ran at about one element
//! per cycle.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether [`fold_rows`] takes windows of this stride on this CPU.
pub fn takes(stride: usize) -> bool {
    cfg!(target_arch = "x86_64") && (stride == 1 || stride == 2) && crate::panels::available()
}

/// Each row `(start, len, base)`: `out[start + j] = op_r src[base + offs[r] + j * S]` (min
/// when `MIN`, else max), compiled for AVX-512 as one loop over every row's chunks. Every
/// element read is bounds-checked against `src`.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn fold_rows<const S: usize, const MIN: bool>(
    src: &[f32],
    offs: &[usize],
    rows: impl Iterator<Item = (usize, usize, usize)>,
    out: &mut [f32],
) {
    for (start, len, base) in rows {
        if len == 0 {
            continue;
        }
        let row = &src[base..];
        for (c, chunk) in out[start..start + len].chunks_mut(16).enumerate() {
            // SAFETY: AVX-512F is there (the caller's contract).
            unsafe { chunk16::<S, MIN>(row, offs, c * 16, chunk) };
        }
    }
}

/// The first `n` bits set (`n` at most 16).
#[cfg(target_arch = "x86_64")]
fn lanes(n: usize) -> __mmask16 {
    ((1u32 << n.min(16)) - 1) as __mmask16
}

/// Up to sixteen outputs (`out.len()`) from output `j`.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn chunk16<const S: usize, const MIN: bool>(
    src: &[f32],
    offs: &[usize],
    j: usize,
    out: &mut [f32],
) {
    let n = out.len().min(16);
    if n == 0 {
        return;
    }
    let init = if MIN {
        f32::INFINITY
    } else {
        f32::NEG_INFINITY
    };
    let mut acc = _mm512_set1_ps(init);
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    // The n window values lie in the (n - 1) S + 1 elements from each window start.
    let span = (n - 1) * S + 1;
    let (lo_lanes, hi_lanes) = (lanes(span), lanes(span.saturating_sub(16)));
    for &o in offs {
        let start = o + j * S;
        let row = &src[start..start + span];
        // SAFETY: the masked loads read only the `span` elements of `row`.
        let x = unsafe {
            let lo = _mm512_maskz_loadu_ps(lo_lanes, row.as_ptr());
            if S == 1 {
                lo
            } else {
                let hi = _mm512_maskz_loadu_ps(hi_lanes, row.as_ptr().add(16.min(span)));
                _mm512_permutex2var_ps(lo, evens, hi)
            }
        };
        acc = fold::<MIN>(acc, x);
    }
    // SAFETY: the store writes the first `n` floats of `out`.
    unsafe { _mm512_mask_storeu_ps(out.as_mut_ptr(), lanes(n), acc) };
}

/// Output position `j`'s `width` lanes (a blocked layout's channels):
/// `out[j * width + l] = op_r src[base + j * step + offs[r] + l]` (min when `MIN`, else max),
/// one masked vector per window position.
///
/// # Safety
/// The CPU has AVX-512F, and every element read lies in `src`: `base + (n - 1) * step +
/// max(offs) + width <= src.len()` for the `n = out.len() / width` positions; `width` is at
/// most 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub unsafe fn fold_lanes<const MIN: bool>(
    src: &[f32],
    base: usize,
    step: usize,
    width: usize,
    offs: &[usize],
    out: &mut [f32],
) {
    // SAFETY (each): the caller's contract.
    unsafe {
        match offs.len() {
            9 => fold_window::<MIN, 9>(src, base, step, width, offs, out),
            4 => fold_window::<MIN, 4>(src, base, step, width, offs, out),
            _ => fold_window::<MIN, 0>(src, base, step, width, offs, out),
        }
    }
}

/// [`fold_lanes`] over windows of `N` positions (`offs` holds `N`; the loop over them then
/// unrolls, the offsets in registers), or of `offs.len()` when `N` is 0. Nine unrolled: the
/// 3 x 3 / 2 pool after SqueezeNet's stem (the two alone as a model, one Zen 5 core, minima
/// of 200 runs in alternating processes) 0.078-0.115 -> 0.064-0.094 ms.
///
/// # Safety
/// As for [`fold_lanes`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fold_window<const MIN: bool, const N: usize>(
    src: &[f32],
    base: usize,
    step: usize,
    width: usize,
    offs: &[usize],
    out: &mut [f32],
) {
    let offs = if N > 0 { &offs[..N] } else { offs };
    let mask = lanes(width);
    let init = _mm512_set1_ps(if MIN {
        f32::INFINITY
    } else {
        f32::NEG_INFINITY
    });
    for (j, out) in out.chunks_exact_mut(width).enumerate() {
        // SAFETY: the caller's contract bounds every window of every position.
        unsafe {
            let at = src.as_ptr().add(base + j * step);
            // Without NaNs the rule is `vmaxps` / `vminps` with the new value first (which
            // keeps `acc` on ties, as the rule does); the sum of the window's values is NaN
            // when one of them is (or when infinities of both signs meet), and then the
            // position is folded again by the rule itself. One instruction per value on the
            // chain instead of three: SqueezeNet's 3 x 3 / 2 pool after its stem (the two
            // alone as a model, one Zen 5 core) 0.21 -> 0.08-0.13 ms.
            let (mut acc, mut sum) = (init, _mm512_setzero_ps());
            for &o in offs {
                let x = _mm512_maskz_loadu_ps(mask, at.add(o));
                acc = if MIN {
                    _mm512_min_ps(x, acc)
                } else {
                    _mm512_max_ps(x, acc)
                };
                sum = _mm512_add_ps(sum, x);
            }
            if _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(sum, sum) != 0 {
                acc = init;
                for &o in offs {
                    acc = fold::<MIN>(acc, _mm512_maskz_loadu_ps(mask, at.add(o)));
                }
            }
            _mm512_mask_storeu_ps(out.as_mut_ptr(), mask, acc);
        }
    }
}

/// `x` where it is smaller (`MIN`) or larger than `acc`, or NaN; `acc` elsewhere: the rule of
/// [`crate::fold::min`] / [`crate::fold::max`], lane by lane.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn fold<const MIN: bool>(acc: __m512, x: __m512) -> __m512 {
    let better = if MIN {
        _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, acc)
    } else {
        _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, acc)
    };
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    _mm512_mask_mov_ps(acc, better | nan, x)
}
