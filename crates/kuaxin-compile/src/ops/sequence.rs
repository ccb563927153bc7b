//! Sequences and optionals exist only at trace time: they are lists of traced tensors.
use super::Registry;
use crate::builder::{norm_axis, opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::{bail_invalid, Error, Result, Tensor};

fn seq_arg(ins: &[Option<Value>], i: usize) -> Result<Vec<Value>> {
    match ins.get(i) {
        Some(Some(Value::Sequence(s))) => Ok(s.clone()),
        Some(Some(v)) => Err(Error::invalid(format!(
            "input {i} must be a sequence, got a {}",
            v.kind()
        ))),
        _ => Err(Error::invalid(format!("missing sequence input {i}"))),
    }
}

/// A position in a sequence of `len` (negative counts from the end); `insert` allows `len`.
fn position(cx: &mut Cx, p: Option<&TVal>, len: usize, insert: bool) -> Result<usize> {
    let Some(p) = p else {
        return Ok(if insert { len } else { len.saturating_sub(1) });
    };
    let v = *cx
        .ints(p)?
        .first()
        .ok_or_else(|| Error::invalid("empty position"))?;
    let l = len as i64;
    let hi = if insert { l } else { l - 1 };
    if v < -l || v > hi {
        bail_invalid!("sequence position {v} out of range for length {len}");
    }
    Ok(if v < 0 { (v + l) as usize } else { v as usize })
}

fn sequence_empty(_cx: &mut Cx, _n: &Node, _ins: &[Option<Value>]) -> Result<Vec<Value>> {
    Ok(vec![Value::Sequence(vec![])])
}

fn sequence_construct(_cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let items = (0..ins.len())
        .map(|i| tensor_arg(ins, i, "input").map(|t| tv(t.clone())))
        .collect::<Result<_>>()?;
    Ok(vec![Value::Sequence(items)])
}

fn sequence_insert(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let mut s = seq_arg(ins, 0)?;
    let t = tensor_arg(ins, 1, "tensor")?.clone();
    let pos = position(cx, opt_tensor(ins, 2)?, s.len(), true)?;
    s.insert(pos, tv(t));
    Ok(vec![Value::Sequence(s)])
}

fn sequence_at(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let s = seq_arg(ins, 0)?;
    let pos = position(cx, Some(tensor_arg(ins, 1, "position")?), s.len(), false)?;
    Ok(vec![s[pos].clone()])
}

fn sequence_erase(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let mut s = seq_arg(ins, 0)?;
    if s.is_empty() {
        bail_invalid!("SequenceErase on an empty sequence");
    }
    let pos = position(cx, opt_tensor(ins, 1)?, s.len(), false)?;
    s.remove(pos);
    Ok(vec![Value::Sequence(s)])
}

fn sequence_length(_cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let s = seq_arg(ins, 0)?;
    Ok(vec![tv(TVal::constant(Tensor::scalar(s.len() as i64)))])
}

fn split_to_sequence(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let axis = norm_axis(n.int_or("axis", 0)?, x.rank())?;
    let keepdims = n.int_or("keepdims", 1)? != 0;
    let dim = x.shape()[axis];
    let sizes: Vec<usize> = match opt_tensor(ins, 1)? {
        None => vec![1; dim],
        Some(s) => {
            let v = cx.ints(s)?;
            if s.rank() == 0 {
                let chunk = usize::try_from(v[0])
                    .ok()
                    .filter(|&c| c > 0)
                    .ok_or_else(|| Error::invalid("split size must be positive"))?;
                let mut out = vec![chunk; dim / chunk];
                if dim % chunk != 0 {
                    out.push(dim % chunk);
                }
                out
            } else {
                let out: Vec<usize> = v
                    .iter()
                    .map(|&d| usize::try_from(d).map_err(|_| Error::invalid("negative split")))
                    .collect::<Result<_>>()?;
                if out.iter().sum::<usize>() != dim {
                    bail_invalid!("split sizes {out:?} do not sum to {dim}");
                }
                out
            }
        }
    };
    let squeeze = opt_tensor(ins, 1)?.is_none() && !keepdims;
    let mut start = 0;
    let mut items = Vec::new();
    for s in sizes {
        let part = cx.slice_axis(x, axis, start, s, 1)?;
        let part = if squeeze {
            cx.squeeze(&part, Some(&[axis as i64]))?
        } else {
            part
        };
        items.push(tv(part));
        start += s;
    }
    Ok(vec![Value::Sequence(items)])
}

fn concat_from_sequence(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let s = seq_arg(ins, 0)?;
    let new_axis = n.int_or("new_axis", 0)? != 0;
    let axis = n
        .attr_int("axis")?
        .ok_or_else(|| Error::invalid("ConcatFromSequence needs axis"))?;
    let ts: Vec<TVal> = s
        .iter()
        .map(|v| match v {
            Value::Tensor(t) => Ok(t.clone()),
            _ => Err(Error::invalid("ConcatFromSequence of non-tensors")),
        })
        .collect::<Result<_>>()?;
    let first = ts
        .first()
        .ok_or_else(|| Error::invalid("ConcatFromSequence of an empty sequence"))?;
    let rank = first.rank() + new_axis as usize;
    let a = norm_axis(axis, rank)?;
    let parts: Vec<TVal> = if new_axis {
        ts.iter()
            .map(|t| cx.unsqueeze(t, &[a as i64]))
            .collect::<Result<_>>()?
    } else {
        ts
    };
    Ok(vec![tv(cx.concat(&parts, a)?)])
}

fn sequence_map(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let body = n
        .attr_graph("body")?
        .ok_or_else(|| Error::invalid("SequenceMap needs body"))?;
    let first = seq_arg(ins, 0)?;
    let len = first.len();
    let mut outs: Vec<Vec<Value>> = vec![Vec::new(); body.outputs.len()];
    for i in 0..len {
        let mut args = Vec::new();
        for (k, v) in ins.iter().enumerate() {
            match v {
                Some(Value::Sequence(s)) => {
                    if s.len() != len {
                        bail_invalid!(
                            "SequenceMap input {k} has length {} but the first has {len}",
                            s.len()
                        );
                    }
                    args.push(s[i].clone());
                }
                Some(v) => args.push(v.clone()),
                None => bail_invalid!("SequenceMap input {k} is missing"),
            }
        }
        for (k, r) in cx.run_subgraph(&body, args)?.into_iter().enumerate() {
            outs[k].push(r);
        }
    }
    Ok(outs.into_iter().map(Value::Sequence).collect())
}

fn optional(_cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    match ins.first() {
        Some(Some(v)) => Ok(vec![Value::Optional(Some(Box::new(v.clone())))]),
        _ => Ok(vec![Value::Optional(None)]),
    }
}

fn optional_has_element(_cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let has = match ins.first() {
        Some(Some(Value::Optional(o))) => o.is_some(),
        Some(Some(_)) => true,
        _ => false,
    };
    Ok(vec![tv(TVal::constant(Tensor::scalar(has)))])
}

fn optional_get_element(_cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    match ins.first() {
        Some(Some(Value::Optional(Some(v)))) => Ok(vec![(**v).clone()]),
        Some(Some(Value::Optional(None))) => {
            bail_invalid!("OptionalGetElement of an empty optional")
        }
        Some(Some(v)) => Ok(vec![v.clone()]),
        _ => bail_invalid!("OptionalGetElement needs an input"),
    }
}

pub fn register(r: &mut Registry) {
    r.insert("SequenceEmpty", sequence_empty);
    r.insert("SequenceConstruct", sequence_construct);
    r.insert("SequenceInsert", sequence_insert);
    r.insert("SequenceAt", sequence_at);
    r.insert("SequenceErase", sequence_erase);
    r.insert("SequenceLength", sequence_length);
    r.insert("SplitToSequence", split_to_sequence);
    r.insert("ConcatFromSequence", concat_from_sequence);
    r.insert("SequenceMap", sequence_map);
    r.insert("Optional", optional);
    r.insert("OptionalHasElement", optional_has_element);
    r.insert("OptionalGetElement", optional_get_element);
}
