//! Reductions (ReduceSum and friends), ArgMax/ArgMin and the running sums/products.
//!
//! Every Reduce* op is `post(reduce(pre(x)))` over a set of axes, computed with the reduced
//! dims kept and squeezed at the end. Reducing over an empty set of axes (noop_with_empty_axes)
//! keeps the elementwise parts, as the reference does (ReduceL1 gives |x|).
use super::Registry;
use crate::builder::{norm_axes, norm_axis, opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::prim::{BinaryOp, Prim, ReduceOp, UnaryOp};
use kuaxin_core::{bail_invalid, bail_unsupported, DType, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

impl Kind {
    /// The value of a reduction over no elements (numpy's, as the reference gives it).
    fn empty_value(self, dtype: DType) -> f64 {
        match self {
            Kind::Sum | Kind::L1 | Kind::L2 | Kind::SumSquare => 0.0,
            Kind::Prod => 1.0,
            Kind::Mean => f64::NAN,
            Kind::LogSum | Kind::LogSumExp => f64::NEG_INFINITY,
            // Infinities saturate to the integer type's limits when stored.
            Kind::Max if dtype == DType::Bool => 0.0,
            Kind::Max => f64::NEG_INFINITY,
            Kind::Min if dtype == DType::Bool => 1.0,
            Kind::Min => f64::INFINITY,
        }
    }
}

/// The axes a Reduce* node reduces (empty: none). They come from input 1 when present
/// (ReduceSum from opset 13, the others from 18), else from the `axes` attribute; absent or
/// empty axes mean all of them unless `noop_with_empty_axes` is set.
fn reduce_axes(cx: &mut Cx, n: &Node, ins: &[Option<Value>], rank: usize) -> Result<Vec<usize>> {
    let axes = match opt_tensor(ins, 1)? {
        Some(a) => Some(cx.ints(a)?),
        None => n.attr_ints("axes")?,
    };
    match axes {
        Some(a) if !a.is_empty() => norm_axes(&a, rank),
        _ if n.int_or("noop_with_empty_axes", 0)? != 0 => Ok(vec![]),
        _ => Ok((0..rank).collect()),
    }
}

/// Max or min, with bools reduced as bytes.
fn reduce_extreme(cx: &mut Cx, x: &TVal, axes: &[usize], op: ReduceOp) -> Result<TVal> {
    if x.dtype() != DType::Bool {
        return cx.reduce(op, x, axes, true);
    }
    let b = cx.cast(x, DType::U8)?;
    let r = cx.reduce(op, &b, axes, true)?;
    cx.cast(&r, DType::Bool)
}

/// `log(sum(exp(x)))`, shifted by the (finite) max so nothing overflows.
pub(crate) fn log_sum_exp(cx: &mut Cx, x: &TVal, axes: &[usize]) -> Result<TVal> {
    let m = cx.reduce(ReduceOp::Max, x, axes, true)?;
    let pos = cx.unary(UnaryOp::IsPosInf, &m)?;
    let neg = cx.unary(UnaryOp::IsNegInf, &m)?;
    let inf = cx.binary(BinaryOp::Or, &pos, &neg)?;
    let zero = cx.scalar(0.0, x.dtype());
    let shift = cx.where_(&inf, &zero, &m)?;
    let d = cx.sub(x, &shift)?;
    let e = cx.unary(UnaryOp::Exp, &d)?;
    let s = cx.reduce(ReduceOp::Sum, &e, axes, true)?;
    let l = cx.unary(UnaryOp::Log, &s)?;
    cx.add(&l, &shift)
}

/// The reduction of a non-empty set, reduced dims kept.
fn reduce_kept(cx: &mut Cx, x: &TVal, axes: &[usize], kind: Kind) -> Result<TVal> {
    let sum = |cx: &mut Cx, v: &TVal| cx.reduce(ReduceOp::Sum, v, axes, true);
    match kind {
        Kind::Sum => sum(cx, x),
        Kind::Prod => cx.reduce(ReduceOp::Prod, x, axes, true),
        Kind::Max => reduce_extreme(cx, x, axes, ReduceOp::Max),
        Kind::Min => reduce_extreme(cx, x, axes, ReduceOp::Min),
        Kind::Mean => cx.mean(x, axes, true),
        Kind::L1 => {
            let a = cx.unary(UnaryOp::Abs, x)?;
            sum(cx, &a)
        }
        Kind::SumSquare | Kind::L2 => {
            let sq = cx.mul(x, x)?;
            let s = sum(cx, &sq)?;
            if kind == Kind::L2 {
                cx.unary(UnaryOp::Sqrt, &s)
            } else {
                Ok(s)
            }
        }
        Kind::LogSum => {
            let s = sum(cx, x)?;
            cx.unary(UnaryOp::Log, &s)
        }
        Kind::LogSumExp => log_sum_exp(cx, x, axes),
    }
}

fn lower_reduce(cx: &mut Cx, n: &Node, ins: &[Option<Value>], kind: Kind) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    if matches!(kind, Kind::LogSum | Kind::LogSumExp) && !x.dtype().is_float() {
        bail_unsupported!("{kind:?} of {} (only float types are supported)", x.ty);
    }
    let axes = reduce_axes(cx, n, ins, x.rank())?;
    let keepdims = n.int_or("keepdims", 1)? != 0;
    let y = if axes.iter().any(|&a| x.shape()[a] == 0) {
        let mut shape = x.shape().to_vec();
        for &a in &axes {
            shape[a] = 1;
        }
        cx.full(kind.empty_value(x.dtype()), x.dtype(), &shape)?
    } else {
        reduce_kept(cx, x, &axes, kind)?
    };
    if keepdims {
        return Ok(vec![tv(y)]);
    }
    let shape: Vec<usize> = (0..x.rank())
        .filter(|i| !axes.contains(i))
        .map(|i| x.shape()[i])
        .collect();
    Ok(vec![tv(cx.reshape(&y, &shape)?)])
}

fn arg_reduce(cx: &mut Cx, n: &Node, ins: &[Option<Value>], max: bool) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    if x.rank() == 0 {
        bail_invalid!("ArgMax/ArgMin of a scalar");
    }
    let axis = norm_axis(n.int_or("axis", 0)?, x.rank())?;
    let select_last = n.int_or("select_last_index", 0)? != 0;
    let y = cx.emit1(
        Prim::ArgReduce {
            max,
            axis,
            select_last,
        },
        &[x],
    )?;
    if n.int_or("keepdims", 1)? != 0 {
        return Ok(vec![tv(y)]);
    }
    Ok(vec![tv(cx.squeeze(&y, Some(&[axis as i64]))?)])
}

fn cumulative(cx: &mut Cx, n: &Node, ins: &[Option<Value>], prod: bool) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "x")?;
    let a = tensor_arg(ins, 1, "axis")?;
    let axis = match cx.ints(a)?.as_slice() {
        [a] => norm_axis(*a, x.rank())?,
        other => bail_invalid!("axis must hold one value, has {}", other.len()),
    };
    let exclusive = n.int_or("exclusive", 0)? != 0;
    let reverse = n.int_or("reverse", 0)? != 0;
    Ok(vec![tv(cx.emit1(
        Prim::Cumulative {
            prod,
            axis,
            exclusive,
            reverse,
        },
        &[x],
    )?)])
}

macro_rules! reduce_ops {
    ($r:ident, $($name:literal => $kind:ident),* $(,)?) => {
        $( $r.insert($name, |cx, n, ins| lower_reduce(cx, n, ins, Kind::$kind)); )*
    };
}

pub fn register(r: &mut Registry) {
    reduce_ops!(r,
        "ReduceSum" => Sum, "ReduceMean" => Mean, "ReduceMax" => Max, "ReduceMin" => Min,
        "ReduceProd" => Prod, "ReduceL1" => L1, "ReduceL2" => L2, "ReduceLogSum" => LogSum,
        "ReduceLogSumExp" => LogSumExp, "ReduceSumSquare" => SumSquare,
    );
    r.insert("ArgMax", |cx, n, ins| arg_reduce(cx, n, ins, true));
    r.insert("ArgMin", |cx, n, ins| arg_reduce(cx, n, ins, false));
    r.insert("CumSum", |cx, n, ins| cumulative(cx, n, ins, false));
    r.insert("CumProd", |cx, n, ins| cumulative(cx, n, ins, true));
}
