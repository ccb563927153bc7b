//! Activation functions: short elementwise compositions of primitives. Sigmoid and Tanh are
//! plain unary primitives (elementwise.rs).
use super::Registry;
use crate::builder::{broadcast_shapes, opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::prim::{BinaryOp, UnaryOp};
use kuaxin_core::{bail_invalid, DType, Result};

// ---- helpers ----

/// Runs `f` in f32 for half-precision inputs, rounding once at the end: a composite that
/// stands for one numpy ufunc (expm1, logaddexp) should round like one.
fn as_one_op(cx: &mut Cx, x: &TVal, f: fn(&mut Cx, &TVal) -> Result<TVal>) -> Result<TVal> {
    if !matches!(x.dtype(), DType::F16 | DType::BF16) {
        return f(cx, x);
    }
    let xf = cx.cast(x, DType::F32)?;
    let y = f(cx, &xf)?;
    cx.cast(&y, x.dtype())
}

/// `exp(x) - 1`, accurate near 0: `2t / (1 - t)` with `t = tanh(x/2)` below 1 (no cancellation
/// there, and exactly -1 at -inf), `exp(x) - 1` above.
fn expm1_raw(cx: &mut Cx, x: &TVal) -> Result<TVal> {
    let half = cx.binary_scalar(BinaryOp::Mul, x, 0.5)?;
    let t = cx.unary(UnaryOp::Tanh, &half)?;
    let one = cx.scalar(1.0, x.dtype());
    let den = cx.sub(&one, &t)?;
    let two_t = cx.add(&t, &t)?;
    let small = cx.div(&two_t, &den)?;
    let e = cx.unary(UnaryOp::Exp, x)?;
    let big = cx.sub(&e, &one)?;
    let is_small = cx.binary(BinaryOp::Lt, x, &one)?;
    cx.where_(&is_small, &small, &big)
}

fn expm1(cx: &mut Cx, x: &TVal) -> Result<TVal> {
    as_one_op(cx, x, expm1_raw)
}

/// `log(1 + exp(x))` without overflow: `max(x, 0) + log1p(exp(-|x|))`, with log1p(y) computed
/// as `log(u) * y / (u - 1)`, `u = 1 + y` (exact to rounding; y itself where u rounds to 1).
fn softplus_raw(cx: &mut Cx, x: &TVal) -> Result<TVal> {
    let a = cx.unary(UnaryOp::Abs, x)?;
    let na = cx.unary(UnaryOp::Neg, &a)?;
    let y = cx.unary(UnaryOp::Exp, &na)?;
    let u = cx.binary_scalar(BinaryOp::Add, &y, 1.0)?;
    let lu = cx.unary(UnaryOp::Log, &u)?;
    let um1 = cx.binary_scalar(BinaryOp::Sub, &u, 1.0)?;
    let ratio = cx.div(&y, &um1)?;
    let corrected = cx.mul(&lu, &ratio)?;
    let one = cx.scalar(1.0, x.dtype());
    let tiny = cx.binary(BinaryOp::Eq, &u, &one)?;
    let log1p = cx.where_(&tiny, &y, &corrected)?;
    let pos = cx.binary_scalar(BinaryOp::Max, x, 0.0)?;
    cx.add(&pos, &log1p)
}

fn softplus_of(cx: &mut Cx, x: &TVal) -> Result<TVal> {
    as_one_op(cx, x, softplus_raw)
}

/// `where(x > 0, x, alpha * expm1(x))`, the core of Elu and Selu.
fn elu_of(cx: &mut Cx, x: &TVal, alpha: f64) -> Result<TVal> {
    let em = expm1(cx, x)?;
    let neg = cx.binary_scalar(BinaryOp::Mul, &em, alpha)?;
    let zero = cx.scalar(0.0, x.dtype());
    let pos = cx.binary(BinaryOp::Gt, x, &zero)?;
    cx.where_(&pos, x, &neg)
}

/// `max(0, min(1, alpha * x + beta))`.
fn hard_sigmoid_of(cx: &mut Cx, x: &TVal, alpha: f64, beta: f64) -> Result<TVal> {
    let ax = cx.binary_scalar(BinaryOp::Mul, x, alpha)?;
    let lin = cx.binary_scalar(BinaryOp::Add, &ax, beta)?;
    let lo = cx.binary_scalar(BinaryOp::Min, &lin, 1.0)?;
    cx.binary_scalar(BinaryOp::Max, &lo, 0.0)
}

/// `x * sigmoid(alpha * x)`.
fn swish_of(cx: &mut Cx, x: &TVal, alpha: f64) -> Result<TVal> {
    let ax = if alpha == 1.0 {
        x.clone()
    } else {
        cx.binary_scalar(BinaryOp::Mul, x, alpha)?
    };
    let s = cx.unary(UnaryOp::Sigmoid, &ax)?;
    cx.mul(x, &s)
}

fn alpha(n: &Node, default: f32) -> Result<f64> {
    Ok(n.float_or("alpha", default)? as f64)
}

// ---- single-input activations ----

fn relu(cx: &mut Cx, _n: &Node, x: &TVal) -> Result<TVal> {
    cx.binary_scalar(BinaryOp::Max, x, 0.0)
}

fn leaky_relu(cx: &mut Cx, n: &Node, x: &TVal) -> Result<TVal> {
    let neg = cx.binary_scalar(BinaryOp::Mul, x, alpha(n, 0.01)?)?;
    let zero = cx.scalar(0.0, x.dtype());
    let pos = cx.binary(BinaryOp::Gt, x, &zero)?;
    cx.where_(&pos, x, &neg)
}

fn elu(cx: &mut Cx, n: &Node, x: &TVal) -> Result<TVal> {
    elu_of(cx, x, alpha(n, 1.0)?)
}

fn selu(cx: &mut Cx, n: &Node, x: &TVal) -> Result<TVal> {
    let e = elu_of(cx, x, alpha(n, 1.673_263_2)?)?;
    cx.binary_scalar(BinaryOp::Mul, &e, n.float_or("gamma", 1.050_701)? as f64)
}

/// `max(0, x) + min(0, alpha * expm1(x / alpha))`.
fn celu(cx: &mut Cx, n: &Node, x: &TVal) -> Result<TVal> {
    let a = alpha(n, 1.0)?;
    if a == 0.0 {
        bail_invalid!("Celu alpha must not be 0");
    }
    let xa = cx.binary_scalar(BinaryOp::Div, x, a)?;
    let em = expm1(cx, &xa)?;
    let neg = cx.binary_scalar(BinaryOp::Mul, &em, a)?;
    let neg = cx.binary_scalar(BinaryOp::Min, &neg, 0.0)?;
    let pos = cx.binary_scalar(BinaryOp::Max, x, 0.0)?;
    cx.add(&pos, &neg)
}

/// `0.5 x (1 + erf(x / sqrt 2))`, or with `approximate="tanh"`
/// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
fn gelu(cx: &mut Cx, n: &Node, x: &TVal) -> Result<TVal> {
    let inner = match n.string_or("approximate", "none")?.as_str() {
        "none" => {
            let s = cx.binary_scalar(BinaryOp::Mul, x, std::f64::consts::FRAC_1_SQRT_2)?;
            cx.unary(UnaryOp::Erf, &s)?
        }
        "tanh" => {
            let x2 = cx.mul(x, x)?;
            let x3 = cx.mul(&x2, x)?;
            let c = cx.binary_scalar(BinaryOp::Mul, &x3, 0.044715)?;
            let p = cx.add(x, &c)?;
            let s = cx.binary_scalar(BinaryOp::Mul, &p, (2.0 / std::f64::consts::PI).sqrt())?;
            cx.unary(UnaryOp::Tanh, &s)?
        }
        other => bail_invalid!("Gelu approximate must be 'none' or 'tanh', got '{other}'"),
    };
    let one_plus = cx.binary_scalar(BinaryOp::Add, &inner, 1.0)?;
    let hx = cx.binary_scalar(BinaryOp::Mul, x, 0.5)?;
    cx.mul(&hx, &one_plus)
}

fn hard_sigmoid(cx: &mut Cx, n: &Node, x: &TVal) -> Result<TVal> {
    hard_sigmoid_of(cx, x, alpha(n, 0.2)?, n.float_or("beta", 0.5)? as f64)
}

fn hard_swish(cx: &mut Cx, _n: &Node, x: &TVal) -> Result<TVal> {
    let h = hard_sigmoid_of(cx, x, 1.0 / 6.0, 0.5)?;
    cx.mul(x, &h)
}

fn softplus(cx: &mut Cx, _n: &Node, x: &TVal) -> Result<TVal> {
    softplus_of(cx, x)
}

fn softsign(cx: &mut Cx, _n: &Node, x: &TVal) -> Result<TVal> {
    let a = cx.unary(UnaryOp::Abs, x)?;
    let den = cx.binary_scalar(BinaryOp::Add, &a, 1.0)?;
    cx.div(x, &den)
}

fn swish(cx: &mut Cx, n: &Node, x: &TVal) -> Result<TVal> {
    swish_of(cx, x, alpha(n, 1.0)?)
}

/// `x * tanh(softplus(x))`.
fn mish(cx: &mut Cx, _n: &Node, x: &TVal) -> Result<TVal> {
    let sp = softplus_of(cx, x)?;
    let t = cx.unary(UnaryOp::Tanh, &sp)?;
    cx.mul(x, &t)
}

fn thresholded_relu(cx: &mut Cx, n: &Node, x: &TVal) -> Result<TVal> {
    let a = cx.scalar(alpha(n, 1.0)?, x.dtype());
    let keep = cx.binary(BinaryOp::Gt, x, &a)?;
    let zero = cx.scalar(0.0, x.dtype());
    cx.where_(&keep, x, &zero)
}

/// `x + bias` below `-lambd`, `x - bias` above `lambd`, 0 between. Integer inputs compare
/// in f64 so a fractional `lambd` keeps its meaning.
fn shrink(cx: &mut Cx, n: &Node, x: &TVal) -> Result<TVal> {
    let lambd = n.float_or("lambd", 0.5)? as f64;
    let bias = n.float_or("bias", 0.0)? as f64;
    let xc = if x.dtype().is_float() {
        x.clone()
    } else {
        cx.cast(x, DType::F64)?
    };
    let lo = cx.scalar(-lambd, xc.dtype());
    let hi = cx.scalar(lambd, xc.dtype());
    let below = cx.binary(BinaryOp::Lt, &xc, &lo)?;
    let above = cx.binary(BinaryOp::Gt, &xc, &hi)?;
    let up = cx.binary_scalar(BinaryOp::Add, x, bias)?;
    let down = cx.binary_scalar(BinaryOp::Sub, x, bias)?;
    let zero = cx.scalar(0.0, x.dtype());
    let mid = cx.where_(&above, &down, &zero)?;
    cx.where_(&below, &up, &mid)
}

// ---- activations with more inputs ----

/// Slope shaped to broadcast against `x`: numpy broadcasting, or (the reference's fallback)
/// a 1-d slope whose length matches exactly one dim of `x`.
fn prelu_slope(cx: &mut Cx, x: &TVal, slope: &TVal) -> Result<TVal> {
    if broadcast_shapes(x.shape(), slope.shape()).is_ok_and(|s| s == x.shape()) {
        return Ok(slope.clone());
    }
    if slope.rank() == 1 {
        let d = slope.shape()[0];
        let hits: Vec<usize> = (0..x.rank()).filter(|&i| x.shape()[i] == d).collect();
        if let [axis] = hits[..] {
            let mut shape = vec![1; x.rank()];
            shape[axis] = d;
            return cx.reshape(slope, &shape);
        }
    }
    bail_invalid!("PRelu slope {} does not broadcast to {}", slope.ty, x.ty)
}

fn prelu(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let slope = prelu_slope(cx, x, tensor_arg(ins, 1, "slope")?)?;
    let slope = cx.cast(&slope, x.dtype())?;
    let neg = cx.mul(x, &slope)?;
    let zero = cx.scalar(0.0, x.dtype());
    let pos = cx.binary(BinaryOp::Gt, x, &zero)?;
    Ok(vec![tv(cx.where_(&pos, x, &neg)?)])
}

/// A Clip bound as a scalar of x's dtype.
fn bound(cx: &mut Cx, v: &TVal, dtype: DType) -> Result<TVal> {
    if v.numel() != 1 {
        bail_invalid!("Clip bounds must be scalars, got {}", v.ty);
    }
    let s = cx.reshape(v, &[])?;
    cx.cast(&s, dtype)
}

/// `min(max(x, lo), hi)` (so `hi` wins when `lo > hi`, as numpy's clip). Bounds are attributes
/// before opset 11 and optional inputs from then on.
fn clip(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let dt = x.dtype();
    let (lo, hi) = if cx.opset < 11 {
        let lo = n.attr_float("min")?.map(|v| cx.scalar(v as f64, dt));
        let hi = n.attr_float("max")?.map(|v| cx.scalar(v as f64, dt));
        (lo, hi)
    } else {
        let lo = opt_tensor(ins, 1)?.map(|v| bound(cx, v, dt)).transpose()?;
        let hi = opt_tensor(ins, 2)?.map(|v| bound(cx, v, dt)).transpose()?;
        (lo, hi)
    };
    let mut y = x.clone();
    if let Some(lo) = lo {
        y = cx.binary(BinaryOp::Max, &y, &lo)?;
    }
    if let Some(hi) = hi {
        y = cx.binary(BinaryOp::Min, &y, &hi)?;
    }
    Ok(vec![tv(y)])
}

/// `swish(a, alpha) * b` for same-shape `a`, `b`.
fn swiglu(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let a = tensor_arg(ins, 0, "A")?;
    let b = tensor_arg(ins, 1, "B")?;
    if a.ty != b.ty {
        bail_invalid!(
            "SwiGLU inputs must have the same type and shape: {} vs {}",
            a.ty,
            b.ty
        );
    }
    let s = swish_of(cx, a, alpha(n, 1.0)?)?;
    Ok(vec![tv(cx.mul(&s, b)?)])
}

macro_rules! activations {
    ($r:ident, $($name:literal => $f:ident),* $(,)?) => {
        $( $r.insert($name, |cx, n, ins| Ok(vec![tv($f(cx, n, tensor_arg(ins, 0, "X")?)?)])); )*
    };
}

pub fn register(r: &mut Registry) {
    activations!(r,
        "Relu" => relu, "LeakyRelu" => leaky_relu, "Elu" => elu, "Selu" => selu, "Celu" => celu,
        "Gelu" => gelu, "HardSigmoid" => hard_sigmoid, "HardSwish" => hard_swish,
        "Softplus" => softplus, "Softsign" => softsign, "Swish" => swish, "Mish" => mish,
        "ThresholdedRelu" => thresholded_relu, "Shrink" => shrink,
    );
    r.insert("PRelu", prelu);
    r.insert("Clip", clip);
    r.insert("SwiGLU", swiglu);
}
