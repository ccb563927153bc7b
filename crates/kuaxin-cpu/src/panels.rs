//! f32 products `C = A * B` whose B is packed once into 32-column panels ([`PackedB`]), run
//! on the AVX-512 register tiles of [`crate::tile`]. A constant weight packed when it is first
//! used (see [`crate::weights`]) is then read straight from its panels on every run, where
//! gemm packs it again on each call: MiniLM's weight products go from 96 to about 107 GFLOPS
//! on one Zen 4 core.
//!
//! Loops: blocks of `KC` steps of k (a panel block stays in L2), blocks of `MC` rows of A
//! (read in place, or from a copy where a tile's rows would crowd one L1 set, see
//! [`crate::spread_rows`]; the block stays in L2 across panels), the panels of the block, its
//! tiles.
use crate::gemm::{Mat, SendPtr, PAR_FLOPS};
use crate::scratch::with_scratch;
use crate::simd::{level, Level};
use crate::spread_rows;
use crate::tile::{self, Finish, Tile, MR, MR_ROWS, NR};
use kuaxin_core::{limits, Result};
use rayon::prelude::*;

/// Steps of k per block: a 2048 x 32 panel block is 256 KiB.
pub const KC: usize = 2048;
/// Values from which packing is shared out over the threads (an activation packed on each
/// call is often smaller, and a rayon round trip would cost more than the copy).
const PAR_PACK: usize = 1 << 18;
/// Bytes of A a row block may take (a quarter of a Zen 4 core's L2).
const A_BLOCK_BYTES: usize = 256 << 10;

/// Whether this CPU runs the tiles (AVX-512; `KUAXIN_CPU_SIMD` caps it).
pub fn available() -> bool {
    cfg!(target_arch = "x86_64") && level() == Level::Avx512
}

/// A `k x n` matrix as `n.div_ceil(width)` panels of `k` rows of `width` columns (the last
/// padded with zeros), each panel contiguous. Width [`NR`] (32) feeds the AVX-512 tiles as B;
/// width [`crate::tile_avx2::MR`] (6) or [`crate::tile_rows_avx512::MR`] (14) holds a
/// convolution's weight as the A of a row tile (a panel is six or fourteen output channels,
/// `k` steps of them).
pub struct PackedB {
    k: usize,
    n: usize,
    width: usize,
    data: Vec<f32>,
}

impl PackedB {
    /// Packs the `k x n` matrix `mat` of `src` in panels of `width` columns.
    pub fn with_width(src: &[f32], mat: Mat, k: usize, n: usize, width: usize) -> Result<PackedB> {
        if !mat.fits(k, n, src.len()) || width == 0 {
            return Err(kuaxin_core::Error::backend(
                "packing a matrix product operand: it lies outside its buffer",
            ));
        }
        let len = k
            .checked_mul(width)
            .and_then(|x| x.checked_mul(n.div_ceil(width)))
            .ok_or_else(|| kuaxin_core::Error::invalid("packed operand size overflows"))?;
        limits::check_elems::<f32>(len)?;
        let mut data = vec![0f32; len];
        // Panel j: columns j * width .. of `mat`, `k` rows of `width` (`fits` bounds every
        // (p, column) with p < k, column < n, so the slices below are inside `src`).
        let fill = |j: usize, panel: &mut [f32]| {
            let cols = width.min(n - j * width);
            let at = |p: usize, c: usize| {
                (mat.offset as isize + p as isize * mat.rs + (j * width + c) as isize * mat.cs)
                    as usize
            };
            if mat.cs == 1 {
                // Rows of the matrix are contiguous: a copy per row.
                for (p, row) in panel.chunks_exact_mut(width).enumerate() {
                    row[..cols].copy_from_slice(&src[at(p, 0)..at(p, 0) + cols]);
                }
            } else if mat.rs == 1 {
                // Columns are contiguous (a transposed operand): each column spread over
                // the panel's rows.
                for c in 0..cols {
                    let column = &src[at(0, c)..at(0, c) + k];
                    for (x, &v) in panel[c..].iter_mut().step_by(width).zip(column) {
                        *x = v;
                    }
                }
            } else {
                for (p, row) in panel.chunks_exact_mut(width).enumerate() {
                    for (c, x) in row[..cols].iter_mut().enumerate() {
                        *x = src[at(p, c)];
                    }
                }
            }
        };
        if len >= PAR_PACK {
            data.par_chunks_mut(k * width)
                .enumerate()
                .for_each(|(j, panel)| fill(j, panel));
        } else if len > 0 {
            data.chunks_mut(k * width)
                .enumerate()
                .for_each(|(j, panel)| fill(j, panel));
        }
        Ok(PackedB { k, n, width, data })
    }

    /// `(k, n)`: rows and columns of the matrix packed.
    pub fn dims(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// Columns per panel.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Panel `j` (`k` rows of `width`), or an empty slice past the last.
    pub fn panel(&self, j: usize) -> &[f32] {
        let len = self.k * self.width;
        self.data.get(j * len..(j + 1) * len).unwrap_or(&[])
    }

    pub fn bytes(&self) -> usize {
        self.data.len() * 4
    }
}

/// How C is stored: row-major `[m, n]`, or transposed, row-major `[n, m]` (a convolution
/// computes its `[channels, positions]` output as positions x channels).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Out {
    Rows,
    Transposed,
}

impl Out {
    /// Rows of the tallest tile that stores C this way.
    fn tile_rows(self) -> usize {
        match self {
            Out::Rows => MR_ROWS,
            Out::Transposed => MR,
        }
    }

    /// Steps in C between rows and between columns of the product, at leading dimension `ld`.
    fn steps(self, ld: usize) -> (usize, usize) {
        match self {
            Out::Rows => (ld, 1),
            Out::Transposed => (1, ld),
        }
    }
}

/// What a product does to its finished sums before storing them: a bias per column of B
/// (`n` values) added, then a residual laid out as C from C's first element, then a ReLU
/// (see [`tile::Finish`]): `max_nan((x + bias) + residual, 0)` with the parts that are
/// there. Convolutions' epilogues become one ([`crate::conv_finish::bias_relu`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Columns<'a> {
    pub bias: Option<&'a [f32]>,
    pub residual: Option<&'a [f32]>,
    pub relu: bool,
}

impl<'a> Columns<'a> {
    /// Whether the bias holds fewer than `bias` values or the residual fewer than `residual`.
    pub fn shorter_than(self, bias: usize, residual: usize) -> bool {
        self.bias.is_some_and(|b| b.len() < bias)
            || self.residual.is_some_and(|r| r.len() < residual)
    }

    /// The same finish for a C that starts `by` elements further on (its residual moves too);
    /// `None` when the residual ends before that.
    pub fn shifted(self, by: usize) -> Option<Columns<'a>> {
        Some(Columns {
            residual: match self.residual {
                Some(r) => Some(r.get(by..)?),
                None => None,
            },
            ..self
        })
    }
}

/// `C[m x n] = A[m x k] * B` into `c`, laid out as `out` says (contiguous); `parallel` splits
/// the work over the current rayon pool. Call only when [`available`]. (The tests' way in;
/// the back end writes into uninitialised outputs through [`product_at`].)
#[cfg(test)]
pub fn product(
    m: usize,
    (a, am): (&[f32], Mat),
    b: &PackedB,
    (c, out): (&mut [f32], Out),
    parallel: bool,
) {
    assert!(
        c.len() >= m * b.n,
        "panel product: an operand lies outside its buffer"
    );
    let ld = if out == Out::Rows { b.n } else { m };
    // SAFETY: C holds the m x n elements at leading dimension `ld` (checked above).
    unsafe {
        product_at(
            m,
            (a, am),
            b,
            (&SendPtr(c.as_mut_ptr()), out, ld),
            None,
            parallel,
        )
    }
}

/// [`product`] into a C whose rows (`Out::Rows`) or columns (`Out::Transposed`) lie `ld`
/// elements apart: a block of a larger output; `columns`, when given, is applied to the
/// finished sums.
///
/// # Safety
/// Element (i, j) of C, at `c + i * ld + j` (rows) or `c + j * ld + i` (transposed), is valid
/// to write for every `i < m`, `j < b.n`, and no one else touches those elements meanwhile.
pub unsafe fn product_at(
    m: usize,
    (a, am): (&[f32], Mat),
    b: &PackedB,
    (c, out, ld): (&SendPtr<f32>, Out, usize),
    columns: Option<Columns>,
    parallel: bool,
) {
    let (k, n) = (b.k, b.n);
    // The residual is laid out as C: its last element is C's.
    let c_last = match out {
        Out::Rows => (m.max(1) - 1) * ld + n.max(1) - 1,
        Out::Transposed => (n.max(1) - 1) * ld + m.max(1) - 1,
    };
    assert!(
        available()
            && b.width == NR
            && am.fits(m, k, a.len())
            && columns.is_none_or(|e| {
                e.bias.is_none_or(|b| b.len() >= n) && e.residual.is_none_or(|r| r.len() > c_last)
            }),
        "panel product: an operand lies outside its buffer"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        let (c_rs, c_cs) = out.steps(ld);
        for i in 0..m {
            for j in 0..n {
                // An empty sum, finished as the tiles would finish it.
                let v = match columns {
                    Some(e) => tile::finish_one(
                        0.0,
                        e.bias.map(|b| b[j]),
                        e.residual.map(|r| r[i * c_rs + j * c_cs]),
                        e.relu,
                    ),
                    None => 0.0,
                };
                // SAFETY: (i, j) is in C (the caller's contract).
                unsafe { *c.0.add(i * c_rs + j * c_cs) = v };
            }
        }
        return;
    }
    let panels = n.div_ceil(NR);
    let threads = rayon::current_num_threads();
    // SAFETY (both calls of `part`): `fits` and the caller bound every element of A and C a
    // part reads or writes; each part writes its own block of rows by panels of C; AVX-512 is
    // there (`available`).
    if !(parallel && threads > 1 && m.saturating_mul(n).saturating_mul(k) >= PAR_FLOPS) {
        unsafe { part(a, am, b, (c, out, ld), columns, 0..m, 0..panels) };
        return;
    }
    let mr = out.tile_rows();
    let parts = (m.saturating_mul(n).saturating_mul(k) / PART_PRODUCTS)
        .clamp(threads, threads * PARTS_PER_THREAD);
    let (row_tiles, panels_per) = grid(m.div_ceil(mr), panels, parts);
    let rows_per = row_tiles * mr;
    let across = panels.div_ceil(panels_per);
    (0..m.div_ceil(rows_per) * across)
        .into_par_iter()
        .for_each(|t| {
            let (ri, pi) = (t / across, t % across);
            let rows = ri * rows_per..((ri + 1) * rows_per).min(m);
            let js = pi * panels_per..((pi + 1) * panels_per).min(panels);
            unsafe { part(a, am, b, (c, out, ld), columns, rows, js) };
        });
}

/// Parts a parallel product is cut into per thread, at most. Rayon hands them out as threads
/// come free, so a thread slowed by the machine (a shared host's stolen time) leaves its last
/// parts to the other: a 1024^3 MatMul at 2 threads, medians of 20 runs in alternation on a
/// busy Ice Lake host, 12.2 ms on average in halves (one part per thread) against 11.2 in 18
/// parts; the minima level (each part rereads its rows of A and its panels of B once more).
const PARTS_PER_THREAD: usize = 8;
/// Multiply-adds a part should hold at least (about 0.25 ms on one core): MiniLM-L3's 128 x
/// 1536 x 384 products cut into parts of 4 Mi (16 parts) took 0.70 ms against 0.60 in halves
/// (minima, 2 threads); in parts of 16 Mi (4) 0.56.
const PART_PRODUCTS: usize = 16 << 20;

/// The parts' size, `(tiles of rows, panels)`, for `tiles` row tiles by `panels` panels cut
/// into about `parts` parts, across both so that each part's rows and panels are in proportion
/// to the whole's.
fn grid(tiles: usize, panels: usize, parts: usize) -> (usize, usize) {
    let parts = parts.min(tiles * panels).max(1);
    // Panel chunks p and row chunks r with p r = parts and r / p = tiles / panels.
    let across = ((parts * panels) as f64 / tiles as f64)
        .sqrt()
        .round()
        .clamp(1.0, panels as f64) as usize;
    let down = parts.div_ceil(across).min(tiles);
    (tiles.div_ceil(down), panels.div_ceil(across))
}

/// Rows `rows` of C (stored as `out` says, at leading dimension `ld`) over panels `js` of B.
///
/// # Safety
/// As in [`product_at`]: the operands were checked against `m`, `k`, `n`, and no other part
/// writes these rows and panels of C.
unsafe fn part(
    a: &[f32],
    am: Mat,
    b: &PackedB,
    (c, out, ld): (&SendPtr<f32>, Out, usize),
    columns: Option<Columns>,
    rows: std::ops::Range<usize>,
    js: std::ops::Range<usize>,
) {
    let (k, n) = (b.k, b.n);
    let (c_rs, c_cs) = out.steps(ld);
    let mr = out.tile_rows();
    let mc = (A_BLOCK_BYTES / (4 * k.clamp(1, KC)) / mr).max(1) * mr;
    // Rows of A that would crowd one L1 set are read from a copy, a block at a time.
    let spread = am.cs == 1 && am.rs > 0 && rows.len() > 1 && spread_rows::crowded(am.rs, mr);
    for k0 in (0..k).step_by(KC) {
        let kb = KC.min(k - k0);
        for i0 in rows.clone().step_by(mc) {
            let i1 = (i0 + mc).min(rows.end);
            // Element (i0, k0) of A, as read in place.
            let first = am.offset as isize + i0 as isize * am.rs + k0 as isize * am.cs;
            let block = |a: *const f32, a_rs: isize, a_cs: isize| {
                for j in js.clone() {
                    let mask = tile::mask(n - j * NR);
                    for i in (i0..i1).step_by(mr) {
                        // SAFETY: rows i .. i + mr (clipped to i1 <= m) of A's block from step
                        // k0 (at `a`), panel j from row k0, and rows i.. of C at column j * NR
                        // are in bounds.
                        unsafe {
                            let t = Tile {
                                a: a.offset((i - i0) as isize * a_rs),
                                a_rs,
                                a_cs,
                                b: b.data.as_ptr().add(j * k * NR + k0 * NR),
                                b_rs: NR as isize,
                                c: c.0.add(i * c_rs + j * NR * c_cs),
                                c_rs,
                                c_cs,
                                mask,
                                accumulate: k0 > 0,
                                // The bias of panel j's first column (checked to hold n values).
                                finish: columns.filter(|_| k0 + kb == k).map(|e| Finish {
                                    bias: e.bias.map_or(std::ptr::null(), |b| b[j * NR..].as_ptr()),
                                    residual: e.residual.map_or(std::ptr::null(), |r| {
                                        r[i * c_rs + j * NR * c_cs..].as_ptr()
                                    }),
                                    relu: e.relu,
                                }),
                            };
                            #[cfg(target_arch = "x86_64")]
                            tile::run((i1 - i).min(mr), kb, &t);
                            #[cfg(not(target_arch = "x86_64"))]
                            let _ = t;
                        }
                    }
                }
            };
            if spread {
                let ld = spread_rows::copy_stride(kb);
                with_scratch::<f32, _>((i1 - i0) * ld, |copy| {
                    // `fits` put every row of the block, steps k0 .. k0 + kb, inside `a`.
                    spread_rows::copy(&a[first as usize..], am.rs as usize, i1 - i0, kb, copy);
                    block(copy.as_ptr(), ld as isize, 1)
                });
            } else {
                // SAFETY: `fits` put element (i0, k0) inside `a`.
                block(unsafe { a.as_ptr().offset(first) }, am.rs, am.cs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(m: usize, n: usize, k: usize, a: &[f32], am: Mat, b: &[f32]) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for p in 0..k {
                let x = a[(am.offset as isize + i as isize * am.rs + p as isize * am.cs) as usize]
                    as f64;
                for j in 0..n {
                    c[i * n + j] += x * b[p * n + j] as f64;
                }
            }
        }
        c
    }

    /// A pool of two threads to run products on, or `None` (said on stderr) where this CPU
    /// lacks AVX-512 and the panel product is never chosen.
    fn two_threads_if_available() -> Option<rayon::ThreadPool> {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 (the panel product needs it)");
            return None;
        }
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build();
        Some(pool.expect("a pool of two threads"))
    }

    #[test]
    fn panel_products_match_the_reference() {
        let Some(pool) = two_threads_if_available() else {
            return;
        };
        // Edges in every direction, a k beyond one block, A transposed, both splits.
        for (m, n, k, transposed) in [
            (1, 1, 1, false),
            (7, 33, 5, false),
            (13, 31, 2100, false),
            (128, 384, 96, false),
            (5, 300, 17, true),
            (300, 40, 64, true),
        ] {
            let (a, b) = crate::gemm::tests::operands(m, n, k);
            let am = if transposed {
                Mat {
                    offset: 0,
                    rs: 1,
                    cs: m as isize,
                }
            } else {
                Mat::row_major(k)
            };
            products_match_the_reference(&pool, m, n, k, (&a, am), &b);
        }
    }

    /// The product of `a` (read as `am`) and the `k x n` row-major `b`, serial and parallel
    /// on `pool`, C by rows and transposed, against [`reference`].
    fn products_match_the_reference(
        pool: &rayon::ThreadPool,
        m: usize,
        n: usize,
        k: usize,
        (a, am): (&[f32], Mat),
        b: &[f32],
    ) {
        let packed = PackedB::with_width(b, Mat::row_major(n), k, n, NR).expect("packs");
        let want = reference(m, n, k, a, am, b);
        for (parallel, out) in [
            (false, Out::Rows),
            (true, Out::Rows),
            (false, Out::Transposed),
            (true, Out::Transposed),
        ] {
            let mut c = vec![f32::NAN; m * n];
            pool.install(|| product(m, (a, am), &packed, (&mut c, out), parallel));
            if out == Out::Transposed {
                c = (0..m * n).map(|e| c[(e % n) * m + e / n]).collect();
            }
            for (i, (&got, &w)) in c.iter().zip(&want).enumerate() {
                // Products of these operands are exact in f32; only the sums round.
                assert!(
                    (got as f64 - w).abs() <= 1e-6 * k as f64 * (1.0 + w.abs()),
                    "{m}x{n}x{k} (A as {am:?}, parallel: {parallel}, C transposed: {}): \
                     element {i}: {got} vs {w}",
                    out == Out::Transposed
                );
            }
        }
    }

    #[test]
    fn rows_of_a_that_crowd_a_cache_set_give_the_same_product() {
        let Some(pool) = two_threads_if_available() else {
            return;
        };
        // (m, n, k, row step, offset): rows 4 or 8 KiB apart, read from a copy; a block of k
        // past the first; a window of a wider matrix; a product large enough to be parallel.
        for (m, n, k, rs, offset) in [
            (29, 40, 1024, 1024, 0),
            (30, 70, 100, 1024, 5),
            (17, 33, 2100, 2048 + 1024, 3),
            (15, 20, 300, 2048, 1),
            (200, 300, 1024, 1024, 0),
        ] {
            assert!(crate::spread_rows::crowded(rs as isize, MR_ROWS));
            let len = offset + (m - 1) * rs + k;
            let a: Vec<f32> = (0..len)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
                .collect();
            let (_, b) = crate::gemm::tests::operands(0, n, k);
            let am = Mat {
                offset,
                rs: rs as isize,
                cs: 1,
            };
            products_match_the_reference(&pool, m, n, k, (&a, am), &b);
        }
    }

    #[test]
    fn every_tile_height_matches_the_reference() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 (the panel product needs it)");
            return;
        }
        // Every row count a tile runs with, by rows (up to MR_ROWS) and transposed (up to MR),
        // and the same again after a whole tile; a depth past the prefetch distance.
        let (n, k) = (40, 37);
        for m in 1..=MR_ROWS + MR_ROWS + 1 {
            let (a, b) = crate::gemm::tests::operands(m, n, k);
            let am = Mat::row_major(k);
            let packed = PackedB::with_width(&b, Mat::row_major(n), k, n, NR).expect("packs");
            let want = reference(m, n, k, &a, am, &b);
            for out in [Out::Rows, Out::Transposed] {
                let mut c = vec![f32::NAN; m * n];
                product(m, (&a, am), &packed, (&mut c, out), false);
                if out == Out::Transposed {
                    c = (0..m * n).map(|e| c[(e % n) * m + e / n]).collect();
                }
                for (i, (&got, &w)) in c.iter().zip(&want).enumerate() {
                    assert!(
                        (got as f64 - w).abs() <= 1e-6 * k as f64 * (1.0 + w.abs()),
                        "{m} rows, C transposed: {}: element {i}: {got} vs {w}",
                        out == Out::Transposed
                    );
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "asked for 0")]
    fn a_tile_of_no_rows_is_refused_before_it_touches_memory() {
        // Rows past the dispatch table run the tallest tile: 0 must not get there.
        let t = Tile {
            a: std::ptr::null(),
            a_rs: 0,
            a_cs: 0,
            b: std::ptr::null(),
            b_rs: 0,
            c: std::ptr::null_mut(),
            c_rs: NR,
            c_cs: 1,
            mask: u32::MAX,
            accumulate: false,
            finish: None,
        };
        // SAFETY: the assertion refuses the call before any operand is read or written.
        unsafe { tile::run(0, 1, &t) };
    }

    #[test]
    fn parallel_products_are_cut_into_parts_across_rows_and_panels() {
        // (row tiles, panels, parts asked for): between half and twice as many parts, each
        // at least a tile by a panel, never more parts than tiles times panels.
        for (tiles, panels, want) in [
            (74, 32, 16),
            (10, 12, 4),
            (10, 48, 16),
            (1, 1, 2),
            (3, 100, 8),
        ] {
            let (down, across) = grid(tiles, panels, want);
            assert!(down >= 1 && across >= 1);
            let parts = tiles.div_ceil(down) * panels.div_ceil(across);
            let most = want.min(tiles * panels);
            assert!(
                parts <= 2 * most && 2 * parts >= most,
                "{tiles} x {panels} in {want}: {parts} parts of {down} x {across}"
            );
        }
    }

    #[test]
    fn panels_hold_the_matrix_in_any_layout_with_zeros_after_the_last_column() {
        let (k, n) = (5, 13);
        let src: Vec<f32> = (0..4 * k * n).map(|v| v as f32 + 1.0).collect();
        // Rows contiguous, columns contiguous, neither (every other element, from 3 on).
        for mat in [
            Mat::row_major(n),
            Mat {
                offset: 0,
                rs: 1,
                cs: k as isize,
            },
            Mat {
                offset: 3,
                rs: 2 * n as isize,
                cs: 2,
            },
        ] {
            for width in [6, 16, NR] {
                let packed = PackedB::with_width(&src, mat, k, n, width).expect("packs");
                for j in 0..n.div_ceil(width) {
                    let panel = packed.panel(j);
                    for p in 0..k {
                        for c in 0..width {
                            let col = j * width + c;
                            let want = if col < n {
                                src[(mat.offset as isize
                                    + p as isize * mat.rs
                                    + col as isize * mat.cs)
                                    as usize]
                            } else {
                                0.0
                            };
                            assert_eq!(panel[p * width + c], want, "width {width}, ({p}, {col})");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn packing_rejects_a_window_outside_the_buffer() {
        let b = vec![0f32; 10];
        assert!(PackedB::with_width(&b, Mat::row_major(4), 3, 4, NR).is_err());
    }
}
