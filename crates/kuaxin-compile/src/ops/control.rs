//! Control flow, resolved at trace time: If picks a branch, Loop and Scan unroll. Conditions
//! and trip counts computed from inputs are read back from the device (a flush).
use super::Registry;
use crate::builder::{norm_axis, opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::{Graph, Node};
use kuaxin_core::{bail_invalid, bail_unsupported, Error, Result, Tensor};
use std::sync::Arc;

/// Loops longer than this are treated as runaway input (they unroll at trace time).
const MAX_ITERATIONS: i64 = 1 << 16;

fn graph_attr(n: &Node, name: &str) -> Result<Arc<Graph>> {
    n.attr_graph(name)?
        .ok_or_else(|| Error::invalid(format!("missing subgraph attribute '{name}'")))
}

fn truth(cx: &mut Cx, v: &TVal, what: &str) -> Result<bool> {
    if v.numel() != 1 {
        bail_invalid!("{what} must have one element, has shape {:?}", v.shape());
    }
    Ok(cx.floats(v)?[0] != 0.0)
}

fn if_op(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let c = tensor_arg(ins, 0, "cond")?;
    let branch = if truth(cx, c, "If condition")? {
        "then_branch"
    } else {
        "else_branch"
    };
    let g = graph_attr(n, branch)?;
    cx.run_subgraph(&g, vec![])
}

/// Stacks per-iteration values along a new axis 0.
fn stack(cx: &mut Cx, items: &[TVal]) -> Result<TVal> {
    let parts: Vec<TVal> = items
        .iter()
        .map(|t| cx.unsqueeze(t, &[0]))
        .collect::<Result<_>>()?;
    cx.concat(&parts, 0)
}

fn as_tensor(v: &Value, what: &str) -> Result<TVal> {
    match v {
        Value::Tensor(t) => Ok(t.clone()),
        other => Err(Error::unsupported(format!(
            "{what} is a {}; only tensors are supported here",
            other.kind()
        ))),
    }
}

fn loop_op(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let body = graph_attr(n, "body")?;
    let max_trips = match opt_tensor(ins, 0)? {
        Some(m) => Some(
            cx.ints(m)?
                .first()
                .copied()
                .ok_or_else(|| Error::invalid("Loop M is empty"))?,
        ),
        None => None,
    };
    let mut cond = match opt_tensor(ins, 1)? {
        Some(c) => truth(cx, c, "Loop condition")?,
        None => true,
    };
    let mut carried: Vec<Value> = ins
        .iter()
        .skip(2)
        .map(|v| v.clone().unwrap_or(Value::Optional(None)))
        .collect();
    let n_carried = carried.len();
    let n_scan = body
        .outputs
        .len()
        .checked_sub(1 + n_carried)
        .ok_or_else(|| Error::invalid("Loop body has too few outputs"))?;
    let mut scans: Vec<Vec<TVal>> = vec![Vec::new(); n_scan];
    let mut i = 0i64;
    while cond && max_trips.is_none_or(|m| i < m) {
        if i >= MAX_ITERATIONS {
            bail_invalid!("Loop ran {MAX_ITERATIONS} iterations without stopping");
        }
        let mut args = vec![
            tv(TVal::constant(Tensor::scalar(i))),
            tv(TVal::constant(Tensor::scalar(cond))),
        ];
        args.extend(carried.iter().cloned());
        let outs = cx.run_subgraph(&body, args)?;
        cond = truth(
            cx,
            &as_tensor(&outs[0], "Loop condition")?,
            "Loop condition",
        )?;
        carried = outs[1..1 + n_carried].to_vec();
        for (k, s) in outs[1 + n_carried..].iter().enumerate() {
            scans[k].push(as_tensor(s, "Loop scan output")?);
        }
        i += 1;
    }
    let mut result = carried;
    for s in scans {
        if s.is_empty() {
            bail_unsupported!("Loop ran zero iterations: the shape of its scan outputs is unknown");
        }
        result.push(tv(stack(cx, &s)?));
    }
    Ok(result)
}

fn scan_op(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    if cx.opset < 9 {
        bail_unsupported!("Scan before opset 9 (batched form with sequence_lens) is not supported");
    }
    let body = graph_attr(n, "body")?;
    let m = n
        .attr_int("num_scan_inputs")?
        .ok_or_else(|| Error::invalid("Scan needs num_scan_inputs"))? as usize;
    let n_states = ins
        .len()
        .checked_sub(m)
        .ok_or_else(|| Error::invalid("Scan has fewer inputs than num_scan_inputs"))?;
    let scan_ins: Vec<TVal> = (n_states..ins.len())
        .map(|i| tensor_arg(ins, i, "scan input").cloned())
        .collect::<Result<_>>()?;
    let in_axes = n
        .attr_ints("scan_input_axes")?
        .unwrap_or_else(|| vec![0; m]);
    let in_dirs = n
        .attr_ints("scan_input_directions")?
        .unwrap_or_else(|| vec![0; m]);
    let n_scan_out = body
        .outputs
        .len()
        .checked_sub(n_states)
        .ok_or_else(|| Error::invalid("Scan body has too few outputs"))?;
    let out_axes = n
        .attr_ints("scan_output_axes")?
        .unwrap_or_else(|| vec![0; n_scan_out]);
    let out_dirs = n
        .attr_ints("scan_output_directions")?
        .unwrap_or_else(|| vec![0; n_scan_out]);
    if in_axes.len() != m
        || in_dirs.len() != m
        || out_axes.len() != n_scan_out
        || out_dirs.len() != n_scan_out
    {
        bail_invalid!(
            "Scan axis/direction attributes do not match the number of scan inputs/outputs"
        );
    }
    let axes: Vec<usize> = scan_ins
        .iter()
        .zip(&in_axes)
        .map(|(t, &a)| norm_axis(a, t.rank()))
        .collect::<Result<_>>()?;
    let len = scan_ins.first().map(|t| t.shape()[axes[0]]).unwrap_or(0);
    if scan_ins
        .iter()
        .zip(&axes)
        .any(|(t, &a)| t.shape()[a] != len)
    {
        bail_invalid!("Scan inputs differ in sequence length");
    }
    let mut states: Vec<Value> = (0..n_states)
        .map(|i| {
            ins[i]
                .clone()
                .ok_or_else(|| Error::invalid("missing Scan state"))
        })
        .collect::<Result<_>>()?;
    let mut outs: Vec<Vec<TVal>> = vec![Vec::new(); n_scan_out];
    for step in 0..len {
        let mut args = states.clone();
        for (k, t) in scan_ins.iter().enumerate() {
            let pos = if in_dirs[k] != 0 {
                len - 1 - step
            } else {
                step
            };
            let s = cx.slice_axis(t, axes[k], pos, 1, 1)?;
            args.push(tv(cx.squeeze(&s, Some(&[axes[k] as i64]))?));
        }
        let r = cx.run_subgraph(&body, args)?;
        states = r[..n_states].to_vec();
        for (k, v) in r[n_states..].iter().enumerate() {
            outs[k].push(as_tensor(v, "Scan output")?);
        }
    }
    let mut result = states;
    for (k, mut items) in outs.into_iter().enumerate() {
        if items.is_empty() {
            bail_unsupported!("Scan over an empty sequence: output shapes are unknown");
        }
        if out_dirs[k] != 0 {
            items.reverse();
        }
        let stacked = stack(cx, &items)?;
        let axis = norm_axis(out_axes[k], stacked.rank())?;
        let out = if axis == 0 {
            stacked
        } else {
            let mut perm: Vec<usize> = (1..stacked.rank()).collect();
            perm.insert(axis, 0);
            cx.permute(&stacked, &perm)?
        };
        result.push(tv(out));
    }
    Ok(result)
}

pub fn register(r: &mut Registry) {
    r.insert("If", if_op);
    r.insert("Loop", loop_op);
    r.insert("Scan", scan_op);
}
