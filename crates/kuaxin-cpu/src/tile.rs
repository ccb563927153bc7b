//! The AVX-512 register tile of [`crate::panels`]: `C[R x 32] (+)= A[R x k] * B[k x 32]`,
//! with A read one element at a time (broadcast, so any strides do) and B one 32-wide row per
//! step (two vector loads from a packed panel, whose padding columns are zeros).
//!
//! Each product is one fused multiply-add into the accumulator, in order of `k`.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of the tallest tile whose C is stored transposed: eight rows fill the 8 x 8
/// transposes of [`store_transposed`]. 8 x 2 accumulators, 2 B vectors and a broadcast fill 19
/// of the 32 vector registers. (Six rows measured 1-9% slower on convolutions.)
pub const MR: usize = 8;
// A transposed C is stored eight rows at a time (`store_transposed`).
const _: () = assert!(MR <= 8);
/// Rows of the tallest tile whose C is stored by rows (a MatMul's): 14 x 2 accumulators, 2 B
/// vectors and a broadcast fill 31 registers, and each B row loaded serves 28 multiply-adds
/// rather than 16. A 1024^3 MatMul on one Ice Lake core, kernel minima: 18.1 ms on eight
/// rows, 16.4 on twelve, 16.1 on fourteen (with B prefetched, below).
pub const MR_ROWS: usize = 14;
/// Columns of a tile (two 16-lane vectors).
pub const NR: usize = 32;
/// Steps of k ahead of the one multiplied whose B row the tile asks to have in L1: each tile
/// reads its panel of B (up to 256 KiB) from L2 again. Without the hint fourteen rows took
/// 17.1 ms on the MatMul above; eight rows were level either way.
const B_AHEAD: usize = 16;

/// Where a tile's operands lie: element (r, p) of A at `a + r * a_rs + p * a_cs`, row p of B
/// (32 floats, all read) at `b + p * b_rs`, element (r, j) of C at
/// `c + r * c_rs + j * c_cs` (`c_cs == 1`: rows stored as vectors; otherwise `c_rs` must be 1
/// and columns are stored as vectors).
#[derive(Clone, Copy)]
pub struct Tile {
    pub a: *const f32,
    pub a_rs: isize,
    pub a_cs: isize,
    pub b: *const f32,
    pub b_rs: isize,
    pub c: *mut f32,
    pub c_rs: usize,
    pub c_cs: usize,
    /// The columns of C written (bit j: column j); `u32::MAX` for all 32.
    pub mask: u32,
    /// Adds to C instead of overwriting it (a later block of `k`).
    pub accumulate: bool,
    /// On the last block of `k`: what happens to the finished sums before they are stored.
    pub finish: Option<Finish>,
}

/// A bias per column, a residual and an optional ReLU applied to a tile's finished sums: a
/// convolution's bias, skip connection and activation done while the sums are in registers, so
/// its output is written once. Each is the f32 op the unfused kernels apply, in their order
/// (`(sum + bias) + residual`, then `max_nan(v, 0)`: negatives become +0.0; NaN and -0.0
/// stay), so the result is the same bits.
#[derive(Clone, Copy)]
pub struct Finish {
    /// The bias of the tile's first column (32 values read under the column mask), or null.
    pub bias: *const f32,
    /// The residual's element for the tile's (0, 0), laid out as C (`c_rs`, `c_cs`), or null.
    pub residual: *const f32,
    pub relu: bool,
}

/// Runs the tile for `rows` rows of A and C over `k` steps: 1..=[`MR_ROWS`] when C's rows
/// are stored as vectors (`c_cs == 1`), 1..=[`MR`] when its columns are.
///
/// # Safety
/// The CPU has AVX-512 (F, VL, DQ), and every element the tile describes for `rows` rows and
/// `k` steps is valid to read (A, B) or write (C); C does not overlap A or B.
#[cfg(target_arch = "x86_64")]
pub unsafe fn run(rows: usize, k: usize, t: &Tile) {
    assert!(
        rows >= 1 && ((t.c_cs == 1 && rows <= MR_ROWS) || (t.c_rs == 1 && rows <= MR)),
        "a register tile stores 1 to {MR_ROWS} rows of C as vectors, or 1 to {MR} as columns (asked for {rows})"
    );
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
            _ => tile::<MR_ROWS>(k, t),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,fma")]
unsafe fn tile<const R: usize>(k: usize, t: &Tile) {
    let (lo, hi) = (t.mask as u16, (t.mask >> 16) as u16);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (mut a, mut b) = (t.a, t.b);
    // SAFETY (every access below): within the operand windows the caller vouches for; masked
    // stores touch only the columns in the mask.
    unsafe {
        for _ in 0..k {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(16));
            // A hint (it never faults): the row B_AHEAD steps on, both of its cache lines.
            let ahead = b.wrapping_offset(B_AHEAD as isize * t.b_rs);
            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16) as *const i8);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(*a.offset(r as isize * t.a_rs));
                acc[0] = _mm512_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(x, b1, acc[1]);
            }
            a = a.offset(t.a_cs);
            b = b.offset(t.b_rs);
        }
        // (`run` sends only tiles of up to MR rows here.)
        if R <= MR && t.c_cs != 1 {
            // By value: with the array borrowed, LLVM kept a copy of all 16 accumulators in
            // memory, stored on every step (twice as slow); so are the rows stored below.
            store_transposed(acc, t);
            return;
        }
        for (r, [mut v0, mut v1]) in acc.into_iter().enumerate() {
            let c = t.c.add(r * t.c_rs);
            if t.accumulate {
                v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(lo, c));
                v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(hi, c.add(16)));
            }
            if let Some(f) = &t.finish {
                (v0, v1) = finish(f, (lo, hi), (v0, v1), r * t.c_rs);
            }
            _mm512_mask_storeu_ps(c, lo, v0);
            _mm512_mask_storeu_ps(c.add(16), hi, v1);
        }
    }
}

/// Stores the accumulators of a C whose columns are not contiguous but whose rows are
/// (`c_rs == 1`: a transposed C, the tile's 32 columns are 32 rows of the output, each taking
/// the tile's `R` rows as `R` consecutive floats): eight columns at a time are transposed in
/// registers and each column stored as one masked vector, finished as [`finish`] would (the
/// earlier sum, the bias, the residual, the ReLU, in that order).
///
/// # Safety
/// As for [`tile`], with `t.c_rs == 1`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx512dq,avx,fma")]
unsafe fn store_transposed<const R: usize>(acc: [[__m512; 2]; R], t: &Tile) {
    let rows = ((1u16 << R) - 1) as u8;
    let zero = _mm256_setzero_ps();
    let (bias, residual, relu) = match &t.finish {
        Some(f) => (f.bias, f.residual, f.relu),
        None => (std::ptr::null(), std::ptr::null(), false),
    };
    for q in 0..NR / 8 {
        let cols = (t.mask >> (8 * q)) as u8;
        if cols == 0 {
            break;
        }
        let mut v = [zero; 8];
        for (v, acc) in v.iter_mut().zip(&acc) {
            let half = _mm512_extractf32x8_ps::<1>(acc[q / 2]);
            *v = if q % 2 == 0 {
                _mm512_castps512_ps256(acc[q / 2])
            } else {
                half
            };
        }
        transpose8(&mut v);
        for (jj, mut x) in v.into_iter().enumerate() {
            if cols >> jj & 1 == 0 {
                break;
            }
            let j = 8 * q + jj;
            // SAFETY (each access): column j is in the mask, so its R elements of C, its bias
            // and its R residual elements are valid (the caller's contract).
            unsafe {
                let c = t.c.add(j * t.c_cs);
                if t.accumulate {
                    x = _mm256_add_ps(_mm256_maskz_loadu_ps(rows, c), x);
                }
                if !bias.is_null() {
                    x = _mm256_add_ps(x, _mm256_set1_ps(*bias.add(j)));
                }
                if !residual.is_null() {
                    x = _mm256_add_ps(x, _mm256_maskz_loadu_ps(rows, residual.add(j * t.c_cs)));
                }
                if relu {
                    x = _mm256_mask_mov_ps(x, _mm256_cmp_ps_mask::<_CMP_LT_OQ>(x, zero), zero);
                }
                _mm256_mask_storeu_ps(c, rows, x);
            }
        }
    }
}

/// Transposes an 8 x 8 block held as eight rows: afterwards `v[j][i]` is what `v[i][j]` was.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn transpose8(v: &mut [__m256; 8]) {
    let t = |a: usize, b: usize, lo: bool| {
        if lo {
            _mm256_unpacklo_ps(v[a], v[b])
        } else {
            _mm256_unpackhi_ps(v[a], v[b])
        }
    };
    let (t0, t1, t2, t3) = (t(0, 1, true), t(0, 1, false), t(2, 3, true), t(2, 3, false));
    let (t4, t5, t6, t7) = (t(4, 5, true), t(4, 5, false), t(6, 7, true), t(6, 7, false));
    let u = [
        _mm256_shuffle_ps::<0x44>(t0, t2),
        _mm256_shuffle_ps::<0xEE>(t0, t2),
        _mm256_shuffle_ps::<0x44>(t1, t3),
        _mm256_shuffle_ps::<0xEE>(t1, t3),
        _mm256_shuffle_ps::<0x44>(t4, t6),
        _mm256_shuffle_ps::<0xEE>(t4, t6),
        _mm256_shuffle_ps::<0x44>(t5, t7),
        _mm256_shuffle_ps::<0xEE>(t5, t7),
    ];
    for i in 0..4 {
        v[i] = _mm256_permute2f128_ps::<0x20>(u[i], u[i + 4]);
        v[i + 4] = _mm256_permute2f128_ps::<0x31>(u[i], u[i + 4]);
    }
}

/// One finished sum `v` with its column's bias and its residual added and the ReLU applied
/// (`max_nan(v, 0)`: only a value below zero changes): the scalar form of [`Finish`].
pub fn finish_one(mut v: f32, bias: Option<f32>, residual: Option<f32>, relu: bool) -> f32 {
    if let Some(b) = bias {
        v += b;
    }
    if let Some(r) = residual {
        v += r;
    }
    if relu && v < 0.0 {
        v = 0.0;
    }
    v
}

/// The finished sums of one tile row (its two vectors, `masks` their columns; the row `row`
/// elements from the tile's first in C) with the bias and residual added and the ReLU applied.
///
/// # Safety
/// The CPU has AVX-512F; a non-null bias holds the columns in the masks, a non-null residual
/// that row's columns (contiguous, as C's are here).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn finish(
    f: &Finish,
    (lo, hi): (u16, u16),
    (mut v0, mut v1): (__m512, __m512),
    row: usize,
) -> (__m512, __m512) {
    // SAFETY: the caller's contract.
    unsafe {
        if !f.bias.is_null() {
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(lo, f.bias));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(hi, f.bias.add(16)));
        }
        if !f.residual.is_null() {
            let r = f.residual.add(row);
            v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(lo, r));
            v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(hi, r.add(16)));
        }
    }
    if f.relu {
        let zero = _mm512_setzero_ps();
        v0 = _mm512_mask_mov_ps(v0, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v0, zero), zero);
        v1 = _mm512_mask_mov_ps(v1, _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v1, zero), zero);
    }
    (v0, v1)
}

/// The mask of the first `cols` (at most 32) columns.
pub fn mask(cols: usize) -> u32 {
    if cols >= NR {
        u32::MAX
    } else {
        (1u32 << cols) - 1
    }
}
