//! The AVX2 register tile of [`crate::conv_rows`], for CPUs without AVX-512 (Zen 3):
//! `C[R x 16] = A[R x k] * B[k x 16]` for up to six rows, A packed as `k` steps of six
//! rows (each step's six broadcasts read from one contiguous group) and B as `k` rows of 16
//! (two vector loads a step). Twelve accumulators, two B vectors and a broadcast take 15 of
//! the 16 vector registers, and the twelve independent multiply-adds of a step cover the
//! FMA latency: 100 GFLOPS of a Zen 3 core's 102 with the operands in L1.
//!
//! Each product is one fused multiply-add into its accumulator, in order of `k`; with
//! `accumulate` the accumulators start from C, so a product run in blocks of `k` is the same
//! chain of roundings as one run over all of `k`.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Rows of a tile (A's packed width).
pub const MR: usize = 6;
/// Columns of a tile (two 8-lane vectors).
pub const NR: usize = 16;

/// Where a tile's operands lie: element (r, p) of A at `a + p * MR + r` (a packed panel),
/// row p of B (16 floats, all read) at `b + p * b_rs`, element (r, j) of C at
/// `c + r * c_rs + j`, for `j < cols`.
#[derive(Clone, Copy)]
pub struct RowTile {
    pub a: *const f32,
    pub b: *const f32,
    pub b_rs: usize,
    pub c: *mut f32,
    pub c_rs: usize,
    /// Columns of C read and written (1..=16).
    pub cols: usize,
    /// The sums continue from C's values (a later block of `k`) instead of from zero.
    pub accumulate: bool,
    /// On the last block of `k`: what happens to the finished sums before they are stored.
    pub finish: Option<RowFinish>,
}

/// A bias per row (a convolution's output channel), a residual and an optional ReLU applied to
/// the finished sums, as the unfused kernels apply them: `(sum + bias) + residual`, then
/// `max_nan(v, 0)` (see [`crate::tile::finish_one`]), so the result is the same bits.
#[derive(Clone, Copy)]
pub struct RowFinish {
    /// The bias of the tile's first row (one value per row), or null.
    pub bias: *const f32,
    /// The residual's element for the tile's (0, 0), laid out as C, or null.
    pub residual: *const f32,
    pub relu: bool,
}

/// Whether this CPU can run the tile (AVX2 and FMA).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Asks for the `width` floats at `p + r * ld` of each of `rows` rows to be brought into the
/// cache (every line they touch, as a row need not be aligned), ahead of a tile that reads or
/// writes them. A prefetch never faults, so any address is fine. On a Zen 3 core, ResNet-50's
/// 1 x 1 expansions with the residual went from 1.6-2.3 ms to 1.3-1.8 when each tile fetched
/// its successor's rows this way.
pub fn prefetch_rows(p: *const f32, rows: usize, ld: usize, width: usize) {
    #[cfg(target_arch = "x86_64")]
    for r in 0..rows {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let row = p.wrapping_add(r * ld) as *const i8;
        let bytes = width * 4;
        // SAFETY: a prefetch is a hint; it reads nothing and never faults.
        unsafe {
            for at in (0..bytes).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(at));
            }
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(bytes - 1));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, rows, ld, width);
}

/// Runs the tile for `rows` (1..=MR) rows of A and C over `k` steps.
///
/// # Safety
/// [`supported`] is true, and every element the tile describes for `rows` rows and `k` steps
/// is valid to read (A, B, and C when accumulating, the bias, the residual) or write (C); C
/// does not overlap the others.
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
            _ => tile::<MR>(k, t),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize>(k: usize, t: &RowTile) {
    let masks = Masks::new(t.cols);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    // SAFETY (every access below): within the operand windows the caller vouches for; masked
    // loads and stores touch only the first `cols` columns.
    unsafe {
        if t.accumulate {
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = masks.load(t.c.add(r * t.c_rs));
            }
        }
        let (mut a, mut b) = (t.a, t.b);
        for _ in 0..k {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*a.add(r));
                acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
            }
            a = a.add(MR);
            b = b.add(t.b_rs);
        }
        for (r, acc) in acc.into_iter().enumerate() {
            let v = match &t.finish {
                Some(f) => {
                    let bias = (!f.bias.is_null()).then(|| [_mm256_set1_ps(*f.bias.add(r)); 2]);
                    let residual = (!f.residual.is_null()).then(|| f.residual.add(r * t.c_rs));
                    finish_row(acc, bias, residual, &masks, f.relu)
                }
                None => acc,
            };
            masks.store(t.c.add(r * t.c_rs), v);
        }
    }
}

/// One tile row's finished sums `v` (two vectors, `masks` their columns) as the unfused
/// kernels finish them: `(v + bias) + residual` (the residual's row read from `residual`),
/// then `max_nan(v, 0)`; each part only when given. Shared by both AVX2 tiles, whose biases
/// differ only in running along rows or columns.
///
/// # Safety
/// The CPU has AVX2; `residual`, when given, holds the masked columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn finish_row(
    v: [__m256; 2],
    bias: Option<[__m256; 2]>,
    residual: Option<*const f32>,
    masks: &Masks,
    relu_after: bool,
) -> [__m256; 2] {
    let [mut v0, mut v1] = v;
    if let Some([b0, b1]) = bias {
        (v0, v1) = (_mm256_add_ps(v0, b0), _mm256_add_ps(v1, b1));
    }
    if let Some(p) = residual {
        // SAFETY: the caller's contract.
        let [r0, r1] = unsafe { masks.load(p) };
        (v0, v1) = (_mm256_add_ps(v0, r0), _mm256_add_ps(v1, r1));
    }
    if relu_after {
        (v0, v1) = (relu(v0), relu(v1));
    }
    [v0, v1]
}

/// `max_nan(v, 0)`: lanes below zero become +0.0; NaN and -0.0 stay.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
pub(crate) fn relu(v: __m256) -> __m256 {
    let zero = _mm256_setzero_ps();
    _mm256_blendv_ps(v, zero, _mm256_cmp_ps::<_CMP_LT_OQ>(v, zero))
}

/// The first `cols` of a row's 16 columns: whole vectors when all 16 are there, masked
/// loads and stores (which touch no memory outside the mask) otherwise.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Masks {
    whole: bool,
    lanes: [__m256i; 2],
}

#[cfg(target_arch = "x86_64")]
impl Masks {
    #[target_feature(enable = "avx")]
    pub(crate) fn new(cols: usize) -> Masks {
        let lane = |j: i32| if (j as usize) < cols { -1 } else { 0 };
        let lanes = [
            _mm256_setr_epi32(
                lane(0),
                lane(1),
                lane(2),
                lane(3),
                lane(4),
                lane(5),
                lane(6),
                lane(7),
            ),
            _mm256_setr_epi32(
                lane(8),
                lane(9),
                lane(10),
                lane(11),
                lane(12),
                lane(13),
                lane(14),
                lane(15),
            ),
        ];
        Masks {
            whole: cols >= NR,
            lanes,
        }
    }

    /// # Safety
    /// The first `cols` floats from `p` are valid to read.
    #[target_feature(enable = "avx")]
    pub(crate) unsafe fn load(&self, p: *const f32) -> [__m256; 2] {
        // SAFETY: the caller's contract; masked-off lanes are not read (the second vector's
        // address may lie past the row, hence `wrapping_add`).
        unsafe {
            if self.whole {
                [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))]
            } else {
                [
                    _mm256_maskload_ps(p, self.lanes[0]),
                    _mm256_maskload_ps(p.wrapping_add(8), self.lanes[1]),
                ]
            }
        }
    }

    /// # Safety
    /// The first `cols` floats from `p` are valid to write.
    #[target_feature(enable = "avx")]
    pub(crate) unsafe fn store(&self, p: *mut f32, [v0, v1]: [__m256; 2]) {
        // SAFETY: the caller's contract; masked-off lanes are not written.
        unsafe {
            if self.whole {
                _mm256_storeu_ps(p, v0);
                _mm256_storeu_ps(p.add(8), v1);
            } else {
                _mm256_maskstore_ps(p, self.lanes[0], v0);
                _mm256_maskstore_ps(p.wrapping_add(8), self.lanes[1], v1);
            }
        }
    }
}
