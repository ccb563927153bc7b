//! Indexing: gathers, scatters, one-hot and the data-dependent host ops (NonZero, Unique, TopK).
use super::movement::iota;
use super::Registry;
use crate::builder::{norm_axis, opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::prim::{BinaryOp, HostOp, Prim, ScatterReduction};
use kuaxin_core::{bail_invalid, DType, Error, Result, Tensor};

/// Indices as i64 with negative ones counted from the end: `dims` is a scalar (one axis) or a
/// vector matching the indices' last axis (GatherND/ScatterND tuples).
fn wrap_indices(cx: &mut Cx, idx: &TVal, dims: &[usize], scalar: bool) -> Result<TVal> {
    if !idx.dtype().is_int() {
        bail_invalid!("indices must be integers, got {}", idx.ty);
    }
    let idx = cx.cast(idx, DType::I64)?;
    let d: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    let dims = if scalar {
        TVal::constant(Tensor::scalar(d[0]))
    } else {
        TVal::constant(Tensor::from_vec(vec![d.len()], d)?)
    };
    let zero = cx.scalar(0.0, DType::I64);
    let neg = cx.binary(BinaryOp::Lt, &idx, &zero)?;
    let shifted = cx.add(&idx, &dims)?;
    cx.where_(&neg, &shifted, &idx)
}

fn reduction(n: &Node) -> Result<ScatterReduction> {
    Ok(match n.string_or("reduction", "none")?.as_str() {
        "none" => ScatterReduction::None,
        "add" => ScatterReduction::Add,
        "mul" => ScatterReduction::Mul,
        "max" => ScatterReduction::Max,
        "min" => ScatterReduction::Min,
        r => bail_invalid!("unknown scatter reduction '{r}'"),
    })
}

fn gather(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    let axis = norm_axis(n.int_or("axis", 0)?, x.rank())?;
    let idx = wrap_indices(cx, tensor_arg(ins, 1, "indices")?, &[x.shape()[axis]], true)?;
    Ok(vec![tv(cx.emit1(Prim::Gather { axis }, &[x, &idx])?)])
}

fn gather_elements(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    let axis = norm_axis(n.int_or("axis", 0)?, x.rank())?;
    let idx = wrap_indices(cx, tensor_arg(ins, 1, "indices")?, &[x.shape()[axis]], true)?;
    Ok(vec![tv(
        cx.emit1(Prim::GatherElements { axis }, &[x, &idx])?
    )])
}

/// The dims an ND index tuple addresses: `data[first..first + last]` where last is the tuple size.
fn nd_dims(x: &TVal, idx: &TVal, first: usize) -> Result<Vec<usize>> {
    let last = *idx
        .shape()
        .last()
        .ok_or_else(|| Error::invalid("ND indices must have rank >= 1"))?;
    match x.shape().get(first..first + last) {
        Some(d) => Ok(d.to_vec()),
        None => bail_invalid!("ND indices {} too deep for {}", idx.ty, x.ty),
    }
}

fn gather_nd(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    let idx = tensor_arg(ins, 1, "indices")?;
    let b = usize::try_from(n.int_or("batch_dims", 0)?)
        .map_err(|_| Error::invalid("GatherND: negative batch_dims"))?;
    let dims = nd_dims(x, idx, b)?;
    let idx = wrap_indices(cx, idx, &dims, false)?;
    Ok(vec![tv(
        cx.emit1(Prim::GatherNd { batch_dims: b }, &[x, &idx])?
    )])
}

fn scatter_elements(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    let u = tensor_arg(ins, 2, "updates")?;
    let axis = norm_axis(n.int_or("axis", 0)?, x.rank())?;
    let idx = wrap_indices(cx, tensor_arg(ins, 1, "indices")?, &[x.shape()[axis]], true)?;
    let prim = Prim::ScatterElements {
        axis,
        reduction: reduction(n)?,
    };
    Ok(vec![tv(cx.emit1(prim, &[x, &idx, u])?)])
}

fn scatter_nd(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    let idx = tensor_arg(ins, 1, "indices")?;
    let u = tensor_arg(ins, 2, "updates")?;
    let dims = nd_dims(x, idx, 0)?;
    let idx = wrap_indices(cx, idx, &dims, false)?;
    Ok(vec![tv(cx.emit1(
        Prim::ScatterNd {
            reduction: reduction(n)?,
        },
        &[x, &idx, u],
    )?)])
}

/// TensorScatter: writes `update` into the cache along `axis` at per-batch offsets (linear or
/// circular), as one ScatterElements with computed indices.
fn tensor_scatter(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let cache = tensor_arg(ins, 0, "past_cache")?;
    let upd = tensor_arg(ins, 1, "update")?;
    let r = cache.rank();
    let axis = norm_axis(n.int_or("axis", -2)?, r)?;
    let fits = upd.rank() == r
        && (0..r).all(|i| {
            if i == axis {
                upd.shape()[i] <= cache.shape()[i]
            } else {
                upd.shape()[i] == cache.shape()[i]
            }
        });
    if axis == 0 || !fits {
        bail_invalid!(
            "TensorScatter: update {} does not fit cache {} on axis {axis}",
            upd.ty,
            cache.ty
        );
    }
    let circular = match n.string_or("mode", "linear")?.as_str() {
        "linear" => false,
        "circular" => true,
        m => bail_invalid!("TensorScatter: unknown mode '{m}'"),
    };
    let batch = cache.shape()[0];
    let mut wshape = vec![1; r];
    wshape[0] = batch;
    let w = match opt_tensor(ins, 2)? {
        Some(w) if w.shape() == [batch] => cx.cast(w, DType::I64)?,
        Some(w) => bail_invalid!(
            "TensorScatter: write_indices {} should have shape [{batch}]",
            w.ty
        ),
        None => TVal::constant(Tensor::zeros(DType::I64, vec![batch])),
    };
    let w = cx.reshape(&w, &wshape)?;
    let s = iota(upd.shape()[axis], axis, r)?;
    let mut idx = cx.add(&w, &s)?;
    if circular {
        idx = cx.binary_scalar(BinaryOp::Mod, &idx, cache.shape()[axis] as f64)?;
    }
    let idx = cx.expand(&idx, upd.shape())?;
    let prim = Prim::ScatterElements {
        axis,
        reduction: ScatterReduction::None,
    };
    Ok(vec![tv(cx.emit1(prim, &[cache, &idx, upd])?)])
}

fn one_hot(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let idx = tensor_arg(ins, 0, "indices")?;
    let depth = tensor_arg(ins, 1, "depth")?;
    let values = tensor_arg(ins, 2, "values")?;
    let depth = *cx
        .floats(depth)?
        .first()
        .ok_or_else(|| Error::invalid("OneHot: empty depth"))?;
    if !(depth >= 1.0 && depth <= (1u64 << 31) as f64) || values.shape() != [2] {
        bail_invalid!("OneHot: depth {depth} / values {} invalid", values.ty);
    }
    let depth = depth as usize;
    let axis = norm_axis(n.int_or("axis", -1)?, idx.rank() + 1)?;
    let idx = cx.cast(idx, DType::I64)?;
    let idx = wrap_indices(cx, &idx, &[depth], true)?;
    let idx = cx.unsqueeze(&idx, &[axis as i64])?;
    let classes = iota(depth, axis, idx.rank())?;
    let hit = cx.binary(BinaryOp::Eq, &idx, &classes)?;
    let off = cx.slice_axis(values, 0, 0, 1, 1)?;
    let on = cx.slice_axis(values, 0, 1, 1, 1)?;
    let (off, on) = (cx.reshape(&off, &[])?, cx.reshape(&on, &[])?);
    Ok(vec![tv(cx.where_(&hit, &on, &off)?)])
}

fn host(cx: &mut Cx, op: HostOp, inputs: &[&TVal]) -> Result<Vec<Value>> {
    Ok(cx
        .emit(Prim::Host(op), inputs)?
        .into_iter()
        .map(tv)
        .collect())
}

fn non_zero(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    host(cx, HostOp::NonZero, &[tensor_arg(ins, 0, "X")?])
}

/// Compress: the positions where the condition holds (NonZero on the host), then a Gather.
fn compress(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let cond = tensor_arg(ins, 1, "condition")?;
    if cond.rank() != 1 {
        bail_invalid!("Compress: condition must be 1-d, got {}", cond.ty);
    }
    let (x, axis) = match n.attr_int("axis")? {
        Some(a) => (x.clone(), norm_axis(a, x.rank())?),
        None => (cx.reshape(x, &[x.numel()])?, 0),
    };
    if cond.shape()[0] > x.shape()[axis] {
        bail_invalid!(
            "Compress: condition {} longer than axis {axis} of {}",
            cond.ty,
            x.ty
        );
    }
    let cond = cx.cast(cond, DType::Bool)?;
    let pos = cx.emit1(Prim::Host(HostOp::NonZero), &[&cond])?;
    let pos = cx.reshape(&pos, &[pos.numel()])?;
    Ok(vec![tv(cx.emit1(Prim::Gather { axis }, &[&x, &pos])?)])
}

fn unique(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let axis = match n.attr_int("axis")? {
        Some(a) => Some(norm_axis(a, x.rank())?),
        None => None,
    };
    let sorted = n.int_or("sorted", 1)? != 0;
    host(cx, HostOp::Unique { axis, sorted }, &[x])
}

fn top_k(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let axis = norm_axis(n.int_or("axis", -1)?, x.rank())?;
    let k = match opt_tensor(ins, 1)? {
        Some(t) => *cx
            .ints(t)?
            .first()
            .ok_or_else(|| Error::invalid("TopK: empty K"))?,
        None => n
            .attr_int("k")?
            .ok_or_else(|| Error::invalid("TopK needs k"))?,
    };
    if k < 0 || k as u64 > x.shape()[axis] as u64 {
        bail_invalid!("TopK: k {k} out of range for axis {axis} of {}", x.ty);
    }
    let op = HostOp::TopK {
        k: k as usize,
        axis,
        largest: n.int_or("largest", 1)? != 0,
        sorted: n.int_or("sorted", 1)? != 0,
    };
    host(cx, op, &[x])
}

pub fn register(r: &mut Registry) {
    r.insert("Gather", gather);
    r.insert("GatherElements", gather_elements);
    r.insert("GatherND", gather_nd);
    r.insert("Scatter", scatter_elements);
    r.insert("ScatterElements", scatter_elements);
    r.insert("ScatterND", scatter_nd);
    r.insert("TensorScatter", tensor_scatter);
    r.insert("OneHot", one_hot);
    r.insert("NonZero", non_zero);
    r.insert("Compress", compress);
    r.insert("Unique", unique);
    r.insert("TopK", top_k);
}
