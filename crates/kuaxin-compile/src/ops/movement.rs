//! Data movement: reshapes, transposes, slices, concatenation, padding and friends. Almost all
//! of them are views; the rest are one PadConstant, Concat, Gather or Scatter primitive, with
//! any index tables computed on the host from shapes and attributes (constants).
use super::misc::shape_arg;
use super::Registry;
use crate::builder::{broadcast_shapes, norm_axis, opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::prim::{BinaryOp, Prim, ScatterReduction, MAX_ELEMENTS};
use kuaxin_core::tensor::{checked_numel, contiguous_strides};
use kuaxin_core::{bail_invalid, bail_unsupported, DType, Error, Result, Tensor};

/// Largest host-computed index table we build (elements).
const MAX_TABLE: usize = 1 << 31;

// ---- shared helpers ----

/// An int list given as input `i` (newer opsets) or as attribute `name` (older ones).
pub(crate) fn ints_input_or_attr(
    cx: &mut Cx,
    n: &Node,
    ins: &[Option<Value>],
    i: usize,
    name: &str,
) -> Result<Option<Vec<i64>>> {
    match opt_tensor(ins, i)? {
        Some(t) => Ok(Some(cx.ints(t)?)),
        None => n.attr_ints(name),
    }
}

/// Resolves each axis against `rank`, keeping the given order (pads and shapes pair with it).
pub(crate) fn axes_in_order(axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let v: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<Result<_>>()?;
    for (i, a) in v.iter().enumerate() {
        if v[..i].contains(a) {
            bail_invalid!("repeated axis in {axes:?}");
        }
    }
    Ok(v)
}

/// An i64 constant `0..n` laid along `axis` of a rank-`rank` tensor (other dims 1).
pub(crate) fn iota(n: usize, axis: usize, rank: usize) -> Result<TVal> {
    let mut shape = vec![1; rank];
    shape[axis] = n;
    Ok(TVal::constant(Tensor::from_vec(
        shape,
        (0..n as i64).collect(),
    )?))
}

/// Rejects shapes whose element count overflows or exceeds what kernels allocate.
fn check_shape(shape: &[usize]) -> Result<()> {
    match checked_numel(shape) {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(Error::invalid(format!("shape {shape:?} is too large"))),
    }
}

/// One strided view taking `(start, count, step)` along every axis (start in range when count > 0).
pub(crate) fn strided_view(
    cx: &mut Cx,
    x: &TVal,
    ranges: &[(usize, usize, isize)],
) -> Result<TVal> {
    if ranges.len() != x.rank() {
        bail_invalid!("{} ranges for {}", ranges.len(), x.ty);
    }
    let xs = contiguous_strides(x.shape());
    let shape: Vec<usize> = ranges.iter().map(|r| r.1).collect();
    let strides = xs
        .iter()
        .zip(ranges)
        .map(|(&s, r)| if r.1 > 1 { s * r.2 } else { s })
        .collect();
    let offset = if shape.contains(&0) {
        0
    } else {
        ranges.iter().zip(&xs).map(|(r, &s)| r.0 * s as usize).sum()
    };
    cx.view(x, shape, strides, offset)
}

/// Reshape to `a`, permute by `perm`, reshape to `b` (the DepthToSpace family).
fn shuffle(cx: &mut Cx, x: &TVal, a: &[usize], perm: &[usize], b: &[usize]) -> Result<TVal> {
    let v = cx.reshape(x, a)?;
    let v = cx.permute(&v, perm)?;
    cx.reshape(&v, b)
}

fn zero_scalar(cx: &Cx, dtype: DType) -> TVal {
    cx.scalar(0.0, dtype)
}

fn pad_constant(cx: &mut Cx, x: &TVal, pads: Vec<(usize, usize)>, value: &TVal) -> Result<TVal> {
    if pads.iter().all(|&p| p == (0, 0)) {
        return Ok(x.clone());
    }
    check_shape(
        &x.shape()
            .iter()
            .zip(&pads)
            .map(|(&d, &(b, a))| d.saturating_add(b).saturating_add(a))
            .collect::<Vec<_>>(),
    )?;
    cx.emit1(Prim::PadConstant { pads }, &[x, value])
}

// ---- reshapes ----

/// The output dims of Reshape: 0 copies the input dim (unless `allowzero`), -1 is inferred.
fn resolve_reshape(input: &[usize], spec: &[i64], allowzero: bool) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| {
                Error::invalid(format!("Reshape: 0 at {i} copies a dim the input lacks"))
            })?),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            d if d >= 0 => out.push(d as usize),
            _ => bail_invalid!("Reshape: invalid shape {spec:?}"),
        }
    }
    let total = checked_numel(input).unwrap_or(0);
    if let Some(i) = infer {
        let known = checked_numel(&out)
            .ok_or_else(|| Error::invalid(format!("Reshape: shape {spec:?} overflows")))?;
        if known == 0 || !total.is_multiple_of(known) {
            bail_invalid!("Reshape: cannot infer -1 in {spec:?} for input {input:?}");
        }
        out[i] = total / known;
    }
    if checked_numel(&out) != Some(total) {
        bail_invalid!("Reshape: {input:?} cannot become {spec:?}");
    }
    Ok(out)
}

fn reshape(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    let spec = ints_input_or_attr(cx, n, ins, 1, "shape")?
        .ok_or_else(|| Error::invalid("Reshape needs a shape"))?;
    let shape = resolve_reshape(x.shape(), &spec, n.int_or("allowzero", 0)? != 0)?;
    Ok(vec![tv(cx.reshape(x, &shape)?)])
}

fn transpose(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    let perm: Vec<usize> = match n.attr_ints("perm")? {
        Some(p) => p
            .iter()
            .map(|&a| {
                usize::try_from(a).map_err(|_| Error::invalid(format!("Transpose: bad perm {p:?}")))
            })
            .collect::<Result<_>>()?,
        None => (0..x.rank()).rev().collect(),
    };
    Ok(vec![tv(cx.permute(x, &perm)?)])
}

fn squeeze(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    let axes = ints_input_or_attr(cx, n, ins, 1, "axes")?;
    Ok(vec![tv(cx.squeeze(x, axes.as_deref())?)])
}

fn unsqueeze(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    let axes = ints_input_or_attr(cx, n, ins, 1, "axes")?
        .ok_or_else(|| Error::invalid("Unsqueeze needs axes"))?;
    Ok(vec![tv(cx.unsqueeze(x, &axes)?)])
}

fn expand(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let shape = shape_arg(cx, tensor_arg(ins, 1, "shape")?, "Expand")?;
    let out = broadcast_shapes(x.shape(), &shape)?;
    check_shape(&out)?;
    Ok(vec![tv(cx.expand(x, &out)?)])
}

fn depth_to_space(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let b = n.int_or("blocksize", 0)?;
    let bb = usize::try_from(b)
        .ok()
        .and_then(|b| b.checked_mul(b))
        .filter(|&bb| bb > 0);
    if x.rank() != 4 || bb.is_none_or(|bb| x.shape()[1] % bb != 0) {
        bail_invalid!("DepthToSpace: blocksize {b} invalid for {}", x.ty);
    }
    let b = b as usize;
    let [nb, c, h, w] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let c2 = c / (b * b);
    let out = [nb, c2, h * b, w * b];
    let y = match n.string_or("mode", "DCR")?.as_str() {
        "DCR" => shuffle(cx, x, &[nb, b, b, c2, h, w], &[0, 3, 4, 1, 5, 2], &out)?,
        "CRD" => shuffle(cx, x, &[nb, c2, b, b, h, w], &[0, 1, 4, 2, 5, 3], &out)?,
        m => bail_invalid!("DepthToSpace: unknown mode '{m}'"),
    };
    Ok(vec![tv(y)])
}

fn space_to_depth(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let b = n.int_or("blocksize", 0)?;
    if x.rank() != 4 || b <= 0 || x.shape()[2] % b as usize != 0 || x.shape()[3] % b as usize != 0 {
        bail_invalid!("SpaceToDepth: blocksize {b} invalid for {}", x.ty);
    }
    let b = b as usize;
    let [nb, c, h, w] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let a = [nb, c, h / b, b, w / b, b];
    let out = [nb, c * b * b, h / b, w / b];
    let perm = match n.string_or("mode", "DCR")?.as_str() {
        "DCR" => [0, 3, 5, 1, 2, 4],
        "CRD" => [0, 1, 3, 5, 2, 4],
        m => bail_invalid!("SpaceToDepth: unknown mode '{m}'"),
    };
    Ok(vec![tv(shuffle(cx, x, &a, &perm, &out)?)])
}

// ---- slicing and joining ----

/// Start and count of `start:end:step` over a dim of size `d`, clamped as ONNX Slice does.
fn slice_range(d: usize, start: i64, end: i64, step: i64) -> (usize, usize) {
    let d = d as i64;
    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = (norm(start), norm(end));
    let (s, count) = if step > 0 {
        let (s, e) = (s.clamp(0, d), e.clamp(0, d));
        (s, if e > s { (e - s - 1) / step + 1 } else { 0 })
    } else {
        let (s, e) = (s.max(0).min(d - 1), e.max(-1).min(d - 1));
        (
            s,
            if s > e {
                ((s - e - 1) as u64 / step.unsigned_abs()) as i64 + 1
            } else {
                0
            },
        )
    };
    if count == 0 {
        (0, 0)
    } else {
        (s as usize, count as usize)
    }
}

fn slice(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    let r = x.rank();
    let starts = ints_input_or_attr(cx, n, ins, 1, "starts")?
        .ok_or_else(|| Error::invalid("Slice needs starts"))?;
    let ends = ints_input_or_attr(cx, n, ins, 2, "ends")?
        .ok_or_else(|| Error::invalid("Slice needs ends"))?;
    let axes = match ints_input_or_attr(cx, n, ins, 3, "axes")? {
        Some(a) => axes_in_order(&a, r)?,
        None => (0..starts.len()).collect(),
    };
    let steps = match opt_tensor(ins, 4)? {
        Some(t) => cx.ints(t)?,
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len()
        || axes.len() != starts.len()
        || steps.len() != starts.len()
        || axes.iter().any(|&a| a >= r)
    {
        bail_invalid!("Slice: starts/ends/axes/steps lengths differ or exceed rank {r}");
    }
    let mut ranges: Vec<(usize, usize, isize)> = x.shape().iter().map(|&d| (0, d, 1)).collect();
    for i in 0..axes.len() {
        if steps[i] == 0 {
            bail_invalid!("Slice: step 0");
        }
        let (s, c) = slice_range(x.shape()[axes[i]], starts[i], ends[i], steps[i]);
        ranges[axes[i]] = (
            s,
            c,
            steps[i].clamp(isize::MIN as i64 + 1, isize::MAX as i64) as isize,
        );
    }
    Ok(vec![tv(strided_view(cx, x, &ranges)?)])
}

fn concat(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let xs: Vec<TVal> = (0..ins.len())
        .map(|i| tensor_arg(ins, i, "inputs").cloned())
        .collect::<Result<_>>()?;
    let first = xs
        .first()
        .ok_or_else(|| Error::invalid("Concat of nothing"))?;
    let axis = norm_axis(
        n.attr_int("axis")?
            .ok_or_else(|| Error::invalid("Concat needs axis"))?,
        first.rank(),
    )?;
    Ok(vec![tv(cx.concat(&xs, axis)?)])
}

/// Chunk sizes of Split: explicit, or `parts` chunks of ceil(d/parts) with a smaller last one.
fn split_sizes(
    d: usize,
    explicit: Option<Vec<i64>>,
    parts: i64,
    outputs: usize,
) -> Result<Vec<usize>> {
    if let Some(s) = explicit {
        let sizes: Vec<usize> = s
            .iter()
            .map(|&v| {
                usize::try_from(v)
                    .map_err(|_| Error::invalid(format!("Split: negative size in {s:?}")))
            })
            .collect::<Result<_>>()?;
        if sizes.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(d) {
            bail_invalid!("Split: sizes {s:?} do not sum to {d}");
        }
        return Ok(sizes);
    }
    if parts <= 0 || parts as u64 > outputs as u64 {
        bail_invalid!("Split into {parts} parts for {outputs} outputs");
    }
    let chunk = d.div_ceil(parts as usize);
    Ok((0..parts as usize)
        .map(|i| chunk.min(d.saturating_sub(i * chunk)))
        .collect())
}

fn split(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let axis = norm_axis(n.int_or("axis", 0)?, x.rank())?;
    let explicit = ints_input_or_attr(cx, n, ins, 1, "split")?;
    let parts = n.int_or("num_outputs", n.outputs.len() as i64)?;
    let sizes = split_sizes(x.shape()[axis], explicit, parts, n.outputs.len())?;
    let mut start = 0;
    let mut out = Vec::with_capacity(sizes.len());
    for s in sizes {
        out.push(tv(cx.slice_axis(
            x,
            axis,
            if s == 0 { 0 } else { start },
            s,
            1,
        )?));
        start += s;
    }
    Ok(out)
}

fn tile(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let reps = shape_arg(cx, tensor_arg(ins, 1, "repeats")?, "Tile")?;
    if reps.len() != x.rank() {
        bail_invalid!("Tile: repeats {reps:?} do not match {}", x.ty);
    }
    // [d0, d1..] -> [1, d0, 1, d1..] -> expand to [r0, d0, r1, d1..] -> [r0*d0, r1*d1..]
    let inter: Vec<usize> = x.shape().iter().flat_map(|&d| [1, d]).collect();
    let big: Vec<usize> = x
        .shape()
        .iter()
        .zip(&reps)
        .flat_map(|(&d, &r)| [r, d])
        .collect();
    let out: Vec<usize> = x
        .shape()
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| d.checked_mul(r))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::invalid("Tile: output too large"))?;
    check_shape(&out)?;
    let v = cx.reshape(x, &inter)?;
    let v = cx.expand(&v, &big)?;
    Ok(vec![tv(cx.reshape(&v, &out)?)])
}

// ---- padding ----

#[derive(Clone, Copy)]
enum PadMode {
    Reflect,
    Edge,
    Wrap,
}

/// Source index of padded position `i` (counted from the first original element) in a dim of `d`.
fn pad_source(mode: PadMode, i: i64, d: i64) -> i64 {
    match mode {
        PadMode::Edge => i.clamp(0, d - 1),
        PadMode::Wrap => i.rem_euclid(d),
        PadMode::Reflect if d == 1 => 0,
        PadMode::Reflect => {
            let m = i.rem_euclid(2 * (d - 1));
            if m >= d {
                2 * (d - 1) - m
            } else {
                m
            }
        }
    }
}

/// Pads by gathering along each padded axis with a host-computed source-index table.
fn pad_by_gather(cx: &mut Cx, x: &TVal, pads: &[(usize, usize)], mode: PadMode) -> Result<TVal> {
    let mut v = x.clone();
    for (axis, &(b, a)) in pads.iter().enumerate() {
        if b == 0 && a == 0 {
            continue;
        }
        let d = x.shape()[axis];
        let len = d.saturating_add(b).saturating_add(a);
        if d == 0 || len > MAX_TABLE {
            bail_invalid!(
                "Pad: cannot pad axis {axis} of {} by ({b}, {a}) in this mode",
                x.ty
            );
        }
        let idx: Vec<i64> = (0..len as i64)
            .map(|i| pad_source(mode, i - b as i64, d as i64))
            .collect();
        let idx = TVal::constant(Tensor::from_vec(vec![len], idx)?);
        v = cx.emit1(Prim::Gather { axis }, &[&v, &idx])?;
    }
    Ok(v)
}

fn pad_value(cx: &mut Cx, n: &Node, ins: &[Option<Value>], dtype: DType) -> Result<TVal> {
    match opt_tensor(ins, 2)? {
        Some(t) if t.numel() == 0 => Ok(zero_scalar(cx, dtype)),
        Some(t) => {
            let s = cx.reshape(t, &[])?;
            cx.cast(&s, dtype)
        }
        None => Ok(cx.scalar(n.float_or("value", 0.0)? as f64, dtype)),
    }
}

fn pad(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    let r = x.rank();
    let raw = match opt_tensor(ins, 1)? {
        Some(t) => cx.ints(t)?,
        None => n
            .attr_ints("pads")?
            .or(n.attr_ints("paddings")?)
            .ok_or_else(|| Error::invalid("Pad needs pads"))?,
    };
    let axes = match opt_tensor(ins, 3)? {
        Some(t) => axes_in_order(&cx.ints(t)?, r)?,
        None => (0..r).collect(),
    };
    if raw.len() != 2 * axes.len() {
        bail_invalid!("Pad: {} pads for {} axes", raw.len(), axes.len());
    }
    let mut pads = vec![(0i64, 0i64); r];
    for (i, &a) in axes.iter().enumerate() {
        pads[a] = (raw[i], raw[axes.len() + i]);
    }
    // Negative pads crop first; the rest pads.
    let mut ranges = Vec::with_capacity(r);
    for (&d, &(b, a)) in x.shape().iter().zip(&pads) {
        let (cb, ca) = (
            b.min(0).unsigned_abs() as usize,
            a.min(0).unsigned_abs() as usize,
        );
        if cb.saturating_add(ca) > d {
            bail_invalid!("Pad: pads {raw:?} crop more than {}", x.ty);
        }
        ranges.push((cb, d - cb - ca, 1));
    }
    let x = strided_view(cx, x, &ranges)?;
    let pos: Vec<(usize, usize)> = pads
        .iter()
        .map(|&(b, a)| (b.max(0) as usize, a.max(0) as usize))
        .collect();
    let y = match n.string_or("mode", "constant")?.as_str() {
        "constant" => {
            let v = pad_value(cx, n, ins, x.dtype())?;
            pad_constant(cx, &x, pos, &v)?
        }
        "reflect" => pad_by_gather(cx, &x, &pos, PadMode::Reflect)?,
        "edge" => pad_by_gather(cx, &x, &pos, PadMode::Edge)?,
        "wrap" => pad_by_gather(cx, &x, &pos, PadMode::Wrap)?,
        m => bail_unsupported!("Pad mode '{m}' is not supported"),
    };
    Ok(vec![tv(y)])
}

fn center_crop_pad(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input_data")?;
    let r = x.rank();
    let shape = shape_arg(cx, tensor_arg(ins, 1, "shape")?, "CenterCropPad")?;
    let axes = match n.attr_ints("axes")? {
        Some(a) => axes_in_order(&a, r)?,
        None => (0..r).collect(),
    };
    if shape.len() != axes.len() {
        bail_invalid!("CenterCropPad: shape {shape:?} does not match axes {axes:?}");
    }
    let mut ranges: Vec<(usize, usize, isize)> = x.shape().iter().map(|&d| (0, d, 1)).collect();
    let mut pads = vec![(0, 0); r];
    for (&a, &s) in axes.iter().zip(&shape) {
        let d = x.shape()[a];
        if s < d {
            ranges[a] = ((d - s) / 2, s, 1);
        } else {
            pads[a] = ((s - d) / 2, s - d - (s - d) / 2);
        }
    }
    let v = strided_view(cx, x, &ranges)?;
    let zero = zero_scalar(cx, x.dtype());
    Ok(vec![tv(pad_constant(cx, &v, pads, &zero)?)])
}

// ---- masks and reorderings ----

fn trilu(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    if x.rank() < 2 {
        bail_invalid!("Trilu needs rank >= 2, got {}", x.ty);
    }
    let k = match opt_tensor(ins, 1)? {
        Some(t) => *cx
            .ints(t)?
            .first()
            .ok_or_else(|| Error::invalid("Trilu: empty k"))?,
        None => 0,
    };
    let upper = n.int_or("upper", 1)? != 0;
    let (rows, cols) = (x.shape()[x.rank() - 2], x.shape()[x.rank() - 1]);
    if rows.saturating_mul(cols) > MAX_TABLE {
        bail_unsupported!("Trilu: {rows}x{cols} matrices are too large");
    }
    let keep = (0..rows * cols).map(|i| {
        let diag = (i % cols) as i64 - (i / cols) as i64;
        if upper {
            diag >= k
        } else {
            diag <= k
        }
    });
    let mask = TVal::constant(Tensor::from_vec(
        vec![rows, cols],
        keep.collect::<Vec<bool>>(),
    )?);
    let zero = zero_scalar(cx, x.dtype());
    Ok(vec![tv(cx.where_(&mask, x, &zero)?)])
}

fn reverse_sequence(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let lens = tensor_arg(ins, 1, "sequence_lens")?;
    let r = x.rank();
    let batch = norm_axis(n.int_or("batch_axis", 1)?, r)?;
    let time = norm_axis(n.int_or("time_axis", 0)?, r)?;
    if r < 2 || batch == time || lens.shape() != [x.shape()[batch]] {
        bail_invalid!(
            "ReverseSequence: sequence_lens {} / axes do not fit {}",
            lens.ty,
            x.ty
        );
    }
    // Source time index: len-1-t for t < len, else t; then one GatherElements along time.
    let t = iota(x.shape()[time], time, r)?;
    let mut lshape = vec![1; r];
    lshape[batch] = x.shape()[batch];
    let l = cx.cast(lens, DType::I64)?;
    let l = cx.reshape(&l, &lshape)?;
    let last = cx.binary_scalar(BinaryOp::Sub, &l, 1.0)?;
    let rev = cx.sub(&last, &t)?;
    let inside = cx.binary(BinaryOp::Lt, &t, &l)?;
    let idx = cx.where_(&inside, &rev, &t)?;
    let idx = cx.expand(&idx, x.shape())?;
    Ok(vec![tv(
        cx.emit1(Prim::GatherElements { axis: time }, &[x, &idx])?
    )])
}

// ---- Col2Im ----

/// Row-major multi-index of flat `i` in `shape`.
fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut out = vec![0; shape.len()];
    for k in (0..shape.len()).rev() {
        out[k] = i % shape[k];
        i /= shape[k];
    }
    out
}

fn ravel(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &d)| acc * d + i)
}

/// Col2Im: scatter-adds every column entry into the padded image, then crops the pads.
fn col2im(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let image = shape_arg(cx, tensor_arg(ins, 1, "image_shape")?, "Col2Im")?;
    let block = shape_arg(cx, tensor_arg(ins, 2, "block_shape")?, "Col2Im")?;
    let sp = image.len();
    let get = |name: &str, default: Vec<i64>| -> Result<Vec<usize>> {
        let v = n.attr_ints(name)?.unwrap_or(default);
        v.iter()
            .map(|&a| {
                usize::try_from(a).map_err(|_| Error::invalid(format!("Col2Im: negative {name}")))
            })
            .collect()
    };
    let dil = get("dilations", vec![1; sp])?;
    let strides = get("strides", vec![1; sp])?;
    let pads = get("pads", vec![0; 2 * sp])?;
    if x.rank() != 3
        || block.len() != sp
        || dil.len() != sp
        || strides.len() != sp
        || pads.len() != 2 * sp
        || strides.contains(&0)
        || dil.contains(&0)
        || block.contains(&0)
    {
        bail_invalid!(
            "Col2Im: attributes do not fit input {} and image {image:?}",
            x.ty
        );
    }
    let k = checked_numel(&block)
        .filter(|&k| x.shape()[1] % k == 0)
        .ok_or_else(|| Error::invalid("Col2Im: channels not divisible by block size"))?;
    let (nb, c, l) = (x.shape()[0], x.shape()[1] / k, x.shape()[2]);
    let too_large = || Error::invalid("Col2Im: sizes overflow");
    let padded: Vec<usize> = (0..sp)
        .map(|i| image[i].checked_add(pads[i])?.checked_add(pads[sp + i]))
        .collect::<Option<_>>()
        .ok_or_else(too_large)?;
    let mut nblocks = Vec::with_capacity(sp);
    for i in 0..sp {
        let eff = dil[i]
            .checked_mul(block[i] - 1)
            .and_then(|v| v.checked_add(1))
            .ok_or_else(too_large)?;
        if padded[i] < eff {
            bail_invalid!("Col2Im: block larger than padded image");
        }
        nblocks.push((padded[i] - eff) / strides[i] + 1);
    }
    if checked_numel(&nblocks) != Some(l) || k.saturating_mul(l) > MAX_TABLE {
        bail_invalid!("Col2Im: input length {l} does not match {nblocks:?} blocks");
    }
    let mut table = Vec::with_capacity(k * l);
    for kk in 0..k {
        let off = unravel(kk, &block);
        for ll in 0..l {
            let pos: Vec<usize> = unravel(ll, &nblocks)
                .iter()
                .enumerate()
                .map(|(i, &b)| b * strides[i] + off[i] * dil[i])
                .collect();
            table.push(ravel(&pos, &padded) as i64);
        }
    }
    let p = checked_numel(&padded).ok_or_else(|| Error::invalid("Col2Im: image too large"))?;
    let mut full = vec![nb, c];
    full.extend(&padded);
    check_shape(&full)?;
    let cols = cx.reshape(x, &[nb, c, k * l])?;
    let idx = TVal::constant(Tensor::from_vec(vec![1, 1, k * l], table)?);
    let idx = cx.expand(&idx, &[nb, c, k * l])?;
    let zeros = cx.full(0.0, x.dtype(), &[nb, c, p])?;
    let sum = cx.emit1(
        Prim::ScatterElements {
            axis: 2,
            reduction: ScatterReduction::Add,
        },
        &[&zeros, &idx, &cols],
    )?;
    let img = cx.reshape(&sum, &full)?;
    let mut ranges = vec![(0, nb, 1), (0, c, 1)];
    ranges.extend((0..sp).map(|i| (pads[i], image[i], 1)));
    Ok(vec![tv(strided_view(cx, &img, &ranges)?)])
}

pub fn register(r: &mut Registry) {
    r.insert("Reshape", reshape);
    r.insert("Transpose", transpose);
    r.insert("Squeeze", squeeze);
    r.insert("Unsqueeze", unsqueeze);
    r.insert("Expand", expand);
    r.insert("Slice", slice);
    r.insert("Concat", concat);
    r.insert("Split", split);
    r.insert("Tile", tile);
    r.insert("Pad", pad);
    r.insert("DepthToSpace", depth_to_space);
    r.insert("SpaceToDepth", space_to_depth);
    r.insert("Trilu", trilu);
    r.insert("ReverseSequence", reverse_sequence);
    r.insert("CenterCropPad", center_crop_pad);
    r.insert("Col2Im", col2im);
}
