//! Max and min pooling windows of stride 1 or 2 on AVX-512: sixteen outputs per vector, each
//! window position one load (stride 2: two loads and a permute keeping the even lanes) and a
//! compare-and-select with the same rule as [`crate::fold::max`] / [`crate::fold::min`]
//! (take the new value when it is larger, or smaller, or NaN), so results equal the scalar
//! fold's bit for bit. The compiler turned the stride-2 reads of the portable fold into one
//! element at a time: ResNet's and SqueezeNet's 3 x 3 / 2 max pools ran at about one element
//! per cycle.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether [`fold`] takes windows of this stride on this CPU.
pub fn takes(stride: usize) -> bool {
    cfg!(target_arch = "x86_64") && (stride == 1 || stride == 2) && crate::panels::available()
}

/// `out[j] = op_r src[offs[r] + j * stride]` (max, or min when `min`) for `out.len() >= 16`
/// outputs, 16 at a time (the last 16 overlap the chunk before them). Every element read is
/// bounds-checked against `src`; call only when [`takes`] the stride.
pub fn fold(min: bool, src: &[f32], stride: usize, offs: &[usize], out: &mut [f32]) {
    let n = out.len();
    assert!(
        n >= 16 && takes(stride),
        "AVX-512 pooling fold of {n} outputs"
    );
    let mut j = 0;
    loop {
        let at = j.min(n - 16);
        let chunk = &mut out[at..at + 16];
        // SAFETY: AVX-512 is there (`takes`); `chunk` reads only through checked slices.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match (stride, min) {
                (1, false) => chunk16::<1, false>(src, offs, at, chunk),
                (1, true) => chunk16::<1, true>(src, offs, at, chunk),
                (_, false) => chunk16::<2, false>(src, offs, at, chunk),
                (_, true) => chunk16::<2, true>(src, offs, at, chunk),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (min, src, offs, chunk);
        if at + 16 >= n {
            break;
        }
        j += 16;
    }
}

/// Sixteen outputs from output `j`.
///
/// # Safety
/// The CPU has AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn chunk16<const S: usize, const MIN: bool>(
    src: &[f32],
    offs: &[usize],
    j: usize,
    out: &mut [f32],
) {
    let init = if MIN {
        f32::INFINITY
    } else {
        f32::NEG_INFINITY
    };
    let mut acc = _mm512_set1_ps(init);
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for &o in offs {
        let start = o + j * S;
        // The 16 window values lie in the (16 - 1) S + 1 elements from `start`.
        let row = &src[start..=start + 15 * S];
        // SAFETY: the loads stay inside `row` (16 elements, then 15 more under a mask).
        let x = unsafe {
            if S == 1 {
                _mm512_loadu_ps(row.as_ptr())
            } else {
                let lo = _mm512_loadu_ps(row.as_ptr());
                let hi = _mm512_maskz_loadu_ps(0x7fff, row.as_ptr().add(16));
                _mm512_permutex2var_ps(lo, evens, hi)
            }
        };
        let better = if MIN {
            _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, acc)
        } else {
            _mm512_cmp_ps_mask::<_CMP_GT_OQ>(x, acc)
        };
        let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
        acc = _mm512_mask_mov_ps(acc, better | nan, x);
    }
    // SAFETY: `out` holds 16 floats (the caller's chunk).
    unsafe { _mm512_storeu_ps(out[..16].as_mut_ptr(), acc) };
}
