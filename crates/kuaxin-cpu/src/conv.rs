//! `Prim::Conv`: N-d convolution with groups, strides and dilations (padding and bias are
//! separate primitives). Per image and group: im2col into a reused buffer, then one gemm of
//! the group's `[Mg, Cg*K]` weights with the `[Cg*K, P]` columns. 1x1 unit-stride kernels
//! skip im2col. f32 / f64 / f16 through gemm; bf16 via f32. A one-group f32 convolution whose
//! weight is a packed constant ([`panel_weights`]) runs on the panel tiles instead, computing
//! its output transposed.
use crate::gemm::{gemm_rm, GemmEl, Mat, PAR_FLOPS};
use crate::im2col::{im2col, Geom};
use crate::limits;
use crate::panels::{self, Out, PackedB};
use crate::par;
use crate::scratch::with_scratch;
use crate::tile::NR;
use crate::weights::Weights;
use kuaxin_core::{Data, Error, Result, Tensor};
use rayon::prelude::*;
use std::sync::Arc;

/// `wt`: the f32 weight packed by [`panel_weights`], when it is.
pub fn conv(x: &Data, w: &Data, g: &Geom, wt: Option<&PackedB>) -> Result<Data> {
    Ok(match (x, w) {
        (Data::F32(x), Data::F32(w)) => Data::F32(conv_with_epilogue(x, w, g, None, wt)?),
        (Data::F64(x), Data::F64(w)) => Data::F64(conv_typed(x, w, g)?),
        (Data::F16(x), Data::F16(w)) => Data::F16(conv_typed(x, w, g)?),
        (Data::BF16(x), Data::BF16(w)) => {
            let (x, w): (Vec<f32>, Vec<f32>) = (par::map(x, f32::from), par::map(w, f32::from));
            Data::BF16(par::map(&conv_typed(&x, &w, g)?, half::bf16::from_f32))
        }
        _ if x.dtype() != w.dtype() => {
            return Err(Error::invalid(format!(
                "Conv: operand types differ: {} vs {}",
                x.dtype(),
                w.dtype()
            )))
        }
        _ => {
            return Err(Error::unsupported(format!(
                "Conv is not defined on {}",
                x.dtype()
            )))
        }
    })
}

/// Applied to each (image, group) block of the output right after its gemm, while it is in
/// cache: `(flat offset of the block in the output, block)`.
pub type Epilogue<'a, T> = &'a (dyn Fn(usize, &mut [T]) -> Result<()> + Sync);

pub fn conv_typed<T: GemmEl>(x: &[T], w: &[T], g: &Geom) -> Result<Vec<T>> {
    conv_with_epilogue(x, w, g, None, None)
}

/// Shallower products stay on gemm: the transposed output is stored element by element, 192
/// stores per tile against 12 multiply-adds per step of depth, and ResNet-50's 1x1 layers of
/// depth 64 measured 12% slower this way (depth 128 and more: 0-10% faster).
const MIN_DEPTH: usize = 128;

/// The weight of a one-group f32 convolution `[M, C, K..]` as panels of its transpose
/// (`[C K, M]`), packed once by `weights` when `w` is a constant there and the CPU runs the
/// panel tiles; `None` otherwise (the convolution then goes through gemm).
///
/// With the weight as B, the product computes the output transposed, positions x channels:
/// the 32 lanes of a tile run over channels, where over positions a late ResNet layer (7 x 7
/// = 49 positions) would fill two panels of 32 with 49 values.
pub fn panel_weights(w: &Tensor, g: &Geom, weights: Option<&Weights>) -> Option<Arc<PackedB>> {
    let Data::F32(wd) = &w.data else { return None };
    let rows = g.rows();
    if g.mg != g.m || g.m < NR || rows < MIN_DEPTH || !panels::available() {
        return None;
    }
    let wt = Mat {
        offset: 0,
        rs: 1,
        cs: rows as isize,
    };
    weights?.packed_b(w, wd, wt, rows, g.m)
}

pub fn conv_with_epilogue<T: GemmEl>(
    x: &[T],
    w: &[T],
    g: &Geom,
    epilogue: Option<Epilogue<T>>,
    wt: Option<&PackedB>,
) -> Result<Vec<T>> {
    let (p, rows) = (g.p, g.rows());
    let out_img = g.m * p;
    let x_img = g.c * g.in_plane;
    let x_group = g.cg * g.in_plane;
    let mut out = vec![T::ZERO; g.n * out_img];
    if out.is_empty() {
        return Ok(out);
    }
    let pointwise = g.is_pointwise();
    let col_len = if pointwise { 0 } else { rows * p };
    let threads = rayon::current_num_threads();
    let big = g.mg.saturating_mul(p).saturating_mul(rows) >= PAR_FLOPS;

    // One (image, group) product; `col` is scratch of `col_len` elements.
    let run = |img: usize, gi: usize, col: &mut [T], og: &mut [T], parallel: bool| -> Result<()> {
        let xs = &x[img * x_img + gi * x_group..img * x_img + (gi + 1) * x_group];
        let cols: &[T] = if pointwise {
            xs
        } else {
            im2col(xs, col, g, parallel);
            col
        };
        let wg = &w[gi * g.mg * rows..(gi + 1) * g.mg * rows];
        match (wt, T::as_f32(cols), T::as_f32_mut(og)) {
            // Positions x channels = columns^T x weight^T, stored transposed.
            (Some(wt), Some(a), Some(c)) => {
                let at = Mat {
                    offset: 0,
                    rs: 1,
                    cs: p as isize,
                };
                panels::product(p, (a, at), wt, (c, Out::Transposed), parallel)
            }
            _ => gemm_rm(g.mg, p, rows, wg, cols, og, parallel),
        }
        match epilogue {
            Some(e) => e(img * out_img + gi * g.mg * p, og),
            None => Ok(()),
        }
    };

    if big || g.n == 1 || threads == 1 {
        // Few large products: one at a time, each using every thread.
        limits::check_elems::<T>(col_len)?;
        with_scratch(col_len, |col: &mut [T]| -> Result<()> {
            for (img, oimg) in out.chunks_mut(out_img).enumerate() {
                for (gi, og) in oimg.chunks_mut(g.mg * p).enumerate() {
                    run(img, gi, col, og, true)?;
                }
            }
            Ok(())
        })?;
    } else {
        // Many small products: one image per task, each task with its own scratch.
        limits::check_bytes(col_len as u128 * threads as u128 * std::mem::size_of::<T>() as u128)?;
        out.par_chunks_mut(out_img)
            .enumerate()
            .try_for_each(|(img, oimg)| -> Result<()> {
                with_scratch(col_len, |col: &mut [T]| {
                    for (gi, og) in oimg.chunks_mut(g.mg * p).enumerate() {
                        run(img, gi, col, og, false)?;
                    }
                    Ok(())
                })
            })?;
    }
    Ok(out)
}
