//! Softmax and its relatives, and the normalizations (layer, RMS, batch, instance, group, Lp,
//! mean-variance, local response).
use super::misc::onnx_dtype;
use super::Registry;
use crate::builder::{norm_axes, norm_axis, opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::prim::{BinaryOp, Prim, ReduceOp, UnaryOp};
use kuaxin_core::tensor::contiguous_strides;
use kuaxin_core::{bail_invalid, bail_unsupported, DType, Data, Error, Result, Tensor};

// ---- softmax family ----

type AxisFn = fn(&mut Cx, &TVal, usize) -> Result<TVal>;

/// Applies `f` along the node's axis. Before opset 13 the input is coerced to 2-d at `axis`
/// (default 1) and `f` works on the second dim; from 13 on, on the single `axis` (default -1).
fn along_axis(cx: &mut Cx, n: &Node, ins: &[Option<Value>], f: AxisFn) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    if cx.opset >= 13 {
        let axis = norm_axis(n.int_or("axis", -1)?, x.rank())?;
        if x.numel() == 0 {
            return Ok(vec![tv(x.clone())]);
        }
        return Ok(vec![tv(f(cx, x, axis)?)]);
    }
    let r = x.rank() as i64;
    let axis = n.int_or("axis", 1)?;
    if axis < -r || axis > r {
        bail_invalid!("axis {axis} is out of range for rank {r}");
    }
    let axis = if axis < 0 { axis + r } else { axis } as usize;
    if x.numel() == 0 {
        return Ok(vec![tv(x.clone())]);
    }
    let rows: usize = x.shape()[..axis].iter().product();
    let x2 = cx.reshape(x, &[rows, x.numel() / rows])?;
    let y = f(cx, &x2, 1)?;
    Ok(vec![tv(cx.reshape(&y, x.shape())?)])
}

/// `x - max(x)` along `axis`: the stable argument of exp.
fn shifted(cx: &mut Cx, x: &TVal, axis: usize) -> Result<TVal> {
    let m = cx.reduce(ReduceOp::Max, x, &[axis], true)?;
    cx.sub(x, &m)
}

pub(crate) fn softmax(cx: &mut Cx, x: &TVal, axis: usize) -> Result<TVal> {
    let d = shifted(cx, x, axis)?;
    let e = cx.unary(UnaryOp::Exp, &d)?;
    let s = cx.reduce(ReduceOp::Sum, &e, &[axis], true)?;
    cx.div(&e, &s)
}

fn log_softmax(cx: &mut Cx, x: &TVal, axis: usize) -> Result<TVal> {
    let d = shifted(cx, x, axis)?;
    let e = cx.unary(UnaryOp::Exp, &d)?;
    let s = cx.reduce(ReduceOp::Sum, &e, &[axis], true)?;
    let l = cx.unary(UnaryOp::Log, &s)?;
    cx.sub(&d, &l)
}

/// One-hot of the (first) max along `axis`.
fn hardmax(cx: &mut Cx, x: &TVal, axis: usize) -> Result<TVal> {
    let idx = cx.emit1(
        Prim::ArgReduce {
            max: true,
            axis,
            select_last: false,
        },
        &[x],
    )?;
    let len = x.shape()[axis];
    let mut shape = vec![1; x.rank()];
    shape[axis] = len;
    let iota = TVal::constant(Tensor::new(shape, Data::I64((0..len as i64).collect()))?);
    let hot = cx.binary(BinaryOp::Eq, &idx, &iota)?;
    cx.cast(&hot, x.dtype())
}

// ---- shared statistics ----

/// Mean, centred values and population variance of `x` over `axes` (reduced dims kept).
fn moments(cx: &mut Cx, x: &TVal, axes: &[usize]) -> Result<(TVal, TVal, TVal)> {
    let mean = cx.mean(x, axes, true)?;
    let d = cx.sub(x, &mean)?;
    let sq = cx.mul(&d, &d)?;
    let var = cx.mean(&sq, axes, true)?;
    Ok((mean, d, var))
}

/// `1 / sqrt(var + eps)`.
fn inv_std(cx: &mut Cx, var: &TVal, eps: f32) -> Result<TVal> {
    let v = cx.binary_scalar(BinaryOp::Add, var, eps as f64)?;
    let s = cx.unary(UnaryOp::Sqrt, &v)?;
    cx.unary(UnaryOp::Reciprocal, &s)
}

/// `(x - mean) / sqrt(var + eps)` over `axes`, with the mean and inverse std (dims kept).
fn standardize(cx: &mut Cx, x: &TVal, axes: &[usize], eps: f32) -> Result<(TVal, TVal, TVal)> {
    let (mean, d, var) = moments(cx, x, axes)?;
    let inv = inv_std(cx, &var, eps)?;
    let y = cx.mul(&d, &inv)?;
    Ok((y, mean, inv))
}

/// The float type statistics are computed in: `stash_type` (default f32) for narrower inputs;
/// f64 inputs keep their precision, as the reference does.
fn stash_dtype(n: &Node, x: DType) -> Result<DType> {
    if x == DType::F64 {
        return Ok(x);
    }
    let t = onnx_dtype(n.int_or("stash_type", 1)?)?;
    if !t.is_float() {
        bail_invalid!("stash_type must be a float type, got {t}");
    }
    Ok(t)
}

/// A per-channel vector `[C]` shaped `[C, 1, ..]` to broadcast against `[N, C, ..]` of `rank`.
fn per_channel(cx: &mut Cx, v: &TVal, rank: usize, c: usize, what: &str) -> Result<TVal> {
    if v.numel() != c || v.rank() > 1 {
        bail_invalid!("{what} {} must have {c} elements (one per channel)", v.ty);
    }
    let mut shape = vec![1; rank.saturating_sub(1)];
    if let Some(s) = shape.first_mut() {
        *s = c;
    }
    cx.reshape(v, &shape)
}

/// `scale * y + bias` with per-channel scale and bias.
fn channel_affine(cx: &mut Cx, y: &TVal, scale: &TVal, bias: &TVal) -> Result<TVal> {
    let (r, c) = (y.rank(), y.shape()[1]);
    let s = per_channel(cx, scale, r, c, "scale")?;
    let b = per_channel(cx, bias, r, c, "bias")?;
    let ys = cx.mul(&s, y)?;
    cx.add(&ys, &b)
}

fn need_channels(x: &TVal, op: &str) -> Result<()> {
    if x.rank() < 2 {
        bail_invalid!("{op} needs an input of rank >= 2 (N, C, ...), got {}", x.ty);
    }
    Ok(())
}

// ---- normalizations ----

fn layer_norm(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let scale = tensor_arg(ins, 1, "Scale")?;
    let axis = norm_axis(n.int_or("axis", -1)?, x.rank())?;
    let eps = n.float_or("epsilon", 1e-5)?;
    let xu = cx.cast(x, stash_dtype(n, x.dtype())?)?;
    let axes: Vec<usize> = (axis..x.rank()).collect();
    let (y, mean, inv) = standardize(cx, &xu, &axes, eps)?;
    let y = cx.cast(&y, x.dtype())?;
    let mut y = cx.mul(&y, scale)?;
    if let Some(b) = opt_tensor(ins, 2)? {
        y = cx.add(&y, b)?;
    }
    Ok(vec![tv(y), tv(mean), tv(inv)])
}

fn rms_norm(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let scale = tensor_arg(ins, 1, "scale")?;
    let axis = norm_axis(n.int_or("axis", -1)?, x.rank())?;
    let eps = n.float_or("epsilon", 1e-5)?;
    let xu = cx.cast(x, stash_dtype(n, x.dtype())?)?;
    let axes: Vec<usize> = (axis..x.rank()).collect();
    let sq = cx.mul(&xu, &xu)?;
    let ms = cx.mean(&sq, &axes, true)?;
    let inv = inv_std(cx, &ms, eps)?;
    let y = cx.mul(&xu, &inv)?;
    let y = cx.cast(&y, scale.dtype())?;
    Ok(vec![tv(cx.mul(&y, scale)?)])
}

/// `scale * (x - mean) / sqrt(var + eps) + bias` with per-channel statistics `[C]`.
fn batch_norm_apply(
    cx: &mut Cx,
    x: &TVal,
    ins: &[Option<Value>],
    mean: &TVal,
    var: &TVal,
    eps: f32,
) -> Result<TVal> {
    let (r, c) = (x.rank(), x.shape()[1]);
    let m = per_channel(cx, mean, r, c, "mean")?;
    let v = per_channel(cx, var, r, c, "var")?;
    let d = cx.sub(x, &m)?;
    let inv = inv_std(cx, &v, eps)?;
    let y = cx.mul(&d, &inv)?;
    channel_affine(
        cx,
        &y,
        tensor_arg(ins, 1, "scale")?,
        tensor_arg(ins, 2, "B")?,
    )
}

fn batch_norm(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    need_channels(x, "BatchNormalization")?;
    let mean = tensor_arg(ins, 3, "input_mean")?;
    let var = tensor_arg(ins, 4, "input_var")?;
    let eps = n.float_or("epsilon", 1e-5)?;
    let extra_outputs = n.outputs.iter().skip(1).any(|o| !o.is_empty());
    if cx.opset < 14 || n.int_or("training_mode", 0)? == 0 {
        if extra_outputs && cx.opset < 14 {
            bail_unsupported!(
                "BatchNormalization before opset 14 in training mode is not supported"
            );
        }
        return Ok(vec![tv(batch_norm_apply(cx, x, ins, mean, var, eps)?)]);
    }
    // Training mode: normalize with the batch statistics, update the running ones.
    let axes: Vec<usize> = (0..x.rank()).filter(|&a| a != 1).collect();
    let (bmean, _, bvar) = moments(cx, x, &axes)?;
    let c = x.shape()[1];
    let bmean = cx.reshape(&bmean, &[c])?;
    let bvar = cx.reshape(&bvar, &[c])?;
    let y = batch_norm_apply(cx, x, ins, &bmean, &bvar, eps)?;
    let momentum = n.float_or("momentum", 0.9)? as f64;
    let running = |cx: &mut Cx, old: &TVal, new: &TVal| -> Result<TVal> {
        let a = cx.binary_scalar(BinaryOp::Mul, old, momentum)?;
        let b = cx.binary_scalar(BinaryOp::Mul, new, 1.0 - momentum)?;
        cx.add(&a, &b)
    };
    let rmean = running(cx, mean, &bmean)?;
    let rvar = running(cx, var, &bvar)?;
    Ok(vec![tv(y), tv(rmean), tv(rvar)])
}

fn instance_norm(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    need_channels(x, "InstanceNormalization")?;
    let eps = n.float_or("epsilon", 1e-5)?;
    let axes: Vec<usize> = (2..x.rank()).collect();
    let (y, _, _) = standardize(cx, x, &axes, eps)?;
    Ok(vec![tv(channel_affine(
        cx,
        &y,
        tensor_arg(ins, 1, "scale")?,
        tensor_arg(ins, 2, "B")?,
    )?)])
}

/// Scale or bias of GroupNormalization as one value per channel: opset 21 gives `[C]`; opset 18
/// gave `[num_groups]`, each shared by the group's channels.
fn group_param(cx: &mut Cx, v: &TVal, groups: usize, c: usize) -> Result<TVal> {
    if v.numel() == c || v.numel() != groups {
        return Ok(v.clone());
    }
    let g = cx.reshape(v, &[groups, 1])?;
    let g = cx.expand(&g, &[groups, c / groups])?;
    cx.reshape(&g, &[c])
}

fn group_norm(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    need_channels(x, "GroupNormalization")?;
    let groups = n
        .attr_int("num_groups")?
        .ok_or_else(|| Error::invalid("GroupNormalization needs num_groups"))?;
    let (nb, c) = (x.shape()[0], x.shape()[1]);
    let groups = usize::try_from(groups)
        .ok()
        .filter(|&g| g > 0 && c % g == 0);
    let Some(groups) = groups else {
        bail_invalid!("num_groups must be a positive divisor of the {c} channels")
    };
    let eps = n.float_or("epsilon", 1e-5)?;
    let xu = cx.cast(x, stash_dtype(n, x.dtype())?)?;
    let per_group = x.numel().checked_div(nb * groups).unwrap_or(0);
    let x3 = cx.reshape(&xu, &[nb, groups, per_group])?;
    let (y, _, _) = standardize(cx, &x3, &[2], eps)?;
    let y = cx.reshape(&y, x.shape())?;
    let y = cx.cast(&y, x.dtype())?;
    let scale = group_param(cx, tensor_arg(ins, 1, "scale")?, groups, c)?;
    let bias = group_param(cx, tensor_arg(ins, 2, "bias")?, groups, c)?;
    Ok(vec![tv(channel_affine(cx, &y, &scale, &bias)?)])
}

fn lp_norm(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let axis = norm_axis(n.int_or("axis", -1)?, x.rank())?;
    let norm = match n.int_or("p", 2)? {
        1 => {
            let a = cx.unary(UnaryOp::Abs, x)?;
            cx.reduce(ReduceOp::Sum, &a, &[axis], true)?
        }
        2 => {
            let sq = cx.mul(x, x)?;
            let s = cx.reduce(ReduceOp::Sum, &sq, &[axis], true)?;
            cx.unary(UnaryOp::Sqrt, &s)?
        }
        p => bail_invalid!("LpNormalization p must be 1 or 2, got {p}"),
    };
    // A zero norm gives zeros, not 0/0.
    let zero = cx.scalar(0.0, x.dtype());
    let is_zero = cx.binary(BinaryOp::Eq, &norm, &zero)?;
    let q = cx.div(x, &norm)?;
    Ok(vec![tv(cx.where_(&is_zero, &zero, &q)?)])
}

/// `(x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9)` over `axes`, as the spec's function body.
fn mean_variance_norm(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let axes = norm_axes(
        &n.attr_ints("axes")?.unwrap_or_else(|| vec![0, 2, 3]),
        x.rank(),
    )?;
    let mean = cx.mean(x, &axes, true)?;
    let sq = cx.mul(x, x)?;
    let mean_sq = cx.mean(&sq, &axes, true)?;
    let sq_mean = cx.mul(&mean, &mean)?;
    let var = cx.sub(&mean_sq, &sq_mean)?;
    let std = cx.unary(UnaryOp::Sqrt, &var)?;
    let den = cx.binary_scalar(BinaryOp::Add, &std, 1e-9)?;
    let d = cx.sub(x, &mean)?;
    Ok(vec![tv(cx.div(&d, &den)?)])
}

/// Local response normalization across channels: the squares are zero-padded on the channel
/// axis and summed over a sliding window (a view with the channel stride repeated). Window
/// parts reaching past every channel are dropped: they would only sum padding.
fn lrn(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    need_channels(x, "LRN")?;
    let size = n
        .attr_int("size")?
        .ok_or_else(|| Error::invalid("LRN needs attribute 'size'"))?;
    if size <= 0 {
        bail_invalid!("LRN size must be positive, got {size}");
    }
    let alpha = n.float_or("alpha", 1e-4)? as f64;
    let beta = n.float_or("beta", 0.75)? as f64;
    let bias = n.float_or("bias", 1.0)? as f64;
    let reach = x.shape()[1].saturating_sub(1) as i64;
    let before = ((size - 1) / 2).min(reach) as usize;
    let after = (size - 1 - (size - 1) / 2).min(reach) as usize;
    let mut pads = vec![(0, 0); x.rank()];
    pads[1] = (before, after);
    let sq = cx.mul(x, x)?;
    let zero = cx.scalar(0.0, x.dtype());
    let padded = cx.emit1(Prim::PadConstant { pads }, &[&sq, &zero])?;
    let ps = contiguous_strides(padded.shape());
    let mut shape = x.shape().to_vec();
    shape.insert(2, before + after + 1);
    let mut strides = ps.clone();
    strides.insert(2, ps[1]);
    let windows = cx.view(&padded, shape, strides, 0)?;
    let sum = cx.reduce(ReduceOp::Sum, &windows, &[2], false)?;
    let scaled = cx.binary_scalar(BinaryOp::Mul, &sum, alpha / size as f64)?;
    let base = cx.binary_scalar(BinaryOp::Add, &scaled, bias)?;
    let den = cx.binary_scalar(BinaryOp::Pow, &base, beta)?;
    Ok(vec![tv(cx.div(x, &den)?)])
}

pub fn register(r: &mut Registry) {
    r.insert("Softmax", |cx, n, ins| along_axis(cx, n, ins, softmax));
    r.insert("LogSoftmax", |cx, n, ins| {
        along_axis(cx, n, ins, log_softmax)
    });
    r.insert("Hardmax", |cx, n, ins| along_axis(cx, n, ins, hardmax));
    r.insert("LayerNormalization", layer_norm);
    r.insert("RMSNormalization", rms_norm);
    r.insert("BatchNormalization", batch_norm);
    r.insert("InstanceNormalization", instance_norm);
    r.insert("GroupNormalization", group_norm);
    r.insert("LpNormalization", lp_norm);
    r.insert("MeanVarianceNormalization", mean_variance_norm);
    r.insert("LRN", lrn);
}
