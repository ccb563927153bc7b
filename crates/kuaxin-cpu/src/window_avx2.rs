//! Max and min pooling windows of stride 1 or 2 on AVX2, for CPUs without AVX-512 (Zen 3):
//! eight outputs per vector, each window position one load (stride 2: two overlapping loads
//! and two shuffles keeping the even elements) and a `max_ps` / `min_ps`, which without NaNs
//! is the rule of [`crate::fold::max`] / [`crate::fold::min`] (a chunk whose windows hold a
//! NaN is folded again with the NaN-exact compare-and-select), so results equal the scalar
//! fold's bit for bit. A row's last chunk overlaps the one before it (the repeated outputs
//! are the same values written again); rows under eight outputs go one output at a time. The portable
//! fold compiled for AVX2 took 0.53 ms for SqueezeNet's first pool on Zen 3, a row of
//! dispatch and strided element loads at a time; this loop 0.31 ms. (Four chunks folded side
//! by side, to break the compare-and-select chain, measured no faster.)
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether [`fold_rows`] takes windows of this stride on this CPU.
pub fn takes(stride: usize) -> bool {
    cfg!(target_arch = "x86_64")
        && (stride == 1 || stride == 2)
        && crate::simd::level() >= crate::simd::Level::Avx2Fma
}

/// Each row `(start, len, base)`: `out[start + j] = op_r src[base + offs[r] + j * S]` (min
/// when `MIN`, else max), compiled for AVX2 as one loop over every row's chunks. Every
/// element read is bounds-checked against `src`.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub unsafe fn fold_rows<const S: usize, const MIN: bool>(
    src: &[f32],
    offs: &[usize],
    rows: impl Iterator<Item = (usize, usize, usize)>,
    out: &mut [f32],
) {
    let step = if MIN {
        crate::fold::min::<f32>
    } else {
        crate::fold::max::<f32>
    };
    let init = if MIN {
        f32::INFINITY
    } else {
        f32::NEG_INFINITY
    };
    for (start, len, base) in rows {
        let row = &src[base..];
        let out = &mut out[start..start + len];
        if len < 8 {
            for (j, o) in out.iter_mut().enumerate() {
                *o = offs.iter().fold(init, |a, &r| step(a, row[r + j * S]));
            }
            continue;
        }
        let mut j = 0;
        loop {
            // SAFETY: AVX2 is there (the caller's contract).
            unsafe { chunk8::<S, MIN>(row, offs, j, &mut out[j..j + 8]) };
            if j + 8 == len {
                break;
            }
            j = (j + 8).min(len - 8);
        }
    }
}

/// Outputs `j..j + 8` into `out` (eight floats). Without a NaN in the windows, `max_ps(x,
/// acc)` is the fold's step exactly (it keeps `acc` unless `x > acc`, so of two equal zeros
/// the first stays): one instruction where the NaN-exact compare-and-select is four. A sum of
/// the window values, NaN once any value is, tells whether that holds (infinities of both
/// signs give a false alarm, which only costs the exact pass); if not, the chunk is folded
/// again with the compare-and-select.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn chunk8<const S: usize, const MIN: bool>(
    src: &[f32],
    offs: &[usize],
    j: usize,
    out: &mut [f32],
) {
    let init = _mm256_set1_ps(if MIN {
        f32::INFINITY
    } else {
        f32::NEG_INFINITY
    });
    let (mut acc, mut sum) = (init, _mm256_setzero_ps());
    for &o in offs {
        // SAFETY: AVX2 is there (the caller's contract).
        let x = unsafe { window::<S>(src, o + j * S) };
        acc = if MIN {
            _mm256_min_ps(x, acc)
        } else {
            _mm256_max_ps(x, acc)
        };
        sum = _mm256_add_ps(sum, x);
    }
    if _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_UNORD_Q>(sum, sum)) != 0 {
        acc = init;
        for &o in offs {
            // SAFETY: as above.
            let x = unsafe { window::<S>(src, o + j * S) };
            let better = if MIN {
                _mm256_cmp_ps::<_CMP_LT_OQ>(x, acc)
            } else {
                _mm256_cmp_ps::<_CMP_GT_OQ>(x, acc)
            };
            let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
            acc = _mm256_blendv_ps(acc, x, _mm256_or_ps(better, nan));
        }
    }
    let out = &mut out[..8];
    // SAFETY: `out` holds the eight floats written.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
}

/// The eight values `src[start + l * S]`, `l < 8`: the eight window values lie in the
/// `7 S + 1` elements from `start`.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn window<const S: usize>(src: &[f32], start: usize) -> __m256 {
    let row = &src[start..start + 7 * S + 1];
    // SAFETY: the loads read elements 0..8 and (stride 2) 7..15 of `row`, all inside it.
    unsafe {
        let lo = _mm256_loadu_ps(row.as_ptr());
        if S == 1 {
            lo
        } else {
            // lo holds elements 0..8, hi 7..15: per 128-bit lane take lo's 0 and 2 and hi's
            // 1 and 3 (elements 0 2 8 10 | 4 6 12 14), then order the 64-bit pairs.
            let hi = _mm256_loadu_ps(row.as_ptr().add(7));
            let mixed = _mm256_shuffle_ps::<0b11_01_10_00>(lo, hi);
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
                mixed,
            )))
        }
    }
}
