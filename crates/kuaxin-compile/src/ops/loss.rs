//! Training losses: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss, as gathers and
//! reductions.
use super::reduce::log_sum_exp;
use super::Registry;
use crate::builder::{opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::prim::{BinaryOp, Prim, ReduceOp, UnaryOp};
use kuaxin_core::{bail_invalid, DType, Result};

/// `-log_prob[n, target[n, ..], ..] * weight[target]`, reduced per `reduction`.
fn nll(
    cx: &mut Cx,
    n: &Node,
    log_prob: &TVal,
    target: &TVal,
    weight: Option<&TVal>,
) -> Result<TVal> {
    if log_prob.rank() < 2 || target.rank() != log_prob.rank() - 1 || !target.dtype().is_int() {
        bail_invalid!(
            "input {} and target {} do not fit (input [N, C, ...], integer target [N, ...])",
            log_prob.ty,
            target.ty
        );
    }
    let reduction = n.string_or("reduction", "mean")?;
    let ignore = n.attr_int("ignore_index")?;
    let target = cx.cast(target, DType::I64)?;
    let (target, keep) = match ignore {
        Some(ii) => {
            let iiv = cx.scalar(ii as f64, DType::I64);
            let eq = cx.binary(BinaryOp::Eq, &target, &iiv)?;
            let keep = cx.unary(UnaryOp::Not, &eq)?;
            let zero = cx.scalar(0.0, DType::I64);
            (cx.where_(&keep, &target, &zero)?, Some(keep))
        }
        None => (target, None),
    };
    let idx = cx.unsqueeze(&target, &[1])?;
    let picked = cx.emit1(Prim::GatherElements { axis: 1 }, &[log_prob, &idx])?;
    let picked = cx.squeeze(&picked, Some(&[1]))?;
    let dtype = log_prob.dtype();
    let mut w = match weight {
        Some(w) => cx.emit1(Prim::Gather { axis: 0 }, &[w, &target])?,
        None => cx.full(1.0, dtype, target.shape())?,
    };
    if let Some(keep) = &keep {
        let zero = cx.scalar(0.0, dtype);
        w = cx.where_(keep, &w, &zero)?;
    }
    let prod = cx.mul(&picked, &w)?;
    let loss = cx.unary(UnaryOp::Neg, &prod)?;
    let all: Vec<usize> = (0..loss.rank()).collect();
    match reduction.as_str() {
        "none" => Ok(loss),
        "sum" => cx.reduce(ReduceOp::Sum, &loss, &all, false),
        "mean" => {
            let s = cx.reduce(ReduceOp::Sum, &loss, &all, false)?;
            let d = cx.reduce(ReduceOp::Sum, &w, &all, false)?;
            cx.div(&s, &d)
        }
        other => bail_invalid!("reduction must be none, sum or mean, got '{other}'"),
    }
}

fn nll_loss(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let t = tensor_arg(ins, 1, "target")?;
    Ok(vec![tv(nll(cx, n, x, t, opt_tensor(ins, 2)?)?)])
}

fn softmax_cross_entropy(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "scores")?;
    let t = tensor_arg(ins, 1, "labels")?;
    if x.rank() < 2 {
        bail_invalid!("scores must be [N, C, ...], got {}", x.ty);
    }
    let lse = log_sum_exp(cx, x, &[1])?;
    let log_prob = cx.sub(x, &lse)?;
    let loss = nll(cx, n, &log_prob, t, opt_tensor(ins, 2)?)?;
    Ok(vec![tv(loss), tv(log_prob)])
}

pub fn register(r: &mut Registry) {
    r.insert("NegativeLogLikelihoodLoss", nll_loss);
    r.insert("SoftmaxCrossEntropyLoss", softmax_cross_entropy);
}
