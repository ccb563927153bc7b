//! f32 products `C[m, n] = A * B` on the AVX2 tile of [`crate::tile_avx2`], for CPUs with
//! AVX2 but no AVX-512 (Zen 3): A in panels of six rows (a [`PackedB`] of `A^T` of width
//! six: `k` steps of six values), B in panels of sixteen columns (`k` rows of 16: packed one
//! panel after another, or read in place from a row-major matrix, [`BPanels`]), C stored by
//! rows. A convolution's weight is its A, packed once, and its columns are made straight
//! into B's panels, or are its input ([`crate::conv_rows`]).
//!
//! A MatMul by a constant weight does not come here: its A rows read in place are the
//! broadcast operand of [`crate::direct_product::matmul`]. This tile for it (B packed once,
//! A packed on each call) measured 5-12% slower than gemm on MiniLM-L3's products.
//!
//! Loops: depth in blocks of [`KC`]; the row panels in blocks of 32 (a depth block of them,
//! 192 KiB, stays in L2); the column panels (a depth block of one, 16 KiB, stays in L1 while
//! the block's row panels pass over it). Threads share out the row panels.
use crate::gemm::SendPtr;
use crate::panels::{Columns, PackedB};
use crate::tile_avx2::{self, RowFinish, RowTile, MR, NR};
use rayon::prelude::*;

/// Steps of depth per block: a depth block of a column panel is 16 KiB (in L1).
pub const KC: usize = 256;
/// Row panels per block: a depth block of them is 32 x 6 KiB = 192 KiB (in L2).
const ROW_PANELS_PER_BLOCK: usize = 32;

/// Whether this CPU runs its products here: it has AVX2 and FMA, and no AVX-512 (which runs
/// the tiles of [`crate::panels`] instead).
pub fn available() -> bool {
    cfg!(target_arch = "x86_64")
        && !crate::panels::available()
        && crate::simd::level() >= crate::simd::Level::Avx2Fma
}

/// Where B's `n` columns lie in `data`, in panels of 16: row `p` of panel `j` is the 16
/// floats from `j * panel + p * row`, all of them read (columns past `n` are computed and
/// not stored).
#[derive(Clone, Copy)]
pub struct BPanels<'a> {
    pub data: &'a [f32],
    pub n: usize,
    pub panel: usize,
    pub row: usize,
}

impl<'a> BPanels<'a> {
    /// Panels packed one after another, `k` rows of 16 each ([`crate::im2col::im2col_panels`]).
    pub fn packed(data: &'a [f32], n: usize, k: usize) -> BPanels<'a> {
        BPanels {
            data,
            n,
            panel: k * NR,
            row: NR,
        }
    }

    /// A row-major `k x ld` matrix read in place (a 1 x 1 layer's input, `ld` positions per
    /// channel), its first `n` columns; `n` a multiple of 16, so no panel reads past a row.
    pub fn in_place(data: &'a [f32], n: usize, ld: usize) -> BPanels<'a> {
        BPanels {
            data,
            n,
            panel: NR,
            row: ld,
        }
    }

    /// Whether every row of every panel lies inside `data`.
    fn fits(&self, k: usize) -> bool {
        let panels = self.n.div_ceil(NR);
        panels == 0
            || k == 0
            || (panels - 1)
                .checked_mul(self.panel)
                .zip((k - 1).checked_mul(self.row))
                .and_then(|(a, b)| a.checked_add(b)?.checked_add(NR))
                .is_some_and(|end| end <= self.data.len())
    }
}

/// `C = A * B` for A's `m` rows (`a`: `A^T` packed in panels of six, dims `(k, m)`) and B's
/// `n` columns (`b`), element (i, j) of C at `c + i * ld + j`; `columns`, when given,
/// finishes the sums with a bias per row (of `m` values), a residual laid out as C, and a
/// ReLU. `threads` share out the row panels.
///
/// # Safety
/// The CPU has AVX2 and FMA ([`tile_avx2::supported`]); element (i, j) of C is valid to write
/// for every `i < m`, `j < n`, and nothing else touches those elements meanwhile; a bias holds
/// `m` values and a residual every element at C's offsets.
pub unsafe fn product(
    a: &PackedB,
    b: BPanels,
    (c, ld): (&SendPtr<f32>, usize),
    columns: Option<Columns>,
    threads: usize,
) {
    let (k, m) = a.dims();
    let n = b.n;
    let row_panels = m.div_ceil(MR);
    let column_panels = n.div_ceil(NR);
    assert!(
        a.width() == MR && b.fits(k),
        "panel product on the AVX2 tile: an operand lies outside its buffer"
    );
    // Row panels `is`: per depth block, a block of row panels (in L2) passes over each column
    // panel (in L1) in turn.
    let part = |is: std::ops::Range<usize>| {
        for k0 in (0..k).step_by(KC) {
            let kb = KC.min(k - k0);
            let last = k0 + kb == k;
            for i0 in is.clone().step_by(ROW_PANELS_PER_BLOCK) {
                let i1 = (i0 + ROW_PANELS_PER_BLOCK).min(is.end);
                for j in 0..column_panels {
                    let bj = b.data[j * b.panel + k0 * b.row..].as_ptr();
                    for i in i0..i1 {
                        let at = i * MR * ld + j * NR;
                        let t = RowTile {
                            a: a.panel(i)[k0 * MR..].as_ptr(),
                            b: bj,
                            b_rs: b.row,
                            c: c.0.wrapping_add(at),
                            c_rs: ld,
                            cols: NR.min(n - j * NR),
                            accumulate: k0 > 0,
                            finish: columns.filter(|_| last).map(|e| RowFinish {
                                bias: e.bias.map_or(std::ptr::null(), |b| b[i * MR..].as_ptr()),
                                residual: e.residual.map_or(std::ptr::null(), |r| r[at..].as_ptr()),
                                relu: e.relu,
                            }),
                        };
                        if last && i + 1 < i1 {
                            // The next tile's rows of C and of the residual, 6 rows apart by
                            // a whole row of C: no prefetcher sees them coming, and a layer
                            // of little depth (a 1 x 1 expansion of 64 -> 256 channels) waited
                            // on them as long as it multiplied (see `prefetch_rows`).
                            let (next, rows) = (at + MR * ld, MR.min(m - (i + 1) * MR));
                            tile_avx2::prefetch_rows(c.0.wrapping_add(next), rows, ld);
                            if let Some(r) = columns.and_then(|e| e.residual) {
                                tile_avx2::prefetch_rows(r.as_ptr().wrapping_add(next), rows, ld);
                            }
                        }
                        // SAFETY: row panel i of A from step k0 holds `kb` steps of six,
                        // column panel j of B from row k0 `kb` rows of 16 (`fits`); the
                        // tile's rows
                        // i * 6 .. of C and of the residual, columns j * 16 .., lie inside
                        // them (the caller's contract).
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            tile_avx2::run(MR.min(m - i * MR), kb, &t)
                        };
                        #[cfg(not(target_arch = "x86_64"))]
                        let _ = t;
                    }
                }
            }
        }
    };
    if threads > 1 && row_panels > 1 {
        let per = row_panels.div_ceil(threads);
        (0..row_panels.div_ceil(per))
            .into_par_iter()
            .for_each(|t| part(t * per..((t + 1) * per).min(row_panels)));
    } else {
        part(0..row_panels);
    }
}
