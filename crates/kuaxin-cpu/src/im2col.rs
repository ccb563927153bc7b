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

/// Fills `col` (`rows x p`) from `x` (`cg` channels of `in_plane` elements).
pub fn im2col<T: Copy + Send + Sync>(x: &[T], col: &mut [T], g: &Geom, parallel: bool) {
    let p = g.p;
    if p == 0 {
        return;
    }
    let nd = g.in_sp.len();
    let istr = strides(&g.in_sp);
    let ol = g.out_sp[nd - 1];
    let sl = g.strides[nd - 1];
    let outer = &g.out_sp[..nd - 1];
    let fill_row = |r: usize, row: &mut [T]| {
        let (ci, kidx) = (r / g.kk, r % g.kk);
        let mut kpos = vec![0usize; nd];
        unravel(kidx, &g.k_sp, &mut kpos);
        let base = ci * g.in_plane
            + (0..nd)
                .map(|d| kpos[d] * g.dilations[d] * istr[d])
                .sum::<usize>();
        // Odometer over the outer output dims, tracking the input offset.
        let mut o = vec![0usize; nd - 1];
        let mut off = 0usize;
        for seg in row.chunks_mut(ol) {
            let s0 = base + off;
            if sl == 1 {
                seg.copy_from_slice(&x[s0..s0 + ol]);
            } else {
                crate::walk::strided(&x[s0..=s0 + (ol - 1) * sl], sl, seg);
            }
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
    };
    let col = &mut col[..g.rows() * p];
    if parallel {
        par::for_chunks(col, p, p, fill_row);
    } else {
        col.chunks_mut(p)
            .enumerate()
            .for_each(|(r, row)| fill_row(r, row));
    }
}
