//! The AVX2 register tile of [`crate::conv_direct`]: six output positions by sixteen output
//! channels of a convolution, `C^T[6 x 16] = X[6 x k] * W^T[k x 16]`, with X read straight
//! from the (padded) input: position r's window starts at `x + origins[r]` and step s of the
//! depth (an input channel and kernel position) lies `steps[s]` further on, so no column
//! matrix is made. Each step broadcasts the six positions' input values and multiplies them
//! into two vectors of a weight panel (sixteen channels, packed once), twelve independent
//! fused multiply-adds like [`crate::tile_avx2`]'s.
//!
//! With `accumulate` the sums start from C's values, so a product run in blocks of the depth
//! is the same chain of roundings as one run over all of it.
#[cfg(target_arch = "x86_64")]
use crate::tile_avx2::{finish_row, Masks};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Positions of a tile.
pub const MR: usize = 6;
/// Channels of a tile (two 8-lane vectors; the weight's panel width).
pub const NR: usize = 16;

/// Where a tile's operands lie.
#[derive(Clone, Copy)]
pub struct DirectTile {
    /// The input; position r's element for step s at `x + origins[r] + steps[s]`.
    pub x: *const f32,
    /// The tile's positions' window origins, one per row.
    pub origins: *const usize,
    /// The block's steps: `k` input offsets.
    pub steps: *const usize,
    /// The weight panel from the block's first step: `k` rows of the tile's channels.
    pub b: *const f32,
    /// C^T: position r's channels at `c + r * ldc`.
    pub c: *mut f32,
    pub ldc: usize,
    /// Channels of C read and written (1 to the tile's channels).
    pub cols: usize,
    /// The sums continue from C's values (a later block of the depth).
    pub accumulate: bool,
    /// On the last block of the depth: what happens to the finished sums before they are
    /// stored (a matrix product's epilogue; C rows, not C^T).
    pub finish: Option<ColumnFinish>,
}

/// A bias per column, a residual and an optional ReLU applied to a product's finished sums as
/// the unfused kernels apply them (the AVX-512 tiles' [`crate::tile::Finish`]: the bias of
/// the tile's first column, the residual's element for the tile's (0, 0) laid out as C).
pub type ColumnFinish = crate::tile::Finish;

/// A windowed tile: how many positions and channels it takes, and what runs it.
#[derive(Clone, Copy)]
pub struct Kernel {
    pub mr: usize,
    pub nr: usize,
    /// Runs the tile for `rows` (1..=mr) positions over `k` steps (the contract of [`run`],
    /// with panels of `nr` channels).
    pub run: unsafe fn(usize, usize, &DirectTile),
}

/// The tile for a weight packed in panels of `width` channels, when this CPU runs one: this
/// AVX2 tile's [`NR`] (AVX2 and FMA), or the AVX-512 tile's 32
/// ([`crate::tile_direct_avx512`]; `KUAXIN_CPU_SIMD` caps it).
pub fn kernel(width: usize) -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::tile_direct_avx512 as wide;
        if width == NR && crate::tile_avx2::supported() {
            return Some(Kernel {
                mr: MR,
                nr: NR,
                run,
            });
        }
        if width == wide::NR && crate::panels::available() {
            return Some(Kernel {
                mr: wide::MR,
                nr: wide::NR,
                run: wide::run,
            });
        }
    }
    let _ = width;
    None
}

/// Runs the tile for `rows` (1..=MR) positions over `k` steps.
///
/// # Safety
/// [`crate::tile_avx2::supported`] is true; `origins` holds `rows` values; for every
/// position r < `rows` and step s < `k`,
/// `x + origins[r] + steps[s]` is valid to read, as are `k` steps and `k` rows of 16 from `b`;
/// the first `cols` floats of C's `rows` rows are valid to write (and to read when
/// accumulating) and overlap nothing else; a finish's bias holds `cols` floats from its
/// pointer and its residual `cols` floats of each of the rows, `ldc` apart.
#[cfg(target_arch = "x86_64")]
pub unsafe fn run(rows: usize, k: usize, t: &DirectTile) {
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

/// One step of the depth: `acc[r] += x[r][step] * b[..16]`.
///
/// # Safety
/// The CPU has AVX2 and FMA; every `x[r] + step` and 16 floats from `b` are valid to read.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn step<const R: usize>(
    acc: &mut [[__m256; 2]; R],
    x: &[*const f32; R],
    step: usize,
    b: *const f32,
) {
    // SAFETY: the contract above.
    unsafe {
        let b0 = _mm256_loadu_ps(b);
        let b1 = _mm256_loadu_ps(b.add(8));
        for (acc, x) in acc.iter_mut().zip(x) {
            let v = _mm256_broadcast_ss(&*x.add(step));
            acc[0] = _mm256_fmadd_ps(v, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(v, b1, acc[1]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const R: usize>(k: usize, t: &DirectTile) {
    let masks = Masks::new(t.cols);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    // SAFETY (every access below): within the operand windows the caller vouches for; masked
    // loads and stores touch only the first `cols` channels.
    unsafe {
        if t.accumulate {
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = masks.load(t.c.add(r * t.ldc));
            }
        }
        let x: [*const f32; R] = std::array::from_fn(|r| t.x.add(*t.origins.add(r)));
        // Two steps a turn: the loop's own instructions (counter, pointer, compare and
        // branch) are a sixth of a one-step turn. Same minimum; in the slow spells of a
        // shared host (a busy neighbour, likely on the core's other hyperthread), medians
        // 2-5% lower (a 3 x 3 layer of 64 channels at 56 x 56, MiniLM-L3's MatMuls, the
        // 1024^3 MatMul; BENCHMARKS.md). The same change to `tile_avx2` gained nothing.
        let mut b = t.b;
        let mut s = 0;
        while s + 1 < k {
            step(&mut acc, &x, *t.steps.add(s), b);
            step(&mut acc, &x, *t.steps.add(s + 1), b.add(NR));
            b = b.add(2 * NR);
            s += 2;
        }
        if s < k {
            step(&mut acc, &x, *t.steps.add(s), b);
        }
        let bias = match &t.finish {
            Some(f) if !f.bias.is_null() => Some(masks.load(f.bias)),
            _ => None,
        };
        for (r, acc) in acc.into_iter().enumerate() {
            let v = match &t.finish {
                Some(f) => {
                    let residual = (!f.residual.is_null()).then(|| f.residual.add(r * t.ldc));
                    finish_row(acc, bias, residual, &masks, f.relu)
                }
                None => acc,
            };
            masks.store(t.c.add(r * t.ldc), v);
        }
    }
}
