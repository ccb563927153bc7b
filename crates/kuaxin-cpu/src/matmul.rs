//! `Prim::MatMul`: `[.., M, K] x [.., K, N]` with identical batch dims.
//!
//! Products with a few rows stream the weights once (`skinny`); otherwise f32 / f64 / f16 go
//! through gemm (bf16 via f32); integers use a plain loop that wraps in
//! their own type. Small matrices run one per thread across the batch; large ones run one at
//! a time with gemm's own threading.
use crate::gemm::{gemm_mats, GemmEl, Mat, SendPtr, PAR_FLOPS};
use crate::panels;
use crate::par;
use crate::scalar::Int;
use crate::view;
use crate::weights::Weights;
use kuaxin_core::prim::ViewMap;
use kuaxin_core::tensor::Element;
use kuaxin_core::{Data, Error, Result, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;
use std::mem::MaybeUninit;

#[derive(Clone, Copy)]
pub struct Dims {
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

impl Dims {
    pub fn new(a: &[usize], b: &[usize]) -> Dims {
        let r = a.len();
        Dims {
            batch: a[..r - 2].iter().product(),
            m: a[r - 2],
            k: a[r - 1],
            n: b[r - 1],
        }
    }
}

pub fn matmul(a: &Data, b: &Data, d: Dims) -> Result<Data> {
    if let Some(c) = crate::skinny::matmul(a, b, d.batch, d.m, d.k, d.n) {
        return Ok(c);
    }
    Ok(match (a, b) {
        (Data::F32(x), Data::F32(y)) => Data::F32(gemm_batched(x, y, d)),
        (Data::F64(x), Data::F64(y)) => Data::F64(gemm_batched(x, y, d)),
        (Data::F16(x), Data::F16(y)) => Data::F16(gemm_batched(x, y, d)),
        (Data::BF16(x), Data::BF16(y)) => {
            let (x, y): (Vec<f32>, Vec<f32>) = (par::map(x, f32::from), par::map(y, f32::from));
            Data::BF16(par::map(&gemm_batched(&x, &y, d), half::bf16::from_f32))
        }
        _ => dispatch2!(a, b, x, y,
            float => {
                let _ = (x, y);
                return Err(Error::backend("MatMul: float operands reach the integer kernel"));
            },
            int => Element::wrap(int_batched(x, y, d)),
            bool => {
                let _ = (x, y);
                return Err(Error::unsupported("MatMul is not defined on bool"));
            },
            else => return Err(Error::invalid(format!("MatMul: operand types differ: {} vs {}", a.dtype(), b.dtype())))),
    })
}

pub fn gemm_batched<T: GemmEl>(a: &[T], b: &[T], d: Dims) -> Vec<T> {
    let (sa, sb) = ([d.batch, d.m, d.k], [d.batch, d.k, d.n]);
    let (ma, mb) = (Operand::dense(&sa), Operand::dense(&sb));
    batched_views(a, &ma, b, &mb, d)
}

/// How a MatMul operand is read from its tensor's storage: batch strides, then the matrix.
struct Operand {
    batch_shape: Vec<usize>,
    batch_strides: Vec<isize>,
    mat: Mat,
}

impl Operand {
    /// A row-major `[.., rows, cols]` tensor as it is.
    fn dense(shape: &[usize]) -> Operand {
        let strides: Vec<isize> = kuaxin_core::tensor::contiguous_strides(shape);
        Operand::of(shape, &strides, 0)
    }

    /// The `[.., rows, cols]` view `shape`/`strides`/`offset` of a tensor's storage.
    fn of(shape: &[usize], strides: &[isize], offset: usize) -> Operand {
        let r = shape.len();
        Operand {
            batch_shape: shape[..r - 2].to_vec(),
            batch_strides: strides[..r - 2].to_vec(),
            mat: Mat {
                offset,
                rs: strides[r - 2],
                cs: strides[r - 1],
            },
        }
    }

    /// The matrix of batch `i` (row-major batch order).
    fn at(&self, mut i: usize) -> Mat {
        let mut off = self.mat.offset as isize;
        for (&n, &s) in self.batch_shape.iter().zip(&self.batch_strides).rev() {
            off += (i % n.max(1)) as isize * s;
            i /= n.max(1);
        }
        // A negative offset fails `gemm_mats`' bounds check.
        Mat {
            offset: usize::try_from(off).unwrap_or(usize::MAX),
            ..self.mat
        }
    }
}

/// The batched product of two operands read in place; small matrices run one per thread
/// across the batch, large ones one at a time with every thread.
fn batched_views<T: GemmEl>(a: &[T], oa: &Operand, b: &[T], ob: &Operand, d: Dims) -> Vec<T> {
    let Dims { batch, m, k, n } = d;
    if m * n == 0 {
        return vec![T::ZERO; batch * m * n];
    }
    let big = m.saturating_mul(n).saturating_mul(k) >= PAR_FLOPS;
    let run = |i: usize, ci: &mut [MaybeUninit<T>], parallel: bool| {
        gemm_mats(m, n, k, (a, oa.at(i)), (b, ob.at(i)), ci, parallel)
    };
    let fill = |c: &mut [MaybeUninit<T>]| {
        if batch > 1 && !big && rayon::current_num_threads() > 1 {
            c.par_chunks_mut(m * n)
                .enumerate()
                .for_each(|(i, ci)| run(i, ci, false));
        } else {
            c.chunks_mut(m * n)
                .enumerate()
                .for_each(|(i, ci)| run(i, ci, true));
        }
    };
    // SAFETY: gemm writes every element of each batch's m x n.
    unsafe { par::filled(batch * m * n, fill) }
}

/// A tensor's data as seen through `v` (copied), or as it is.
fn seen<'t>(t: &'t Tensor, v: &Option<ViewMap>) -> Result<Cow<'t, Data>> {
    Ok(match v {
        Some(v) => Cow::Owned(view::view(&t.data, &v.shape, &v.strides, v.offset)?),
        None => Cow::Borrowed(&t.data),
    })
}

/// `Prim::MatMulOfViews` (and `Prim::MatMul`, with no views): f32, f64 and f16 operands are
/// read through their views in place, an f32 constant B from its packed panels when `weights`
/// has them; other types, and products of a few rows, are copied through the views and
/// multiplied as `MatMul`.
pub fn matmul_of_views(
    x: &Tensor,
    y: &Tensor,
    va: &Option<ViewMap>,
    vb: &Option<ViewMap>,
    weights: Option<&Weights>,
) -> Result<Data> {
    Ok(matmul_of_views_finished(x, y, (va, vb), weights, None)?.0)
}

/// [`matmul_of_views`] with an epilogue of a bias per column, a residual of the output's shape
/// and a ReLU, which the tile applies in registers where the product runs on it: the output,
/// and whether `finish` was applied (if not, the caller applies the epilogue).
pub fn matmul_of_views_finished(
    x: &Tensor,
    y: &Tensor,
    (va, vb): (&Option<ViewMap>, &Option<ViewMap>),
    weights: Option<&Weights>,
    finish: Option<panels::Columns>,
) -> Result<(Data, bool)> {
    let operand = |t: &Tensor, v: &Option<ViewMap>| match v {
        Some(v) => (v.shape.clone(), Operand::of(&v.shape, &v.strides, v.offset)),
        None => (t.shape.clone(), Operand::dense(&t.shape)),
    };
    let ((sa, oa), (sb, ob)) = (operand(x, va), operand(y, vb));
    let d = Dims::new(&sa, &sb);
    // A product of a few rows streams its weights (`skinny`), which wants them contiguous.
    let skinny = d.m > 0 && d.m <= crate::skinny::SKINNY_M;
    if let (Some(w), Data::F32(p), Data::F32(q), false) = (weights, &x.data, &y.data, skinny) {
        if let Some((c, finished)) = packed_product(p, &oa, (y, q, &ob), d, w, finish) {
            return Ok((Data::F32(c), finished));
        }
    }
    let plain = match (&x.data, &y.data) {
        (Data::F32(p), Data::F32(q)) if !skinny => Data::F32(batched_views(p, &oa, q, &ob, d)),
        (Data::F64(p), Data::F64(q)) if !skinny => Data::F64(batched_views(p, &oa, q, &ob, d)),
        (Data::F16(p), Data::F16(q)) if !skinny => Data::F16(batched_views(p, &oa, q, &ob, d)),
        _ => {
            let (a, b) = (seen(x, va)?, seen(y, vb)?);
            matmul(&a, &b, d)?
        }
    };
    Ok((plain, false))
}

/// The product through the panels of a constant B, when B is one matrix for every batch and
/// `weights` packs it (see [`crate::panels`]), and whether it applied `finish`.
fn packed_product(
    a: &[f32],
    oa: &Operand,
    (y, b, ob): (&Tensor, &[f32], &Operand),
    d: Dims,
    weights: &Weights,
    finish: Option<panels::Columns>,
) -> Option<(Vec<f32>, bool)> {
    let shared = ob
        .batch_shape
        .iter()
        .zip(&ob.batch_strides)
        .all(|(&n, &s)| n == 1 || s == 0);
    if !shared || d.m * d.n == 0 {
        return None;
    }
    let size = d.m * d.n;
    if panels::available() {
        let packed = weights.packed_b(y, b, ob.mat, (d.k, d.n), crate::tile::NR)?;
        // A bias shorter than a row or a residual shorter than the output is left to the
        // caller's epilogue, which names it.
        let finishing = finish.filter(|f| {
            f.bias.is_none_or(|v| v.len() >= d.n)
                && f.residual.is_none_or(|v| v.len() >= d.batch * size)
        });
        let fill = |c: &mut [MaybeUninit<f32>]| -> std::result::Result<(), ()> {
            for (i, ci) in c.chunks_mut(size).enumerate() {
                // Batch i's residual is its own m x n; the bias is shared.
                let columns = finishing.map(|f| panels::Columns {
                    residual: f.residual.map(|r| &r[i * size..(i + 1) * size]),
                    ..f
                });
                let c = SendPtr(ci.as_mut_ptr().cast::<f32>());
                // SAFETY: `ci` is this batch's m x n block of C, rows `n` apart, written by
                // this product alone.
                unsafe {
                    panels::product_at(
                        d.m,
                        (a, oa.at(i)),
                        &packed,
                        (&c, panels::Out::Rows, d.n),
                        columns,
                        true,
                    )
                };
            }
            Ok(())
        };
        // SAFETY: the panel product writes every element of each batch's m x n.
        let c = unsafe { par::try_filled(d.batch * size, fill) }.ok()?;
        return Some((c, finishing.is_some()));
    }
    if !crate::row_product::avx2_only() {
        return None;
    }
    let packed = weights.packed_b(y, b, ob.mat, (d.k, d.n), crate::tile_direct::NR)?;
    // A finish the tile cannot take (a depth of 0) is left to the caller, for every batch.
    let finishing = finish.filter(|_| d.k > 0);
    let fill = |c: &mut [MaybeUninit<f32>]| -> std::result::Result<(), ()> {
        for (i, ci) in c.chunks_mut(size).enumerate() {
            // Batch i's residual is its own m x n; the bias is shared.
            let fi = finishing.map(|f| panels::Columns {
                residual: f.residual.map(|r| r.get(i * size..).unwrap_or(&[])),
                ..f
            });
            crate::direct_product::matmul(d.m, (a, oa.at(i)), &packed, ci, true, fi).ok_or(())?;
        }
        Ok(())
    };
    // SAFETY: the product writes every element of each batch's m x n when it runs.
    let c = unsafe { par::try_filled(d.batch * size, fill) }.ok()?;
    Some((c, finishing.is_some()))
}

fn int_batched<T: Int>(a: &[T], b: &[T], d: Dims) -> Vec<T> {
    let Dims { batch, m, k, n } = d;
    let mut c = vec![T::ZERO; batch * m * n];
    if n == 0 {
        return c;
    }
    // One output row per chunk: row i of matrix bi.
    par::for_chunks(&mut c, n, n * k, |row, ci| {
        let (bi, i) = (row / m, row % m);
        let arow = &a[(bi * m + i) * k..(bi * m + i + 1) * k];
        let bm = &b[bi * k * n..(bi + 1) * k * n];
        for (p, &x) in arow.iter().enumerate() {
            for (o, &y) in ci.iter_mut().zip(&bm[p * n..(p + 1) * n]) {
                *o = o.add(x.mul(y));
            }
        }
    });
    c
}
