//! Resize and Upsample, as separable per-axis interpolation: for every resized axis the host
//! computes (from shapes and attributes only) which input taps each output reads and with which
//! weights; the device then does Gather, Mul by the weights and a Sum over the taps.
use super::Registry;
use crate::builder::{norm_axes, norm_axis, opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::prim::{BinaryOp, Prim, ReduceOp, UnaryOp};
use kuaxin_core::{bail_invalid, bail_unsupported, DType, Data, Error, Result, Tensor};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

struct Attrs {
    mode: Mode,
    coord: String,
    nearest: String,
    cubic_a: f64,
    exclude_outside: bool,
    extrapolation: f64,
    antialias: bool,
}

/// Which taps one output axis reads: `idx[o * n + j]` with weight `w[o * n + j]`; outputs
/// flagged in `extrapolate` take the extrapolation value instead.
struct AxisPlan {
    n: usize,
    idx: Vec<i64>,
    w: Vec<f64>,
    extrapolate: Option<Vec<bool>>,
}

fn nearest_coeffs(ratio: f64, mode: &str) -> Result<Vec<f64>> {
    let b = |c: bool| if c { 1.0 } else { 0.0 };
    if ratio == 1.0 {
        return Ok(vec![0.0, 1.0]);
    }
    Ok(match mode {
        "round_prefer_floor" => vec![b(ratio <= 0.5), b(ratio > 0.5)],
        "round_prefer_ceil" => vec![b(ratio < 0.5), b(ratio >= 0.5)],
        "floor" => vec![1.0, 0.0],
        "ceil" => vec![0.0, 1.0],
        other => bail_invalid!("unknown nearest_mode '{other}'"),
    })
}

fn cubic_coeffs(r: f64, a: f64) -> Vec<f64> {
    let s = 1.0 - r;
    vec![
        ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
        ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
        ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0,
        ((a * (s + 1.0) - 5.0 * a) * (s + 1.0) + 8.0 * a) * (s + 1.0) - 4.0 * a,
    ]
}

fn cubic_coeffs_antialias(r: f64, scale: f64, a: f64) -> Vec<f64> {
    let scale = scale.min(1.0);
    let k = |x: f64| {
        let x = x.abs();
        if x <= 1.0 {
            (a + 2.0) * x * x * x - (a + 3.0) * x * x + 1.0
        } else if x < 2.0 {
            a * x * x * x - 5.0 * a * x * x + 8.0 * a * x - 4.0 * a
        } else {
            0.0
        }
    };
    let start = (-2.0 / scale).floor() as i64 + 1;
    let c: Vec<f64> = (start..2 - start)
        .map(|i| k(scale * (i as f64 - r)))
        .collect();
    let sum: f64 = c.iter().sum();
    c.into_iter().map(|v| v / sum).collect()
}

fn linear_coeffs_antialias(r: f64, scale: f64) -> Vec<f64> {
    let scale = scale.min(1.0);
    let start = (-1.0 / scale).floor() as i64 + 1;
    let c: Vec<f64> = (start..start + 2 - 2 * start)
        .map(|i| (1.0 - ((i as f64 - r) * scale).abs()).clamp(0.0, 1.0))
        .collect();
    let sum: f64 = c.iter().sum();
    c.into_iter().map(|v| v / sum).collect()
}

impl Attrs {
    fn coeffs(&self, ratio: f64, scale: f64) -> Result<Vec<f64>> {
        Ok(match (self.mode, self.antialias) {
            (Mode::Nearest, _) => nearest_coeffs(ratio, &self.nearest)?,
            (Mode::Linear, false) => vec![1.0 - ratio, ratio],
            (Mode::Linear, true) => linear_coeffs_antialias(ratio, scale),
            (Mode::Cubic, false) => cubic_coeffs(ratio, self.cubic_a),
            (Mode::Cubic, true) => cubic_coeffs_antialias(ratio, scale, self.cubic_a),
        })
    }

    /// Source coordinate of output `y`, and whether it lies outside the input (crop mode).
    fn source(
        &self,
        y: f64,
        scale: f64,
        input: usize,
        out: usize,
        roi: (f64, f64),
    ) -> Result<(f64, bool)> {
        let iw = input as f64;
        let ow = scale * iw;
        let x = match self.coord.as_str() {
            "align_corners" => {
                if ow == 1.0 {
                    0.0
                } else {
                    y * (iw - 1.0) / (ow - 1.0)
                }
            }
            "asymmetric" => y / scale,
            "tf_crop_and_resize" => {
                let x = if ow == 1.0 {
                    (roi.1 - roi.0) * (iw - 1.0) / 2.0
                } else {
                    y * (roi.1 - roi.0) * (iw - 1.0) / (ow - 1.0)
                } + roi.0 * (iw - 1.0);
                return Ok((x, x < 0.0 || x > iw - 1.0));
            }
            "pytorch_half_pixel" => {
                if ow == 1.0 {
                    -0.5
                } else {
                    (y + 0.5) / scale - 0.5
                }
            }
            "half_pixel" => (y + 0.5) / scale - 0.5,
            "half_pixel_symmetric" => {
                let offset = iw / 2.0 * (1.0 - out as f64 / ow);
                offset + (y + 0.5) / scale - 0.5
            }
            other => bail_invalid!("unknown coordinate_transformation_mode '{other}'"),
        };
        Ok((x, false))
    }

    /// The tap table of one axis, following the ONNX reference exactly (edge clamping,
    /// tie-breaking towards the left, optional renormalization when excluding outside taps).
    fn plan(&self, input: usize, out: usize, scale: f64, roi: (f64, f64)) -> Result<AxisPlan> {
        let mut plan = AxisPlan {
            n: 0,
            idx: vec![],
            w: vec![],
            extrapolate: None,
        };
        let mut extra = vec![false; out];
        for o in 0..out {
            let (x, outside) = self.source(o as f64, scale, input, out, roi)?;
            extra[o] = outside;
            let xi = x.floor();
            let ratio = if x == xi { 1.0 } else { x - xi };
            let mut c = self.coeffs(ratio, scale)?;
            let n = c.len();
            plan.n = n;
            let pad = n.div_ceil(2) as f64;
            let xp = x + pad;
            let p = xp.floor();
            let frac = xp - p;
            let off = if n % 2 == 0 {
                if frac == 0.0 {
                    -((n / 2) as i64)
                } else {
                    -((n / 2) as i64) + 1
                }
            } else {
                let base = -(((n - 1) / 2) as i64);
                if frac <= 0.5 {
                    base
                } else {
                    base + 1
                }
            };
            let start = p as i64 + off - pad as i64;
            let taps: Vec<i64> = (0..n as i64).map(|j| start + j).collect();
            if self.exclude_outside {
                for (cj, &t) in c.iter_mut().zip(&taps) {
                    if t < 0 || t >= input as i64 {
                        *cj = 0.0;
                    }
                }
                let s: f64 = c.iter().sum();
                let s = if s == 0.0 { 1.0 } else { s };
                c.iter_mut().for_each(|v| *v /= s);
            }
            plan.idx
                .extend(taps.iter().map(|&t| t.clamp(0, input as i64 - 1)));
            plan.w.extend(c);
        }
        if extra.iter().any(|&e| e) {
            plan.extrapolate = Some(extra);
        }
        Ok(plan)
    }
}

/// Applies one axis' plan to `x` (float dtype for weighted modes).
fn resize_axis(
    cx: &mut Cx,
    x: &TVal,
    axis: usize,
    out: usize,
    plan: &AxisPlan,
    attrs: &Attrs,
) -> Result<TVal> {
    let mut y = if attrs.mode == Mode::Nearest {
        // One-hot weights: read only the chosen tap.
        let idx: Vec<i64> = (0..out)
            .map(|o| {
                let row = &plan.w[o * plan.n..(o + 1) * plan.n];
                let j = row.iter().position(|&v| v != 0.0).unwrap_or(0);
                plan.idx[o * plan.n + j]
            })
            .collect();
        let i = cx.i64s(&idx);
        cx.emit1(Prim::Gather { axis }, &[x, &i])?
    } else {
        let i = TVal::constant(Tensor::new(vec![out, plan.n], Data::I64(plan.idx.clone()))?);
        let g = cx.emit1(Prim::Gather { axis }, &[x, &i])?;
        let mut wshape = vec![out, plan.n];
        wshape.extend(vec![1; x.rank() - axis - 1]);
        let w = TVal::constant(Tensor::new(
            wshape,
            Data::from_f64_iter(x.dtype(), plan.w.iter().copied()),
        )?);
        let prod = cx.mul(&g, &w)?;
        cx.reduce(ReduceOp::Sum, &prod, &[axis + 1], false)?
    };
    if let Some(mask) = &plan.extrapolate {
        let mut mshape = vec![out];
        mshape.extend(vec![1; x.rank() - axis - 1]);
        let m = TVal::constant(Tensor::new(mshape, Data::Bool(mask.clone()))?);
        let e = cx.scalar(attrs.extrapolation, y.dtype());
        y = cx.where_(&m, &e, &y)?;
    }
    Ok(y)
}

/// Output sizes and scales per axis (all axes; untouched ones keep size and scale 1).
fn sizes_and_scales(
    x: &TVal,
    axes: &[usize],
    scales: Option<Vec<f64>>,
    sizes: Option<Vec<i64>>,
    policy: &str,
) -> Result<(Vec<usize>, Vec<f64>)> {
    let r = x.rank();
    let mut out = x.shape().to_vec();
    let mut sc = vec![1.0; r];
    if let Some(sizes) = sizes {
        if sizes.len() != axes.len() || sizes.iter().any(|&s| s < 0) {
            bail_invalid!("Resize sizes {sizes:?} do not fit axes {axes:?}");
        }
        for (&a, &s) in axes.iter().zip(&sizes) {
            out[a] = s as usize;
            sc[a] = s as f64 / x.shape()[a] as f64;
        }
        if policy != "stretch" {
            let pick = axes.iter().map(|&a| sc[a]);
            let s = match policy {
                "not_larger" => pick.fold(f64::INFINITY, f64::min),
                "not_smaller" => pick.fold(f64::NEG_INFINITY, f64::max),
                other => bail_invalid!("unknown keep_aspect_ratio_policy '{other}'"),
            };
            for &a in axes {
                sc[a] = s;
                out[a] = (s * x.shape()[a] as f64 + 0.5) as usize;
            }
        }
    } else if let Some(scales) = scales {
        if scales.len() != axes.len() || scales.iter().any(|&s| s <= 0.0) {
            bail_invalid!("Resize scales {scales:?} do not fit axes {axes:?}");
        }
        for (&a, &s) in axes.iter().zip(&scales) {
            sc[a] = s;
            out[a] = (s * x.shape()[a] as f64) as usize;
        }
    } else {
        bail_invalid!("Resize needs scales or sizes");
    }
    Ok((out, sc))
}

/// Resizes `x` along `axes` (sorted) to `out` with the given per-axis scales and roi.
fn resize_to(
    cx: &mut Cx,
    x: &TVal,
    axes: &[usize],
    out: &[usize],
    scales: &[f64],
    roi: &[(f64, f64)],
    attrs: &Attrs,
) -> Result<TVal> {
    if axes.iter().any(|&a| x.shape()[a] == 0) {
        bail_invalid!("cannot resize an empty axis of {}", x.ty);
    }
    let dtype = x.dtype();
    let work = if attrs.mode != Mode::Nearest && !dtype.is_float() {
        DType::F64
    } else {
        dtype
    };
    let mut y = cx.cast(x, work)?;
    for &a in axes {
        let (input, o, s, rr) = (x.shape()[a], out[a], scales[a], roi[a]);
        let identity_roi = (rr.0).abs() < 1e-9 && (rr.1 - 1.0).abs() < 1e-9;
        if (s - 1.0).abs() <= 1e-9
            && o == input
            && (attrs.coord != "tf_crop_and_resize" || identity_roi)
        {
            continue;
        }
        let plan = attrs.plan(input, o, s, rr)?;
        y = resize_axis(cx, &y, a, o, &plan, attrs)?;
    }
    if work != dtype {
        // Saturate like the reference before casting back.
        let lo = if dtype.is_unsigned_int() {
            0.0
        } else {
            -(2f64.powi(dtype.size() as i32 * 8 - 1))
        };
        let hi = if dtype.is_unsigned_int() {
            2f64.powi(dtype.size() as i32 * 8) - 1.0
        } else {
            2f64.powi(dtype.size() as i32 * 8 - 1) - 1.0
        };
        let r = cx.unary(UnaryOp::Round, &y)?;
        let r = cx.binary_scalar(BinaryOp::Max, &r, lo)?;
        let r = cx.binary_scalar(BinaryOp::Min, &r, hi)?;
        y = cx.cast(&r, dtype)?;
    }
    Ok(y)
}

fn floats_of(cx: &mut Cx, v: Option<&TVal>) -> Result<Option<Vec<f64>>> {
    match v {
        Some(t) if t.numel() > 0 => Ok(Some(cx.floats(t)?)),
        _ => Ok(None),
    }
}

fn resize(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let r = x.rank();
    let legacy = cx.opset < 11;
    // Opset 10 has inputs (X, scales) and behaves like Upsample (asymmetric, floor).
    let (roi_in, scales_in, sizes_in) = if legacy {
        (None, opt_tensor(ins, 1)?, None)
    } else {
        (
            opt_tensor(ins, 1)?,
            opt_tensor(ins, 2)?,
            opt_tensor(ins, 3)?,
        )
    };
    // Scales, sizes and roi follow the order of the axes attribute; interpolate in sorted order.
    let axes_given: Vec<usize> = match n.attr_ints("axes")? {
        Some(a) => a.iter().map(|&v| norm_axis(v, r)).collect::<Result<_>>()?,
        None => (0..r).collect(),
    };
    let axes = norm_axes(&axes_given.iter().map(|&a| a as i64).collect::<Vec<_>>(), r)?;
    let mode = match n.string_or("mode", "nearest")?.as_str() {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" | "trilinear" => Mode::Linear,
        "cubic" | "bicubic" => Mode::Cubic,
        other => bail_invalid!("unknown Resize mode '{other}'"),
    };
    let attrs = Attrs {
        mode,
        coord: if legacy {
            "asymmetric".into()
        } else {
            n.string_or("coordinate_transformation_mode", "half_pixel")?
        },
        nearest: if legacy {
            "floor".into()
        } else {
            n.string_or("nearest_mode", "round_prefer_floor")?
        },
        cubic_a: n.float_or("cubic_coeff_a", -0.75)? as f64,
        exclude_outside: n.int_or("exclude_outside", 0)? != 0,
        extrapolation: n.float_or("extrapolation_value", 0.0)? as f64,
        antialias: n.int_or("antialias", 0)? != 0 && mode != Mode::Nearest,
    };
    let scales = floats_of(cx, scales_in)?;
    let sizes = match sizes_in {
        Some(t) if t.numel() > 0 => Some(cx.ints(t)?),
        _ => None,
    };
    let policy = n.string_or("keep_aspect_ratio_policy", "stretch")?;
    let (out, sc) = sizes_and_scales(x, &axes_given, scales, sizes, &policy)?;
    let mut roi = vec![(0.0, 1.0); r];
    if attrs.coord == "tf_crop_and_resize" {
        let v =
            floats_of(cx, roi_in)?.ok_or_else(|| Error::invalid("tf_crop_and_resize needs roi"))?;
        let k = axes_given.len();
        if v.len() != 2 * k {
            bail_invalid!("roi has {} values, expected {}", v.len(), 2 * k);
        }
        for (i, &a) in axes_given.iter().enumerate() {
            roi[a] = (v[i], v[k + i]);
        }
    }
    Ok(vec![tv(resize_to(cx, x, &axes, &out, &sc, &roi, &attrs)?)])
}

fn upsample(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let scales = match opt_tensor(ins, 1)? {
        Some(s) => cx.floats(s)?,
        None => n
            .attr_floats("scales")?
            .ok_or_else(|| Error::invalid("Upsample needs scales"))?
            .into_iter()
            .map(|v| v as f64)
            .collect(),
    };
    let mode = match n.string_or("mode", "nearest")?.as_str() {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" => Mode::Linear,
        other => bail_unsupported!("Upsample mode '{other}' is not supported"),
    };
    let attrs = Attrs {
        mode,
        coord: "asymmetric".into(),
        nearest: "floor".into(),
        cubic_a: -0.75,
        exclude_outside: false,
        extrapolation: 0.0,
        antialias: false,
    };
    let axes: Vec<usize> = (0..x.rank()).collect();
    let (out, sc) = sizes_and_scales(x, &axes, Some(scales), None, "stretch")?;
    let roi = vec![(0.0, 1.0); x.rank()];
    Ok(vec![tv(resize_to(cx, x, &axes, &out, &sc, &roi, &attrs)?)])
}

// ---- AffineGrid and GridSample: sampling at coordinates given as data ----

/// Normalized [-1, 1] sample positions along an axis of `d` pixels.
fn linspace(d: usize, align_corners: bool) -> Vec<f64> {
    (0..d)
        .map(|i| {
            if align_corners {
                if d == 1 {
                    -1.0
                } else {
                    -1.0 + 2.0 * i as f64 / (d - 1) as f64
                }
            } else {
                -1.0 + (2 * i + 1) as f64 / d as f64
            }
        })
        .collect()
}

fn affine_grid(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let theta = tensor_arg(ins, 0, "theta")?;
    let size = super::misc::shape_arg(cx, tensor_arg(ins, 1, "size")?, "AffineGrid size")?;
    let align = n.int_or("align_corners", 0)? != 0;
    let sp = size.len().saturating_sub(2);
    if !(sp == 2 || sp == 3) || theta.shape() != [size[0], sp, sp + 1] {
        bail_invalid!("AffineGrid: theta {} does not fit size {size:?}", theta.ty);
    }
    let dims = &size[2..];
    let s: usize = dims.iter().product();
    let lin: Vec<Vec<f64>> = dims.iter().map(|&d| linspace(d, align)).collect();
    // Homogeneous base grid [S, sp + 1]: (x, y[, z], 1) with x along the last spatial axis.
    let mut base = Vec::with_capacity(s * (sp + 1));
    for p in 0..s {
        let mut rem = p;
        let mut pos = vec![0; sp];
        for a in (0..sp).rev() {
            pos[a] = rem % dims[a];
            rem /= dims[a];
        }
        for j in 0..sp {
            let a = sp - 1 - j;
            base.push(lin[a][pos[a]]);
        }
        base.push(1.0);
    }
    let base = TVal::constant(Tensor::new(
        vec![s, sp + 1],
        Data::from_f64_iter(theta.dtype(), base.into_iter()),
    )?);
    let tt = cx.permute(theta, &[0, 2, 1])?;
    let g = cx.matmul(&base, &tt)?;
    let mut shape = vec![size[0]];
    shape.extend(dims);
    shape.push(sp);
    Ok(vec![tv(cx.reshape(&g, &shape)?)])
}

/// Keys cubic weights for the 4 taps around fractional offset `t` (A = -0.75), as tensors.
fn cubic_weights(cx: &mut Cx, t: &TVal) -> Result<Vec<TVal>> {
    let a = -0.75;
    let one = cx.scalar(1.0, t.dtype());
    let near = |cx: &mut Cx, x: &TVal| -> Result<TVal> {
        // ((a + 2) x - (a + 3)) x^2 + 1
        let p = cx.binary_scalar(BinaryOp::Mul, x, a + 2.0)?;
        let p = cx.binary_scalar(BinaryOp::Sub, &p, a + 3.0)?;
        let x2 = cx.mul(x, x)?;
        let p = cx.mul(&p, &x2)?;
        cx.add(&p, &one)
    };
    let far = |cx: &mut Cx, x: &TVal| -> Result<TVal> {
        // ((a x - 5a) x + 8a) x - 4a
        let p = cx.binary_scalar(BinaryOp::Mul, x, a)?;
        let p = cx.binary_scalar(BinaryOp::Sub, &p, 5.0 * a)?;
        let p = cx.mul(&p, x)?;
        let p = cx.binary_scalar(BinaryOp::Add, &p, 8.0 * a)?;
        let p = cx.mul(&p, x)?;
        cx.binary_scalar(BinaryOp::Sub, &p, 4.0 * a)
    };
    let t1 = cx.binary_scalar(BinaryOp::Add, t, 1.0)?;
    let s = cx.sub(&one, t)?;
    let s1 = cx.binary_scalar(BinaryOp::Add, &s, 1.0)?;
    Ok(vec![
        far(cx, &t1)?,
        near(cx, t)?,
        near(cx, &s)?,
        far(cx, &s1)?,
    ])
}

/// Reflects `x` into `[lo, hi]` by repeated mirroring at the borders (values inside stay).
fn reflect(cx: &mut Cx, x: &TVal, lo: f64, hi: f64) -> Result<TVal> {
    let rng = hi - lo;
    if rng <= 0.0 {
        return cx.full(lo, x.dtype(), x.shape());
    }
    let below = cx.binary_scalar(BinaryOp::Lt, x, lo)?;
    let above = cx.binary_scalar(BinaryOp::Gt, x, hi)?;
    let lo_t = cx.scalar(lo, x.dtype());
    let hi_t = cx.scalar(hi, x.dtype());
    let d_lo = cx.sub(&lo_t, x)?;
    let d_hi = cx.sub(x, &hi_t)?;
    let dx = cx.where_(&below, &d_lo, &d_hi)?;
    let q = cx.binary_scalar(BinaryOp::Div, &dx, rng)?;
    let q = cx.unary(UnaryOp::Floor, &q)?;
    let qr = cx.binary_scalar(BinaryOp::Mul, &q, rng)?;
    let r = cx.sub(&dx, &qr)?;
    let half = cx.binary_scalar(BinaryOp::Mul, &q, 0.5)?;
    let half_f = cx.unary(UnaryOp::Floor, &half)?;
    let even = cx.binary(BinaryOp::Eq, &half, &half_f)?;
    let from_lo = cx.add(&lo_t, &r)?;
    let from_hi = cx.sub(&hi_t, &r)?;
    // Below and even, or above and odd: measured from lo; otherwise from hi.
    let use_lo = cx.binary(BinaryOp::Eq, &below, &even)?;
    let m = cx.where_(&use_lo, &from_lo, &from_hi)?;
    let out = cx.binary(BinaryOp::Or, &below, &above)?;
    cx.where_(&out, &m, x)
}

/// One tap of one axis: integer position (float valued) and its weight.
struct Tap {
    pos: TVal,
    weight: Option<TVal>,
}

fn grid_sample(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let grid = tensor_arg(ins, 1, "grid")?;
    let sp = x.rank().saturating_sub(2);
    if sp == 0
        || grid.rank() != sp + 2
        || grid.shape()[0] != x.shape()[0]
        || grid.shape()[sp + 1] != sp
        || !x.dtype().is_float()
    {
        bail_invalid!("GridSample: grid {} does not fit X {}", grid.ty, x.ty);
    }
    let mode = match n.string_or("mode", "linear")?.as_str() {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" => Mode::Linear,
        "cubic" | "bicubic" => Mode::Cubic,
        other => bail_invalid!("unknown GridSample mode '{other}'"),
    };
    let padding = n.string_or("padding_mode", "zeros")?;
    if !matches!(padding.as_str(), "zeros" | "border" | "reflection") {
        bail_invalid!("unknown GridSample padding_mode '{padding}'");
    }
    let align = n.int_or("align_corners", 0)? != 0;
    let (nb, c) = (x.shape()[0], x.shape()[1]);
    let dims = x.shape()[2..].to_vec();
    let out_sp = grid.shape()[1..sp + 1].to_vec();
    let p: usize = out_sp.iter().product();
    let g = cx.cast(grid, x.dtype())?;
    let g = cx.reshape(&g, &[nb, p, sp])?;
    // Per spatial axis: the taps (positions + weights) and whether each position is valid.
    let mut axes_taps: Vec<Vec<(TVal, Option<TVal>, Option<TVal>)>> = vec![];
    for (i, &d) in dims.iter().enumerate() {
        let df = d as f64;
        let comp = cx.slice_axis(&g, 2, sp - 1 - i, 1, 1)?;
        let comp = cx.reshape(&comp, &[nb, 1, p])?;
        // Denormalize to pixel coordinates.
        let xc = if align {
            let t = cx.binary_scalar(BinaryOp::Add, &comp, 1.0)?;
            cx.binary_scalar(BinaryOp::Mul, &t, (df - 1.0) / 2.0)?
        } else {
            let t = cx.binary_scalar(BinaryOp::Add, &comp, 1.0)?;
            let t = cx.binary_scalar(BinaryOp::Mul, &t, df)?;
            let t = cx.binary_scalar(BinaryOp::Sub, &t, 1.0)?;
            cx.binary_scalar(BinaryOp::Mul, &t, 0.5)?
        };
        let xc = if mode == Mode::Nearest {
            cx.unary(UnaryOp::Round, &xc)?
        } else {
            xc
        };
        let (lo, hi) = if align {
            (0.0, df - 1.0)
        } else {
            (-0.5, df - 0.5)
        };
        let xc = match padding.as_str() {
            "border" => {
                let below = cx.binary_scalar(BinaryOp::Lt, &xc, lo)?;
                let above = cx.binary_scalar(BinaryOp::Gt, &xc, hi)?;
                let out = cx.binary(BinaryOp::Or, &below, &above)?;
                let cl = cx.binary_scalar(BinaryOp::Max, &xc, 0.0)?;
                let cl = cx.binary_scalar(BinaryOp::Min, &cl, df - 1.0)?;
                cx.where_(&out, &cl, &xc)?
            }
            "reflection" => reflect(cx, &xc, lo, hi)?,
            _ => xc,
        };
        let taps: Vec<Tap> = match mode {
            Mode::Nearest => {
                // Truncate toward zero like the reference's int cast.
                let t = cx.cast(&xc, DType::I64)?;
                vec![Tap {
                    pos: cx.cast(&t, x.dtype())?,
                    weight: None,
                }]
            }
            Mode::Linear | Mode::Cubic => {
                let x0 = cx.unary(UnaryOp::Floor, &xc)?;
                let f = cx.sub(&xc, &x0)?;
                let (first, weights) = if mode == Mode::Linear {
                    let one = cx.scalar(1.0, f.dtype());
                    (0.0, vec![cx.sub(&one, &f)?, f])
                } else {
                    (-1.0, cubic_weights(cx, &f)?)
                };
                let mut v = vec![];
                for (k, w) in weights.into_iter().enumerate() {
                    let pos = cx.binary_scalar(BinaryOp::Add, &x0, first + k as f64)?;
                    v.push(Tap {
                        pos,
                        weight: Some(w),
                    });
                }
                v
            }
        };
        let mut resolved = vec![];
        for t in taps {
            // Where the tap lands, per padding mode: zeros masks it, others move it inside.
            let (pos, valid) = match padding.as_str() {
                "zeros" => {
                    let ge = cx.binary_scalar(BinaryOp::Ge, &t.pos, 0.0)?;
                    let le = cx.binary_scalar(BinaryOp::Le, &t.pos, df - 1.0)?;
                    let ok = cx.binary(BinaryOp::And, &ge, &le)?;
                    (t.pos, Some(ok))
                }
                "reflection" => {
                    let r = reflect(cx, &t.pos, lo, hi)?;
                    let r = cx.cast(&r, DType::I64)?;
                    (cx.cast(&r, x.dtype())?, None)
                }
                _ => (t.pos, None),
            };
            let pos = cx.binary_scalar(BinaryOp::Max, &pos, 0.0)?;
            let pos = cx.binary_scalar(BinaryOp::Min, &pos, df - 1.0)?;
            let pos = cx.cast(&pos, DType::I64)?;
            resolved.push((pos, t.weight, valid));
        }
        axes_taps.push(resolved);
    }
    // Sum over every combination of taps: gather the flat index, weight by the product.
    let strides = kuaxin_core::tensor::contiguous_strides(&dims);
    let s: usize = dims.iter().product();
    let xf = cx.reshape(x, &[nb, c, s])?;
    let counts: Vec<usize> = axes_taps.iter().map(|t| t.len()).collect();
    let combos: usize = counts.iter().product();
    let mut acc: Option<TVal> = None;
    for combo in 0..combos {
        let mut rem = combo;
        let (mut idx, mut weight, mut valid): (Option<TVal>, Option<TVal>, Option<TVal>) =
            (None, None, None);
        for i in (0..sp).rev() {
            let (pos, w, ok) = &axes_taps[i][rem % counts[i]];
            rem /= counts[i];
            let term = cx.binary_scalar(BinaryOp::Mul, pos, strides[i] as f64)?;
            idx = Some(match idx {
                Some(a) => cx.add(&a, &term)?,
                None => term,
            });
            if let Some(w) = w {
                weight = Some(match weight {
                    Some(a) => cx.mul(&a, w)?,
                    None => w.clone(),
                });
            }
            if let Some(ok) = ok {
                valid = Some(match valid {
                    Some(a) => cx.binary(BinaryOp::And, &a, ok)?,
                    None => ok.clone(),
                });
            }
        }
        let idx = idx.ok_or_else(|| Error::invalid("GridSample without spatial dims"))?;
        let idx = cx.expand(&idx, &[nb, c, p])?;
        let mut v = cx.emit1(Prim::GatherElements { axis: 2 }, &[&xf, &idx])?;
        if let Some(ok) = valid {
            let z = cx.scalar(0.0, x.dtype());
            v = cx.where_(&ok, &v, &z)?;
        }
        if let Some(w) = weight {
            v = cx.mul(&v, &w)?;
        }
        acc = Some(match acc {
            Some(a) => cx.add(&a, &v)?,
            None => v,
        });
    }
    let y = acc.ok_or_else(|| Error::invalid("GridSample without taps"))?;
    let mut shape = vec![nb, c];
    shape.extend(out_sp);
    Ok(vec![tv(cx.reshape(&y, &shape)?)])
}

/// RoiAlign's bilinear taps along one axis for sample coordinates `c`: (index, weight) for the
/// low and high neighbour; samples beyond one pixel outside the image get weight 0.
fn roi_taps(cx: &mut Cx, c: &TVal, d: usize) -> Result<[(TVal, TVal); 2]> {
    let df = d as f64;
    let below = cx.binary_scalar(BinaryOp::Lt, c, -1.0)?;
    let above = cx.binary_scalar(BinaryOp::Gt, c, df)?;
    let outside = cx.binary(BinaryOp::Or, &below, &above)?;
    let cc = cx.binary_scalar(BinaryOp::Max, c, 0.0)?;
    let low0 = cx.unary(UnaryOp::Floor, &cc)?;
    let at_end = cx.binary_scalar(BinaryOp::Ge, &low0, df - 1.0)?;
    let last = cx.scalar(df - 1.0, c.dtype());
    let low = cx.where_(&at_end, &last, &low0)?;
    let next = cx.binary_scalar(BinaryOp::Add, &low0, 1.0)?;
    let high = cx.where_(&at_end, &last, &next)?;
    let cc = cx.where_(&at_end, &low, &cc)?;
    let l = cx.sub(&cc, &low)?;
    let one = cx.scalar(1.0, c.dtype());
    let h = cx.sub(&one, &l)?;
    let zero = cx.scalar(0.0, c.dtype());
    let (wl, wh) = (
        cx.where_(&outside, &zero, &h)?,
        cx.where_(&outside, &zero, &l)?,
    );
    Ok([
        (cx.cast(&low, DType::I64)?, wl),
        (cx.cast(&high, DType::I64)?, wh),
    ])
}

fn roi_align(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let rois = tensor_arg(ins, 1, "rois")?;
    let bi = tensor_arg(ins, 2, "batch_indices")?;
    if x.rank() != 4
        || rois.rank() != 2
        || rois.shape()[1] != 4
        || bi.shape() != [rois.shape()[0]]
        || !x.dtype().is_float()
    {
        bail_invalid!(
            "RoiAlign: X {}, rois {}, batch_indices {} do not fit",
            x.ty,
            rois.ty,
            bi.ty
        );
    }
    let (oh, ow) = (n.int_or("output_height", 1)?, n.int_or("output_width", 1)?);
    let ratio = n.int_or("sampling_ratio", 0)?;
    if oh < 1 || ow < 1 || ratio < 0 {
        bail_invalid!("RoiAlign: output {oh}x{ow} / sampling_ratio {ratio} invalid");
    }
    if ratio == 0 {
        bail_unsupported!("RoiAlign with adaptive sampling (sampling_ratio 0) is not supported");
    }
    let (oh, ow, g) = (oh as usize, ow as usize, ratio as usize);
    let scale = n.float_or("spatial_scale", 1.0)? as f64;
    let legacy =
        n.string_or("coordinate_transformation_mode", "half_pixel")? == "output_half_pixel";
    let max = n.string_or("mode", "avg")? == "max";
    let (r, c, hh, ww) = (rois.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
    let dt = x.dtype();
    let rois = cx.cast(rois, dt)?;
    // Sample coordinates per roi along one axis: start + bin * (p + (i + 0.5) / g).
    let coords = |cx: &mut Cx, lo_col: usize, out: usize| -> Result<TVal> {
        let lo = cx.slice_axis(&rois, 1, lo_col, 1, 1)?;
        let hi = cx.slice_axis(&rois, 1, lo_col + 2, 1, 1)?;
        let off = if legacy { 0.0 } else { 0.5 };
        let lo = cx.binary_scalar(BinaryOp::Mul, &lo, scale)?;
        let lo = cx.binary_scalar(BinaryOp::Sub, &lo, off)?;
        let hi = cx.binary_scalar(BinaryOp::Mul, &hi, scale)?;
        let hi = cx.binary_scalar(BinaryOp::Sub, &hi, off)?;
        let len = cx.sub(&hi, &lo)?;
        let len = if legacy {
            cx.binary_scalar(BinaryOp::Max, &len, 1.0)?
        } else {
            len
        };
        let bin = cx.binary_scalar(BinaryOp::Div, &len, out as f64)?;
        let t: Vec<f64> = (0..out * g)
            .map(|k| (k / g) as f64 + ((k % g) as f64 + 0.5) / g as f64)
            .collect();
        let t = TVal::constant(Tensor::new(
            vec![1, out * g],
            Data::from_f64_iter(dt, t.into_iter()),
        )?);
        let step = cx.mul(&bin, &t)?;
        cx.add(&lo, &step)
    };
    let ys = coords(cx, 1, oh)?;
    let xs = coords(cx, 0, ow)?;
    let (a, b) = (oh * g, ow * g);
    let ty = roi_taps(cx, &ys, hh)?;
    let tx = roi_taps(cx, &xs, ww)?;
    let bi = cx.cast(bi, DType::I64)?;
    let xr = cx.emit1(Prim::Gather { axis: 0 }, &[x, &bi])?;
    let xr = cx.reshape(&xr, &[r, c, hh * ww])?;
    let mut acc: Option<TVal> = None;
    for (iy, wy) in &ty {
        for (ix, wx) in &tx {
            let iy3 = cx.reshape(iy, &[r, a, 1])?;
            let ix3 = cx.reshape(ix, &[r, 1, b])?;
            let row = cx.binary_scalar(BinaryOp::Mul, &iy3, ww as f64)?;
            let idx = cx.add(&row, &ix3)?;
            let idx = cx.reshape(&idx, &[r, 1, a * b])?;
            let idx = cx.expand(&idx, &[r, c, a * b])?;
            let v = cx.emit1(Prim::GatherElements { axis: 2 }, &[&xr, &idx])?;
            let wy3 = cx.reshape(wy, &[r, a, 1])?;
            let wx3 = cx.reshape(wx, &[r, 1, b])?;
            let w = cx.mul(&wy3, &wx3)?;
            let w = cx.reshape(&w, &[r, 1, a * b])?;
            let v = cx.mul(&v, &w)?;
            acc = Some(match acc {
                Some(s) => cx.binary(if max { BinaryOp::Max } else { BinaryOp::Add }, &s, &v)?,
                None => v,
            });
        }
    }
    let y = acc.ok_or_else(|| Error::invalid("RoiAlign without taps"))?;
    let y = cx.reshape(&y, &[r, c, oh, g, ow, g])?;
    let y = if max {
        cx.reduce(ReduceOp::Max, &y, &[3, 5], false)?
    } else {
        let s = cx.reduce(ReduceOp::Sum, &y, &[3, 5], false)?;
        cx.binary_scalar(BinaryOp::Div, &s, (g * g) as f64)?
    };
    Ok(vec![tv(y)])
}

pub fn register(r: &mut Registry) {
    r.insert("Resize", resize);
    r.insert("Upsample", upsample);
    r.insert("AffineGrid", affine_grid);
    r.insert("GridSample", grid_sample);
    r.insert("RoiAlign", roi_align);
}
