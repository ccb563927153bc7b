//! `Prim::Conv`: N-d convolution with groups, strides and dilations (padding and bias are
//! separate primitives). Per image and group: im2col into a reused buffer, then one gemm of
//! the group's `[Mg, Cg*K]` weights with the `[Cg*K, P]` columns. 1x1 unit-stride kernels
//! skip im2col. f32 / f64 / f16 through gemm; bf16 via f32. A one-group f32 convolution whose
//! weight is a packed constant ([`panel_weights`]) runs on the panel tiles instead, computing
//! its output transposed, a block of positions at a time ([`tiled`]).
use crate::conv_direct;
use crate::conv_rows;
use crate::gemm::{gemm_rm, GemmEl, Mat, SendPtr, PAR_FLOPS};
use crate::im2col::{im2col, Geom};
use crate::limits;
use crate::panels::{self, product_at, Columns, Out, PackedB};
use crate::par;
use crate::row_product;
use crate::scratch::with_scratch;
use crate::tile::{MR, NR};
use crate::tile_avx2;
use crate::tile_direct;
use crate::tile_rows_avx512;
use crate::weights::Weights;
use kuaxin_core::{Data, Error, Result, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::Arc;

/// `wt`: the f32 weight packed by [`panel_weights`], when it is.
pub fn conv(x: &Data, w: &Data, g: &Geom, wt: Option<&PackedB>) -> Result<Data> {
    Ok(match (x, w) {
        (Data::F32(x), Data::F32(w)) => Data::F32(conv_with_epilogue(x, w, g, (None, None), wt)?),
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
    conv_with_epilogue(x, w, g, (None, None), None)
}

/// Shallower products stay on gemm. The tile stores the transposed output a vector per
/// channel (eight channels transposed in registers), so shallow products pay: SqueezeNet's 1x1
/// expand of depth 16 measured 27% faster than gemm, ResNet-50's 1x1 layers of depth 64 15%
/// (with the bias and ReLU in the tile); below 16 it was not measured.
const MIN_DEPTH: usize = 16;

/// The weight of a one-group f32 convolution `[M, C, K..]` as panels of its transpose
/// (`[C K, M]`), packed once by `weights` when `w` is a constant there and the CPU runs the
/// panel tiles; `None` otherwise (the convolution then goes through gemm).
///
/// With the weight as B, the product computes the output transposed, positions x channels:
/// the 32 lanes of a tile run over channels, where over positions a late ResNet layer (7 x 7
/// = 49 positions) would fill two panels of 32 with 49 values.
///
/// Without AVX-512 but with AVX2 ([`row_product::avx2_only`]) the weight is packed in panels of
/// sixteen channels for the windowed tile, or of six, the A of [`conv_rows`]' tile, whose
/// output comes out by rows; with AVX-512 a 1 x 1 expansion's or large map's in panels of
/// fourteen, the A of its by-rows tile ([`conv_rows::suits_wide`]).
pub fn panel_weights(w: &Tensor, g: &Geom, weights: Option<&Weights>) -> Option<Arc<PackedB>> {
    let Data::F32(wd) = &w.data else { return None };
    let rows = g.rows();
    let width = if panels::available() {
        if conv_rows::suits_wide(g) {
            tile_rows_avx512::MR
        } else {
            NR
        }
    } else if row_product::avx2_only() && conv_direct::suits(g, tile_direct::NR) {
        tile_direct::NR
    } else if row_product::avx2_only() && conv_rows::suits(g) {
        tile_avx2::MR
    } else {
        return None;
    };
    // At least one whole panel of channels (AVX-512's 32; AVX2's 16 for the windowed tile, 6
    // for the by-rows one).
    if g.mg != g.m || g.m < width || rows < MIN_DEPTH {
        return None;
    }
    let wt = Mat {
        offset: 0,
        rs: 1,
        cs: rows as isize,
    };
    weights?.packed_b(w, wd, wt, (rows, g.m), width)
}

/// `epilogue.1`, when given, is `epilogue.0` as a bias per channel and a ReLU: a convolution
/// on the tiles applies it to its sums in registers and does not call `epilogue.0`.
pub fn conv_with_epilogue<T: GemmEl>(
    x: &[T],
    w: &[T],
    g: &Geom,
    (epilogue, columns): (Option<Epilogue<T>>, Option<Columns>),
    wt: Option<&PackedB>,
) -> Result<Vec<T>> {
    let (p, rows) = (g.p, g.rows());
    let out_img = g.m * p;
    let x_img = g.c * g.in_plane;
    let x_group = g.cg * g.in_plane;
    let len = g.n * out_img;
    if len == 0 {
        return Ok(Vec::new());
    }
    let threads = rayon::current_num_threads();
    // The tiles (a packed weight and f32 data) make their own columns, a block at a time.
    let on_tiles = wt.filter(|_| T::as_f32(x).is_some());
    let pointwise = g.is_pointwise();
    let col_len = if pointwise || on_tiles.is_some() {
        0
    } else {
        rows * p
    };
    let big = g.mg.saturating_mul(p).saturating_mul(rows) >= PAR_FLOPS;

    // One (image, group) product; `col` is scratch of `col_len` elements.
    let run = |img: usize,
               gi: usize,
               col: &mut [T],
               og: &mut [MaybeUninit<T>],
               parallel: bool|
     -> Result<()> {
        let xs = &x[img * x_img + gi * x_group..img * x_img + (gi + 1) * x_group];
        match (on_tiles, T::as_f32(xs), T::as_f32_uninit(og)) {
            (Some(wt), Some(xs), Some(c)) => {
                // The residual of this image's block of the output.
                let columns = columns
                    .map(|e| {
                        e.shifted(img * out_img + gi * g.mg * p)
                            .ok_or_else(short_residual)
                    })
                    .transpose()?;
                // AVX-512's panels of 32 serve both the windowed tile and the transposed
                // panel tiles (the same packing), the geometry chooses; AVX2's panels of 16
                // are the windowed tile's; of 6 (AVX2) and 14 (AVX-512) the by-rows tiles'.
                let windowed = wt.width() == tile_direct::NR
                    || (wt.width() == NR && conv_direct::suits(g, NR));
                if windowed {
                    conv_direct::run(xs, wt, g, c, columns, parallel)?;
                } else if wt.width() == NR {
                    tiled(xs, wt, g, c, columns, parallel)?;
                } else {
                    conv_rows::run(xs, wt, g, c, columns, parallel)?;
                }
                if columns.is_some() {
                    return Ok(());
                }
            }
            _ => {
                let cols: &[T] = if pointwise {
                    xs
                } else {
                    im2col(xs, col, g, 0..p, parallel);
                    col
                };
                let wg = &w[gi * g.mg * rows..(gi + 1) * g.mg * rows];
                gemm_rm(g.mg, p, rows, wg, cols, og, parallel);
                // SAFETY: gemm wrote every element.
                let og = unsafe { par::assume_init_mut(og) };
                // A bias, residual and ReLU as a plain loop, not the block evaluator: this
                // group's biases, this block's residual.
                if let (Some(e), Some(c)) = (columns, T::as_f32_mut(og)) {
                    let e = e
                        .shifted(img * out_img + gi * g.mg * p)
                        .filter(|e| !e.shorter_than((gi + 1) * g.mg, c.len()))
                        .ok_or_else(short_residual)?;
                    let f = Columns {
                        bias: e.bias.map(|b| &b[gi * g.mg..]),
                        ..e
                    };
                    crate::conv_finish::finish_rows(c, p, f, parallel);
                    return Ok(());
                }
            }
        }
        match epilogue {
            // SAFETY: the tiles or gemm wrote every element of `og`.
            Some(e) => e(img * out_img + gi * g.mg * p, unsafe {
                par::assume_init_mut(og)
            }),
            None => Ok(()),
        }
    };

    // Every image's every group goes through the tiles or gemm, which write all of their
    // output (stores, not sums into it): it starts uninitialised, not zeroed, a pass over
    // megabytes saved (5% of SqueezeNet's one-thread run under `perf`).
    let fill = |all: &mut [MaybeUninit<T>]| -> Result<()> {
        if big || g.n == 1 || threads == 1 {
            // Few large products: one at a time, each using every thread.
            limits::check_elems::<T>(col_len)?;
            with_scratch(col_len, |col: &mut [T]| -> Result<()> {
                for (img, oimg) in all.chunks_mut(out_img).enumerate() {
                    for (gi, og) in oimg.chunks_mut(g.mg * p).enumerate() {
                        run(img, gi, col, og, true)?;
                    }
                }
                Ok(())
            })
        } else {
            // Many small products: one image per task, each task with its own scratch.
            limits::check_bytes(
                col_len as u128 * threads as u128 * std::mem::size_of::<T>() as u128,
            )?;
            all.par_chunks_mut(out_img)
                .enumerate()
                .try_for_each(|(img, oimg)| -> Result<()> {
                    with_scratch(col_len, |col: &mut [T]| {
                        for (gi, og) in oimg.chunks_mut(g.mg * p).enumerate() {
                            run(img, gi, col, og, false)?;
                        }
                        Ok(())
                    })
                })
        }
    };
    // SAFETY: on success every (image, group) block was run, and each path writes all of it.
    unsafe { par::try_filled(len, fill) }
}

/// Bytes of columns a block of output positions may take: with a panel of the weight, it
/// stays in a Zen 4 core's L2 between im2col writing it and the tiles reading it.
const COL_BLOCK_BYTES: usize = 256 << 10;

/// One image's one-group convolution on the tiles, positions x channels = columns^T x
/// weight^T, stored transposed into `out` (`[M, P]`). Positions go in blocks whose columns
/// (im2col of those positions only, in this thread's scratch) stay in L2, and blocks spread
/// over the threads; the columns of the whole image would be megabytes written to memory and
/// read back, by both threads. With fewer blocks than twice the threads (a 7 x 7 layer), the
/// whole image is one product whose weight panels the threads share out instead.
fn tiled(
    x: &[f32],
    wt: &PackedB,
    g: &Geom,
    out: &mut [MaybeUninit<f32>],
    columns: Option<Columns>,
    parallel: bool,
) -> Result<()> {
    let (p, rows) = (g.p, g.rows());
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let per = (COL_BLOCK_BYTES / (4 * rows.clamp(1, panels::KC)) / MR).max(1) * MR;
    let blocks = p.div_ceil(per);
    // A 1x1 layer's columns are its input: blocks serve only to share out the positions.
    let whole = (threads > 1 && blocks < 2 * threads) || (threads == 1 && g.is_pointwise());
    let (per, blocks) = if whole {
        (p, 1)
    } else {
        // As many blocks as a multiple of the threads, evened out (seven blocks on two
        // threads would leave one thread a block idle at the end).
        let even = p
            .div_ceil(blocks.next_multiple_of(threads))
            .next_multiple_of(MR);
        (even, p.div_ceil(even))
    };
    let short = columns.is_some_and(|e| e.shorter_than(g.m, g.m * p));
    if wt.dims() != (rows, g.m) || out.len() < g.m * p || short {
        return Err(Error::backend(format!(
            "Conv on the tiles: a packed weight of {:?} and an output of {} for {} channels x {p} positions x depth {rows}",
            wt.dims(),
            out.len(),
            g.m
        )));
    }
    let c = SendPtr(out.as_mut_ptr().cast::<f32>());
    let block = |b: usize, inner_parallel: bool| -> Result<()> {
        let at = b * per..((b + 1) * per).min(p);
        let len = at.len();
        let c = offset(&c, at.start);
        let columns = columns
            .map(|e| e.shifted(at.start).ok_or_else(short_residual))
            .transpose()?;
        // SAFETY: block b writes output positions `at` of every channel, element (position i,
        // channel j) at j * p + i: inside `out` (M x P, checked above) and disjoint from the
        // other blocks' positions.
        let product = |a: &[f32], am: Mat| unsafe {
            product_at(
                len,
                (a, am),
                wt,
                (&c, Out::Transposed, p),
                columns,
                inner_parallel,
            )
        };
        if g.is_pointwise() {
            product(
                x,
                Mat {
                    offset: at.start,
                    rs: 1,
                    cs: p as isize,
                },
            );
            return Ok(());
        }
        let col_len = rows * len;
        limits::check_elems::<f32>(col_len)?;
        with_scratch(col_len, |col: &mut [f32]| {
            im2col(x, col, g, at.clone(), inner_parallel);
            product(
                col,
                Mat {
                    offset: 0,
                    rs: 1,
                    cs: len as isize,
                },
            );
        });
        Ok(())
    };
    if blocks == 1 {
        block(0, parallel)
    } else if threads > 1 {
        (0..blocks)
            .into_par_iter()
            .try_for_each(|b| block(b, false))
    } else {
        (0..blocks).try_for_each(|b| block(b, false))
    }
}

pub(crate) fn short_residual() -> Error {
    Error::backend("Conv on the tiles: the residual is shorter than the output")
}

/// `c` moved `by` elements on.
pub(crate) fn offset(c: &SendPtr<f32>, by: usize) -> SendPtr<f32> {
    // SAFETY: callers move within the output `c` points into.
    SendPtr(unsafe { c.0.add(by) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which convolutions get a packed weight (and so run on the tiles): one group, at least
    /// 32 output channels and depth 16; the prims tests check what they compute.
    #[test]
    fn shallow_and_deep_one_group_convolutions_take_the_tiles() {
        if !panels::available() && !row_product::avx2_only() {
            eprintln!("skipped: this CPU has neither AVX-512 nor AVX2 (the tiles need one)");
            return;
        }
        for (x, w, out, groups, tiles) in [
            // SqueezeNet's 1x1 expand (depth 16) and its 3-channel stem (depth 27).
            ([1, 16, 55, 55], [64, 16, 1, 1], [1, 64, 55, 55], 1, true),
            ([1, 3, 224, 224], [64, 3, 3, 3], [1, 64, 111, 111], 1, true),
            (
                [1, 256, 14, 14],
                [256, 256, 3, 3],
                [1, 256, 14, 14],
                1,
                true,
            ),
            // Depth 8, fewer than 32 channels, two groups: gemm.
            ([1, 8, 9, 9], [64, 8, 1, 1], [1, 64, 9, 9], 1, false),
            ([1, 64, 9, 9], [16, 64, 1, 1], [1, 16, 9, 9], 1, false),
            ([1, 64, 9, 9], [64, 32, 1, 1], [1, 64, 9, 9], 2, false),
        ] {
            let g = Geom::new(&x, &w, &out, &[1, 1], &[1, 1], groups);
            let weight = Arc::new(Tensor::full(kuaxin_core::DType::F32, w.to_vec(), 0.5));
            let weights = Weights::default();
            weights.register(&weight);
            let packed = panel_weights(&weight, &g, Some(&weights));
            assert_eq!(packed.is_some(), tiles, "{x:?} * {w:?}, {groups} groups");
        }
    }
}
