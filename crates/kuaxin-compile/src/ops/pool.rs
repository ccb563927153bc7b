//! Pooling: pad, take every window at once as a strided view `[N, C, out.., k..]`, reduce the
//! window axes. Average divisors that depend on padding are host-computed constants.
use super::nn::{pad_or_crop_spatial, pad_spatial, Window};
use super::Registry;
use crate::builder::{opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::prim::{BinaryOp, Prim, ReduceOp, ScatterReduction, UnaryOp};
use kuaxin_core::tensor::contiguous_strides;
use kuaxin_core::{bail_invalid, DType, Data, Result, Tensor};

/// Where the windows of a pooling op sit on one spatial axis.
struct Geom {
    out: Vec<usize>,
    /// Pads the op declares (explicit or from auto_pad), as (begin, end).
    pads: Vec<(usize, usize)>,
    /// Extra zeros/-inf at the end so ceil_mode's last window fits (not counted as padding).
    extra: Vec<usize>,
}

fn geometry(win: &Window, input: &[usize], ceil: bool) -> Result<Geom> {
    let sp = input.len();
    let (mut out, mut pads, mut extra) = (vec![0; sp], vec![(0, 0); sp], vec![0; sp]);
    for i in 0..sp {
        let (s, k) = (win.strides[i], win.extent(i));
        match win.auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => {
                out[i] = input[i].div_ceil(s);
                let total = ((out[i].max(1) - 1) * s + k).saturating_sub(input[i]);
                pads[i] = win.split_same(total);
            }
            "VALID" => {
                if input[i] < k {
                    bail_invalid!("pooling window {k} larger than input {}", input[i]);
                }
                out[i] = (input[i] - k) / s + 1;
            }
            _ => {
                pads[i] = win.pads[i];
                let padded = input[i] + pads[i].0 + pads[i].1;
                if padded < k || pads[i].0 >= k || pads[i].1 >= k {
                    bail_invalid!(
                        "pooling window {k} does not fit input {} with pads {:?}",
                        input[i],
                        pads[i]
                    );
                }
                out[i] = if ceil {
                    (padded - k).div_ceil(s) + 1
                } else {
                    (padded - k) / s + 1
                };
                // The last window must start inside the input or the begin padding.
                if ceil && (out[i] - 1) * s >= input[i] + pads[i].0 {
                    out[i] -= 1;
                }
                extra[i] = ((out[i] - 1) * s + k).saturating_sub(padded);
            }
        }
    }
    Ok(Geom { out, pads, extra })
}

/// Every window of `x` as a view `[N, C, out.., k..]`, after padding with `fill`.
fn windows(cx: &mut Cx, x: &TVal, win: &Window, g: &Geom, fill: f64) -> Result<TVal> {
    let pads: Vec<(usize, usize)> = g
        .pads
        .iter()
        .zip(&g.extra)
        .map(|(&(b, e), &x)| (b, e + x))
        .collect();
    let xp = pad_spatial(cx, x, &pads, fill)?;
    let st = contiguous_strides(xp.shape());
    let sp = g.out.len();
    let mut shape = xp.shape()[..2].to_vec();
    let mut strides = st[..2].to_vec();
    for i in 0..sp {
        shape.push(g.out[i]);
        strides.push(st[2 + i] * win.strides[i] as isize);
    }
    for i in 0..sp {
        shape.push(win.kernel[i]);
        strides.push(st[2 + i] * win.dilations[i] as isize);
    }
    cx.view(&xp, shape, strides, 0)
}

/// The pooling setup shared by every windowed op: x, its window and geometry.
fn setup(n: &Node, ins: &[Option<Value>]) -> Result<(TVal, Window, Geom)> {
    let x = tensor_arg(ins, 0, "X")?.clone();
    if x.rank() < 3 {
        bail_invalid!("pooling input {} must be [N, C, spatial..]", x.ty);
    }
    let kernel = n.attr_ints("kernel_shape")?.unwrap_or_default();
    if kernel.len() != x.rank() - 2 || kernel.iter().any(|&k| k < 1) {
        bail_invalid!("kernel_shape {kernel:?} does not fit input {}", x.ty);
    }
    let win = Window::from_node(n, kernel.iter().map(|&k| k as usize).collect())?;
    let ceil = n.int_or("ceil_mode", 0)? != 0;
    let g = geometry(&win, &x.shape()[2..], ceil)?;
    Ok((x, win, g))
}

fn window_axes(x: &TVal) -> Vec<usize> {
    let sp = x.rank() - 2;
    (2 + sp..2 + 2 * sp).collect()
}

/// The lowest value of `dtype` (what max pooling pads with).
fn lowest(dtype: DType) -> f64 {
    if dtype.is_float() {
        f64::NEG_INFINITY
    } else {
        f64::MIN
    }
}

fn max_pool(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let (x, win, g) = setup(n, ins)?;
    let w = windows(cx, &x, &win, &g, lowest(x.dtype()))?;
    let y = cx.reduce(ReduceOp::Max, &w, &window_axes(&x), false)?;
    let mut outs = vec![tv(y)];
    if n.outputs.len() > 1 && !n.outputs[1].is_empty() {
        outs.push(tv(max_indices(cx, n, &x, &win, &g, &w)?));
    }
    Ok(outs)
}

/// MaxPool's Indices: the argmax within each window, mapped through a host table from
/// (output position, window offset) to the flat input index (row- or column-major spatially).
fn max_indices(cx: &mut Cx, n: &Node, x: &TVal, win: &Window, g: &Geom, w: &TVal) -> Result<TVal> {
    let col_major = n.int_or("storage_order", 0)? != 0;
    let sp = g.out.len();
    let input = &x.shape()[2..];
    let kn: usize = win.kernel.iter().product();
    let on: usize = g.out.iter().product();
    let mut spatial_strides = contiguous_strides(input);
    if col_major {
        let mut acc = 1isize;
        for i in 0..sp {
            spatial_strides[i] = acc;
            acc *= input[i] as isize;
        }
    }
    let mut table = Vec::with_capacity(on * kn);
    for o in 0..on {
        let opos = unravel(o, &g.out);
        for k in 0..kn {
            let kpos = unravel(k, &win.kernel);
            let mut flat = 0i64;
            for i in 0..sp {
                let c = (opos[i] * win.strides[i] + kpos[i] * win.dilations[i]) as i64
                    - g.pads[i].0 as i64;
                flat += c.clamp(0, input[i] as i64 - 1) * spatial_strides[i] as i64;
            }
            table.push(flat);
        }
    }
    let (nb, c) = (x.shape()[0], x.shape()[1]);
    let mut flat_shape = vec![nb, c];
    flat_shape.extend(&g.out);
    flat_shape.push(kn);
    let wf = cx.reshape(w, &flat_shape)?;
    let arg = cx.emit1(
        Prim::ArgReduce {
            max: true,
            axis: sp + 2,
            select_last: false,
        },
        &[&wf],
    )?;
    let mut tshape = vec![1, 1];
    tshape.extend(&g.out);
    tshape.push(kn);
    let t = TVal::constant(Tensor::new(tshape, Data::I64(table))?);
    let t = cx.expand(&t, &flat_shape)?;
    let idx = cx.emit1(Prim::GatherElements { axis: sp + 2 }, &[&t, &arg])?;
    let plane: usize = input.iter().product();
    let mut bshape = vec![nb, c];
    bshape.extend(vec![1; sp + 1]);
    let base = TVal::constant(Tensor::new(
        bshape,
        Data::I64((0..nb * c).map(|i| (i * plane) as i64).collect()),
    )?);
    let idx = cx.add(&idx, &base)?;
    let mut out_shape = vec![nb, c];
    out_shape.extend(&g.out);
    cx.reshape(&idx, &out_shape)
}

fn unravel(mut i: usize, dims: &[usize]) -> Vec<usize> {
    let mut v = vec![0; dims.len()];
    for a in (0..dims.len()).rev() {
        v[a] = i % dims[a];
        i /= dims[a];
    }
    v
}

/// Per output position, how many window taps land in `[lo, hi)` of input coordinates; the
/// product over axes, shaped `[1, 1, out..]`.
fn tap_counts(
    win: &Window,
    g: &Geom,
    input: &[usize],
    include_pad: bool,
    dtype: DType,
) -> Result<TVal> {
    let sp = g.out.len();
    let per_axis: Vec<Vec<f64>> = (0..sp)
        .map(|i| {
            let (lo, hi) = if include_pad {
                (0i64, (input[i] + g.pads[i].0 + g.pads[i].1) as i64)
            } else {
                (g.pads[i].0 as i64, (input[i] + g.pads[i].0) as i64)
            };
            (0..g.out[i])
                .map(|o| {
                    (0..win.kernel[i])
                        .filter(|&k| {
                            let p = (o * win.strides[i] + k * win.dilations[i]) as i64;
                            p >= lo && p < hi
                        })
                        .count() as f64
                })
                .collect()
        })
        .collect();
    let on: usize = g.out.iter().product();
    let vals = (0..on).map(|o| {
        unravel(o, &g.out)
            .iter()
            .enumerate()
            .map(|(i, &p)| per_axis[i][p])
            .product::<f64>()
    });
    let mut shape = vec![1, 1];
    shape.extend(&g.out);
    Ok(TVal::constant(Tensor::new(
        shape,
        Data::from_f64_iter(dtype, vals),
    )?))
}

fn average_pool(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let (x, win, g) = setup(n, ins)?;
    let include_pad = n.int_or("count_include_pad", 0)? != 0;
    let w = windows(cx, &x, &win, &g, 0.0)?;
    let s = cx.reduce(ReduceOp::Sum, &w, &window_axes(&x), false)?;
    let div = tap_counts(&win, &g, &x.shape()[2..], include_pad, x.dtype())?;
    Ok(vec![tv(cx.div(&s, &div)?)])
}

/// `(sum |x|^p)^(1/p)` over `axes`.
fn lp_reduce(cx: &mut Cx, x: &TVal, axes: &[usize], p: i64, keepdims: bool) -> Result<TVal> {
    let a = cx.unary(UnaryOp::Abs, x)?;
    let powed = match p {
        1 => a,
        2 => cx.mul(&a, &a)?,
        _ => cx.binary_scalar(BinaryOp::Pow, &a, p as f64)?,
    };
    let s = cx.reduce(ReduceOp::Sum, &powed, axes, keepdims)?;
    match p {
        1 => Ok(s),
        2 => cx.unary(UnaryOp::Sqrt, &s),
        _ => cx.binary_scalar(BinaryOp::Pow, &s, 1.0 / p as f64),
    }
}

fn lp_p(n: &Node) -> Result<i64> {
    let p = n.int_or("p", 2)?;
    if p < 1 {
        bail_invalid!("LpPool p must be >= 1, got {p}");
    }
    Ok(p)
}

fn lp_pool(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let (x, win, g) = setup(n, ins)?;
    let w = windows(cx, &x, &win, &g, 0.0)?;
    Ok(vec![tv(lp_reduce(
        cx,
        &w,
        &window_axes(&x),
        lp_p(n)?,
        false,
    )?)])
}

fn global_input(ins: &[Option<Value>]) -> Result<(TVal, Vec<usize>)> {
    let x = tensor_arg(ins, 0, "X")?.clone();
    if x.rank() < 2 {
        bail_invalid!("global pooling input {} must be [N, C, spatial..]", x.ty);
    }
    let axes = (2..x.rank()).collect();
    Ok((x, axes))
}

fn global_average(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let (x, axes) = global_input(ins)?;
    Ok(vec![tv(cx.mean(&x, &axes, true)?)])
}

fn global_max(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let (x, axes) = global_input(ins)?;
    Ok(vec![tv(cx.reduce(ReduceOp::Max, &x, &axes, true)?)])
}

fn global_lp(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let (x, axes) = global_input(ins)?;
    Ok(vec![tv(lp_reduce(cx, &x, &axes, lp_p(n)?, true)?)])
}

/// Scatters X into zeros at the flat indices I (from MaxPool) of the unpooled shape.
fn max_unpool(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let idx = tensor_arg(ins, 1, "I")?;
    if x.rank() < 3 || idx.shape() != x.shape() {
        bail_invalid!(
            "MaxUnpool: X {} and I {} must match, rank >= 3",
            x.ty,
            idx.ty
        );
    }
    let kernel = n.attr_ints("kernel_shape")?.unwrap_or_default();
    if kernel.len() != x.rank() - 2 || kernel.iter().any(|&k| k < 1) {
        bail_invalid!("kernel_shape {kernel:?} does not fit input {}", x.ty);
    }
    let win = Window::from_node(n, kernel.iter().map(|&k| k as usize).collect())?;
    // Indices address the default unpooled shape; a given output_shape pads (or crops) its end.
    let mut shape = x.shape()[..2].to_vec();
    for (i, &d) in x.shape()[2..].iter().enumerate() {
        let full = (d - 1) * win.strides[i] + win.kernel[i];
        let p = win.pads[i].0 + win.pads[i].1;
        if full < p {
            bail_invalid!("MaxUnpool pads {:?} exceed the output", win.pads[i]);
        }
        shape.push(full - p);
    }
    let target = match opt_tensor(ins, 2)? {
        Some(s) => super::misc::shape_arg(cx, s, "MaxUnpool output_shape")?,
        None => shape.clone(),
    };
    if target.len() != x.rank() || target[..2] != shape[..2] {
        bail_invalid!("MaxUnpool output_shape {target:?} does not fit {}", x.ty);
    }
    let total: usize = shape.iter().product();
    let zeros = cx.full(0.0, x.dtype(), &[total])?;
    let i = cx.reshape(idx, &[idx.numel()])?;
    let i = cx.cast(&i, DType::I64)?;
    let u = cx.reshape(x, &[x.numel()])?;
    let y = cx.emit1(
        Prim::ScatterElements {
            axis: 0,
            reduction: ScatterReduction::None,
        },
        &[&zeros, &i, &u],
    )?;
    let y = cx.reshape(&y, &shape)?;
    let grow: Vec<(i64, i64)> = (2..x.rank())
        .map(|a| (0, target[a] as i64 - shape[a] as i64))
        .collect();
    Ok(vec![tv(pad_or_crop_spatial(cx, &y, &grow, 0.0)?)])
}

pub fn register(r: &mut Registry) {
    r.insert("MaxPool", max_pool);
    r.insert("AveragePool", average_pool);
    r.insert("LpPool", lp_pool);
    r.insert("GlobalAveragePool", global_average);
    r.insert("GlobalMaxPool", global_max);
    r.insert("GlobalLpPool", global_lp);
    r.insert("MaxUnpool", max_unpool);
}
