//! One-group f32 convolutions computed transposed, positions x channels, with no column
//! matrix: a register tile reads each position's window straight from the (padded) input
//! through two offset tables, one per output position (its window's origin) and one per step
//! of the depth (an input channel and kernel position), and multiplies it into the weight
//! packed once as panels of output channels: sixteen for the AVX2 tile of
//! [`crate::tile_direct`] (CPUs without AVX-512, Zen 3: windowed kernels), 32 for the AVX-512
//! tile of [`crate::tile_direct_avx512`] (every kernel size; see [`suits`]).
//!
//! Channels in the vector lanes suit small maps: a 14 x 14 layer's 196 positions fill
//! sixteen-position panels 94% and a 7 x 7 layer's 49 only 77% ([`crate::conv_rows`]), where
//! ResNet-50's 64 to 2048 channels fill sixteen-channel panels exactly and the positions go
//! six at a time (33 tiles for 196, 9 for 49). And no columns are copied, whatever the
//! kernel and strides.
//!
//! The sums go into a scratch `C^T` (positions x channels), over the depth in even blocks of
//! at most [`direct_product::KC`] steps (a block of one weight panel, at most 32 KiB, stays in
//! L1 while the position tiles pass over it); threads share out the channel panels. The output
//! is then written by rows, transposed, with the bias, residual and ReLU applied as the
//! unfused kernels apply them.
use crate::direct_product;
use crate::gemm::SendPtr;
use crate::im2col::Geom;
use crate::limits;
use crate::panels::{Columns, PackedB};
use crate::scratch::with_scratch;
use crate::tile::finish_one;
use crate::tile_avx2;
use crate::tile_direct;
use crate::tile_direct_avx512;
use kuaxin_core::{Error, Result};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Bytes of `C^T` up to which a map's positions are one block.
const CT_BYTES: usize = 512 << 10;
/// Bytes of `C^T` per block of a larger map.
const CT_BLOCK_BYTES: usize = 64 << 10;

/// Whether a convolution of this geometry runs here with its weight in panels of `width`
/// channels: output channels that fill their panels to at least 90%, and on AVX2 (panels
/// of 16) a kernel of more than one position, whose columns this path does not copy: a
/// 1 x 1 layer's are its input, and ResNet-50's measured 20-50% slower here than by rows
/// ([`crate::conv_rows`]) on a Zen 3 core, with the output transposed through C^T. With
/// AVX-512 (panels of 32) 1 x 1 layers come here too, but for the expansions and large maps
/// that go by rows
/// ([`crate::conv_rows::suits_wide`], decided before the weight is packed): ResNet-50's on an
/// Ice Lake core 1.0-1.7x as fast as on the transposed panel tiles of
/// [`crate::conv::tiled`] (a 56 x 56 layer of 256 to 128 channels 3.11 -> 1.83 ms, 2048 to
/// 512 at 7 x 7 1.65 -> 1.03, 64 to 256 at 56 x 56 level).
pub fn suits(g: &Geom, width: usize) -> bool {
    let windowed = g.kk > 1 || width == tile_direct_avx512::NR;
    windowed && g.m * 10 >= g.m.div_ceil(width) * width * 9
}

/// The input offset of each step of the depth (channel `s / K`, kernel position `s % K`) from
/// a window's origin, and of each output position's window origin.
fn offsets(g: &Geom) -> (Vec<usize>, Vec<usize>) {
    let kernel = g.kernel_offsets();
    let steps = (0..g.cg)
        .flat_map(|ci| kernel.iter().map(move |k| ci * g.in_plane + k))
        .collect();
    (steps, g.window_origins(0..g.p))
}

/// One image's one-group convolution into `out` (`[M, P]`): `x` is the image (`C` channels),
/// `wt` the weight's transpose (`[C K, M]`) packed in panels of channels; `columns`,
/// when given, is applied to the finished sums. The panels' width picks the tile
/// ([`tile_direct::kernel`]): an error when this CPU has none for it.
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
    let fits = wt.dims() == (depth, m) && out.len() >= m * p && x.len() >= g.cg * g.in_plane;
    let Some(kernel) = tile_direct::kernel(wt.width()).filter(|_| fits && !short) else {
        return Err(Error::backend(format!(
            "Conv on input windows: a packed weight of {:?} (panels of {}; this CPU has a tile for them: {}) and an output of {} for {m} channels x {p} positions x depth {depth}",
            wt.dims(),
            wt.width(),
            tile_direct::kernel(wt.width()).is_some(),
            out.len(),
        )));
    };
    if m == 0 || p == 0 || depth == 0 {
        out[..m * p].fill(MaybeUninit::new(0.0));
        return Ok(());
    }
    let (steps, origins) = offsets(g);
    // The farthest element a window reads.
    let reach =
        steps.iter().max().copied().unwrap_or(0) + origins.iter().max().copied().unwrap_or(0);
    if reach >= x.len() {
        return Err(Error::backend(format!(
            "Conv on input windows: a window reaches element {reach} of an input of {}",
            x.len()
        )));
    }
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let (mr, nr) = (kernel.mr, kernel.nr);
    let panels = m.div_ceil(nr);
    // C^T's rows a little longer than the channels: rows of 256 or 1024 floats would put a
    // tile's six rows in the same L1 sets.
    let ldc = m + nr;
    // Positions per block: all of a small map (its weight, megabytes for a 7 x 7 layer of
    // 512 channels, is then read once); a large one in blocks whose C^T stays in L2, of
    // whole tiles and whole 8 x 8 transposes (a block's last few positions go one element
    // at a time). With threads to share, a small map of enough such blocks goes by blocks
    // too, each thread with its own positions' C^T and input rows in its own L2, rather than
    // both threads passing over all of them for their halves of the channels: a 28 x 28
    // layer of 128 channels at 2 threads 1.47-1.50 against 1.59-1.69 ms (minimum), the
    // medians level, in one process alternating the two.
    let blocked = (CT_BLOCK_BYTES / (ldc * 4))
        .max(1)
        .next_multiple_of(lcm(mr, 8));
    let share_blocks = threads > 1 && p.div_ceil(blocked) >= 2 * threads;
    let per = if p * ldc * 4 <= CT_BYTES && !share_blocks {
        p
    } else {
        blocked
    };
    let blocks = p.div_ceil(per);
    let o = &SendPtr(out.as_mut_ptr().cast::<f32>());
    let block = |b: usize, inner_threads: usize| -> Result<()> {
        let at = b * per..((b + 1) * per).min(p);
        let len = at.len() * ldc;
        limits::check_elems::<f32>(len)?;
        with_scratch(len, |ct: &mut [f32]| {
            let c = &SendPtr(ct.as_mut_ptr());
            let part = |js: std::ops::Range<usize>| {
                // SAFETY: every window element lies below `reach` (checked above); this
                // block's C^T holds `at.len()` rows of `ldc` >= m, and each part writes its
                // own panels' channels.
                unsafe {
                    direct_product::product(
                        kernel,
                        x.as_ptr(),
                        (&origins[at.clone()], &steps),
                        wt,
                        (c.0, ldc),
                        js,
                        None,
                    )
                }
            };
            crate::par::for_ranges(panels, inner_threads, part);
            // SAFETY: this block writes positions `at` of every channel of `out` (checked to
            // hold m x p), disjoint from the other blocks' positions.
            unsafe { transpose_finished(ct, at.clone(), (m, p, ldc), o, columns, inner_threads) };
        });
        Ok(())
    };
    if threads > 1 && blocks >= 2 * threads {
        (0..blocks).into_par_iter().try_for_each(|b| block(b, 1))
    } else {
        (0..blocks).try_for_each(|b| block(b, threads))
    }
}

/// The least common multiple of `a` and `b`.
fn lcm(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x.max(1) * b
}

/// `out[i, q] = finish(ct[q - at.start, i])` for the `m` channels and the positions `at` of
/// `p` (`ct`'s rows `ldc` apart), by blocks of 8 x 8 transposed in registers (the channels
/// and positions left over one by one); `threads` share out the channels.
///
/// # Safety
/// `out` points to `m x p` floats, of which nothing else touches positions `at` meanwhile;
/// `columns` holds `m` biases and `m x p` residuals; the CPU has AVX2.
unsafe fn transpose_finished(
    ct: &[f32],
    at: std::ops::Range<usize>,
    (m, p, ldc): (usize, usize, usize),
    out: &SendPtr<f32>,
    columns: Option<Columns>,
    threads: usize,
) {
    let one = |i: usize, q: usize| {
        let v = ct[(q - at.start) * ldc + i];
        let v = match columns {
            Some(e) => finish_one(
                v,
                e.bias.map(|b| b[i]),
                e.residual.map(|r| r[i * p + q]),
                e.relu,
            ),
            None => v,
        };
        // SAFETY: (i, q) lies inside `out`, in this call's positions (the contract).
        unsafe { *out.0.add(i * p + q) = v };
    };
    let whole = at.start + at.len() / 8 * 8;
    let rows = |i0: usize| {
        let n = 8.min(m - i0);
        if n < 8 {
            for i in i0..m {
                at.clone().for_each(|q| one(i, q));
            }
            return;
        }
        // SAFETY: the 8 x 8 blocks' rows of C^T lie in `ct` (positions `at`, `ldc` >= m
        // channels), their elements of `out` and the residual inside their m x p.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            let q0 = at.start;
            let finish = columns.map(|e| {
                (
                    e.bias.map_or(std::ptr::null(), |b| b[i0..].as_ptr()),
                    e.residual
                        .map_or(std::ptr::null(), |r| r[i0 * p + q0..].as_ptr()),
                    e.relu,
                )
            });
            transpose_blocks(
                ct[i0..].as_ptr(),
                ldc,
                out.0.add(i0 * p + q0),
                p,
                finish,
                (whole - q0) / 8,
            )
        };
        for i in i0..i0 + 8 {
            (whole..at.end).for_each(|q| one(i, q));
        }
    };
    let groups = m.div_ceil(8);
    if threads > 1 && groups > 1 {
        (0..groups).into_par_iter().for_each(|g| rows(g * 8));
    } else {
        (0..groups).for_each(|g| rows(g * 8));
    }
}

/// `blocks` 8 x 8 blocks of [`transpose8`] side by side: block b's rows of `ct` from row
/// `8 b`, its columns of `out` (and of the residual) from column `8 b`. One call for a run of
/// blocks, the transpose inlined in its loop: a call per block (and its `vzeroupper`) took
/// a tenth of SqueezeNet's run on an Ice Lake core.
///
/// # Safety
/// As for [`transpose8`], for each block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_blocks(
    ct: *const f32,
    ldc: usize,
    out: *mut f32,
    p: usize,
    finish: Option<(*const f32, *const f32, bool)>,
    blocks: usize,
) {
    for b in 0..blocks {
        let finish = finish.map(|(bias, residual, relu)| {
            (
                bias,
                if residual.is_null() {
                    residual
                } else {
                    residual.wrapping_add(8 * b)
                },
                relu,
            )
        });
        // SAFETY: the caller's contract, for block b.
        unsafe { transpose8(ct.add(8 * b * ldc), ldc, out.add(8 * b), p, finish) };
    }
}

/// One 8 x 8 block: row r of `ct` (8 channels of one position) becomes column r of `out`
/// (rows `p` apart), finished as [`finish_one`] does: the bias (one per row of `out`), the
/// residual (laid out as `out`), then the ReLU, in that order, so the bits are the same.
///
/// # Safety
/// The CPU has AVX2; the 8 x 8 floats at `ct` (rows `ldc` apart) are valid to read, those at
/// `out` (rows `p` apart) to write, and so are 8 biases and the residual's 8 x 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn transpose8(
    ct: *const f32,
    ldc: usize,
    out: *mut f32,
    p: usize,
    finish: Option<(*const f32, *const f32, bool)>,
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        let r: [__m256; 8] = std::array::from_fn(|k| _mm256_loadu_ps(ct.add(k * ldc)));
        let t: [__m256; 8] = std::array::from_fn(|k| {
            let (a, b) = (r[k / 2 * 2], r[k / 2 * 2 + 1]);
            if k % 2 == 0 {
                _mm256_unpacklo_ps(a, b)
            } else {
                _mm256_unpackhi_ps(a, b)
            }
        });
        // t0 = (r0 r1 interleaved low), t1 = high, t2/t3 of r2 r3, t4..t7 of r4..r7.
        let u: [__m256; 8] = std::array::from_fn(|k| {
            let base = k / 4 * 4;
            let (a, b) = (t[base + (k % 4) / 2], t[base + 2 + (k % 4) / 2]);
            if k % 2 == 0 {
                _mm256_shuffle_ps::<0x44>(a, b)
            } else {
                _mm256_shuffle_ps::<0xEE>(a, b)
            }
        });
        for c in 0..8 {
            let (lo, hi) = (u[c % 4], u[4 + c % 4]);
            let mut v = if c < 4 {
                _mm256_permute2f128_ps::<0x20>(lo, hi)
            } else {
                _mm256_permute2f128_ps::<0x31>(lo, hi)
            };
            if let Some((bias, residual, relu)) = finish {
                if !bias.is_null() {
                    v = _mm256_add_ps(v, _mm256_set1_ps(*bias.add(c)));
                }
                if !residual.is_null() {
                    v = _mm256_add_ps(v, _mm256_loadu_ps(residual.add(c * p)));
                }
                if relu {
                    v = tile_avx2::relu(v);
                }
            }
            _mm256_storeu_ps(out.add(c * p), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv_cases::{self, geom, packed, values, Case};
    use crate::tile_direct::NR;

    /// Channel counts that leave a part panel of sixteen and a part group of eight (20, 40),
    /// position counts that are not multiples of six or eight, a depth past one block of
    /// [`direct_product::KC`] (58 x 9), strides and dilations, 1-D, a 1 x 1 layer, a map
    /// large enough for ten blocks of positions (70 x 70 at 16 channels), which two threads
    /// share out, and one small enough for one block that two threads still share by blocks.
    fn cases() -> Vec<Case> {
        vec![
            (vec![1, 5, 9, 11], vec![20, 5, 3, 3], vec![1, 1], vec![1, 1]),
            (
                vec![1, 58, 8, 8],
                vec![40, 58, 3, 3],
                vec![1, 1],
                vec![1, 1],
            ),
            (
                vec![1, 3, 17, 15],
                vec![16, 3, 3, 3],
                vec![2, 2],
                vec![2, 1],
            ),
            (vec![1, 4, 40], vec![24, 4, 5], vec![1], vec![1]),
            (vec![1, 7, 9, 9], vec![32, 7, 1, 1], vec![1, 1], vec![1, 1]),
            (
                vec![1, 2, 72, 72],
                vec![16, 2, 3, 3],
                vec![1, 1],
                vec![1, 1],
            ),
            // A map small enough for one block (48 x 48 at 16 channels) but of five blocks'
            // positions, which two threads share out by blocks.
            (
                vec![1, 3, 50, 50],
                vec![16, 3, 3, 3],
                vec![1, 1],
                vec![1, 1],
            ),
            // For the AVX-512 tile's positions read through one or two pointers: rows of 7
            // positions (two to a tile, and a tile of one row), at strides 1 and 2 (the case
            // of 17 x 15 above too); rows of 14 at stride 2; rows of 14 over a depth of 360,
            // past the steps the tile prefetches ahead.
            (vec![1, 4, 9, 9], vec![32, 4, 3, 3], vec![1, 1], vec![1, 1]),
            (
                vec![1, 40, 13, 13],
                vec![32, 40, 1, 1],
                vec![2, 2],
                vec![1, 1],
            ),
            (
                vec![1, 3, 30, 30],
                vec![32, 3, 3, 3],
                vec![2, 2],
                vec![1, 1],
            ),
            (
                vec![1, 40, 16, 16],
                vec![36, 40, 3, 3],
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

    /// The panel widths this CPU has a windowed tile for (AVX2's 16, AVX-512's 32), each
    /// named; those it lacks are printed as skipped.
    fn widths() -> Vec<usize> {
        [NR, tile_direct_avx512::NR]
            .into_iter()
            .filter(|&w| {
                let here = tile_direct::kernel(w).is_some();
                if !here {
                    eprintln!("skipped: this CPU has no windowed tile for panels of {w}");
                }
                here
            })
            .collect()
    }

    #[test]
    fn windows_agree_with_a_reference_within_the_rounding_of_their_depth() {
        for width in widths() {
            conv_cases::agrees_with_a_reference(&cases(), width, &conv);
        }
    }

    #[test]
    fn the_transposed_finish_is_the_unfused_finish_bit_for_bit_and_threads_change_nothing() {
        for width in widths() {
            conv_cases::finishes_as_unfused_and_threads_change_nothing(&cases(), width, &conv);
        }
    }

    #[test]
    fn windowed_kernels_whose_channels_fill_their_panels_run_here() {
        for (x, w, st, here) in [
            // ResNet-50's stem (7 x 7, stride 2), a 3 x 3 layer at 7 x 7 and one at 56 x 56.
            ([1, 3, 230, 230], [64, 3, 7, 7], [2, 2], true),
            ([1, 512, 9, 9], [512, 512, 3, 3], [1, 1], true),
            ([1, 64, 58, 58], [64, 64, 3, 3], [1, 1], true),
            // 1 x 1 layers, stride 1 or 2, stay by rows or on gemm.
            ([1, 256, 14, 14], [1024, 256, 1, 1], [1, 1], false),
            ([1, 256, 56, 56], [512, 256, 1, 1], [2, 2], false),
            // 20 channels fill two panels of sixteen to 62%.
            ([1, 8, 10, 10], [20, 8, 3, 3], [1, 1], false),
        ] {
            let g = geom(&x, &w, &st, &[1, 1]);
            assert_eq!(suits(&g, NR), here, "{x:?} * {w:?}, strides {st:?}");
            // With AVX-512's panels of 32, 1 x 1 layers too.
            let wide = g.m.is_multiple_of(tile_direct_avx512::NR);
            assert_eq!(suits(&g, tile_direct_avx512::NR), wide, "{x:?} * {w:?}");
        }
    }

    #[test]
    fn a_packed_weight_that_does_not_match_is_an_error() {
        if !tile_avx2::supported() {
            eprintln!("skipped: this CPU has no AVX2 and FMA (the tile needs them)");
            return;
        }
        // Panels of a width no tile takes.
        let (xs, ws, st, dil) = cases().remove(0);
        let g = geom(&xs, &ws, &st, &dil);
        let x = values(xs.iter().product(), 1);
        let mut out = crate::par::preset(0f32, g.m * g.p);
        let wt = packed(&values(20 * 45, 2), &g, 8);
        assert!(run(&x, &wt, &g, &mut out, None, false).is_err());
        let (xs, ws, st, dil) = cases().remove(0);
        let g = geom(&xs, &ws, &st, &dil);
        let x = values(xs.iter().product(), 1);
        let other = geom(&[1, 5, 9, 11], &[16, 5, 3, 3], &st, &dil);
        let wt = packed(&values(16 * 45, 2), &other, NR);
        let mut out = crate::par::preset(0f32, g.m * g.p);
        assert!(run(&x, &wt, &g, &mut out, None, false).is_err());
        // The right weight on too short an input: its windows would read past it.
        let wt = packed(&values(20 * 45, 2), &g, NR);
        assert!(run(&x[..x.len() - 1], &wt, &g, &mut out, None, false).is_err());
    }
}
