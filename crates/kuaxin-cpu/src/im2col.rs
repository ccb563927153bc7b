//! im2col for N-d convolution: unfolds one image's channel group into a `[Cg * K, P]` matrix
//! (K kernel positions, P output positions), so the convolution is one matrix product.
use crate::par;
use crate::shape::{strides, unravel};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
