//! One-group f32 convolutions by rows of the output: `out[M, P] = W[M, C K] * columns[C K, P]`
//! on a row tile ([`crate::row_product`]): on CPUs with AVX2 but no AVX-512 (Zen 3) the 6 x 16
//! tile of [`crate::tile_avx2`], six channels by sixteen positions at a time; on AVX-512 the
//! 14 x 32 tile of [`crate::tile_rows_avx512`], for the 1 x 1 expansions and large 1 x 1 maps
//! only ([`suits_wide`]; the rest go windowed there).
//!
//! The weight is packed once (a constant, see [`crate::conv::panel_weights`]) as panels of the
//! tile's channels, `C K` steps of six (or fourteen): each step's broadcasts come from one
//! contiguous group. The columns are made a block of positions at a time, straight into
//! panels of the tile's positions (`C K` rows of 16 or 32, the layout the tile reads:
//! [`crate::im2col::im2col_panels`]), so they are written once and no gemm packs them again;
//! a large 1 x 1 layer's input is read in place instead. The output is stored by rows, as
//! NCHW wants it, with the bias, residual and ReLU applied in registers on the last block of
//! depth.
//!
//! The positions go in blocks of up to 192, each block one product of
//! [`crate::row_product`]. On two threads the blocks are shared out when there are enough of
//! them; a layer with few positions instead shares out its channel panels over each block.
//!
//! Against gemm on im2col (a Zen 3 core, per-kernel minima): ResNet-50's 3 x 3 layers at
//! 56 x 56 3.7 -> 3.1 ms, its 1 x 1 expansions with the residual 10-15% faster; layers it
//! does not suit stay on gemm ([`suits`]).
use crate::conv::{offset, short_residual};
use crate::gemm::SendPtr;
use crate::im2col::{im2col_panels, Geom};
use crate::limits;
use crate::panels::{Columns, PackedB};
use crate::row_product::{self, BPanels};
use crate::scratch::with_scratch;
use crate::tile_avx2::NR;
use crate::tile_rows_avx512;
use kuaxin_core::{Error, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Positions per block at most (twelve panels of sixteen, six of 32).
const POSITIONS_PER_BLOCK: usize = 192;

/// Output positions from which a 1 x 1, stride-1 layer reads its input in place as the
/// tile's B (whole panels of 16 positions, every row of them a channel's), rather than
/// copying it into packed panels first. Per-kernel minima on a Zen 3 core, ResNet-50: at
/// 56 x 56 (3136) in place was 7-12% faster (1 and 2 threads), at 28 x 28 level, at 14 x 14
/// 5-15% slower (rows 784 bytes apart, three in four of them across two cache lines).
const IN_PLACE_POSITIONS: usize = 1024;

/// Weights of at most this many elements (128 KiB) make a 1 x 1, stride-1 layer read its
/// input in place at any number of positions. The copy costs one pass over the input, the
/// product `M / 6` passes over each copied panel, so for few channels the copy is a large part
/// of the layer; and with little depth a panel read in place, two cache lines a row at worst,
/// still fits L1. Per-kernel minima on a Zen 3 core, SqueezeNet at 27 x 27 and 13 x 13:
/// 128 -> 32 channels 0.135 -> 0.094 ms, 256 -> 32 (on gemm before) 0.199 -> 0.175, 32 -> 128
/// 0.115 -> 0.099, 48 -> 192 and 64 -> 256 9-13% faster; model sum 10.53 -> 10.36 ms.
/// ResNet-50's larger weights stay copied: in place its 28 x 28 expansions of 128 -> 512
/// (64 Ki elements) were 1-2% slower, its 14 x 14 reductions of 1024 -> 256 6-7%.
const IN_PLACE_WEIGHT: usize = 1 << 15;

/// Whether a 1 x 1, stride-1 layer reads its input in place rather than copied into panels.
fn reads_in_place(g: &Geom) -> bool {
    g.is_pointwise() && (g.p >= IN_PLACE_POSITIONS || g.m * g.rows() <= IN_PLACE_WEIGHT)
}

/// Whether a convolution of this geometry runs here rather than through gemm on its columns
/// (per-kernel minima on a Zen 3 core):
/// - its output positions fill their 16-position panels to at least 90%: a 7 x 7 layer's 49
///   positions take four panels, the last holding one, and ResNet-50's 3 x 3 layer of depth
///   4608 measured 4.0 ms here against 3.6 through gemm, whose 6-column blocks waste less of
///   49 (its 14 x 14 layers, 196 positions in panels 94% full, were level);
/// - it is not a 1 x 1, stride-1 reduction of depth 256 or more to at most half the channels
///   that this path would copy (not [`reads_in_place`]): gemm reads such an input
///   in place, and ResNet-50's 512 -> 128 and 1024 -> 256 layers measured 5-15% faster
///   through gemm than copied (its expansions, which also take the residual in registers
///   here, 10-15% slower). Its 256 -> 64 layers at 56 x 56, read in place here, are 7-10%
///   faster than through gemm.
pub fn suits(g: &Geom) -> bool {
    let p = g.p;
    let fills = p * 10 >= p.div_ceil(NR) * NR * 9;
    let reduction = g.is_pointwise() && g.rows() >= 256 && g.m * 2 <= g.rows();
    fills && (!reduction || reads_in_place(g))
}

/// Whether a convolution of this geometry runs here on an AVX-512 CPU (on the tile of
/// [`tile_rows_avx512`]) rather than on the windowed tile of [`crate::conv_direct`]: a 1 x 1,
/// stride-1 layer whose positions fill their 32-position panels to at least 85%, and that
/// either expands (at least twice the channels out as in) or has at least
/// [`IN_PLACE_POSITIONS`] positions, read in place (no transpose of C^T afterwards): its
/// reductions 256 -> 64 at 56 x 56 (14-row tiles since) 8-12% faster here, in three
/// alternations with the whole model and one alone (0.80-0.85 -> 0.69-0.74 ms), 64 -> 64
/// level, SqueezeNet's 128 -> 16 and 64 -> 16 at 55 x 55 7% and 20%. Per-kernel minima on an Ice Lake core (a busy host,
/// each pair measured interleaved): ResNet-50's expansions 64 -> 256 at 56 x 56 1.5-1.9 ->
/// 1.1-1.3 ms, 128 -> 512 at 28 x 28 1.05-1.25 -> 0.86-0.99 ms, 256 -> 1024 at 14 x 14 (88%
/// of their panels) level; SqueezeNet's 16 -> 64 at 55 x 55 0.134 -> 0.089 ms, 32 -> 128 at
/// 27 x 27 0.10 -> 0.066, 64 -> 256 at 13 x 13 0.098 -> 0.071. Slower here: the reductions
/// of fewer positions (10-30%; 1024 -> 256 at 14 x 14 0.74-0.77 -> 0.86-0.95 ms), the 7 x 7 layers (49 positions in two
/// panels of 32, 5-10%) and the 3 x 3 layers (their columns copied into panels where the
/// windowed tile reads the input in place: 30-60% at 56 x 56).
pub fn suits_wide(g: &Geom) -> bool {
    let nr = tile_rows_avx512::NR;
    let fills = g.p * 100 >= g.p.div_ceil(nr) * nr * 85;
    g.is_pointwise() && (g.m >= 2 * g.rows() || g.p >= IN_PLACE_POSITIONS) && fills
}

/// One image's one-group convolution into `out` (`[M, P]`): `x` is the image (`C` channels),
/// `wt` the weight's transpose (`[C K, M]`) packed in panels of [`MR`] channels; `columns`,
/// when given, is applied to the finished sums. Call only when [`tile_avx2::supported`].
pub fn run(
    x: &[f32],
    wt: &PackedB,
    g: &Geom,
    out: &mut [MaybeUninit<f32>],
    columns: Option<Columns>,
    parallel: bool,
) -> Result<()> {
    let (m, p, depth) = (g.m, g.p, g.rows());
    let short = columns.is_some_and(|e| e.shorter_than(m, m * p));
    let kernel = row_product::kernel(wt.width());
    let Some(kernel) = kernel.filter(|_| {
        wt.dims() == (depth, m) && out.len() >= m * p && x.len() >= g.cg * g.in_plane && !short
    }) else {
        return Err(Error::backend(format!(
            "Conv by rows: a packed weight of {:?} (panels of {}) and an output of {} for {m} channels x {p} positions x depth {depth}",
            wt.dims(),
            wt.width(),
            out.len(),
        )));
    };
    if m == 0 || p == 0 {
        return Ok(());
    }
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let nr = kernel.nr;
    let panels = p.div_ceil(nr);
    let blocks = panels.div_ceil(POSITIONS_PER_BLOCK / nr);
    // Evened out: 13 panels make blocks of 7 and 6, not 12 and 1.
    let per = panels.div_ceil(blocks) * nr;
    let blocks = p.div_ceil(per);
    let c = SendPtr(out.as_mut_ptr().cast::<f32>());
    // A large 1 x 1, stride-1 layer's input is its column matrix: whole panels of it are
    // read in place, and only a last part panel is copied (a panel reads all its columns).
    let in_place = if reads_in_place(g) { p / nr * nr } else { 0 };
    let block = |b: usize, inner_threads: usize| -> Result<()> {
        let at = b * per..((b + 1) * per).min(p);
        let split = at.end.min(in_place).max(at.start);
        let shifted = |by: usize| {
            columns
                .map(|e| e.shifted(by).ok_or_else(short_residual))
                .transpose()
        };
        if split > at.start {
            let columns = shifted(at.start)?;
            let b = BPanels::in_place(&x[at.start..], split - at.start, p, nr);
            // SAFETY: as below, for positions `at.start..split`; `b` holds whole panels of
            // the input's rows (`split <= p / nr * nr`), checked again by `product`.
            let c = offset(&c, at.start);
            unsafe { row_product::product(kernel, wt, b, (&c, p), columns, inner_threads) };
        }
        let at = split..at.end;
        if at.is_empty() {
            return Ok(());
        }
        let len = at.len().div_ceil(nr) * nr * depth;
        let columns = shifted(at.start)?;
        limits::check_elems::<f32>(len)?;
        with_scratch(len, |cols: &mut [f32]| {
            if nr == NR {
                im2col_panels::<NR>(x, cols, g, at.clone(), inner_threads > 1);
            } else {
                im2col_panels::<{ tile_rows_avx512::NR }>(
                    x,
                    cols,
                    g,
                    at.clone(),
                    inner_threads > 1,
                );
            }
            // SAFETY: this block writes positions `at` of every channel of `out` (M x P,
            // checked above), disjoint from the other blocks' positions; `cols` holds its
            // panels; the bias was checked to hold M values and the residual M x P, of which
            // `shifted` keeps what lies from this block's first position on.
            let c = offset(&c, at.start);
            let b = BPanels::packed(cols, at.len(), depth, nr);
            unsafe { row_product::product(kernel, wt, b, (&c, p), columns, inner_threads) };
        });
        Ok(())
    };
    if threads > 1 && blocks >= 2 * threads {
        (0..blocks).into_par_iter().try_for_each(|b| block(b, 1))
    } else {
        (0..blocks).try_for_each(|b| block(b, threads))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv_cases::{self, geom, packed, values, Case};
    use crate::tile_avx2::MR;

    /// Channel counts that leave a part panel of channels, position counts that leave a part
    /// panel of positions, a depth past one block of [`row_product::KC`], strides and
    /// dilations, 1-D, a 1 x 1 layer of several position blocks, and a layer of enough
    /// blocks (8) that two threads share out the blocks themselves.
    fn cases() -> Vec<Case> {
        vec![
            (vec![1, 5, 9, 11], vec![13, 5, 3, 3], vec![1, 1], vec![1, 1]),
            (vec![1, 34, 8, 8], vec![7, 34, 3, 3], vec![1, 1], vec![1, 1]),
            (
                vec![1, 3, 17, 15],
                vec![20, 3, 3, 3],
                vec![2, 2],
                vec![2, 1],
            ),
            (vec![1, 4, 40], vec![9, 4, 5], vec![1], vec![1]),
            (
                vec![1, 16, 20, 20],
                vec![32, 16, 1, 1],
                vec![1, 1],
                vec![1, 1],
            ),
            (vec![1, 4, 40, 40], vec![8, 4, 3, 3], vec![1, 1], vec![1, 1]),
            // 1 x 1 over 1089 positions: 68 whole panels read in place, the last position
            // copied into a panel of its own, in the same (last) block.
            (vec![1, 8, 33, 33], vec![7, 8, 1, 1], vec![1, 1], vec![1, 1]),
            // 1 x 1 over 169 positions with a small weight: 10 panels in place, 9 positions
            // copied; and over 100 with a weight of more than `IN_PLACE_WEIGHT`: all copied.
            (
                vec![1, 12, 13, 13],
                vec![10, 12, 1, 1],
                vec![1, 1],
                vec![1, 1],
            ),
            (
                vec![1, 200, 10, 10],
                vec![170, 200, 1, 1],
                vec![1, 1],
                vec![1, 1],
            ),
            // An expansion as AVX-512 takes it (64 -> 150 channels: ten tiles of 14 rows and
            // one of 10) over 1056 positions, 33 panels of 32 read in place.
            (
                vec![1, 64, 32, 33],
                vec![150, 64, 1, 1],
                vec![1, 1],
                vec![1, 1],
            ),
        ]
    }

    fn conv(
        x: &[f32],
        wt: &PackedB,
        g: &Geom,
        columns: Option<Columns>,
        parallel: bool,
    ) -> Vec<f32> {
        let mut out = crate::par::preset(f32::NAN, g.m * g.p);
        run(x, wt, g, &mut out, columns, parallel).expect("runs");
        crate::par::values_of(&out)
    }

    /// The packed widths this CPU has a row tile for (AVX2's 6, AVX-512's 14), each named;
    /// those it lacks are printed as skipped.
    fn widths() -> Vec<usize> {
        [MR, tile_rows_avx512::MR]
            .into_iter()
            .filter(|&w| {
                let here = row_product::kernel(w).is_some();
                if !here {
                    eprintln!("skipped: this CPU has no row tile for panels of {w}");
                }
                here
            })
            .collect()
    }

    #[test]
    fn rows_agree_with_a_reference_within_the_rounding_of_their_depth() {
        for width in widths() {
            conv_cases::agrees_with_a_reference(&cases(), width, &conv);
        }
    }

    #[test]
    fn the_finish_in_registers_is_the_unfused_finish_bit_for_bit_and_threads_change_nothing() {
        for width in widths() {
            conv_cases::finishes_as_unfused_and_threads_change_nothing(&cases(), width, &conv);
        }
    }

    #[test]
    fn late_maps_and_wide_one_by_one_reductions_stay_on_gemm() {
        for (x, w, st, here) in [
            // ResNet-50: 3 x 3 at 14 x 14 (196 positions, 94% of 13 panels) and at 7 x 7 (49,
            // 77% of 4); 1 x 1 reductions 1024 -> 256, 256 -> 64 (read in place at 56 x 56)
            // and 512 -> 128; an expansion 256 -> 1024;
            // the stride-2 1 x 1 256 -> 512 (not read in place by gemm either).
            ([1, 256, 16, 16], [256, 256, 3, 3], [1, 1], true),
            ([1, 512, 9, 9], [512, 512, 3, 3], [1, 1], false),
            ([1, 1024, 14, 14], [256, 1024, 1, 1], [1, 1], false),
            ([1, 256, 56, 56], [64, 256, 1, 1], [1, 1], true),
            ([1, 512, 28, 28], [128, 512, 1, 1], [1, 1], false),
            ([1, 256, 14, 14], [1024, 256, 1, 1], [1, 1], true),
            ([1, 256, 56, 56], [512, 256, 1, 1], [2, 2], true),
            // Shallow 1 x 1 reductions (SqueezeNet's squeezes, depth 128 -> 16, and 256 -> 32
            // with a weight small enough to read the input in place).
            ([1, 128, 27, 27], [16, 128, 1, 1], [1, 1], true),
            ([1, 256, 27, 27], [32, 256, 1, 1], [1, 1], true),
        ] {
            let g = geom(&x, &w, &st, &[1, 1]);
            assert_eq!(suits(&g), here, "{x:?} * {w:?}, strides {st:?}");
        }
    }

    #[test]
    fn on_avx512_one_by_one_expansions_and_large_maps_that_fill_their_panels_go_by_rows() {
        for (x, w, st, here) in [
            // ResNet-50's expansions 64 -> 256 at 56 x 56, 128 -> 512 at 28 x 28, 256 ->
            // 1024 at 14 x 14 (196 positions, 88% of seven panels of 32) but not 512 -> 2048
            // at 7 x 7 (49 positions, 77% of two).
            ([1, 64, 56, 56], [256, 64, 1, 1], [1, 1], true),
            ([1, 128, 28, 28], [512, 128, 1, 1], [1, 1], true),
            ([1, 256, 14, 14], [1024, 256, 1, 1], [1, 1], true),
            ([1, 512, 7, 7], [2048, 512, 1, 1], [1, 1], false),
            // Its 64 -> 64 and 256 -> 64 layers at 56 x 56 (3136 positions, read in place),
            // but not its reductions of fewer positions, a stride-2 1 x 1 expansion or a
            // 3 x 3 layer.
            ([1, 64, 56, 56], [64, 64, 1, 1], [1, 1], true),
            ([1, 256, 56, 56], [64, 256, 1, 1], [1, 1], true),
            ([1, 512, 28, 28], [128, 512, 1, 1], [1, 1], false),
            ([1, 1024, 14, 14], [256, 1024, 1, 1], [1, 1], false),
            ([1, 256, 56, 56], [512, 256, 1, 1], [2, 2], false),
            ([1, 64, 58, 58], [64, 64, 3, 3], [1, 1], false),
            // SqueezeNet's expand 16 -> 64 at 55 x 55 (3025 positions, 99% of 95 panels).
            ([1, 16, 55, 55], [64, 16, 1, 1], [1, 1], true),
        ] {
            let g = geom(&x, &w, &st, &[1, 1]);
            assert_eq!(suits_wide(&g), here, "{x:?} * {w:?}, strides {st:?}");
        }
    }

    #[test]
    fn a_packed_weight_that_does_not_match_is_an_error() {
        let (xs, ws, st, dil) = cases().remove(0);
        let g = geom(&xs, &ws, &st, &dil);
        let x = values(xs.iter().product(), 1);
        let other = geom(&[1, 5, 9, 11], &[12, 5, 3, 3], &st, &dil);
        let mut out = crate::par::preset(0f32, g.m * g.p);
        for width in widths() {
            let wt = packed(&values(12 * 45, 2), &other, width);
            assert!(run(&x, &wt, &g, &mut out, None, false).is_err());
        }
        // A width no row tile takes (the windowed tile's 16) is an error on any CPU.
        let wt = packed(&values(13 * 45, 2), &g, 16);
        let err = run(&x, &wt, &g, &mut out, None, false).expect_err("no row tile of 16");
        assert!(err.to_string().contains("panels of 16"), "{err}");
    }
}
