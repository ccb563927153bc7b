//! Fused kernels (`Prim::Fused`) on the CPU: a blocked evaluator of the kernel IR.
//!
//! The domain is walked row by row (the innermost, coalesced axis), in blocks of `BLOCK`
//! elements; each op of the expression DAG runs over a whole block before the next, so the
//! loops vectorise and every intermediate stays in L1. Rows are spread over threads. Values
//! are f32 (bools as 0/1), with the same scalar functions as the unfused primitives.
use crate::fold;
use crate::scalar::Scalar;
use crate::walk::{fetch, inner_strides, load_offsets, row_bases, Segments, Walk};
use kuaxin_core::kernel::{Expr, Kernel, Load, Op};
use kuaxin_core::prim::{BinaryOp, ReduceOp, UnaryOp};
use kuaxin_core::{DType, Data, Error, Result, Tensor};
use rayon::prelude::*;
use std::borrow::Cow;

const BLOCK: usize = 256;

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

fn bool_f32(b: bool) -> f32 {
    b as u8 as f32
}

/// Evaluates `ops` over a block of `n` elements; `load(i, dst)` fills load `i`'s values.
/// Dispatches at run time to a copy compiled for AVX2 where the CPU has it (the same code and
/// the same results: Rust never contracts `a * b + c` into an FMA on its own).
fn eval_block(
    ops: &[Op],
    n: usize,
    vals: &mut [Vec<f32>],
    reduced: Option<&[f32]>,
    load: &mut dyn FnMut(usize, &mut [f32]),
) -> Result<()> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, the only feature `eval_block_avx2` is compiled for.
        return unsafe { eval_block_avx2(ops, n, vals, reduced, load) };
    }
    eval_block_any(ops, n, vals, reduced, load)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn eval_block_avx2(
    ops: &[Op],
    n: usize,
    vals: &mut [Vec<f32>],
    reduced: Option<&[f32]>,
    load: &mut dyn FnMut(usize, &mut [f32]),
) -> Result<()> {
    eval_block_any(ops, n, vals, reduced, load)
}

#[inline(always)]
fn eval_block_any(
    ops: &[Op],
    n: usize,
    vals: &mut [Vec<f32>],
    reduced: Option<&[f32]>,
    load: &mut dyn FnMut(usize, &mut [f32]),
) -> Result<()> {
    for (i, op) in ops.iter().enumerate() {
        let (before, rest) = vals.split_at_mut(i);
        let out = &mut rest[0][..n];
        let arg = |k: usize| &before[k][..n];
        match &op.expr {
            Expr::Load(l) => load(*l, out),
            Expr::Const(c) => out.fill(*c as f32),
            Expr::Reduced => out.copy_from_slice(
                &reduced.ok_or_else(|| Error::backend("reduced value outside the epilogue"))?[..n],
            ),
            Expr::Unary(u, a) => {
                let x = arg(*a);
                float_unary_op!(*u, f32, f => for j in 0..n { out[j] = f(x[j]) }, else
                float_test_op!(*u, f32, f => for j in 0..n { out[j] = bool_f32(f(x[j])) }, else
                if *u == UnaryOp::Not {
                    for j in 0..n { out[j] = bool_f32(x[j] == 0.0) }
                } else {
                    return Err(Error::unsupported(format!("fused {u:?}")));
                }));
            }
            Expr::Binary(b, x, y) => {
                let (x, y) = (arg(*x), arg(*y));
                let logical = |f: fn(bool, bool) -> bool, out: &mut [f32]| {
                    out.iter_mut()
                        .zip(x.iter().zip(y))
                        .for_each(|(o, (&a, &b))| *o = bool_f32(f(a != 0.0, b != 0.0)))
                };
                float_binary_op!(*b, f32, f => for j in 0..n { out[j] = f(x[j], y[j]) }, else
                float_cmp_op!(*b, f32, f => for j in 0..n { out[j] = bool_f32(f(x[j], y[j])) }, else
                match b {
                    BinaryOp::Max => for j in 0..n { out[j] = x[j].max_nan(y[j]) },
                    BinaryOp::Min => for j in 0..n { out[j] = x[j].min_nan(y[j]) },
                    BinaryOp::And => logical(|a, b| a & b, out),
                    BinaryOp::Or => logical(|a, b| a | b, out),
                    BinaryOp::Xor => logical(|a, b| a ^ b, out),
                    _ => return Err(Error::unsupported(format!("fused {b:?}"))),
                }));
            }
            Expr::Where(c, x, y) => {
                let (c, x, y) = (arg(*c), arg(*x), arg(*y));
                for j in 0..n {
                    out[j] = if c[j] != 0.0 { x[j] } else { y[j] };
                }
            }
            Expr::Cast(a) => {
                let x = arg(*a);
                if op.dtype == DType::Bool {
                    out.iter_mut()
                        .zip(x)
                        .for_each(|(o, &v)| *o = bool_f32(v != 0.0));
                } else {
                    out.copy_from_slice(x);
                }
            }
        }
    }
    Ok(())
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

fn load_fetcher<'a>(
    loads: &'a [Load],
    srcs: &'a [Cow<'a, [f32]>],
    bases: &'a [isize],
    inner: &'a [isize],
    j0: usize,
) -> impl FnMut(usize, &mut [f32]) + 'a {
    move |l, dst| {
        let ld = &loads[l];
        fetch(
            &srcs[ld.arg],
            bases[l] + j0 as isize * inner[l],
            inner[l],
            dst,
        )
    }
}

/// Positions per parallel task (a multiple of `BLOCK`) for `total` positions costing about
/// `ops` expression ops each: four tasks per thread when there is enough work, none smaller
/// than `MIN_PAR` ops of work (a rayon task costs a few microseconds), none larger than
/// `MIN_PAR` positions.
fn task_len(total: usize, ops: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let smallest = crate::par::MIN_PAR / ops.max(1);
    let even = total.div_ceil(4 * threads);
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
    let walk = Walk {
        outer: &dims[..dims.len().saturating_sub(1)],
        strides: &strides,
        offsets: &offsets,
        inner: &inner,
        n: dims.last().copied().unwrap_or(1),
    };
    let per_task = task_len(total, k.body.len());
    let stored = k.stored();
    out.par_chunks_mut(per_task)
        .enumerate()
        .try_for_each(|(t, chunk)| -> Result<()> {
            let mut vals = vec![vec![0f32; BLOCK]; k.body.len()];
            let mut segs = Segments::default();
            for (b, block) in chunk.chunks_mut(BLOCK).enumerate() {
                let len = block.len();
                walk.segments(t * per_task + b * BLOCK, len, &mut segs);
                let mut f = |l: usize, dst: &mut [f32]| {
                    segs.fetch(l, &srcs[k.loads[l].arg], inner[l], 0, dst)
                };
                eval_block(&k.body, len, &mut vals, None, &mut f)?;
                block.copy_from_slice(&vals[stored][..len]);
            }
            Ok(())
        })?;
    Ok(store(out, k.out.dtype))
}

/// Reductions shorter than this are vectorised across output rows instead of along the
/// reduced axes (pooling windows, small groups).
const SMALL_REDUCTION: usize = 64;

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
    let walk = Walk {
        outer: &kd[..kd.len().saturating_sub(1)],
        strides: &ks,
        offsets: &offsets,
        inner: &kinner,
        n: kd.last().copied().unwrap_or(1),
    };
    let per_task = task_len(rows, red_total.max(1) * k.body.len() + k.epilogue.len());
    let stored = k.stored();
    out.par_chunks_mut(per_task)
        .enumerate()
        .try_for_each(|(t, chunk)| -> Result<()> {
            let mut vals = vec![vec![0f32; BLOCK]; k.body.len()];
            let mut evals = vec![vec![0f32; BLOCK]; k.epilogue.len()];
            let mut segs = Segments::default();
            let mut lanes = fold::Lanes::default();
            let mut reduced = vec![0f32; BLOCK];
            for (b, block) in chunk.chunks_mut(BLOCK).enumerate() {
                let len = block.len();
                walk.segments(t * per_task + b * BLOCK, len, &mut segs);
                lanes.start(op, len);
                for roff in &red_offsets {
                    let mut f = |l: usize, dst: &mut [f32]| {
                        segs.fetch(l, &srcs[k.loads[l].arg], kinner[l], roff[l], dst)
                    };
                    eval_block(&k.body, len, &mut vals, None, &mut f)?;
                    lanes.add(op, &vals[value][..len]);
                }
                lanes.finish(&mut reduced[..len]);
                let mut f = |l: usize, dst: &mut [f32]| {
                    segs.fetch(l, &srcs[k.loads[l].arg], kinner[l], 0, dst)
                };
                eval_block(&k.epilogue, len, &mut evals, Some(&reduced[..len]), &mut f)?;
                block.copy_from_slice(&evals[stored][..len]);
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
    if k.domain[kept..].iter().product::<usize>() <= SMALL_REDUCTION {
        return small_reduction(k, srcs, op, value, rdims);
    }
    let (kdims, rdom) = (&k.domain[..kept], &k.domain[kept..]);
    let rows: usize = kdims.iter().product();
    let red_strides: Vec<Vec<isize>> = k.loads.iter().map(|l| l.strides[kept..].to_vec()).collect();
    let (rdims_c, rstrides) = coalesce(rdom, &red_strides);
    let rn = rdims_c.last().copied().unwrap_or(1);
    let router = rdims_c[..rdims_c.len().saturating_sub(1)].to_vec();
    let router_rows: usize = router.iter().product();
    let rinner = inner_strides(&rstrides);
    let kstrides: Vec<Vec<isize>> = k.loads.iter().map(|l| l.strides[..kept].to_vec()).collect();
    let offsets = load_offsets(&k.loads);
    let red_total: usize = rdom.iter().product();
    let mut out = vec![0f32; rows];
    let work_per_row = red_total.max(1);
    let rows_per_task = (crate::par::MIN_PAR / work_per_row).clamp(1, BLOCK);
    let stored = k.stored();
    out.par_chunks_mut(rows_per_task)
        .enumerate()
        .try_for_each(|(t, chunk)| -> Result<()> {
            let mut vals = vec![vec![0f32; BLOCK]; k.body.len()];
            let mut evals = vec![vec![0f32; BLOCK]; k.epilogue.len()];
            let mut kbases = vec![0isize; k.loads.len()];
            let mut bases = vec![0isize; k.loads.len()];
            let mut reduced = vec![0f32; chunk.len()];
            let mut row_offsets: Vec<Vec<isize>> = Vec::with_capacity(chunk.len());
            for (ri, r) in reduced.iter_mut().enumerate() {
                row_bases(
                    t * rows_per_task + ri,
                    kdims,
                    &kstrides,
                    &offsets,
                    &mut kbases,
                );
                row_offsets.push(kbases.clone());
                let mut acc = fold::init(op);
                for orow in 0..router_rows.max(1) {
                    row_bases(orow, &router, &rstrides, &kbases, &mut bases);
                    for j0 in (0..rn).step_by(BLOCK) {
                        let len = BLOCK.min(rn - j0);
                        let mut f = load_fetcher(&k.loads, srcs, &bases, &rinner, j0);
                        eval_block(&k.body, len, &mut vals, None, &mut f)?;
                        acc = fold::row(op, acc, &vals[value][..len]);
                    }
                }
                *r = acc as f32;
            }
            // The epilogue, one block of rows at a time; its loads ignore the reduced axes.
            for b0 in (0..chunk.len()).step_by(BLOCK) {
                let len = BLOCK.min(chunk.len() - b0);
                let mut f = |l: usize, dst: &mut [f32]| {
                    let ld = &k.loads[l];
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d = srcs[ld.arg][row_offsets[b0 + j][l] as usize];
                    }
                };
                eval_block(
                    &k.epilogue,
                    len,
                    &mut evals,
                    Some(&reduced[b0..b0 + len]),
                    &mut f,
                )?;
                chunk[b0..b0 + len].copy_from_slice(&evals[stored][..len]);
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
    let stored = k.stored();
    // Split big blocks over threads; each piece is independent.
    let piece = crate::par::MIN_PAR.max(n);
    block
        .par_chunks_mut(piece)
        .enumerate()
        .try_for_each(|(pi, part)| -> Result<()> {
            let mut vals = vec![vec![0f32; BLOCK]; k.body.len()];
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
                        } else {
                            fetch(
                                &srcs[ld.arg],
                                bases[l] + (j + b0) as isize * inner[l],
                                inner[l],
                                dst,
                            );
                        }
                    };
                    eval_block(&k.body, len, &mut vals, None, &mut load)?;
                    part[local..local + len].copy_from_slice(&vals[stored][..len]);
                }
                f += seg;
            }
            Ok(())
        })
}
