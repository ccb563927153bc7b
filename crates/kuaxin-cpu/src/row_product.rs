//! f32 products `C[m, n] = A * B` by rows of C, on a row tile ([`RowKernel`]): the AVX2 one
//! of [`crate::tile_avx2`] (six rows by sixteen columns) or the AVX-512 one of
//! [`crate::tile_rows_avx512`] (fourteen by 32). A in panels of the tile's rows (a
//! [`PackedB`] of `A^T` of that width: `k` steps of `mr` values), B in panels of the tile's
//! columns (`k` rows of `nr`: packed one panel after another, or read in place from a
//! row-major matrix, [`BPanels`]), C stored by rows. A convolution's weight is its A, packed
//! once, and its columns are made straight into B's panels, or are its input
//! ([`crate::conv_rows`]).
//!
//! A MatMul by a constant weight does not come here: its A rows read in place are the
//! broadcast operand of [`crate::direct_product::matmul`]. The AVX2 tile for it (B packed
//! once, A packed on each call) measured 5-12% slower than gemm on MiniLM-L3's products.
//!
//! Loops: depth in blocks of 16 KiB of a column panel (256 steps of 16, 128 of 32: it stays
//! in L1 while a block of row panels passes over it); the row panels in blocks of about
//! 192 KiB of a depth block (in L2). Threads share out the row panels.
use crate::gemm::SendPtr;
use crate::panels::{Columns, PackedB};
use crate::tile_avx2::{RowFinish, RowTile};
use rayon::prelude::*;

/// Steps of depth per block of a 16-column panel: 16 KiB (in L1); a panel of 32 columns
/// takes half as many.
pub const KC: usize = 256;
/// Bytes of a depth block of a block of row panels (in L2).
const ROW_BLOCK_BYTES: usize = 192 << 10;

/// Whether this CPU takes the AVX2 tiles: it has AVX2 and FMA, and no AVX-512 (whose
/// products run on the tiles of [`crate::panels`] and [`crate::tile_direct_avx512`], and only
/// its 1 x 1 expansions here, on [`crate::tile_rows_avx512`]).
pub fn avx2_only() -> bool {
    cfg!(target_arch = "x86_64")
        && !crate::panels::available()
        && crate::simd::level() >= crate::simd::Level::Avx2Fma
}

/// A row tile: how many rows (A's packed width) and columns it takes, and what runs it.
#[derive(Clone, Copy)]
pub struct RowKernel {
    pub mr: usize,
    pub nr: usize,
    /// Runs the tile for `rows` (1..=mr) rows over `k` steps (the contract of
    /// [`crate::tile_avx2::run`], with `mr` and `nr` for six and sixteen).
    pub run: unsafe fn(usize, usize, &RowTile),
}

/// The row tile for an A packed in panels of `width` rows, when this CPU runs one: the AVX2
/// tile's six (AVX2 and FMA) or the AVX-512 tile's fourteen (`KUAXIN_CPU_SIMD` caps it).
pub fn kernel(width: usize) -> Option<RowKernel> {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::{tile_avx2 as narrow, tile_rows_avx512 as wide};
        if width == narrow::MR && narrow::supported() {
            return Some(RowKernel {
                mr: narrow::MR,
                nr: narrow::NR,
                run: narrow::run,
            });
        }
        if width == wide::MR && crate::panels::available() {
            return Some(RowKernel {
                mr: wide::MR,
                nr: wide::NR,
                run: wide::run,
            });
        }
    }
    let _ = width;
    None
}

/// Where B's `n` columns lie in `data`, in panels of `width`: row `p` of panel `j` is the
/// `width` floats from `j * panel + p * row`, all of them read (columns past `n` are
/// computed and not stored).
#[derive(Clone, Copy)]
pub struct BPanels<'a> {
    pub data: &'a [f32],
    pub n: usize,
    pub width: usize,
    pub panel: usize,
    pub row: usize,
}

impl<'a> BPanels<'a> {
    /// Panels of `width` packed one after another, `k` rows each
    /// ([`crate::im2col::im2col_panels`]).
    pub fn packed(data: &'a [f32], n: usize, k: usize, width: usize) -> BPanels<'a> {
        BPanels {
            data,
            n,
            width,
            panel: k * width,
            row: width,
        }
    }

    /// A row-major `k x ld` matrix read in place (a 1 x 1 layer's input, `ld` positions per
    /// channel), its first `n` columns; `n` a multiple of `width`, so no panel reads past a
    /// row.
    pub fn in_place(data: &'a [f32], n: usize, ld: usize, width: usize) -> BPanels<'a> {
        BPanels {
            data,
            n,
            width,
            panel: width,
            row: ld,
        }
    }

    /// Whether every row of every panel lies inside `data`.
    fn fits(&self, k: usize) -> bool {
        let panels = self.n.div_ceil(self.width);
        panels == 0
            || k == 0
            || (panels - 1)
                .checked_mul(self.panel)
                .zip((k - 1).checked_mul(self.row))
                .and_then(|(a, b)| a.checked_add(b)?.checked_add(self.width))
                .is_some_and(|end| end <= self.data.len())
    }
}

/// `C = A * B` on `kernel` for A's `m` rows (`a`: `A^T` packed in panels of the tile's rows,
/// dims `(k, m)`) and B's `n` columns (`b`, in panels of the tile's columns), element (i, j)
/// of C at `c + i * ld + j`; `columns`, when given, finishes the sums with a bias per row (of
/// `m` values), a residual laid out as C, and a ReLU. `threads` share out the row panels.
///
/// # Safety
/// The CPU runs the kernel's tile ([`kernel`] gave it); element (i, j) of C is valid to
/// write for every `i < m`, `j < n`, and nothing else touches those elements meanwhile; a
/// bias holds `m` values and a residual every element at C's offsets.
pub unsafe fn product(
    kernel: RowKernel,
    a: &PackedB,
    b: BPanels,
    (c, ld): (&SendPtr<f32>, usize),
    columns: Option<Columns>,
    threads: usize,
) {
    let (mr, nr) = (kernel.mr, kernel.nr);
    let (k, m) = a.dims();
    let n = b.n;
    let row_panels = m.div_ceil(mr);
    let column_panels = n.div_ceil(nr);
    assert!(
        a.width() == mr && b.width == nr && b.fits(k),
        "panel product on a row tile: an operand lies outside its buffer"
    );
    let kc = KC * 16 / nr;
    let block_panels = (ROW_BLOCK_BYTES / (mr * kc * 4)).max(1);
    // Tile (i, j) over the depth block `k0..k0 + kb`; `prefetch` fetches the C and residual
    // rows of tile (i + 1, j), which it runs next.
    let tile = |i: usize, j: usize, (k0, kb): (usize, usize), prefetch: bool| {
        let last = k0 + kb == k;
        let at = i * mr * ld + j * nr;
        let t = RowTile {
            a: a.panel(i)[k0 * mr..].as_ptr(),
            b: b.data[j * b.panel + k0 * b.row..].as_ptr(),
            b_rs: b.row,
            c: c.0.wrapping_add(at),
            c_rs: ld,
            cols: nr.min(n - j * nr),
            accumulate: k0 > 0,
            finish: columns.filter(|_| last).map(|e| RowFinish {
                bias: e.bias.map_or(std::ptr::null(), |b| b[i * mr..].as_ptr()),
                residual: e.residual.map_or(std::ptr::null(), |r| r[at..].as_ptr()),
                relu: e.relu,
            }),
        };
        if last && prefetch {
            // The next tile's rows of C and of the residual, `mr` rows apart by a whole row
            // of C: no prefetcher sees them coming, and a layer of little depth (a 1 x 1
            // expansion of 64 -> 256 channels) waited on them as long as it multiplied (see
            // `prefetch_rows`).
            let (next, rows) = (at + mr * ld, mr.min(m - (i + 1) * mr));
            crate::tile_avx2::prefetch_rows(c.0.wrapping_add(next), rows, ld, nr);
            if let Some(r) = columns.and_then(|e| e.residual) {
                crate::tile_avx2::prefetch_rows(r.as_ptr().wrapping_add(next), rows, ld, nr);
            }
        }
        // SAFETY: row panel i of A from step k0 holds `kb` steps of `mr`, column panel j of
        // B from row k0 `kb` rows of `nr` (`fits`); the tile's rows i * mr .. of C and of
        // the residual, columns j * nr .., lie inside them (the caller's contract); the
        // kernel runs here.
        unsafe { (kernel.run)(mr.min(m - i * mr), kb, &t) };
    };
    // Row panels `is`: per depth block, a block of row panels (in L2) passes over each column
    // panel (in L1) in turn.
    let part = |is: std::ops::Range<usize>| {
        for k0 in (0..k).step_by(kc) {
            let kb = kc.min(k - k0);
            for i0 in is.clone().step_by(block_panels) {
                let i1 = (i0 + block_panels).min(is.end);
                for j in 0..column_panels {
                    for i in i0..i1 {
                        tile(i, j, (k0, kb), i + 1 < i1);
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
