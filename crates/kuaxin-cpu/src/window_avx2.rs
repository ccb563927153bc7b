//! Max and min pooling windows of stride 1 or 2 on AVX2, for CPUs without AVX-512 (Zen 3):
//! eight outputs per vector and a `max_ps` / `min_ps` per window position, which without NaNs
//! is the rule of [`crate::fold::max`] / [`crate::fold::min`] (a chunk whose windows hold a
//! NaN is folded again with the NaN-exact compare-and-select), so results equal the scalar
//! fold's bit for bit. At stride 1 each window position is one load; at stride 2 two
//! neighbouring positions (a kernel row's columns) share two loads, one taking the even
//! elements and the other the odd ones, with the vectors left in the order the in-lane
//! shuffles give until the store. A row's last chunk overlaps the one before it (the repeated
//! outputs are the same values written again); rows under eight outputs go one output at a
//! time. The portable fold compiled for AVX2 took 0.53 ms for SqueezeNet's first pool on Zen
//! 3, a row of dispatch and strided element loads at a time; a loop of two loads and two
//! shuffles per position (and a running sum as the NaN test, a chain of adds) 0.30 ms. The
//! 3 x 3 stride-2 window (every max pool of ResNet-50 and SqueezeNet) runs its six steps as
//! straight-line code, not a loop over the plan with a branch per step: that pool alone, on
//! data in cache, 0.161 -> 0.129 ms (minimum) and 0.29-0.32 -> 0.19-0.21 ms (median, when the
//! host's neighbour was busy); SqueezeNet's three pools in the model 1.20 -> 0.94 ms (median).
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether [`fold_rows`] takes windows of this stride on this CPU.
pub fn takes(stride: usize) -> bool {
    cfg!(target_arch = "x86_64")
        && (stride == 1 || stride == 2)
        && crate::simd::level() >= crate::simd::Level::Avx2Fma
}

/// Each row `(start, len, base)`: `out[start + j] = op_r src[base + offs[r] + j * S]` (min
/// when `MIN`, else max), compiled for AVX2 as one loop over every row's chunks. Each chunk's
/// windows are bounds-checked against `src` as one slice.
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
    let reach = offs.iter().max().copied().unwrap_or(0);
    let plan = plan::<S>(offs);
    // A 3 x 3 stride-2 window (ResNet-50's and SqueezeNet's pools): a pair and a single load
    // on each kernel row, folded by straight-line code.
    let three_pairs = S == 2
        && plan.len() == 6
        && plan
            .iter()
            .enumerate()
            .all(|(i, &(_, pair))| pair == (i % 2 == 0));
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
            // Every value the chunk's windows read: `reach + 7 S + 1` elements from its first
            // window's origin.
            let windows = &row[j * S..j * S + reach + 7 * S + 1];
            // SAFETY: AVX2 is there (the caller's contract); `windows` holds what `plan`'s
            // loads read (offsets up to `reach`).
            unsafe {
                if three_pairs {
                    chunk8::<S, MIN, 6>(windows, &plan, &mut out[j..j + 8])
                } else {
                    chunk8::<S, MIN, 0>(windows, &plan, &mut out[j..j + 8])
                }
            };
            if j + 8 == len {
                break;
            }
            j = (j + 8).min(len - 8);
        }
    }
}

/// A stride-2 window position and, when `pair`, the next one (the offset after it, as a
/// kernel row's neighbouring columns are): the even and odd elements of the same two loads.
type Step = (usize, bool);

/// `offs` as loads: for stride 2, each offset followed by its neighbour `+ 1` shares their
/// loads with it; for stride 1 every offset is a load of its own.
fn plan<const S: usize>(offs: &[usize]) -> Vec<Step> {
    let mut steps = Vec::with_capacity(offs.len());
    let mut i = 0;
    while i < offs.len() {
        let pair = S == 2 && offs.get(i + 1) == Some(&(offs[i] + 1));
        steps.push((offs[i], pair));
        i += 1 + usize::from(pair);
    }
    steps
}

/// Outputs `j..j + 8` into `out` (eight floats), `windows` starting at output `j`'s window.
/// Without a NaN in the windows, `max_ps(x, acc)` is the fold's step exactly (it keeps `acc`
/// unless `x > acc`, so of two equal zeros the first stays): one instruction where the
/// NaN-exact compare-and-select is four. Whether a NaN is there is one unordered compare of
/// the two vectors each load pair brings (a NaN that lies between two windows, at stride 2,
/// is a false alarm, which only costs the exact pass); if one is, the chunk is folded again
/// with the compare-and-select.
///
/// Stride 2 keeps each vector in the order the in-lane shuffles leave (outputs 0 1 4 5 | 2 3
/// 6 7) and puts the eight in order once, before the store.
///
/// # Safety
/// The CPU has AVX2; `windows` holds `o + 7 S + 1` elements for every offset `o` of `plan`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn chunk8<const S: usize, const MIN: bool, const N: usize>(
    windows: &[f32],
    plan: &[Step],
    out: &mut [f32],
) {
    // SAFETY (both passes): the caller's contract.
    let (mut acc, nan) = unsafe { fold8::<S, MIN, false, N>(windows, plan) };
    if nan {
        acc = unsafe { fold8::<S, MIN, true, N>(windows, plan) }.0;
    }
    if S == 2 {
        acc = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(
            acc,
        )));
    }
    let out = &mut out[..8];
    // SAFETY: `out` holds the eight floats written.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
}

/// The eight windows folded over `plan` in order, `EXACT`ly (the compare-and-select that takes
/// a NaN) or with `max_ps` / `min_ps`; and whether a value the loads brought is NaN.
///
/// # Safety
/// As [`chunk8`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn fold8<const S: usize, const MIN: bool, const EXACT: bool, const N: usize>(
    windows: &[f32],
    plan: &[Step],
) -> (__m256, bool) {
    let mut acc = _mm256_set1_ps(if MIN {
        f32::INFINITY
    } else {
        f32::NEG_INFINITY
    });
    let mut nan = _mm256_setzero_ps();
    let step = |acc: __m256, x: __m256| {
        if EXACT {
            let better = if MIN {
                _mm256_cmp_ps::<_CMP_LT_OQ>(x, acc)
            } else {
                _mm256_cmp_ps::<_CMP_GT_OQ>(x, acc)
            };
            let nan = _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x);
            _mm256_blendv_ps(acc, x, _mm256_or_ps(better, nan))
        } else if MIN {
            _mm256_min_ps(x, acc)
        } else {
            _mm256_max_ps(x, acc)
        }
    };
    let p = windows.as_ptr();
    // `N` > 0: the plan is `N` steps, pairs at the even ones (a count and a pattern the
    // compiler unrolls); 0: any plan.
    let steps = if N > 0 { N } else { plan.len() };
    for (i, &(o, pair)) in plan[..steps].iter().enumerate() {
        let pair = if N > 0 { i % 2 == 0 } else { pair };
        // SAFETY: stride 1 reads `o..o + 8`, stride 2 `o..o + 15` (single: `o..o + 8` and
        // `o + 7..o + 15`), a pair `o..o + 16` with `o + 1` a planned offset: all inside
        // `windows` (the caller's contract).
        unsafe {
            if S == 1 {
                let x = _mm256_loadu_ps(p.add(o));
                acc = step(acc, x);
                nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
            } else if pair {
                // Per 128-bit lane, elements 0 2 8 10 | 4 6 12 14 (even) and 1 3 9 11 | 5 7
                // 13 15 (odd) of the sixteen from `o`.
                let lo = _mm256_loadu_ps(p.add(o));
                let hi = _mm256_loadu_ps(p.add(o + 8));
                acc = step(acc, _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi));
                acc = step(acc, _mm256_shuffle_ps::<0b11_01_11_01>(lo, hi));
                nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(lo, hi));
            } else {
                // The even elements in the same order, `hi` from `o + 7` so that nothing
                // past the window's last element (`o + 14`) is read.
                let lo = _mm256_loadu_ps(p.add(o));
                let hi = _mm256_loadu_ps(p.add(o + 7));
                acc = step(acc, _mm256_shuffle_ps::<0b11_01_10_00>(lo, hi));
                nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(lo, hi));
            }
        }
    }
    (acc, _mm256_movemask_ps(nan) != 0)
}
