//! Convolutions (Conv, ConvTranspose, ConvInteger) and the sliding-window geometry they share
//! with pooling: kernel, strides, dilations, explicit pads and auto_pad.
use super::Registry;
use crate::builder::{opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::prim::{BinaryOp, Prim, UnaryOp};
use kuaxin_core::tensor::contiguous_strides;
use kuaxin_core::{bail_invalid, bail_unsupported, DType, Result, Tensor};

/// A sliding window over the spatial dims of an `[N, C, spatial..]` tensor.
pub(crate) struct Window {
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    /// Explicit pads as (begin, end) per spatial axis (zeros when absent).
    pub pads: Vec<(usize, usize)>,
    pub auto_pad: String,
}

/// A per-axis attribute of `n` values, all >= `min` (default `dflt` each).
fn spatial_ints(n: &Node, name: &str, len: usize, dflt: usize, min: usize) -> Result<Vec<usize>> {
    let Some(v) = n.attr_ints(name)? else {
        return Ok(vec![dflt; len]);
    };
    if v.len() != len || v.iter().any(|&x| x < min as i64) {
        bail_invalid!("{name} {v:?} must have {len} values >= {min}");
    }
    Ok(v.into_iter().map(|x| x as usize).collect())
}

impl Window {
    /// Reads strides/dilations/pads/auto_pad for a window of `kernel` (from weights or attribute).
    pub(crate) fn from_node(n: &Node, kernel: Vec<usize>) -> Result<Window> {
        let sp = kernel.len();
        if kernel.contains(&0) {
            bail_invalid!("kernel shape {kernel:?} has a zero dim");
        }
        let strides = spatial_ints(n, "strides", sp, 1, 1)?;
        let dilations = spatial_ints(n, "dilations", sp, 1, 1)?;
        let flat = spatial_ints(n, "pads", 2 * sp, 0, 0)?;
        let pads = (0..sp).map(|i| (flat[i], flat[sp + i])).collect();
        let auto_pad = n.string_or("auto_pad", "NOTSET")?;
        if !matches!(
            auto_pad.as_str(),
            "NOTSET" | "SAME_UPPER" | "SAME_LOWER" | "VALID"
        ) {
            bail_invalid!("unknown auto_pad '{auto_pad}'");
        }
        Ok(Window {
            kernel,
            strides,
            dilations,
            pads,
            auto_pad,
        })
    }

    /// Kernel extent with dilation on axis `i`.
    pub(crate) fn extent(&self, i: usize) -> usize {
        (self.kernel[i] - 1) * self.dilations[i] + 1
    }

    /// Splits a total SAME padding into (begin, end).
    pub(crate) fn split_same(&self, total: usize) -> (usize, usize) {
        if self.auto_pad == "SAME_LOWER" {
            (total - total / 2, total / 2)
        } else {
            (total / 2, total - total / 2)
        }
    }

    /// The pads a convolution uses on `input` (spatial dims): explicit, or from auto_pad so that
    /// SAME gives `ceil(in / stride)` outputs and VALID none.
    pub(crate) fn conv_pads(&self, input: &[usize]) -> Vec<(usize, usize)> {
        match self.auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => (0..input.len())
                .map(|i| {
                    let out = input[i].div_ceil(self.strides[i]);
                    let total = ((out.max(1) - 1) * self.strides[i] + self.extent(i))
                        .saturating_sub(input[i]);
                    self.split_same(total)
                })
                .collect(),
            "VALID" => vec![(0, 0); input.len()],
            _ => self.pads.clone(),
        }
    }
}

/// Pads the spatial dims (all but the first two) of `x` with the scalar `value`.
pub(crate) fn pad_spatial(
    cx: &mut Cx,
    x: &TVal,
    pads: &[(usize, usize)],
    value: f64,
) -> Result<TVal> {
    if pads.iter().all(|&p| p == (0, 0)) {
        return Ok(x.clone());
    }
    let mut all = vec![(0, 0); 2];
    all.extend_from_slice(pads);
    let v = cx.scalar(value, x.dtype());
    cx.emit1(Prim::PadConstant { pads: all }, &[x, &v])
}

/// Like [`pad_spatial`] with signed pads: negative amounts crop.
pub(crate) fn pad_or_crop_spatial(
    cx: &mut Cx,
    x: &TVal,
    pads: &[(i64, i64)],
    value: f64,
) -> Result<TVal> {
    let mut y = x.clone();
    for (i, &(b, e)) in pads.iter().enumerate() {
        let axis = i + 2;
        let (cb, ce) = ((-b).max(0) as usize, (-e).max(0) as usize);
        if cb + ce > 0 {
            let d = y.shape()[axis];
            if cb + ce > d {
                bail_invalid!("cropping {cb}+{ce} from a dim of {d}");
            }
            y = cx.slice_axis(&y, axis, cb, d - cb - ce, 1)?;
        }
    }
    let pos: Vec<(usize, usize)> = pads
        .iter()
        .map(|&(b, e)| (b.max(0) as usize, e.max(0) as usize))
        .collect();
    pad_spatial(cx, &y, &pos, value)
}

/// Reverses the spatial dims of `w` (a view with negative strides).
fn flip_spatial(cx: &mut Cx, w: &TVal) -> Result<TVal> {
    let mut strides = contiguous_strides(w.shape());
    let mut offset = 0usize;
    for a in 2..w.rank() {
        offset += (w.shape()[a].saturating_sub(1)) * strides[a] as usize;
        strides[a] = -strides[a];
    }
    cx.view(w, w.shape().to_vec(), strides, offset)
}

/// Adds an optional per-channel bias `[M]` to `y` `[N, M, ..]`.
pub(crate) fn add_channel_bias(cx: &mut Cx, y: TVal, b: Option<&TVal>) -> Result<TVal> {
    let Some(b) = b else { return Ok(y) };
    if b.numel() != y.shape()[1] || b.dtype() != y.dtype() {
        bail_invalid!("bias {} does not fit output {}", b.ty, y.ty);
    }
    let mut shape = vec![1; y.rank()];
    shape[1] = y.shape()[1];
    let b = cx.reshape(b, &shape)?;
    cx.add(&y, &b)
}

fn check_conv_operands(x: &TVal, w: &TVal) -> Result<()> {
    if x.rank() < 3 || w.rank() != x.rank() {
        bail_invalid!(
            "input {} and weight {} must be [N, C, spatial..] with equal ranks",
            x.ty,
            w.ty
        );
    }
    Ok(())
}

fn group(n: &Node) -> Result<usize> {
    let g = n.int_or("group", 1)?;
    if g < 1 {
        bail_invalid!("group must be >= 1, got {g}");
    }
    Ok(g as usize)
}

/// Convolution without bias: pad per the node's attributes, then Prim::Conv.
fn conv_nobias(cx: &mut Cx, n: &Node, x: &TVal, w: &TVal) -> Result<TVal> {
    check_conv_operands(x, w)?;
    let win = Window::from_node(n, w.shape()[2..].to_vec())?;
    let pads = win.conv_pads(&x.shape()[2..]);
    let xp = pad_spatial(cx, x, &pads, 0.0)?;
    cx.emit1(
        Prim::Conv {
            strides: win.strides,
            dilations: win.dilations,
            groups: group(n)?,
        },
        &[&xp, w],
    )
}

fn conv(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let w = tensor_arg(ins, 1, "W")?;
    let y = conv_nobias(cx, n, x, w)?;
    Ok(vec![tv(add_channel_bias(cx, y, opt_tensor(ins, 2)?)?)])
}

/// `v - zero_point` in f64; a 1-d zero point applies per `axis` (W's output channels).
fn shift(cx: &mut Cx, v: &TVal, zp: Option<&TVal>, axis: usize) -> Result<TVal> {
    let vf = cx.cast(v, DType::F64)?;
    let Some(zp) = zp else { return Ok(vf) };
    let zf = cx.cast(zp, DType::F64)?;
    let zf = if zp.numel() == 1 {
        cx.reshape(&zf, &[])?
    } else {
        if zp.numel() != v.shape()[axis] {
            bail_invalid!("zero point {} does not fit {}", zp.ty, v.ty);
        }
        let mut shape = vec![1; v.rank()];
        shape[axis] = zp.numel();
        cx.reshape(&zf, &shape)?
    };
    cx.sub(&vf, &zf)
}

fn conv_integer(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "x")?;
    let w = tensor_arg(ins, 1, "w")?;
    check_conv_operands(x, w)?;
    let xs = shift(cx, x, opt_tensor(ins, 2)?, 1)?;
    let ws = shift(cx, w, opt_tensor(ins, 3)?, 0)?;
    let y = conv_nobias(cx, n, &xs, &ws)?;
    Ok(vec![tv(cx.cast(&y, DType::I32)?)])
}

/// ConvTranspose is a stride-1 convolution of the zero-stuffed input with the flipped,
/// in/out-swapped kernel; the transposed pads become `extent - 1 - pad` on each side.
fn conv_transpose(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let w = tensor_arg(ins, 1, "W")?;
    check_conv_operands(x, w)?;
    let g = group(n)?;
    let sp = x.rank() - 2;
    let (c, m_g) = (w.shape()[0], w.shape()[1]);
    if x.shape()[1] != c || c % g != 0 {
        bail_invalid!(
            "ConvTranspose: weight {} does not fit input {} with group {g}",
            w.ty,
            x.ty
        );
    }
    let win = Window::from_node(n, w.shape()[2..].to_vec())?;
    let out_pad = spatial_ints(n, "output_padding", sp, 0, 0)?;
    let output_shape = n.attr_ints("output_shape")?;
    let input = &x.shape()[2..];
    // Full (untrimmed) output length per axis, then the (begin, end) trims.
    let full: Vec<i64> = (0..sp)
        .map(|i| (win.strides[i] * (input[i].max(1) - 1) + out_pad[i] + win.extent(i)) as i64)
        .collect();
    let same = matches!(win.auto_pad.as_str(), "SAME_UPPER" | "SAME_LOWER");
    let pads: Vec<(i64, i64)> = if output_shape.is_some() || same {
        let target = match requested_size(output_shape.as_deref(), input, &win.strides) {
            Some(t) => t,
            None => bail_invalid!("output_shape {output_shape:?} must have {sp} values"),
        };
        let upper = win.auto_pad == "SAME_UPPER";
        (0..sp)
            .map(|i| {
                let total = full[i] - target[i];
                let half = total.div_euclid(2);
                if upper {
                    (half, total - half)
                } else {
                    (total - half, half)
                }
            })
            .collect()
    } else if win.auto_pad == "VALID" {
        vec![(0, 0); sp]
    } else {
        win.pads
            .iter()
            .map(|&(b, e)| (b as i64, e as i64))
            .collect()
    };
    // Zero-stuff: [N, C, i1, 1, i2, 1, ..] padded to [.., i1, s1, i2, s2, ..], then merged.
    let mut split = x.shape()[..2].to_vec();
    let mut stuffed_pads = vec![(0, 0); 2];
    let mut merged = x.shape()[..2].to_vec();
    for i in 0..sp {
        split.extend([input[i], 1]);
        stuffed_pads.extend([(0, 0), (0, win.strides[i] - 1)]);
        merged.push(input[i] * win.strides[i]);
    }
    let xs = cx.reshape(x, &split)?;
    let xs = if win.strides.iter().all(|&s| s == 1) {
        xs
    } else {
        let zero = cx.scalar(0.0, x.dtype());
        cx.emit1(Prim::PadConstant { pads: stuffed_pads }, &[&xs, &zero])?
    };
    let xs = cx.reshape(&xs, &merged)?;
    // Pads of the equivalent convolution; the stuffing left `stride - 1` extra zeros at the end.
    let conv_pads: Vec<(i64, i64)> = (0..sp)
        .map(|i| {
            let e = win.extent(i) as i64 - 1;
            (
                e - pads[i].0,
                e - pads[i].1 + out_pad[i] as i64 - (win.strides[i] as i64 - 1),
            )
        })
        .collect();
    let xp = pad_or_crop_spatial(cx, &xs, &conv_pads, 0.0)?;
    // Weight [C, M/g, k..] -> [g, C/g, M/g, k..] -> [g, M/g, C/g, k..] -> [M, C/g, k..], flipped.
    let ks = &w.shape()[2..];
    let mut gshape = vec![g, c / g, m_g];
    gshape.extend(ks);
    let wg = cx.reshape(w, &gshape)?;
    let mut perm = vec![0, 2, 1];
    perm.extend(3..3 + sp);
    let wt = cx.permute(&wg, &perm)?;
    let mut wshape = vec![g * m_g, c / g];
    wshape.extend(ks);
    let wt = cx.reshape(&wt, &wshape)?;
    let wt = flip_spatial(cx, &wt)?;
    let y = cx.emit1(
        Prim::Conv {
            strides: vec![1; sp],
            dilations: win.dilations.clone(),
            groups: g,
        },
        &[&xp, &wt],
    )?;
    Ok(vec![tv(add_channel_bias(cx, y, opt_tensor(ins, 2)?)?)])
}

/// The requested output size: output_shape (its last `sp` values) or SAME's `in * stride`.
fn requested_size(os: Option<&[i64]>, input: &[usize], strides: &[usize]) -> Option<Vec<i64>> {
    match os {
        Some(o) if o.len() >= input.len() => Some(o[o.len() - input.len()..].to_vec()),
        Some(_) => None,
        None => Some(
            input
                .iter()
                .zip(strides)
                .map(|(&i, &s)| (i * s) as i64)
                .collect(),
        ),
    }
}

/// DeformConv (2-d): bilinearly sample X at the kernel taps moved by the offsets (zeros
/// outside), scale by the mask, then contract with W per group as a matmul.
fn deform_conv(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let w = tensor_arg(ins, 1, "W")?;
    let off = tensor_arg(ins, 2, "offset")?;
    check_conv_operands(x, w)?;
    if x.rank() != 4 || off.rank() != 4 || !x.dtype().is_float() {
        bail_unsupported!("DeformConv is supported for 2-d float inputs only");
    }
    let g = group(n)?;
    let og = n.int_or("offset_group", 1)?;
    let win = Window::from_node(n, w.shape()[2..].to_vec())?;
    let (nb, c, hh, ww) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let (oc, (kh, kw)) = (w.shape()[0], (win.kernel[0], win.kernel[1]));
    let (oh, ow) = (off.shape()[2], off.shape()[3]);
    let k = kh * kw;
    if og < 1
        || c % og as usize != 0
        || off.shape()[1] != og as usize * 2 * k
        || c != w.shape()[1] * g
        || oc % g != 0
    {
        bail_invalid!(
            "DeformConv: X {}, W {}, offset {} do not fit",
            x.ty,
            w.ty,
            off.ty
        );
    }
    let og = og as usize;
    let p = oh * ow;
    let dt = x.dtype();
    // Base tap positions [K, P] per axis, then moved by the offsets: [N, og, K, P].
    let base = |axis: usize| -> Result<TVal> {
        let vals = (0..k * p).map(|i| {
            let (t, q) = (i / p, i % p);
            let (tap, o) = if axis == 0 {
                (t / kw, q / ow)
            } else {
                (t % kw, q % ow)
            };
            (o * win.strides[axis] + tap * win.dilations[axis]) as f64 - win.pads[axis].0 as f64
        });
        Ok(TVal::constant(Tensor::new(
            vec![k, p],
            kuaxin_core::Data::from_f64_iter(dt, vals),
        )?))
    };
    let off5 = cx.reshape(off, &[nb, og, k, 2, p])?;
    let mut coords = vec![];
    for axis in 0..2 {
        let d = cx.slice_axis(&off5, 3, axis, 1, 1)?;
        let d = cx.reshape(&d, &[nb, og, k, p])?;
        let b = base(axis)?;
        coords.push(cx.add(&d, &b)?);
    }
    // Bilinear corners per axis: (index, weight, in-range).
    let mut corners = vec![];
    for (axis, size) in [(0, hh), (1, ww)] {
        let c0 = cx.unary(UnaryOp::Floor, &coords[axis])?;
        let f = cx.sub(&coords[axis], &c0)?;
        let one = cx.scalar(1.0, dt);
        let mut v = vec![];
        for (step, wgt) in [(0.0, cx.sub(&one, &f)?), (1.0, f.clone())] {
            let pos = cx.binary_scalar(BinaryOp::Add, &c0, step)?;
            let ge = cx.binary_scalar(BinaryOp::Ge, &pos, 0.0)?;
            let le = cx.binary_scalar(BinaryOp::Le, &pos, size as f64 - 1.0)?;
            let ok = cx.binary(BinaryOp::And, &ge, &le)?;
            let zero = cx.scalar(0.0, dt);
            let wgt = cx.where_(&ok, &wgt, &zero)?;
            let pos = cx.binary_scalar(BinaryOp::Max, &pos, 0.0)?;
            let pos = cx.binary_scalar(BinaryOp::Min, &pos, size as f64 - 1.0)?;
            v.push((cx.cast(&pos, DType::I64)?, wgt));
        }
        corners.push(v);
    }
    let cg = c / og;
    let xg = cx.reshape(x, &[nb, og, cg, hh * ww])?;
    let mut cols: Option<TVal> = None;
    for (iy, wy) in &corners[0] {
        for (ix, wx) in &corners[1] {
            let row = cx.binary_scalar(BinaryOp::Mul, iy, ww as f64)?;
            let idx = cx.add(&row, ix)?;
            let idx = cx.reshape(&idx, &[nb, og, 1, k * p])?;
            let idx = cx.expand(&idx, &[nb, og, cg, k * p])?;
            let v = cx.emit1(Prim::GatherElements { axis: 3 }, &[&xg, &idx])?;
            let wgt = cx.mul(wy, wx)?;
            let wgt = cx.reshape(&wgt, &[nb, og, 1, k * p])?;
            let v = cx.mul(&v, &wgt)?;
            cols = Some(match cols {
                Some(a) => cx.add(&a, &v)?,
                None => v,
            });
        }
    }
    let mut cols = cols.ok_or_else(|| kuaxin_core::Error::invalid("DeformConv without taps"))?;
    if let Some(m) = opt_tensor(ins, 4)? {
        if m.numel() != nb * og * k * p {
            bail_invalid!("DeformConv mask {} does not fit", m.ty);
        }
        let m = cx.cast(m, dt)?;
        let m = cx.reshape(&m, &[nb, og, 1, k * p])?;
        cols = cx.mul(&cols, &m)?;
    }
    // cols [N, C, K, P] -> [N, g, C/g * K, P]; W [oc, C/g, kh, kw] -> [g, oc/g, C/g * K].
    let cols = cx.reshape(&cols, &[nb, g, (c / g) * k, p])?;
    let wm = cx.reshape(w, &[g, oc / g, (c / g) * k])?;
    let y = cx.matmul(&wm, &cols)?;
    let y = cx.reshape(&y, &[nb, oc, oh, ow])?;
    Ok(vec![tv(add_channel_bias(cx, y, opt_tensor(ins, 3)?)?)])
}

/// CausalConvWithState: depthwise 1-d conv over `[past_state | input]` (zeros when no state),
/// optional SiLU, and the last `k - 1` padded steps as the new state.
fn causal_conv_with_state(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let w = tensor_arg(ins, 1, "weight")?;
    if x.rank() != 3
        || w.rank() != 3
        || w.shape()[0] != x.shape()[1]
        || w.shape()[1] != 1
        || w.shape()[2] == 0
    {
        bail_invalid!(
            "CausalConvWithState: input {} / weight {} must be [B, C, L] / [C, 1, k]",
            x.ty,
            w.ty
        );
    }
    let (b, c, k) = (x.shape()[0], x.shape()[1], w.shape()[2]);
    let padded = match opt_tensor(ins, 3)? {
        Some(p) if p.shape() != [b, c, k - 1] => {
            bail_invalid!("past_state {} must be [{b}, {c}, {}]", p.ty, k - 1)
        }
        Some(p) if k > 1 => cx.concat(&[p.clone(), x.clone()], 2)?,
        _ => pad_spatial(cx, x, &[(k - 1, 0)], 0.0)?,
    };
    let y = cx.emit1(
        Prim::Conv {
            strides: vec![1],
            dilations: vec![1],
            groups: c,
        },
        &[&padded, w],
    )?;
    let y = add_channel_bias(cx, y, opt_tensor(ins, 2)?)?;
    let y = match n.string_or("activation", "none")?.as_str() {
        "none" => y,
        "silu" | "swish" => {
            let f = cx.cast(&y, DType::F32)?;
            let s = cx.unary(UnaryOp::Sigmoid, &f)?;
            let f = cx.mul(&f, &s)?;
            cx.cast(&f, y.dtype())?
        }
        other => bail_invalid!("unknown CausalConvWithState activation '{other}'"),
    };
    let l = padded.shape()[2];
    let state = cx.slice_axis(&padded, 2, l - (k - 1), k - 1, 1)?;
    Ok(vec![tv(y), tv(state)])
}

pub fn register(r: &mut Registry) {
    r.insert("Conv", conv);
    r.insert("ConvInteger", conv_integer);
    r.insert("ConvTranspose", conv_transpose);
    r.insert("DeformConv", deform_conv);
    r.insert("CausalConvWithState", causal_conv_with_state);
}
