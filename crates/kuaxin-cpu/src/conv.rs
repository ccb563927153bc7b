//! `Prim::Conv`: N-d convolution with groups, strides and dilations (padding and bias are
//! separate primitives). Per image and group: im2col into a reused buffer, then one gemm of
//! the group's `[Mg, Cg*K]` weights with the `[Cg*K, P]` columns. 1x1 unit-stride kernels
//! skip im2col. f32 / f64 / f16 through gemm; bf16 via f32.
use crate::gemm::{gemm_rm, GemmEl, PAR_FLOPS};
use crate::im2col::{im2col, Geom};
use crate::limits;
use crate::par;
use crate::scratch::with_scratch;
use kuaxin_core::{Data, Error, Result};
use rayon::prelude::*;

pub fn conv(x: &Data, w: &Data, g: &Geom) -> Result<Data> {
    Ok(match (x, w) {
        (Data::F32(x), Data::F32(w)) => Data::F32(conv_typed(x, w, g)?),
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
    conv_with_epilogue(x, w, g, None)
}

pub fn conv_with_epilogue<T: GemmEl>(
    x: &[T],
    w: &[T],
    g: &Geom,
    epilogue: Option<Epilogue<T>>,
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
        gemm_rm(g.mg, p, rows, wg, cols, og, parallel);
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
