//! Fused kernels (`Prim::Fused`) on the CPU: a blocked evaluator of the kernel IR.
//!
//! The domain is walked row by row (the innermost, coalesced axis), in blocks of `BLOCK`
//! elements; each op of the expression DAG runs over a whole block before the next, so the
//! loops vectorise and every intermediate stays in L1. Rows are spread over threads. Values
//! are f32 (bools as 0/1), with the same scalar functions as the unfused primitives.
use crate::block::{Block, Val, BLOCK};
use crate::fold;
use crate::walk::{fetch, inner_strides, load_offsets, row_bases, Segments, Walk};
use crate::window::Pooling;
use crate::window_lanes::LanePooling;
use kuaxin_core::kernel::{Expr, Kernel};
use kuaxin_core::prim::ReduceOp;
use kuaxin_core::tensor::is_row_major;
use kuaxin_core::{DType, Data, Error, Result, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

/// Arguments as f32 slices (bool arguments converted once).
fn f32_args<'a>(args: &[&'a Tensor]) -> Result<Vec<Cow<'a, [f32]>>> {
    args.iter()
        .map(|t| match &t.data {
            Data::F32(v) => Ok(Cow::Borrowed(v.as_slice())),
            Data::Bool(v) => Ok(Cow::Owned(v.iter().map(|&b| b as u8 as f32).collect())),
            other => Err(Error::unsupported(format!(
                "fused kernels take f32 and bool, not {}",
                other.dtype()
            ))),
        })
        .collect()
}

/// Merges neighbouring axes that every load walks as one, and drops size-1 axes.
/// Returns the new sizes and, per load, the new strides.
fn coalesce(dims: &[usize], strides: &[Vec<isize>]) -> (Vec<usize>, Vec<Vec<isize>>) {
    let mut out_dims: Vec<usize> = Vec::new();
    let mut out_strides: Vec<Vec<isize>> = vec![Vec::new(); strides.len()];
    for (ax, &n) in dims.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let mergeable = !out_dims.is_empty()
            && strides
                .iter()
                .zip(&out_strides)
                .all(|(s, o)| *o.last().unwrap_or(&0) == s[ax] * n as isize);
        if mergeable {
            let last = out_dims.len() - 1;
            out_dims[last] *= n;
            for (o, s) in out_strides.iter_mut().zip(strides) {
                let l = o.len() - 1;
                o[l] = s[ax];
            }
        } else {
            out_dims.push(n);
            for (o, s) in out_strides.iter_mut().zip(strides) {
                o.push(s[ax]);
            }
        }
    }
    (out_dims, out_strides)
}

fn store(data: Vec<f32>, dtype: DType) -> Data {
    match dtype {
        DType::Bool => Data::Bool(data.into_iter().map(|v| v != 0.0).collect()),
        _ => Data::F32(data),
    }
}

pub fn run(k: &Kernel, args: &[&Tensor]) -> Result<Data> {
    let srcs = f32_args(args)?;
    match &k.reduce {
        None => elementwise(k, &srcs),
        Some(r) => reduction(k, &srcs, r.op, r.value, r.dims),
    }
}

/// Positions per parallel task (a multiple of `BLOCK`) for `total` positions costing about
/// `ops` expression ops each: four tasks per thread when there is enough work, none smaller
/// than `MIN_PAR` ops of work (a rayon task costs a few microseconds), none larger than
/// `MIN_PAR` positions.
fn task_len(total: usize, ops: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let smallest = crate::par::MIN_PAR / ops.max(1);
    let even = total.div_ceil(crate::par::TASKS_PER_THREAD * threads);
    even.clamp(smallest.min(crate::par::MIN_PAR), crate::par::MIN_PAR)
        .div_ceil(BLOCK)
        .max(1)
        * BLOCK
}

fn elementwise(k: &Kernel, srcs: &[Cow<[f32]>]) -> Result<Data> {
    let strides: Vec<Vec<isize>> = k.loads.iter().map(|l| l.strides.clone()).collect();
    let (dims, strides) = coalesce(&k.domain, &strides);
    let total: usize = k.domain.iter().product();
    let mut out = vec![0f32; total];
    if total == 0 {
        return Ok(store(out, k.out.dtype));
    }
    let inner = inner_strides(&strides);
    let offsets = load_offsets(&k.loads);
    let walk = Walk::rows(&dims, &strides, &offsets, &inner);
    let per_task = task_len(total, k.body.len());
    out.par_chunks_mut(per_task)
        .enumerate()
        .try_for_each(|(t, chunk)| -> Result<()> {
            let mut blk = Block::new(k.body.len());
            let mut segs = Segments::default();
            for (b, block) in chunk.chunks_mut(BLOCK).enumerate() {
                let len = block.len();
                walk.segments(t * per_task + b * BLOCK, len, &mut segs);
                let mut f = |l: usize, dst: &mut [f32]| {
                    segs.fetch(l, &srcs[k.loads[l].arg], inner[l], 0, dst)
                };
                blk.eval_into(&k.body, None, &mut f, block)?;
            }
            Ok(())
        })?;
    Ok(store(out, k.out.dtype))
}

/// Reductions shorter than this are vectorised across output rows instead of along the
/// reduced axes (pooling windows, small groups).
const SMALL_REDUCTION: usize = 64;

/// A short reduction this long whose every load reads its reduced positions as one contiguous
/// run (a global average pool over 7 x 7) is folded along its rows in vectors: across output
/// rows it would gather each position at the row stride (ResNet-50's pool: 0.29 ms).
const CONTIGUOUS_ROW: usize = 16;

/// Most reduced positions of a reduction vectorised across its output rows because its loads
/// read those rows in unit steps and the reduced positions strided (a sum over the tokens of
/// a `[tokens, features]` tensor): along the reduced axis every value would be gathered one
/// at a time. MiniLM-L3's masked mean over 128 tokens of 384 features took 0.16 ms that way.
const ACROSS_ROWS: usize = 4096;

/// Whether every load of `k` steps by one element or none along the last kept axis (the
/// output's rows), and some by one.
fn rows_in_unit_steps(k: &Kernel, kept: usize) -> bool {
    let Some(last) = kept.checked_sub(1) else {
        return false;
    };
    let steps = || k.loads.iter().map(|l| l.strides[last]);
    k.domain[last] > 1 && steps().all(|s| s == 0 || s == 1) && steps().any(|s| s == 1)
}

/// Whether every load of `k` reads the reduced axes (those after `kept`) as one run of
/// consecutive elements, or as one element (a bias broadcast over them).
fn contiguous(k: &Kernel, kept: usize) -> bool {
    let rdom = &k.domain[kept..];
    k.loads.iter().all(|l| {
        let strides = &l.strides[kept..];
        is_row_major(rdom, strides) || strides.iter().all(|&s| s == 0)
    })
}

/// A short reduction: for a block of output rows, loop over the reduced positions and
/// accumulate lane by lane; the epilogue then runs on the same block.
fn small_reduction(
    k: &Kernel,
    srcs: &[Cow<[f32]>],
    op: ReduceOp,
    value: usize,
    rdims: usize,
) -> Result<Data> {
    let kept = k.domain.len() - rdims;
    let (kdims, rdom) = (&k.domain[..kept], &k.domain[kept..]);
    let rows: usize = kdims.iter().product();
    let kstrides: Vec<Vec<isize>> = k.loads.iter().map(|l| l.strides[..kept].to_vec()).collect();
    let (kd, ks) = coalesce(kdims, &kstrides);
    let kinner = inner_strides(&ks);
    // Offset of every reduced position, per load.
    let red_total: usize = rdom.iter().product();
    let mut red_offsets: Vec<Vec<isize>> = Vec::with_capacity(red_total);
    for r in 0..red_total {
        let mut off = vec![0isize; k.loads.len()];
        let mut rem = r;
        for ax in (0..rdom.len()).rev() {
            let i = (rem % rdom[ax]) as isize;
            rem /= rdom[ax];
            for (o, l) in off.iter_mut().zip(&k.loads) {
                *o += i * l.strides[kept + ax];
            }
        }
        red_offsets.push(off);
    }
    let offsets = load_offsets(&k.loads);
    let mut out = vec![0f32; rows];
    if rows == 0 {
        return Ok(store(out, k.out.dtype));
    }
    // An epilogue that stores the reduced value as it is (a max pool): the fold writes the
    // output block itself.
    let stores_reduced =
        matches!(k.epilogue.as_slice(), [e] if e.expr == Expr::Reduced && e.dtype == DType::F32);
    if stores_reduced && value == 0 {
        if let Some(p) = LanePooling::of(k, op, srcs, &red_offsets, &kd, &ks) {
            p.run(&mut out)?;
            return Ok(store(out, k.out.dtype));
        }
    }
    let walk = Walk::rows(&kd, &ks, &offsets, &kinner);
    let pooling = Pooling::of(k, op, value, srcs, &red_offsets, &kinner);
    let per_task = task_len(rows, red_total.max(1) * k.body.len() + k.epilogue.len());
    out.par_chunks_mut(per_task)
        .enumerate()
        .try_for_each(|(t, chunk)| -> Result<()> {
            let mut blk = Block::new(k.body.len());
            let mut eblk = Block::new(k.epilogue.len());
            let mut segs = Segments::default();
            let mut lanes = fold::Lanes::default();
            let mut reduced = vec![0f32; BLOCK];
            for (b, block) in chunk.chunks_mut(BLOCK).enumerate() {
                let len = block.len();
                walk.segments(t * per_task + b * BLOCK, len, &mut segs);
                if let Some(p) = &pooling {
                    if stores_reduced {
                        p.fold_block(&segs, block)?;
                        continue;
                    }
                    p.fold_block(&segs, &mut reduced[..len])?;
                } else {
                    lanes.start(op, len);
                    for roff in &red_offsets {
                        let mut f = |l: usize, dst: &mut [f32]| {
                            segs.fetch(l, &srcs[k.loads[l].arg], kinner[l], roff[l], dst)
                        };
                        blk.eval(&k.body, len, None, &mut f)?;
                        lanes.add(blk.slice(value, len));
                    }
                    lanes.finish(&mut reduced[..len]);
                }
                let mut f = |l: usize, dst: &mut [f32]| {
                    segs.fetch(l, &srcs[k.loads[l].arg], kinner[l], 0, dst)
                };
                eblk.eval_into(&k.epilogue, Some(&reduced[..len]), &mut f, block)?;
            }
            Ok(())
        })?;
    Ok(store(out, k.out.dtype))
}

fn reduction(
    k: &Kernel,
    srcs: &[Cow<[f32]>],
    op: ReduceOp,
    value: usize,
    rdims: usize,
) -> Result<Data> {
    let kept = k.domain.len() - rdims;
    let reduced: usize = k.domain[kept..].iter().product();
    let short = reduced <= SMALL_REDUCTION && !(reduced >= CONTIGUOUS_ROW && contiguous(k, kept));
    let strided = reduced <= ACROSS_ROWS && !contiguous(k, kept) && rows_in_unit_steps(k, kept);
    if short || strided {
        return small_reduction(k, srcs, op, value, rdims);
    }
    let (kdims, rdom) = (&k.domain[..kept], &k.domain[kept..]);
    let rows: usize = kdims.iter().product();
    let red_total: usize = rdom.iter().product();
    let offsets = load_offsets(&k.loads);
    // The body walks the domain as rows of the innermost (coalesced) run of reduced positions,
    // over the kept axes and the outer reduced axes; a block may span several short rows.
    let red_strides: Vec<Vec<isize>> = k.loads.iter().map(|l| l.strides[kept..].to_vec()).collect();
    let (rdims_c, rstrides) = coalesce(rdom, &red_strides);
    let router = rdims_c.len().saturating_sub(1);
    let mut outer = kdims.to_vec();
    outer.extend(&rdims_c[..router]);
    let ostrides: Vec<Vec<isize>> = k
        .loads
        .iter()
        .zip(&rstrides)
        .map(|(l, r)| [&l.strides[..kept], &r[..router]].concat())
        .collect();
    let rinner = inner_strides(&rstrides);
    let body = Walk {
        outer: &outer,
        strides: &ostrides,
        offsets: &offsets,
        inner: &rinner,
        n: rdims_c.last().copied().unwrap_or(1),
    };
    // The epilogue walks the kept domain; its loads ignore the reduced axes.
    let kstrides: Vec<Vec<isize>> = k.loads.iter().map(|l| l.strides[..kept].to_vec()).collect();
    let (kd, ks) = coalesce(kdims, &kstrides);
    let kinner = inner_strides(&ks);
    let epilogue = Walk::rows(&kd, &ks, &offsets, &kinner);
    let mut out = vec![0f32; rows];
    // Whole rows per task, sized like elementwise tasks (a LayerNorm of 128 rows of 384 is
    // three tasks, not one).
    let rows_per_task =
        (task_len(rows * red_total, k.body.len()) / red_total.max(1)).clamp(1, BLOCK);
    out.par_chunks_mut(rows_per_task)
        .enumerate()
        .try_for_each(|(t, chunk)| -> Result<()> {
            let mut blk = Block::new(k.body.len());
            let mut eblk = Block::new(k.epilogue.len());
            let mut segs = Segments::default();
            let row0 = t * rows_per_task;
            let mut acc = vec![fold::init(op); chunk.len()];
            let (p_start, p_end) = (row0 * red_total, (row0 + chunk.len()) * red_total);
            for p0 in (p_start..p_end).step_by(BLOCK) {
                let len = BLOCK.min(p_end - p0);
                body.segments(p0, len, &mut segs);
                let mut f = |l: usize, dst: &mut [f32]| {
                    segs.fetch(l, &srcs[k.loads[l].arg], rinner[l], 0, dst)
                };
                blk.eval(&k.body, len, None, &mut f)?;
                let v = blk.slice(value, len);
                crate::simd::vectorized(
                    #[inline(always)]
                    || {
                        for (start, n) in segs.parts() {
                            let a = &mut acc[(p0 + start) / red_total - row0];
                            *a = fold::row_any(op, *a, &v[start..start + n]);
                        }
                    },
                );
            }
            let reduced: Vec<f32> = acc.iter().map(|&a| a as f32).collect();
            for (b, block) in chunk.chunks_mut(BLOCK).enumerate() {
                let b0 = b * BLOCK;
                epilogue.segments(row0 + b0, block.len(), &mut segs);
                let mut f = |l: usize, dst: &mut [f32]| {
                    segs.fetch(l, &srcs[k.loads[l].arg], kinner[l], 0, dst)
                };
                let reduced = Some(&reduced[b0..b0 + block.len()]);
                eblk.eval_into(&k.epilogue, reduced, &mut f, block)?;
            }
            Ok(())
        })?;
    Ok(store(out, k.out.dtype))
}

/// Applies the elementwise kernel `k` in place to `block`, the output positions
/// `start..start + block.len()` of its domain, where argument 0 is `block` itself (read with
/// the identity map) and arguments 1.. are `extra`. This is a convolution's epilogue.
pub fn apply_in_place(
    k: &Kernel,
    extra: &[&Tensor],
    start: usize,
    block: &mut [f32],
) -> Result<()> {
    if k.reduce.is_some() {
        return Err(Error::backend(format!(
            "kernel {}: an epilogue cannot reduce",
            k.name
        )));
    }
    let mut srcs: Vec<Cow<[f32]>> = vec![Cow::Borrowed(&[][..])];
    srcs.extend(f32_args(extra)?);
    let strides: Vec<Vec<isize>> = k.loads.iter().map(|l| l.strides.clone()).collect();
    let (dims, strides) = coalesce(&k.domain, &strides);
    let n = dims.last().copied().unwrap_or(1);
    let outer = &dims[..dims.len().saturating_sub(1)];
    let inner = inner_strides(&strides);
    let offsets = load_offsets(&k.loads);
    // Split big blocks over threads; each piece is independent.
    let piece = crate::par::MIN_PAR.max(n);
    block
        .par_chunks_mut(piece)
        .enumerate()
        .try_for_each(|(pi, part)| -> Result<()> {
            let mut blk = Block::new(k.body.len());
            let mut bases = vec![0isize; k.loads.len()];
            let mut snap = [0f32; BLOCK];
            let first = start + pi * piece;
            let end = first + part.len();
            let mut f = first;
            while f < end {
                let (row, j) = (f / n, f % n);
                let seg = (n - j).min(end - f);
                row_bases(row, outer, &strides, &offsets, &mut bases);
                for b0 in (0..seg).step_by(BLOCK) {
                    let len = BLOCK.min(seg - b0);
                    let local = f - first + b0;
                    snap[..len].copy_from_slice(&part[local..local + len]);
                    let mut load = |l: usize, dst: &mut [f32]| {
                        let ld = &k.loads[l];
                        if ld.arg == 0 {
                            dst.copy_from_slice(&snap[..dst.len()]);
                            Val::Buf
                        } else {
                            fetch(
                                &srcs[ld.arg],
                                bases[l] + (j + b0) as isize * inner[l],
                                inner[l],
                                dst,
                            )
                        }
                    };
                    blk.eval_into(&k.body, None, &mut load, &mut part[local..local + len])?;
                }
                f += seg;
            }
            Ok(())
        })
}
