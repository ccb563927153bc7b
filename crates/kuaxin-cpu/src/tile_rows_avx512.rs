//! The AVX-512 register tile of [`crate::conv_rows`]: `C[R x 32] = A[R x k] * B[k x 32]` for
//! up to fourteen rows (output channels), A packed as `k` steps of fourteen rows (each
//! step's broadcasts read from one contiguous group) and B as `k` rows of 32 (output
//! positions: two vector loads a step). 28 accumulators, two B vectors and a broadcast take
//! 31 of the 32 vector registers. The same shape as [`crate::tile_direct_avx512`]'s with the
//! roles swapped: the weight is broadcast and the positions are loaded, so the output comes
//! out by rows, as NCHW stores it, with no transposes after.
//!
//! Each product is one fused multiply-add into its accumulator, in order of `k`; with
//! `accumulate` the sums start from C, so a product run in blocks of `k` is the same chain
//! of roundings as one run over all of `k`. The finish is the AVX2 row tile's (a bias per
//! row, a residual, a ReLU; [`crate::tile_avx2::RowFinish`]).
#[cfg(target_arch = "x86_64")]
use crate::tile_avx2::RowTile;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of a tile (A's packed width).
pub const MR: usize = 14;
/// Columns of a tile (two 16-lane vectors).
pub const NR: usize = 32;

/// Steps ahead whose B row is prefetched.
const AHEAD: usize = 16;

/// Runs the tile for `rows` (1..=MR) rows of A and C over `k` steps.
///
/// # Safety
/// The CPU has AVX-512F ([`crate::panels::available`]), and every element the tile describes
/// for `rows` rows and `k` steps is valid to read (A, 32 columns of each B row, C's `cols`
/// columns when accumulating, the bias, the residual) or write (C's `cols` columns); C does
/// not overlap the others.
#[cfg(target_arch = "x86_64")]
pub unsafe fn run(rows: usize, k: usize, t: &RowTile) {
    // SAFETY: the caller's contract, for the row count each arm names.
    unsafe {
        match rows {
            1 => tile::<1>(k, t),
            2 => tile::<2>(k, t),
            3 => tile::<3>(k, t),
            4 => tile::<4>(k, t),
            5 => tile::<5>(k, t),
            6 => tile::<6>(k, t),
            7 => tile::<7>(k, t),
            8 => tile::<8>(k, t),
            9 => tile::<9>(k, t),
            10 => tile::<10>(k, t),
            11 => tile::<11>(k, t),
            12 => tile::<12>(k, t),
            13 => tile::<13>(k, t),
            _ => tile::<MR>(k, t),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn tile<const R: usize>(k: usize, t: &RowTile) {
    let mask = crate::tile::mask(t.cols);
    let (lo, hi) = (mask as u16, (mask >> 16) as u16);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    // SAFETY (every access below): within the operand windows the caller vouches for; masked
    // loads and stores touch only the first `cols` columns.
    unsafe {
        if t.accumulate {
            for (r, acc) in acc.iter_mut().enumerate() {
                let c = t.c.add(r * t.c_rs);
                *acc = [
                    _mm512_maskz_loadu_ps(lo, c),
                    _mm512_maskz_loadu_ps(hi, c.wrapping_add(16)),
                ];
            }
        }
        let (mut a, mut b) = (t.a, t.b);
        let ahead = AHEAD * t.b_rs;
        for _ in 0..k {
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(ahead) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(ahead + 16) as *const i8);
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*a.add(r));
                acc[0] = _mm512_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(x, b1, acc[1]);
            }
            a = a.add(MR);
            b = b.add(t.b_rs);
        }
        for (r, [mut v0, mut v1]) in acc.into_iter().enumerate() {
            if let Some(f) = &t.finish {
                if !f.bias.is_null() {
                    let bias = _mm512_set1_ps(*f.bias.add(r));
                    (v0, v1) = (_mm512_add_ps(v0, bias), _mm512_add_ps(v1, bias));
                }
                if !f.residual.is_null() {
                    let p = f.residual.add(r * t.c_rs);
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(lo, p));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(hi, p.wrapping_add(16)));
                }
                if f.relu {
                    let zero = _mm512_setzero_ps();
                    v0 = _mm512_mask_mov_ps(v0, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v0, zero), zero);
                    v1 = _mm512_mask_mov_ps(v1, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v1, zero), zero);
                }
            }
            let c = t.c.add(r * t.c_rs);
            _mm512_mask_storeu_ps(c, lo, v0);
            _mm512_mask_storeu_ps(c.wrapping_add(16), hi, v1);
        }
    }
}
