//! im2col for N-d convolution: unfolds one image's channel group into a `[Cg * K, P]` matrix
//! (K kernel positions, P output positions), so the convolution is one matrix product.
use crate::par;
use crate::shape::{strides, unravel};
use rayon::prelude::*;

/// Geometry of one convolution (spatial dims only where noted).
pub struct Geom {
    pub n: usize,
    pub c: usize,
    pub m: usize,
    /// Input channels per group.
    pub cg: usize,
    /// Output channels per group.
    pub mg: usize,
    pub in_sp: Vec<usize>,
    pub k_sp: Vec<usize>,
    pub out_sp: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Elements of one input channel.
    pub in_plane: usize,
    /// Kernel positions per channel.
    pub kk: usize,
    /// Output positions.
    pub p: usize,
}

impl Geom {
    pub fn new(
        xs: &[usize],
        ws: &[usize],
        out: &[usize],
        strides: &[usize],
        dilations: &[usize],
        groups: usize,
    ) -> Geom {
        Geom {
            n: xs[0],
            c: xs[1],
            m: ws[0],
            cg: ws[1],
            mg: ws[0] / groups,
            in_sp: xs[2..].to_vec(),
            k_sp: ws[2..].to_vec(),
            out_sp: out[2..].to_vec(),
            strides: strides.to_vec(),
            dilations: dilations.to_vec(),
            in_plane: xs[2..].iter().product(),
            kk: ws[2..].iter().product(),
            p: out[2..].iter().product(),
        }
    }
    /// Rows of the column matrix: `Cg * K`.
    pub fn rows(&self) -> usize {
        self.cg * self.kk
    }
    /// The input offset of each kernel position from its window's origin.
    pub fn kernel_offsets(&self) -> Vec<usize> {
        let istr = strides(&self.in_sp);
        let mut at = vec![0usize; self.in_sp.len()];
        (0..self.kk)
            .map(|kidx| {
                unravel(kidx, &self.k_sp, &mut at);
                (0..at.len())
                    .map(|d| at[d] * self.dilations[d] * istr[d])
                    .sum()
            })
            .collect()
    }
    /// The input offset of the window origin of each output position in `at`, counted on
    /// from the first position (a division per position made a tenth of SqueezeNet's stem,
    /// 12321 positions, on a Zen 3 core).
    pub fn window_origins(&self, at: std::ops::Range<usize>) -> Vec<usize> {
        let istr = strides(&self.in_sp);
        let step: Vec<usize> = (0..istr.len()).map(|d| self.strides[d] * istr[d]).collect();
        let mut origins = Vec::with_capacity(at.len());
        if at.is_empty() {
            return origins;
        }
        let mut o = vec![0usize; self.in_sp.len()];
        unravel(at.start, &self.out_sp, &mut o);
        let mut origin: usize = (0..o.len()).map(|d| o[d] * step[d]).sum();
        for _ in at {
            origins.push(origin);
            // The next position: the last dim counts up, carrying into the ones before it.
            for d in (0..o.len()).rev() {
                o[d] += 1;
                origin += step[d];
                if o[d] < self.out_sp[d] {
                    break;
                }
                origin -= o[d] * step[d];
                o[d] = 0;
            }
        }
        origins
    }
    /// A 1x1 kernel with unit strides reads the input as the column matrix itself.
    pub fn is_pointwise(&self) -> bool {
        self.kk == 1 && self.strides.iter().all(|&s| s == 1)
    }
}

/// Fills `col` (`rows x at.len()`) from `x` (`cg` channels of `in_plane` elements): the
/// columns of output positions `at` (all `0..p` for the whole matrix).
pub fn im2col<T: Copy + Send + Sync>(
    x: &[T],
    col: &mut [T],
    g: &Geom,
    at: std::ops::Range<usize>,
    parallel: bool,
) {
    let len = at.len();
    if len == 0 {
        return;
    }
    let nd = g.in_sp.len();
    let istr = strides(&g.in_sp);
    let ol = g.out_sp[nd - 1];
    let sl = g.strides[nd - 1];
    let outer = &g.out_sp[..nd - 1];
    // The positions `at` as runs along the last output dim: (input offset of the run's first
    // element from the kernel position's, length). The same for every row, so worked out once.
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut o = vec![0usize; nd - 1];
    unravel(at.start / ol, outer, &mut o);
    let mut off: usize = (0..nd - 1).map(|d| o[d] * g.strides[d] * istr[d]).sum();
    let (mut j, mut done) = (at.start % ol, 0);
    while done < len {
        let run = (ol - j).min(len - done);
        runs.push((off + j * sl, run));
        done += run;
        j = 0;
        for d in (0..nd - 1).rev() {
            o[d] += 1;
            off += g.strides[d] * istr[d];
            if o[d] < outer[d] {
                break;
            }
            off -= o[d] * g.strides[d] * istr[d];
            o[d] = 0;
        }
    }
    let fill_row = |r: usize, row: &mut [T]| {
        // Input offset of kernel position `r % kk` of channel `r / kk`.
        let (ci, mut kidx) = (r / g.kk, r % g.kk);
        let mut base = ci * g.in_plane;
        for d in (0..nd).rev() {
            base += kidx % g.k_sp[d] * g.dilations[d] * istr[d];
            kidx /= g.k_sp[d].max(1);
        }
        let mut done = 0;
        for &(off, run) in &runs {
            let s0 = base + off;
            let dst = &mut row[done..done + run];
            if sl == 1 {
                dst.copy_from_slice(&x[s0..s0 + run]);
            } else {
                crate::walk::strided(&x[s0..=s0 + (run - 1) * sl], sl, dst);
            }
            done += run;
        }
    };
    let col = &mut col[..g.rows() * len];
    if parallel {
        par::for_chunks(col, len, len, fill_row);
    } else {
        col.chunks_mut(len)
            .enumerate()
            .for_each(|(r, row)| fill_row(r, row));
    }
}

/// The columns of positions `at` as panels of `W` positions one after another in `cols`:
/// panel j is `rows` rows of `W`, row r holding column-matrix row r at positions
/// `at.start + j W ..`, the last panel's missing positions zeros.
///
/// Each panel's window origins are worked out once, as runs of positions evenly spaced in
/// the input (an output row's). Rows are then filled in order, each row across all the
/// panels: one input channel is read as one stretch of a few hundred floats, where panel by
/// panel every row would touch another channel's cache lines, 16 floats at a time (1 x 1
/// layers of depth 256 measured 15-40% slower that way). `parallel` splits the panels into
/// one group per thread.
pub fn im2col_panels<const W: usize>(
    x: &[f32],
    cols: &mut [f32],
    g: &Geom,
    at: std::ops::Range<usize>,
    parallel: bool,
) {
    let rows = g.rows();
    let kofs = g.kernel_offsets();
    let origins = g.window_origins(at.clone());
    let panels = at.len().div_ceil(W);
    let runs: Vec<PanelRuns<W>> = (0..panels)
        .map(|j| {
            let len = W.min(at.len() - j * W);
            PanelRuns::new(len, |q| origins[j * W + q])
        })
        .collect();
    let avx2 = crate::tile_avx2::supported();
    // Panels `first..` into `group`, compiled for the CPU's vector extension (the stride-2
    // copies inline there).
    let fill = |first: usize, group: &mut [f32]| {
        crate::simd::vectorized(
            #[inline(always)]
            || fill_panels(x, g, &kofs, &runs[first..], group, avx2),
        )
    };
    let cols = &mut cols[..panels * W * rows];
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let per = panels.div_ceil(threads).max(1);
    if threads > 1 && panels > 1 {
        cols.par_chunks_mut(per * rows * W)
            .enumerate()
            .for_each(|(t, group)| fill(t * per, group));
    } else {
        fill(0, cols);
    }
}

/// The panels of `runs` that `group` holds, a row of every panel at a time.
#[inline(always)]
fn fill_panels<const W: usize>(
    x: &[f32],
    g: &Geom,
    kofs: &[usize],
    runs: &[PanelRuns<W>],
    group: &mut [f32],
    avx2: bool,
) {
    let rows = g.rows();
    let count = group.len() / (rows * W).max(1);
    let mut r = 0;
    for ci in 0..g.cg {
        for &k in kofs {
            let base = ci * g.in_plane + k;
            for (jj, runs) in runs[..count].iter().enumerate() {
                runs.copy(&x[base..], &mut group[(jj * rows + r) * W..][..W], avx2);
            }
            r += 1;
        }
    }
}

/// One panel's positions as runs evenly spaced in the input: (first position, its input
/// offset, length, spacing), with the panel's count of positions.
struct PanelRuns<const W: usize> {
    len: usize,
    n: usize,
    runs: [(usize, usize, usize, usize); W],
}

impl<const W: usize> PanelRuns<W> {
    /// The runs of `len` positions whose input offsets are `origin(q)`.
    fn new(len: usize, mut origin: impl FnMut(usize) -> usize) -> PanelRuns<W> {
        let mut runs = [(0usize, 0usize, 0usize, 1usize); W];
        let mut n = 0;
        for q in 0..len {
            let o = origin(q);
            if n > 0 {
                let run: &mut (usize, usize, usize, usize) = &mut runs[n - 1];
                if run.2 == 1 && o > run.1 {
                    (run.2, run.3) = (2, o - run.1);
                    continue;
                }
                if run.1 + run.2 * run.3 == o {
                    run.2 += 1;
                    continue;
                }
            }
            runs[n] = (q, o, 1, 1);
            n += 1;
        }
        PanelRuns { len, n, runs }
    }

    /// One row of the panel from `x` (the input from this row's channel and kernel position).
    #[inline(always)]
    fn copy(&self, x: &[f32], row: &mut [f32], avx2: bool) {
        for &(q, o, l, step) in &self.runs[..self.n] {
            let dst = &mut row[q..q + l];
            if step == 1 {
                copy_short(dst, &x[o..o + l]);
            } else if step == 2 && l >= 8 && x.len() >= o + 2 * l {
                evens(&x[o..o + 2 * l], dst, avx2);
            } else {
                let src = &x[o..=o + (l - 1) * step];
                for (d, s) in dst.iter_mut().zip(src.iter().step_by(step)) {
                    *d = *s;
                }
            }
        }
        if self.len < W {
            row[self.len..].fill(0.0);
        }
    }
}

/// `dst[i] = src[2 i]` for every `i` of `dst` (`src` holds twice as many): a stride-2 layer's
/// window row. On AVX2, eight at a time from two vector loads (a shuffle keeps the even lanes,
/// a permute puts them in order) where one by one each value costs a load and a store.
#[inline(always)]
fn evens(src: &[f32], dst: &mut [f32], avx2: bool) {
    let n = dst.len().min(src.len() / 2);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        done = n / 8 * 8;
        // SAFETY: AVX2 is there; groups of eight below `n` read `src[..2 n]` and write
        // `dst[..n]`, both inside their slices.
        unsafe { evens_avx2(src.as_ptr(), dst.as_mut_ptr(), done / 8) };
    }
    for i in done..n {
        dst[i] = src[2 * i];
    }
}

/// # Safety
/// AVX2 is there; `src` holds `16 groups` floats and `dst` `8 groups`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn evens_avx2(src: *const f32, dst: *mut f32, groups: usize) {
    use std::arch::x86_64::*;
    for g in 0..groups {
        // SAFETY: the caller's contract.
        unsafe {
            let a = _mm256_loadu_ps(src.add(16 * g));
            let b = _mm256_loadu_ps(src.add(16 * g + 8));
            // [a0 a2 b0 b2 | a4 a6 b4 b6], then its 64-bit pairs in the order 0 2 1 3.
            let even = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
            let even = _mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(even));
            _mm256_storeu_ps(dst.add(8 * g), _mm256_castpd_ps(even));
        }
    }
}

/// `dst = src` (equal lengths, at most 16) as fixed-size copies, which compile to a few vector
/// moves where a copy of a length known only at run time calls `memmove`: lengths 8..=16 as
/// the first and the last eight (overlapping), 4..8 likewise by four, shorter one by one.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let l = dst.len().min(src.len());
    fn copy<const N: usize>(dst: &mut [f32], src: &[f32], at: usize) {
        if let (Some(d), Some(s)) = (dst.get_mut(at..at + N), src.get(at..at + N)) {
            let s: &[f32; N] = s.try_into().expect("N floats");
            d.copy_from_slice(s);
        }
    }
    if l >= 8 {
        copy::<8>(dst, src, 0);
        copy::<8>(dst, src, l - 8);
        if l > 16 {
            dst[..l].copy_from_slice(&src[..l]);
        }
    } else if l >= 4 {
        copy::<4>(dst, src, 0);
        copy::<4>(dst, src, l - 4);
    } else {
        for (d, s) in dst[..l].iter_mut().zip(&src[..l]) {
            *d = *s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_origins_count_on_across_every_dim() {
        // A 3-d output of 3 x 4 x 5 positions with strides (2, 1, 3) over a 7 x 5 x 13 input;
        // ranges that start and end inside rows and planes.
        let g = Geom::new(
            &[1, 1, 7, 5, 13],
            &[1, 1, 1, 2, 1],
            &[1, 1, 3, 4, 5],
            &[2, 1, 3],
            &[1, 1, 1],
            1,
        );
        let origin = |q: usize| (q / 20 * 2) * 65 + (q / 5 % 4) * 13 + (q % 5) * 3;
        for at in [0..60, 7..43, 19..21, 59..60, 30..30] {
            let want: Vec<usize> = at.clone().map(origin).collect();
            assert_eq!(g.window_origins(at.clone()), want, "positions {at:?}");
        }
    }

    #[test]
    fn a_range_of_positions_is_those_columns_of_the_whole_matrix() {
        // 2 channels of 5 x 6, a 2 x 3 kernel with strides (1, 2) and dilation (2, 1).
        let x: Vec<f32> = (0..60).map(|v| v as f32).collect();
        let g = Geom::new(
            &[1, 2, 5, 6],
            &[4, 2, 2, 3],
            &[1, 4, 3, 2],
            &[1, 2],
            &[2, 1],
            1,
        );
        let (rows, p) = (g.rows(), g.p);
        let mut whole = vec![0f32; rows * p];
        im2col(&x, &mut whole, &g, 0..p, false);
        // Column (c, kh, kw) x (oh, ow) reads x[c, oh + 2 kh, 2 ow + kw].
        for r in 0..rows {
            let (c, kh, kw) = (r / 6, r % 6 / 3, r % 3);
            for q in 0..p {
                let (oh, ow) = (q / 2, q % 2);
                assert_eq!(
                    whole[r * p + q],
                    x[c * 30 + (oh + 2 * kh) * 6 + 2 * ow + kw]
                );
            }
        }
        for at in [0..1, 1..4, 3..6, 0..6, 5..6] {
            let mut part = vec![0f32; rows * at.len()];
            im2col(&x, &mut part, &g, at.clone(), at.len() > 2);
            for r in 0..rows {
                assert_eq!(
                    part[r * at.len()..(r + 1) * at.len()],
                    whole[r * p + at.start..r * p + at.end],
                    "row {r}, positions {at:?}"
                );
            }
        }
    }

    #[test]
    fn panels_hold_the_columns_sixteen_positions_at_a_time_with_zeros_after_the_last() {
        // 3 channels of 17 x 15, a 3 x 3 kernel with strides (2, 2) and dilations (2, 1):
        // 7 x 7 positions; a stride-1 3 x 3 kernel on 9 x 11 (rows of 7 and 9); and a
        // stride-2 one on 7 x 37 (rows of 18: runs of eight and more, copied eight at a time,
        // the last window row ending at the input's last value).
        for (xs, ws, out, st, dil) in [
            ([1, 3, 17, 15], [4, 3, 3, 3], [1, 4, 7, 7], [2, 2], [2, 1]),
            ([1, 2, 9, 11], [4, 2, 3, 3], [1, 4, 7, 9], [1, 1], [1, 1]),
            ([1, 2, 7, 37], [4, 2, 3, 3], [1, 4, 3, 18], [2, 2], [1, 1]),
        ] {
            let x: Vec<f32> = (0..xs.iter().product::<usize>())
                .map(|v| v as f32)
                .collect();
            let g = Geom::new(&xs, &ws, &out, &st, &dil, 1);
            let (rows, p) = (g.rows(), g.p);
            let mut whole = vec![0f32; rows * p];
            im2col(&x, &mut whole, &g, 0..p, false);
            for at in [0..p, 5..40, 17..18, 16..48] {
                for parallel in [false, true] {
                    let panels = at.len().div_ceil(16);
                    let mut cols = vec![f32::NAN; panels * 16 * rows];
                    im2col_panels::<16>(&x, &mut cols, &g, at.clone(), parallel);
                    for j in 0..panels {
                        for r in 0..rows {
                            for q in 0..16 {
                                let pos = at.start + j * 16 + q;
                                let want = if pos < at.end {
                                    whole[r * p + pos]
                                } else {
                                    0.0
                                };
                                assert_eq!(
                                    cols[(j * rows + r) * 16 + q].to_bits(),
                                    want.to_bits(),
                                    "{xs:?}, positions {at:?}, panel {j}, row {r}, lane {q}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
