//! `Prim::ConvBlocked`: a one-group f32 2-D convolution in the blocked layout, input
//! `[N, C/16, H, W, 16]` and output `[N, M/16, OH, OW, 16]` (sixteen channels innermost,
//! onnxruntime's NCHWc), with its zero padding and its finish (a bias per channel, a residual,
//! a ReLU) inside the kernel: no transposes, and the output stored a whole cache line per
//! position and channel block. A padded layer first writes its padded input into the
//! thread's scratch (a plane at a time), so every tile has all its taps inside.
//!
//! The weight `[M, C, KH, KW]` is packed once ([`pack`]) in groups of four output channel
//! blocks: for each group, `[C/16, KH, KW, 16, 64]` (a last group of fewer blocks narrower),
//! so a step of the tile reads its weights from up to four contiguous vectors.
//!
//! Work goes a row of output positions at a time (a 1 x 1, stride-1 layer takes its whole
//! map as one row), in tiles of up to [`tile_blocked_avx512::RW`] positions, cut into chunks
//! of at most [`CHUNK`]: the units are (image, group of channel blocks, row, chunk),
//! group-major, shared out between threads. A small map ([`SMALL_MAP`]) is one unit per
//! group, its depth in blocks whose weights stay in L2 while every position takes them; the
//! tiles of one depth block fetch the next block's weights into L2 a share each (the weights
//! of a network's late layers come from memory, and a tile would otherwise wait on them).
use crate::gemm::SendPtr;
use crate::panels::Columns;
use crate::scratch::with_scratch;
use crate::tile_blocked_avx512::{self, RW};
use crate::weights::Weights;
use kuaxin_core::kernel::Kernel;
use kuaxin_core::prim::window_out;
use kuaxin_core::{Data, Error, Result, Tensor};
use std::mem::MaybeUninit;
use std::sync::Arc;

/// Channels in a block of the layout.
pub const BLOCK: usize = 16;

/// Output positions per unit of work at most (eight tiles).
const CHUNK: usize = 8 * RW;

/// Output positions of a map small enough to go whole to a unit of work, its depth in
/// blocks ([`DEPTH_BYTES`]): ResNet-50's 14 x 14 and 7 x 7 layers, whose weights are large
/// against their maps (a tile of six positions streams a group's weights once).
const SMALL_MAP: usize = 256;

/// Bytes of a group's weights a depth block of a small map holds at most (a part of L2).
/// Stand-alone on ResNet-50's 14 x 14 and 7 x 7 layers (minima of 200 runs, weights
/// fetched ahead), 128 KiB against 32 KiB: 3 x 3 at 14 x 14 1.41 -> 1.29-1.42 ms, 1 x 1
/// 1024 -> 256 0.61 -> 0.59, 2048 -> 512 0.63 -> 0.60; the whole depth at once was slower
/// again at 7 x 7 (a group's 1.2 MB of 3 x 3 weights, 1.6 -> 2.8 ms).
const DEPTH_BYTES: usize = 128 << 10;

/// Output channel blocks a tile computes at most.
const GROUP: usize = 4;

/// A blocked convolution's sizes: input `[n, c/16, h, w, 16]`, weight `[m, c, kh, kw]`,
/// output `[n, m/16, oh, ow, 16]`; strides, dilations and the padding before each spatial
/// axis (the padding after only decides `oh`, `ow`).
#[derive(Clone, Debug, PartialEq)]
pub struct BlockedGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub m: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub pads: [usize; 2],
    /// Elements per input position: 16 for a blocked input, 1 for a plain (NCHW) one, whose
    /// channels (a first layer's few) are one block, planes apart.
    pub lane: usize,
}

impl BlockedGeom {
    /// The geometry of input `x` `[N, C/16, H, W, 16]` (or `[N, C, H, W]`) and weight `w`
    /// `[M, C, KH, KW]` with these strides, dilations and pads ((begin, end) per spatial
    /// axis); an error naming what does not fit.
    pub fn new(
        x: &[usize],
        w: &[usize],
        strides: &[usize],
        dilations: &[usize],
        pads: &[(usize, usize)],
    ) -> Result<BlockedGeom> {
        let bad = || {
            Error::invalid(format!(
                "ConvBlocked: input {x:?} and weight {w:?} (strides {strides:?}, dilations \
                 {dilations:?}, pads {pads:?}) do not fit"
            ))
        };
        let ([n, cb, h, wd, lane], [m, c, kh, kw], [sh, sw], [dh, dw], [(pt, pb), (pl, pr)]) = (
            match *x {
                [n, c, h, w] => [n, c, h, w, 1],
                [n, cb, h, w, BLOCK] => [n, cb * BLOCK, h, w, BLOCK],
                _ => return Err(bad()),
            },
            <[usize; 4]>::try_from(w).map_err(|_| bad())?,
            <[usize; 2]>::try_from(strides).map_err(|_| bad())?,
            <[usize; 2]>::try_from(dilations).map_err(|_| bad())?,
            <[(usize, usize); 2]>::try_from(pads).map_err(|_| bad())?,
        );
        if c != cb || m % BLOCK != 0 || m == 0 || [kh, kw, sh, sw, dh, dw].contains(&0) {
            return Err(bad());
        }
        let oh = window_out(h, (pt, pb), kh, sh, dh).ok_or_else(bad)?;
        let ow = window_out(wd, (pl, pr), kw, sw, dw).ok_or_else(bad)?;
        Ok(BlockedGeom {
            n,
            c,
            h,
            w: wd,
            m,
            oh,
            ow,
            kh,
            kw,
            strides: [sh, sw],
            dilations: [dh, dw],
            pads: [pt, pl],
            lane,
        })
    }

    /// Input channels of a block of the input: sixteen, or all of a plain input's.
    fn ci_block(&self) -> usize {
        if self.lane == BLOCK {
            BLOCK
        } else {
            self.c
        }
    }

    /// Elements of the output.
    pub fn out_len(&self) -> usize {
        self.n * self.m * self.oh * self.ow
    }

    /// The same convolution with a 1 x 1, stride-1 layer's map as one row.
    fn as_rows(&self) -> BlockedGeom {
        let pointwise = self.kh == 1
            && self.kw == 1
            && self.strides == [1, 1]
            && self.pads == [0, 0]
            && (self.oh, self.ow) == (self.h, self.w);
        if !pointwise {
            return self.clone();
        }
        BlockedGeom {
            h: 1,
            w: self.h * self.w,
            oh: 1,
            ow: self.oh * self.ow,
            ..self.clone()
        }
    }

    /// The same convolution on its input with the padding written out (the rows and columns
    /// its windows reach), unpadded.
    fn padded(&self) -> BlockedGeom {
        let reach = |o: usize, s: usize, k: usize, d: usize| (o - 1) * s + (k - 1) * d + 1;
        BlockedGeom {
            h: reach(self.oh, self.strides[0], self.kh, self.dilations[0]),
            w: reach(self.ow, self.strides[1], self.kw, self.dilations[1]),
            pads: [0, 0],
            ..self.clone()
        }
    }
}

/// A weight packed for the blocked tiles ([`pack`]), 64-byte aligned so that no weight
/// vector of a step straddles two cache lines.
pub struct PackedConv {
    lines: Vec<Line>,
}

#[repr(C, align(64))]
#[derive(Clone, Copy)]
struct Line([f32; BLOCK]);

impl PackedConv {
    pub fn values(&self) -> &[f32] {
        // SAFETY: `Line` is sixteen f32 with no padding (64 bytes, aligned to 64).
        unsafe {
            std::slice::from_raw_parts(self.lines.as_ptr().cast::<f32>(), self.lines.len() * BLOCK)
        }
    }

    pub fn bytes(&self) -> usize {
        self.lines.len() * std::mem::size_of::<Line>()
    }
}

/// The weight `w` `[m, c, kh, kw]` in groups of [`GROUP`] output channel blocks (see the
/// module doc).
pub fn pack(w: &[f32], [m, c, kh, kw]: [usize; 4], ci_block: usize) -> Result<PackedConv> {
    let taps = kh * kw;
    if !m.is_multiple_of(BLOCK)
        || ci_block == 0
        || !c.is_multiple_of(ci_block)
        || w.len() != m * c * taps
    {
        return Err(Error::invalid(format!(
            "ConvBlocked: weight of {} values is not [{m}, {c}, {kh}, {kw}] in blocks of {ci_block}",
            w.len()
        )));
    }
    let mut values = Vec::with_capacity(w.len());
    for first in (0..m).step_by(GROUP * BLOCK) {
        let width = (m - first).min(GROUP * BLOCK);
        for cb in 0..c / ci_block {
            for tap in 0..taps {
                for ci in 0..ci_block {
                    let ch = cb * ci_block + ci;
                    values.extend((first..first + width).map(|o| w[(o * c + ch) * taps + tap]));
                }
            }
        }
    }
    // `m` is whole blocks, so the values are whole lines.
    let lines = values
        .chunks_exact(BLOCK)
        .map(|l| {
            let mut line = Line([0.0; BLOCK]);
            line.0.copy_from_slice(l);
            line
        })
        .collect();
    Ok(PackedConv { lines })
}

/// The width of the next tile of a row with `left` positions to go, in tiles of at most
/// `width` that leave `rest` over: as even as they go when the last would be less than half
/// wide (a row of 14 is 5, 5 and 4, not 6, 6 and 2: a narrow tile has too few sums to keep
/// both FMA ports busy; ResNet-50's 3 x 3 layers at 7 x 7, 4 and 3 instead of 6 and 1, ran
/// 1.60 -> 1.54 ms), else full tiles first.
fn tile_width(left: usize, width: usize, rest: usize) -> usize {
    if rest != 0 && rest * 2 < width {
        left.div_ceil(left.div_ceil(width))
    } else {
        left.min(width)
    }
}

/// `(rows, positions)` of a small map's units: the whole map, or on several threads a
/// part of it (rows, or positions of a map as one row) so that the `images_groups` (image,
/// group) pairs make [`crate::par::TASKS_PER_THREAD`] units per thread. Each part streams its
/// group's weights once more (from L2), but a thread that the machine holds up then leaves
/// less behind: SqueezeNet's 13 x 13 layers are four groups, two units a thread, and one
/// delayed thread held the whole layer.
fn small_map_units(r: &BlockedGeom, images_groups: usize, threads: usize) -> (usize, usize) {
    let parts = (threads * crate::par::TASKS_PER_THREAD).div_ceil(images_groups.max(1));
    if threads < 2 || parts < 2 {
        return (r.oh, r.ow);
    }
    if r.oh > 1 {
        (r.oh.div_ceil(parts.min(r.oh)), r.ow)
    } else {
        // Whole tiles of the widest kind.
        let per =
            r.ow.div_ceil(parts)
                .next_multiple_of(tile_blocked_avx512::width(GROUP));
        (1, per.min(r.ow))
    }
}

/// One tile's operands (element pointers and strides, in elements): the sums over `blocks`
/// channel blocks, `rows` kernel rows and `cols` kernel columns for up to
/// [`RW`] positions `x_pos` apart, then the finish, stored at `out`.
pub struct Tile {
    pub x: *const f32,
    pub x_block: usize,
    pub x_row: usize,
    pub x_col: usize,
    pub x_pos: usize,
    /// Input channels of a block (`cis`), `x_ci` apart.
    pub cis: usize,
    pub x_ci: usize,
    pub w: *const f32,
    pub w_block: usize,
    pub w_row: usize,
    pub w_col: usize,
    pub blocks: usize,
    pub rows: usize,
    pub cols: usize,
    /// Whether the sums start from the output's (an earlier depth block's, or a residual
    /// added in place) instead of zero.
    pub accumulate: bool,
    /// The output's first position; the second channel block `out_block` further on.
    pub out: *mut f32,
    pub out_block: usize,
    /// This tile's first bias (null: none); the residual laid out as the output (null: none).
    pub bias: *const f32,
    pub residual: *const f32,
    pub relu: bool,
    /// Weight lines (sixteen values each, from `ahead`) to fetch into L2 while the tile
    /// runs, `ahead_per_tap` in each tap's first steps: the next depth block's, which a
    /// small map would otherwise wait on from memory (null: none).
    pub ahead: *const f32,
    pub ahead_per_tap: usize,
}

/// `x` (of geometry `g`) into `into` as the input of `p` ([`BlockedGeom::padded`]): each
/// row and column the padding adds is zeros.
fn pad(x: &[f32], g: &BlockedGeom, p: &BlockedGeom, into: &mut [f32]) {
    let lane = g.lane;
    let (plane, row) = (p.h * p.w * lane, p.w * lane);
    let [top, left] = g.pads;
    let inside = g.w.min(p.w.saturating_sub(left));
    let fill = |(i, out): (usize, &mut [f32])| {
        let src = &x[i * g.h * g.w * lane..(i + 1) * g.h * g.w * lane];
        for (ih, out) in out.chunks_exact_mut(row).enumerate() {
            match (ih.checked_sub(top)).filter(|&r| r < g.h) {
                Some(r) => {
                    let (before, rest) = out.split_at_mut(left.min(p.w) * lane);
                    before.fill(0.0);
                    let (mid, after) = rest.split_at_mut(inside * lane);
                    mid.copy_from_slice(&src[r * g.w * lane..][..inside * lane]);
                    after.fill(0.0);
                }
                None => out.fill(0.0),
            }
        }
    };
    if into.len() >= crate::par::MIN_PAR * 4 && rayon::current_num_threads() > 1 {
        use rayon::prelude::*;
        into.par_chunks_exact_mut(plane).enumerate().for_each(fill);
    } else {
        into.chunks_exact_mut(plane).enumerate().for_each(fill);
    }
}

impl Tile {
    /// The input and weight of kernel tap (`kh`, `kw`) of channel block `cb`.
    ///
    /// # Safety
    /// The tap is one the tile describes (within the windows its caller vouches for).
    #[inline(always)]
    pub unsafe fn tap(&self, cb: usize, kh: usize, kw: usize) -> (*const f32, *const f32) {
        // SAFETY: the caller's contract.
        unsafe {
            (
                self.x
                    .add(cb * self.x_block + kh * self.x_row + kw * self.x_col),
                self.w
                    .add(cb * self.w_block + kh * self.w_row + kw * self.w_col),
            )
        }
    }
}

/// The tile on any CPU: the same sums in the same order, a multiply and an add each.
///
/// # Safety
/// As [`tile_blocked_avx512::run`] without the AVX-512.
unsafe fn portable(rw: usize, nb: usize, t: &Tile) {
    let mut acc = vec![[0f32; BLOCK]; rw * nb];
    // SAFETY (every access): within the windows the caller vouches for.
    unsafe {
        if t.accumulate {
            for r in 0..rw {
                for j in 0..nb {
                    let at = j * t.out_block + r * BLOCK;
                    for (l, a) in acc[r * nb + j].iter_mut().enumerate() {
                        *a = *t.out.add(at + l);
                    }
                }
            }
        }
        for cb in 0..t.blocks {
            for kh in 0..t.rows {
                for kw in 0..t.cols {
                    let (x, w) = t.tap(cb, kh, kw);
                    for ci in 0..t.cis {
                        for r in 0..rw {
                            let b = *x.add(r * t.x_pos + ci * t.x_ci);
                            for j in 0..nb {
                                let wv = w.add((ci * nb + j) * BLOCK);
                                for (l, a) in acc[r * nb + j].iter_mut().enumerate() {
                                    *a += b * *wv.add(l);
                                }
                            }
                        }
                    }
                }
            }
        }
        for r in 0..rw {
            for j in 0..nb {
                let at = j * t.out_block + r * BLOCK;
                for (l, &v) in acc[r * nb + j].iter().enumerate() {
                    let bias = (!t.bias.is_null()).then(|| *t.bias.add(j * BLOCK + l));
                    let res = (!t.residual.is_null()).then(|| *t.residual.add(at + l));
                    *t.out.add(at + l) = crate::tile::finish_one(v, bias, res, t.relu);
                }
            }
        }
    }
}

/// `Prim::ConvBlocked` on its inputs (x, w, then the epilogue's arguments): the weight
/// packed once when it is a constant of `weights`, the epilogue in the tile when it is a
/// bias, residual and ReLU, else run on the stored output.
pub fn eval(
    inputs: &[&Tensor],
    (strides, dilations, pads): (&[usize], &[usize], &[(usize, usize)]),
    epilogue: &Option<Arc<Kernel>>,
    weights: Option<&Weights>,
) -> Result<Vec<f32>> {
    let (Some(x), Some(w)) = (inputs.first(), inputs.get(1)) else {
        return Err(Error::invalid("ConvBlocked takes x and w"));
    };
    let (Data::F32(xd), Data::F32(wd)) = (&x.data, &w.data) else {
        return Err(Error::unsupported("ConvBlocked runs on f32"));
    };
    let g = BlockedGeom::new(&x.shape, &w.shape, strides, dilations, pads)?;
    let packed = packed_weight(w, wd, &g, weights)?;
    let extra = &inputs[2.min(inputs.len())..];
    let Some(k) = epilogue else {
        return conv_blocked(xd, packed.values(), &g, None);
    };
    if let Some(f) = crate::conv_finish::bias_relu_blocked(k, extra) {
        return conv_blocked(xd, packed.values(), &g, Some(f));
    }
    let mut out = conv_blocked(xd, packed.values(), &g, None)?;
    crate::fused::apply_in_place(k, extra, 0, &mut out)?;
    Ok(out)
}

/// `w` (values `wd`) packed for geometry `g`: once, when it is a constant of `weights`.
fn packed_weight(
    w: &Tensor,
    wd: &[f32],
    g: &BlockedGeom,
    weights: Option<&Weights>,
) -> Result<Arc<PackedConv>> {
    let shape = [g.m, g.c, g.kh, g.kw];
    match weights.and_then(|ws| ws.packed_conv(w, wd, shape, g.ci_block())) {
        Some(p) => Ok(p),
        None => Ok(Arc::new(pack(wd, shape, g.ci_block())?)),
    }
}

/// [`eval`] on inputs the caller gave up, when the epilogue adds a residual that no one
/// else holds (`Arc::get_mut`) and the tile can finish: the sums start from the residual
/// where it lies, and its buffer is the output (onnxruntime's NCHWc convolutions do the
/// same): the output's lines are not fetched only to be overwritten, and the residual is not
/// read from a second place. `None` (nothing taken) otherwise.
pub fn eval_in_place(
    inputs: &mut [Arc<Tensor>],
    geometry: (&[usize], &[usize], &[(usize, usize)]),
    epilogue: &Kernel,
    weights: Option<&Weights>,
) -> Result<Option<Vec<f32>>> {
    let (strides, dilations, pads) = geometry;
    let (g, bias, relu, at) = {
        let refs: Vec<&Tensor> = inputs.iter().map(|t| t.as_ref()).collect();
        let (Some(x), Some(w)) = (refs.first(), refs.get(1)) else {
            return Ok(None);
        };
        let g = BlockedGeom::new(&x.shape, &w.shape, strides, dilations, pads)?;
        let extra = &refs[2.min(refs.len())..];
        let Some(f) = crate::conv_finish::bias_relu_blocked(epilogue, extra) else {
            return Ok(None);
        };
        let Some(res) = f.residual.filter(|r| r.len() == g.out_len()) else {
            return Ok(None);
        };
        // The input the residual is: all of its values, in the output's order.
        let whole =
            |t: &&Tensor| matches!(&t.data, Data::F32(v) if std::ptr::eq(v.as_slice(), res));
        let Some(at) = extra.iter().position(whole) else {
            return Ok(None);
        };
        (g, f.bias.map(<[f32]>::to_vec), f.relu, 2 + at)
    };
    let mut out = match Arc::get_mut(&mut inputs[at]).map(|t| &mut t.data) {
        Some(Data::F32(v)) => std::mem::take(v),
        _ => return Ok(None),
    };
    let (x, w) = (&inputs[0], &inputs[1]);
    let (Data::F32(xd), Data::F32(wd)) = (&x.data, &w.data) else {
        return Err(Error::unsupported("ConvBlocked runs on f32"));
    };
    let packed = packed_weight(w, wd, &g, weights)?;
    let finish = Columns {
        bias: bias.as_deref(),
        residual: None,
        relu,
    };
    let avx512 = cfg!(target_arch = "x86_64") && crate::panels::available();
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout; every value is initialized, and the
    // tiles read each one (a sum's start) before they write it.
    let cells = unsafe {
        std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<MaybeUninit<f32>>(), out.len())
    };
    conv_blocked_into(xd, packed.values(), &g, Some(finish), avx512, (cells, true))?;
    Ok(Some(out))
}

/// The convolution of `x` (blocked) by the `packed` weight ([`pack`]), finished by `finish`
/// (its bias per output channel, its residual laid out as the output).
pub fn conv_blocked(
    x: &[f32],
    packed: &[f32],
    g: &BlockedGeom,
    finish: Option<Columns>,
) -> Result<Vec<f32>> {
    let avx512 = cfg!(target_arch = "x86_64") && crate::panels::available();
    conv_blocked_on(x, packed, g, finish, avx512)
}

/// [`conv_blocked`] on the AVX-512 tile or the portable one.
fn conv_blocked_on(
    x: &[f32],
    packed: &[f32],
    g: &BlockedGeom,
    finish: Option<Columns>,
    avx512: bool,
) -> Result<Vec<f32>> {
    let mut out: Vec<f32> = Vec::with_capacity(g.out_len());
    conv_blocked_into(
        x,
        packed,
        g,
        finish,
        avx512,
        (out.spare_capacity_mut(), false),
    )?;
    // SAFETY: `conv_blocked_into` wrote every element of the output.
    unsafe { out.set_len(g.out_len()) };
    Ok(out)
}

/// [`conv_blocked_on`] into `out` (at least the output's length); with `from_out`, the sums
/// start from the values `out` holds (a residual added in place) instead of zero.
fn conv_blocked_into(
    x: &[f32],
    packed: &[f32],
    g: &BlockedGeom,
    finish: Option<Columns>,
    avx512: bool,
    (out, from_out): (&mut [MaybeUninit<f32>], bool),
) -> Result<()> {
    let len = g.out_len();
    let short = x.len() != g.n * g.c * g.h * g.w
        || out.len() < len
        || packed.len() != g.m * g.c * g.kh * g.kw
        || finish.is_some_and(|f| f.shorter_than(g.m, len));
    if short {
        return Err(Error::invalid(format!(
            "ConvBlocked: operands do not fit {g:?} (input {}, weight {})",
            x.len(),
            packed.len()
        )));
    }
    // The padding written out, every tap of every position is inside the input: the tiles
    // need no edge cases (positions at the edges one at a time, with fewer taps, measured
    // 0-10% slower per 3 x 3 layer than the copy and full tiles).
    if g.pads != [0, 0] {
        let p = g.padded();
        return with_scratch(p.n * p.c * p.h * p.w, |buf: &mut [f32]| {
            pad(x, g, &p, buf);
            conv_blocked_into(buf, packed, &p, finish, avx512, (out, from_out))
        });
    }
    let r = g.as_rows();
    let flops = len.saturating_mul(g.c * g.kh * g.kw);
    let threads = if flops >= crate::gemm::PAR_FLOPS {
        rayon::current_num_threads()
    } else {
        1
    };
    let (lane, cis) = (g.lane, g.ci_block());
    let groups = g.m.div_ceil(GROUP * BLOCK);
    // A small map goes whole to a unit, its depth in blocks whose weights stay in L2 while
    // every position of the map takes them; a large one a chunk of a row at a time, all of
    // its depth at once.
    let small = r.oh * r.ow <= SMALL_MAP;
    let (rows_per_unit, chunk_len) = if small {
        small_map_units(&r, g.n * groups, threads)
    } else {
        (1, CHUNK)
    };
    let (row_units, chunks) = (r.oh.div_ceil(rows_per_unit), r.ow.div_ceil(chunk_len));
    let units = g.n * groups * row_units * chunks;
    let dst = SendPtr(out.as_mut_ptr() as *mut f32);
    let x_img = g.c * g.h * g.w;
    let out_img = g.m * g.oh * g.ow;
    let out_block = r.oh * r.ow * BLOCK;
    let group_len = GROUP * BLOCK * g.c * g.kh * g.kw;
    let blocks = g.c / cis;
    let x_ci = if lane == BLOCK { 1 } else { r.h * r.w };
    let (bias, residual, relu) = match finish {
        Some(f) => (f.bias, f.residual, f.relu),
        None => (None, None, false),
    };
    let unit = |u: usize| {
        let chunk = u % chunks;
        let row_unit = (u / chunks) % row_units;
        let group = (u / chunks / row_units) % groups;
        let img = u / chunks / row_units / groups;
        let nb = (g.m / BLOCK - GROUP * group).min(GROUP);
        let w_col = cis * nb * BLOCK;
        let (w_row, w_block) = (r.kw * w_col, r.kw * r.kh * w_col);
        let depth = if small {
            (DEPTH_BYTES / (w_block * 4)).clamp(1, blocks)
        } else {
            blocks
        };
        let rows = row_unit * rows_per_unit..((row_unit + 1) * rows_per_unit).min(r.oh);
        let (start, end) = (chunk * chunk_len, ((chunk + 1) * chunk_len).min(r.ow));
        let width = tile_blocked_avx512::width(nb);
        for first in (0..blocks).step_by(depth) {
            let last = first + depth >= blocks;
            let taps = depth.min(blocks - first) * r.kh * r.kw;
            // A small map's next depth block (or the next group's first), fetched a share
            // per tile; a large map reads its weights once per row, from cache after the
            // first.
            let next = group * group_len + (first + depth).min(blocks) * w_block;
            let ahead_lines = if small {
                (depth * w_block).min(packed.len().saturating_sub(next)) / BLOCK
            } else {
                0
            };
            let tiles = rows.len() * (end - start).div_ceil(width);
            let ahead_per_tap = ahead_lines.div_ceil(tiles * taps);
            let mut tile = 0;
            // A first layer (a plain input, the network's, from memory) reads input rows
            // for its next output row that this one does not: its tiles fetch them into L2,
            // a share each. Blocked inputs were just written by the layer before.
            for row in rows.clone() {
                let mut coming = if lane == BLOCK {
                    NextRows::default()
                } else {
                    NextRows::of(&r, row, (start, end), cis)
                };
                let per_tile = coming.lines().div_ceil((end - start).div_ceil(width));
                let mut o = start;
                while o < end {
                    coming.fetch(x[img * x_img..].as_ptr(), per_tile);
                    let rw = tile_width(end - o, width, (end - start) % width);
                    let at = img * out_img + GROUP * group * out_block + (row * r.ow + o) * BLOCK;
                    let x_at = ((first * r.h + row * r.strides[0]) * r.w + o * r.strides[1]) * lane;
                    let t = Tile {
                        x: x[img * x_img + x_at..].as_ptr(),
                        x_block: r.h * r.w * lane,
                        x_row: r.dilations[0] * r.w * lane,
                        x_col: r.dilations[1] * lane,
                        x_pos: r.strides[1] * lane,
                        cis,
                        x_ci,
                        w: packed[group * group_len + first * w_block..].as_ptr(),
                        w_block,
                        w_row,
                        w_col,
                        blocks: depth.min(blocks - first),
                        rows: r.kh,
                        cols: r.kw,
                        accumulate: first > 0 || from_out,
                        out: crate::conv::offset(&dst, at).0,
                        out_block,
                        bias: match bias {
                            Some(b) if last => b[GROUP * group * BLOCK..].as_ptr(),
                            _ => std::ptr::null(),
                        },
                        residual: match residual {
                            Some(v) if last => v[at..].as_ptr(),
                            _ => std::ptr::null(),
                        },
                        relu: relu && last,
                        ahead: match ahead_per_tap {
                            0 => std::ptr::null(),
                            _ => packed
                                .as_ptr()
                                .wrapping_add(next + tile * ahead_per_tap * taps * BLOCK),
                        },
                        ahead_per_tap,
                    };
                    tile += 1;
                    // SAFETY: the geometry (unpadded: every tap inside) bounds every tap,
                    // position and channel block the tile reads to the input, the packed
                    // group and the finish (their lengths checked above); units write
                    // disjoint positions of the output, and a tile accumulates only onto the
                    // sums its positions' earlier depth blocks stored.
                    unsafe {
                        if avx512 {
                            #[cfg(target_arch = "x86_64")]
                            tile_blocked_avx512::run(rw, nb, &t);
                        } else {
                            portable(rw, nb, &t);
                        }
                    }
                    o += rw;
                }
            }
        }
    };
    // The units cover every (image, channel block, row, position) of the output.
    crate::par::for_ranges(units, threads, |range| range.for_each(unit));
    Ok(())
}

/// The lines of a plain (NCHW) input that output row `row + 1` of a chunk reads and row `row`
/// does not (the rows its windows reach past this row's, in each of `planes` channel planes),
/// fetched into L2 a few at a time while row `row` runs.
#[derive(Default)]
struct NextRows {
    /// Offset of the first line's first element from the image's start.
    start: usize,
    planes: usize,
    plane_len: usize,
    rows: usize,
    row_len: usize,
    per_row: usize,
    done: usize,
}

impl NextRows {
    fn of(r: &BlockedGeom, row: usize, (start, end): (usize, usize), planes: usize) -> NextRows {
        let (s, reach) = (r.strides[0], (r.kh - 1) * r.dilations[0]);
        // Undilated windows cover whole runs of rows, so the next row's new ones follow this
        // row's last; dilated ones interleave, and all of the next row's are fetched.
        let lo = match r.dilations[0] {
            1 => (row * s + reach + 1).max((row + 1) * s),
            _ => (row + 1) * s,
        };
        let hi = ((row + 1) * s + reach + 1).min(r.h);
        if row + 1 >= r.oh || lo >= hi || end <= start {
            return NextRows::default();
        }
        let c0 = start * r.strides[1];
        let c1 = ((end - 1) * r.strides[1] + (r.kw - 1) * r.dilations[1] + 1).min(r.w);
        NextRows {
            start: lo * r.w + c0,
            planes,
            plane_len: r.h * r.w,
            rows: hi - lo,
            row_len: r.w,
            // One more than the span's length in lines: the span need not start a line.
            per_row: c1.saturating_sub(c0).div_ceil(BLOCK) + 1,
            done: 0,
        }
    }

    fn lines(&self) -> usize {
        self.planes * self.rows * self.per_row
    }

    /// Offset from the image's start of an element of line `i` (`i < lines()`): each new
    /// row's span from its first element in steps of a line, one step past its last.
    fn line(&self, i: usize) -> usize {
        let (plane, rest) = (
            i / (self.rows * self.per_row),
            i % (self.rows * self.per_row),
        );
        let (row, line) = (rest / self.per_row, rest % self.per_row);
        self.start + plane * self.plane_len + row * self.row_len + line * BLOCK
    }

    /// Asks for the next `n` lines (from the image at `x`) in L2. A hint: no fault, whatever
    /// the address.
    fn fetch(&mut self, x: *const f32, n: usize) {
        let end = (self.done + n).min(self.lines());
        for i in self.done..end {
            let at = self.line(i);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch never faults.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
                _mm_prefetch::<_MM_HINT_T1>(x.wrapping_add(at) as *const i8);
            }
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (x, at);
        }
        self.done = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv_cases::values;

    #[test]
    fn a_plain_input_row_fetches_the_lines_only_its_next_row_reads() {
        // (channels, size, kernel, stride, dilation, chunk): a stem, a stride-1 layer, a
        // dilated one, a chunk of positions within a row.
        for (c, hw, k, s, d, chunk) in [
            (3, 224, 3, 2, 1, (0, 111)),
            (3, 30, 3, 1, 1, (0, 28)),
            (2, 40, 3, 1, 2, (0, 36)),
            (3, 64, 7, 2, 1, (8, 20)),
        ] {
            let o = (hw - (k - 1) * d - 1) / s + 1;
            let g = BlockedGeom::new(
                &[1, c, hw, hw],
                &[16, c, k, k],
                &[s, s],
                &[d, d],
                &[(0, 0); 2],
            )
            .expect("a geometry");
            assert_eq!((g.oh, g.lane), (o, 1));
            let reads = |row: usize| {
                let mut at = std::collections::HashSet::new();
                for ch in 0..c {
                    for ox in chunk.0..chunk.1 {
                        for ky in 0..k {
                            for kx in 0..k {
                                at.insert(ch * hw * hw + (row * s + ky * d) * hw + ox * s + kx * d);
                            }
                        }
                    }
                }
                at
            };
            for row in [0, 1, o - 2, o - 1] {
                let next = NextRows::of(&g, row, chunk, c);
                let spans: Vec<usize> = (0..next.lines()).map(|i| next.line(i)).collect();
                let (now, then) = (
                    reads(row),
                    if row + 1 < o {
                        reads(row + 1)
                    } else {
                        Default::default()
                    },
                );
                for e in then.difference(&now) {
                    assert!(
                        spans.iter().any(|&l| (l..l + BLOCK).contains(e)),
                        "{c} x {hw}^2, k {k} s {s} d {d}, row {row}: element {e} not fetched"
                    );
                }
                // Nothing for the last row; no more lines than the new rows' spans (undilated:
                // `s` rows a channel; dilated: the window's whole reach).
                let width = (chunk.1 - 1 - chunk.0) * s + (k - 1) * d + 1;
                let rows = if d == 1 { s.min(k) } else { (k - 1) * d + 1 };
                assert!(spans.len() <= c * rows * (width.div_ceil(BLOCK) + 1));
                if row + 1 == o {
                    assert!(spans.is_empty());
                }
            }
        }
    }

    /// NCHW `[n, c, h, w]` as blocked `[n, c/16, h, w, 16]`.
    fn blocked(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<f32> {
        let mut out = vec![0.0; x.len()];
        for i in 0..n {
            for ch in 0..c {
                for p in 0..hw {
                    out[((i * c / BLOCK + ch / BLOCK) * hw + p) * BLOCK + ch % BLOCK] =
                        x[(i * c + ch) * hw + p];
                }
            }
        }
        out
    }

    /// The convolution by its definition, in f64, NCHW, zero padding.
    fn reference(x: &[f32], w: &[f32], g: &BlockedGeom) -> Vec<f64> {
        let mut out = vec![0f64; g.out_len()];
        for i in 0..g.n {
            for o in 0..g.m {
                for y in 0..g.oh {
                    for z in 0..g.ow {
                        let mut s = 0f64;
                        for ch in 0..g.c {
                            for a in 0..g.kh {
                                for b in 0..g.kw {
                                    let iy = (y * g.strides[0] + a * g.dilations[0]) as isize
                                        - g.pads[0] as isize;
                                    let iz = (z * g.strides[1] + b * g.dilations[1]) as isize
                                        - g.pads[1] as isize;
                                    if iy < 0 || iz < 0 || iy >= g.h as isize || iz >= g.w as isize
                                    {
                                        continue;
                                    }
                                    let xv =
                                        x[((i * g.c + ch) * g.h + iy as usize) * g.w + iz as usize];
                                    let wv = w[((o * g.c + ch) * g.kh + a) * g.kw + b];
                                    s += xv as f64 * wv as f64;
                                }
                            }
                        }
                        out[((i * g.m + o) * g.oh + y) * g.ow + z] = s;
                    }
                }
            }
        }
        out
    }

    /// Checks one geometry (input blocked, or plain when `c` is not whole blocks) on the
    /// AVX-512 tile (where the CPU has it) and on the portable one, with and without a
    /// finish, against the definition (tolerance: f32 sums of `c kh kw` products of values
    /// below 1).
    fn check(
        (n, c, hw, m): (usize, usize, [usize; 2], usize),
        (k, s, d): ([usize; 2], [usize; 2], [usize; 2]),
        pads: [(usize, usize); 2],
    ) {
        let plain = c % BLOCK != 0;
        let x_shape = if plain {
            vec![n, c, hw[0], hw[1]]
        } else {
            vec![n, c / BLOCK, hw[0], hw[1], BLOCK]
        };
        let g = BlockedGeom::new(&x_shape, &[m, c, k[0], k[1]], &s, &d, &pads).unwrap();
        let x = values(n * c * hw[0] * hw[1], 1);
        let w = values(m * c * k[0] * k[1], 2);
        let bias = values(m, 3);
        let res = values(g.out_len(), 4);
        let sums: Vec<f32> = reference(&x, &w, &g).iter().map(|&v| v as f32).collect();
        let want = blocked(&sums, n, m, g.oh * g.ow);
        let xb = if plain {
            x.clone()
        } else {
            blocked(&x, n, c, hw[0] * hw[1])
        };
        let packed = pack(&w, [m, c, k[0], k[1]], g.ci_block()).unwrap();
        let packed = packed.values();
        let tol = 4.0 * f32::EPSILON * (c * k[0] * k[1]) as f32;
        let finish = Columns {
            bias: Some(&bias),
            residual: Some(&res),
            relu: true,
        };
        // The channel of blocked element `i`.
        let channel = |i: usize| (i / BLOCK / (g.oh * g.ow)) % (m / BLOCK) * BLOCK + i % BLOCK;
        for avx512 in [false, crate::panels::available()] {
            let plain = conv_blocked_on(&xb, packed, &g, None, avx512).unwrap();
            let finished = conv_blocked_on(&xb, packed, &g, Some(finish), avx512).unwrap();
            // The residual added in place: the sums start from it, in the output's buffer.
            let mut in_place = res.clone();
            let on_residual = Columns {
                residual: None,
                ..finish
            };
            // SAFETY: `MaybeUninit<f32>` has `f32`'s layout.
            let cells = unsafe {
                std::slice::from_raw_parts_mut(
                    in_place.as_mut_ptr().cast::<MaybeUninit<f32>>(),
                    in_place.len(),
                )
            };
            conv_blocked_into(&xb, packed, &g, Some(on_residual), avx512, (cells, true)).unwrap();
            for i in 0..g.out_len() {
                let (got, w) = (plain[i], want[i]);
                assert!((got - w).abs() <= tol, "{g:?} at {i}: {got} vs {w}");
                let f = (want[i] + bias[channel(i)] + res[i]).max(0.0);
                let got = finished[i];
                assert!(
                    (got - f).abs() <= tol,
                    "{g:?} finished at {i}: {got} vs {f}"
                );
                let got = in_place[i];
                assert!(
                    (got - f).abs() <= tol,
                    "{g:?} finished in place at {i}: {got} vs {f}"
                );
            }
        }
    }

    #[test]
    fn blocked_convolutions_agree_with_the_definition() {
        // On three threads, whatever the machine: small maps are then cut into parts.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("a pool of three threads");
        pool.install(every_geometry_agrees);
    }

    fn every_geometry_agrees() {
        let none = [(0, 0); 2];
        // 1 x 1 as one row; groups of three channel blocks, of four and one; stride 2.
        check((1, 32, [5, 7], 48), ([1, 1], [1, 1], [1, 1]), none);
        check((1, 16, [5, 7], 80), ([1, 1], [1, 1], [1, 1]), none);
        check((2, 16, [6, 5], 32), ([1, 1], [2, 2], [1, 1]), none);
        // 3 x 3 padded, positions on both edges and a row wider than a tile.
        check((1, 16, [4, 31], 32), ([3, 3], [1, 1], [1, 1]), [(1, 1); 2]);
        check((1, 32, [9, 9], 16), ([3, 3], [2, 2], [1, 1]), [(1, 1); 2]);
        // Uneven padding, dilation, kernel rows wholly outside for the edge rows.
        check(
            (1, 16, [7, 8], 32),
            ([3, 2], [1, 2], [2, 1]),
            [(2, 0), (0, 1)],
        );
        check((1, 16, [3, 3], 16), ([5, 5], [1, 1], [1, 1]), [(2, 2); 2]);
        // A small map in depth blocks (three channel blocks, then the last one), in parts of
        // rows; a small 1 x 1 map in parts of positions.
        check((1, 64, [6, 6], 64), ([3, 3], [1, 1], [1, 1]), [(1, 1); 2]);
        check((1, 64, [12, 12], 64), ([1, 1], [1, 1], [1, 1]), none);
        // A plain input of three channels (a first layer), padded and strided; and 1 x 1.
        check(
            (2, 3, [11, 12], 32),
            ([7, 7], [2, 2], [1, 1]),
            [(3, 3), (3, 2)],
        );
        check((1, 5, [4, 6], 80), ([1, 1], [1, 1], [1, 1]), none);
        // A map longer than a chunk of work, in one row.
        check((1, 16, [20, 13], 32), ([1, 1], [1, 1], [1, 1]), none);
    }
}
