//! `Prim::Reduce`: Sum / Prod / Max / Min over a set of axes, keeping them as size-1 dims.
//!
//! Float sums and products accumulate in f64 and round once; integers wrap in their own type;
//! bool sums are `or`, products `and`. Max/Min propagate NaN. Empty reductions give the
//! identity (0, 1, -inf / MIN, +inf / MAX).
use crate::par;
use crate::scalar::Scalar;
use kuaxin_core::prim::ReduceOp;
use kuaxin_core::{Data, Result};
use rayon::prelude::*;

pub fn reduce(op: ReduceOp, x: &Data, shape: &[usize], axes: &[usize]) -> Result<Data> {
    let plan = Plan::new(shape, axes);
    Ok(dispatch1!(x, v, any => reduce_typed(op, v, &plan)))
}

fn reduce_typed<T: Scalar>(op: ReduceOp, v: &[T], plan: &Plan) -> Data {
    let out = match op {
        ReduceOp::Sum => reduce_with(v, plan, <T::Acc as Scalar>::ZERO, Scalar::add),
        ReduceOp::Prod => reduce_with(v, plan, <T::Acc as Scalar>::ONE, Scalar::mul),
        ReduceOp::Max => reduce_with(v, plan, T::LOWEST.to_acc(), Scalar::max_nan),
        ReduceOp::Min => reduce_with(v, plan, T::HIGHEST.to_acc(), Scalar::min_nan),
    };
    T::wrap(out)
}

/// The input's dims with size-1 dims dropped and neighbours of the same kind (reduced or
/// kept) merged, split into what the loops need.
struct Plan {
    numel: usize,
    out_len: usize,
    /// Kept dims (size, input stride) outside the innermost dim, in order.
    kept: Vec<(usize, usize)>,
    /// Reduced dims (size, input stride) outside the innermost dim.
    red: Vec<(usize, usize)>,
    /// Size of the innermost (contiguous) dim.
    inner: usize,
    inner_reduced: bool,
}

impl Plan {
    fn new(shape: &[usize], axes: &[usize]) -> Plan {
        let numel: usize = shape.iter().product();
        let out_len: usize = shape
            .iter()
            .enumerate()
            .filter(|(d, _)| !axes.contains(d))
            .map(|(_, &n)| n)
            .product();
        let mut dims: Vec<(usize, bool)> = vec![];
        for (d, &n) in shape.iter().enumerate() {
            if n == 1 {
                continue;
            }
            let r = axes.contains(&d);
            match dims.last_mut() {
                Some((m, lr)) if *lr == r => *m *= n,
                _ => dims.push((n, r)),
            }
        }
        let mut strides = vec![1usize; dims.len()];
        for i in (0..dims.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * dims[i + 1].0;
        }
        let (inner, inner_reduced) = dims.last().copied().unwrap_or((1, false));
        let outer = dims.len().saturating_sub(1);
        let pick = |want: bool| -> Vec<(usize, usize)> {
            (0..outer)
                .filter(|&i| dims[i].1 == want)
                .map(|i| (dims[i].0, strides[i]))
                .collect()
        };
        Plan {
            numel,
            out_len,
            kept: pick(false),
            red: pick(true),
            inner,
            inner_reduced,
        }
    }
}

/// Input offset of the `o`-th combination of `dims` (row-major).
fn offset_of(mut o: usize, dims: &[(usize, usize)]) -> usize {
    let mut off = 0;
    for &(n, s) in dims.iter().rev() {
        off += (o % n) * s;
        o /= n;
    }
    off
}

/// Calls `f` with the input offset of every combination of `dims` (row-major).
fn for_each_offset(dims: &[(usize, usize)], mut f: impl FnMut(usize)) {
    let mut idx = vec![0usize; dims.len()];
    let mut off = 0usize;
    loop {
        f(off);
        let mut d = dims.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            off += dims[d].1;
            if idx[d] < dims[d].0 {
                break;
            }
            off -= dims[d].1 * idx[d];
            idx[d] = 0;
        }
    }
}

/// Folds a contiguous run into 8 independent accumulators (so the adds pipeline and
/// vectorize), then combines them.
#[inline]
fn fold_run<T, F>(v: &[T], init: T::Acc, comb: &F) -> T::Acc
where
    T: Scalar,
    F: Fn(T::Acc, T::Acc) -> T::Acc,
{
    const LANES: usize = 8;
    let mut lanes = [init; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (l, &x) in lanes.iter_mut().zip(c) {
            *l = comb(*l, x.to_acc());
        }
    }
    let acc = rest.iter().fold(init, |a, &x| comb(a, x.to_acc()));
    lanes.iter().fold(acc, |a, &l| comb(a, l))
}

fn reduce_with<T, F>(v: &[T], p: &Plan, init: T::Acc, comb: F) -> Vec<T>
where
    T: Scalar,
    F: Fn(T::Acc, T::Acc) -> T::Acc + Sync + Send,
{
    if p.numel == 0 {
        return vec![T::from_acc(init); p.out_len];
    }
    if !p.inner_reduced && p.red.is_empty() {
        // Nothing of size > 1 is reduced.
        return v
            .iter()
            .map(|&x| T::from_acc(comb(init, x.to_acc())))
            .collect();
    }
    let mut out = vec![T::ZERO; p.out_len];
    let work = p.numel / p.out_len.max(1);
    if p.inner_reduced {
        let r = p.inner;
        if p.kept.is_empty() && p.red.is_empty() {
            // Everything reduces over one contiguous run: split it across threads.
            let acc = if v.len() >= par::MIN_PAR && rayon::current_num_threads() > 1 {
                v.par_chunks(par::MIN_PAR)
                    .map(|c| fold_run(c, init, &comb))
                    .reduce(|| init, &comb)
            } else {
                fold_run(v, init, &comb)
            };
            out[0] = T::from_acc(acc);
            return out;
        }
        par::for_chunks(&mut out, 1, work, |o, chunk| {
            let base = offset_of(o, &p.kept);
            let mut acc = init;
            for_each_offset(&p.red, |off| {
                let s = base + off;
                acc = comb(acc, fold_run(&v[s..s + r], init, &comb));
            });
            chunk[0] = T::from_acc(acc);
        });
    } else {
        let k = p.inner;
        par::for_chunks(&mut out, k, work * k, |o, chunk| {
            let base = offset_of(o, &p.kept);
            let mut acc = vec![init; k];
            for_each_offset(&p.red, |off| {
                let s = base + off;
                for (a, &x) in acc.iter_mut().zip(&v[s..s + k]) {
                    *a = comb(*a, x.to_acc());
                }
            });
            for (c, a) in chunk.iter_mut().zip(acc) {
                *c = T::from_acc(a);
            }
        });
    }
    out
}
