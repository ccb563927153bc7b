//! [`eval`]: one primitive on host tensors — the reference semantics of the op set.
use crate::im2col::Geom;
use crate::weights::Weights;
use crate::{
    argreduce, binary, cast, concat, conv, cumulative, gather, host, layer_norm, limits, matmul,
    pad, reduce, scatter, select, softmax, unary, view,
};
use kuaxin_core::prim::{Prim, TensorType};
use kuaxin_core::tensor::checked_numel;
use kuaxin_core::{Data, Error, Result, Tensor};
use std::sync::Arc;

fn type_of(t: &Tensor) -> TensorType {
    TensorType::new(t.dtype(), t.shape.clone())
}

/// Runs `prim` on `inputs`. `outputs` are the output types from [`Prim::infer`]; they are
/// re-derived and checked here (an empty list means "infer them"), so malformed calls give an
/// error rather than a panic. For `Prim::Host` ops `outputs` is ignored (pass `&[]`): their
/// output shapes depend on the data.
pub fn eval(prim: &Prim, inputs: &[&Tensor], outputs: &[TensorType]) -> Result<Vec<Tensor>> {
    eval_with(prim, inputs, outputs, None)
}

/// [`eval`] with the back end's prepared constants (packed weights), when it has them.
pub(crate) fn eval_with(
    prim: &Prim,
    inputs: &[&Tensor],
    outputs: &[TensorType],
    weights: Option<&Weights>,
) -> Result<Vec<Tensor>> {
    if let Prim::Host(op) = prim {
        check_lengths(prim, inputs)?;
        return host::eval(op, inputs);
    }
    let want = checked_types(prim, inputs, outputs)?;
    let data = run(prim, inputs, &want, weights)?;
    typed(prim, data, want)
}

/// [`eval_with`] on inputs the caller gives up: a blocked convolution adds a residual no
/// one else holds in place ([`crate::conv_blocked::eval_in_place`]).
pub(crate) fn eval_owned(
    prim: &Prim,
    mut inputs: Vec<Arc<Tensor>>,
    outputs: &[TensorType],
    weights: Option<&Weights>,
) -> Result<Vec<Tensor>> {
    if let Prim::ConvBlocked {
        strides,
        dilations,
        pads,
        epilogue: Some(k),
    } = prim
    {
        let want = {
            let refs: Vec<&Tensor> = inputs.iter().map(|t| t.as_ref()).collect();
            checked_types(prim, &refs, outputs)?
        };
        let geometry = (&strides[..], &dilations[..], &pads[..]);
        if let Some(out) = crate::conv_blocked::eval_in_place(&mut inputs, geometry, k, weights)? {
            return typed(prim, vec![Data::F32(out)], want);
        }
        let refs: Vec<&Tensor> = inputs.iter().map(|t| t.as_ref()).collect();
        let data = run(prim, &refs, &want, weights)?;
        return typed(prim, data, want);
    }
    if let Some(out) = reshape_in_place(prim, &mut inputs, outputs)? {
        return Ok(out);
    }
    let refs: Vec<&Tensor> = inputs.iter().map(|t| t.as_ref()).collect();
    eval_with(prim, &refs, outputs, weights)
}

/// A view that reads the whole of its input in order (a reshape) as the input's own buffer,
/// when no one else holds it; `None` (inputs untouched) otherwise. A map read back from the
/// blocked layout is a transposing view and then such a reshape, which copied megabytes.
fn reshape_in_place(
    prim: &Prim,
    inputs: &mut Vec<Arc<Tensor>>,
    outputs: &[TensorType],
) -> Result<Option<Vec<Tensor>>> {
    let (
        Prim::View {
            shape,
            strides,
            offset: 0,
        },
        [x],
    ) = (prim, inputs.as_slice())
    else {
        return Ok(None);
    };
    if checked_numel(shape) != Some(x.numel())
        || !kuaxin_core::tensor::is_row_major(shape, strides)
        || Arc::strong_count(x) != 1
    {
        return Ok(None);
    }
    let want = checked_types(prim, &[x.as_ref()], outputs)?;
    let Some(x) = inputs.pop() else {
        return Ok(None);
    };
    match Arc::try_unwrap(x) {
        Ok(t) => typed(prim, vec![t.data], want).map(Some),
        Err(x) => {
            inputs.push(x);
            Ok(None)
        }
    }
}

/// The output types of `prim` on `inputs` (whose values must fill their shapes), checked
/// against `outputs` (empty: not given) and against the allocation limits.
fn checked_types(
    prim: &Prim,
    inputs: &[&Tensor],
    outputs: &[TensorType],
) -> Result<Vec<TensorType>> {
    check_lengths(prim, inputs)?;
    let types: Vec<TensorType> = inputs.iter().map(|t| type_of(t)).collect();
    precheck(prim, &types)?;
    let want = prim.infer(&types)?;
    if !outputs.is_empty() && outputs != want.as_slice() {
        let show = |v: &[TensorType]| {
            v.iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(Error::invalid(format!(
            "{}: output types [{}] do not match the inferred [{}]",
            prim.name(),
            show(outputs),
            show(&want)
        )));
    }
    for t in &want {
        limits::check_alloc(t.dtype, t.numel())?;
    }
    Ok(want)
}

/// An error for an input whose values do not fill its shape.
fn check_lengths(prim: &Prim, inputs: &[&Tensor]) -> Result<()> {
    for (i, t) in inputs.iter().enumerate() {
        if checked_numel(&t.shape) != Some(t.data.len()) {
            return Err(Error::invalid(format!(
                "{}: input {i} has shape {:?} but {} elements",
                prim.name(),
                t.shape,
                t.data.len()
            )));
        }
    }
    Ok(())
}

/// `data` as tensors of the types `want`; an error naming `prim` for a dtype it should not
/// have produced.
fn typed(prim: &Prim, data: Vec<Data>, want: Vec<TensorType>) -> Result<Vec<Tensor>> {
    data.into_iter()
        .zip(want)
        .map(|(d, t)| {
            if d.dtype() != t.dtype {
                return Err(Error::backend(format!(
                    "{}: produced {} instead of {}",
                    prim.name(),
                    d.dtype(),
                    t.dtype
                )));
            }
            Tensor::new(t.shape, d)
        })
        .collect()
}

/// [`Prim::infer`] (validation) followed by [`eval`].
pub fn eval_infer(prim: &Prim, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
    if matches!(prim, Prim::Host(_)) {
        return eval(prim, inputs, &[]);
    }
    let types: Vec<TensorType> = inputs.iter().map(|t| type_of(t)).collect();
    precheck(prim, &types)?;
    let outputs = prim.infer(&types)?;
    eval(prim, inputs, &outputs)
}

/// Checks `Prim::infer` relies on without checking itself (it would overflow or panic).
fn precheck(prim: &Prim, ins: &[TensorType]) -> Result<()> {
    let overflow = || Error::invalid(format!("{}: sizes overflow", prim.name()));
    match prim {
        Prim::Conv { dilations, .. } if ins.len() == 2 => {
            let w = &ins[1].shape;
            for (i, &k) in w.iter().skip(2).enumerate() {
                if k == 0 {
                    return Err(Error::invalid(format!(
                        "Conv: weight {} has an empty kernel dim",
                        ins[1]
                    )));
                }
                let d = dilations.get(i).copied().unwrap_or(1);
                (k - 1)
                    .checked_mul(d)
                    .and_then(|e| e.checked_add(1))
                    .ok_or_else(overflow)?;
            }
            if let Prim::Conv { groups, .. } = prim {
                w.get(1)
                    .copied()
                    .unwrap_or(0)
                    .checked_mul(*groups)
                    .ok_or_else(overflow)?;
            }
        }
        Prim::GatherNd { .. } if ins.len() == 2 => {
            if let Some(&last) = ins[1].shape.last() {
                if last > ins[0].shape.len() {
                    return Err(Error::invalid(format!(
                        "GatherND: indices {} too deep for {}",
                        ins[1], ins[0]
                    )));
                }
            }
        }
        Prim::PadConstant { pads } if !ins.is_empty() => {
            for (&d, &(b, a)) in ins[0].shape.iter().zip(pads) {
                d.checked_add(b)
                    .and_then(|x| x.checked_add(a))
                    .ok_or_else(overflow)?;
            }
        }
        Prim::Concat { axis } => {
            ins.iter()
                .try_fold(0usize, |acc, t| {
                    acc.checked_add(t.shape.get(*axis).copied().unwrap_or(0))
                })
                .ok_or_else(overflow)?;
        }
        Prim::View {
            shape,
            strides,
            offset,
        } => {
            let mut reach = *offset as i128;
            for (&d, &s) in shape.iter().zip(strides) {
                reach += (d as i128).saturating_sub(1).max(0) * (s as i128).abs();
            }
            if reach > isize::MAX as i128 {
                return Err(overflow());
            }
        }
        _ => {}
    }
    Ok(())
}

fn run(
    prim: &Prim,
    inputs: &[&Tensor],
    want: &[TensorType],
    weights: Option<&Weights>,
) -> Result<Vec<Data>> {
    if let Prim::Fused(k) = prim {
        return Ok(vec![crate::fused::run(k, inputs)?]);
    }
    if let Prim::ConvEpilogue {
        strides,
        dilations,
        groups,
        epilogue,
    } = prim
    {
        let (x, w) = (inputs[0], inputs[1]);
        let (Data::F32(xd), Data::F32(wd)) = (&x.data, &w.data) else {
            return Err(Error::unsupported("ConvEpilogue runs on f32"));
        };
        let geom = Geom::new(
            &x.shape,
            &w.shape,
            &epilogue.domain,
            strides,
            dilations,
            *groups,
        );
        let extra = &inputs[2..];
        let apply = |start: usize, block: &mut [f32]| {
            crate::fused::apply_in_place(epilogue, extra, start, block)
        };
        let wt = conv::panel_weights(w, &geom, weights);
        // A bias and ReLU the tiles can apply themselves (same bits as `apply`).
        let columns = crate::conv_finish::bias_relu(epilogue, extra);
        let out = conv::conv_with_epilogue(xd, wd, &geom, (Some(&apply), columns), wt.as_deref())?;
        return Ok(vec![Data::F32(out)]);
    }
    if let Prim::ConvBlocked {
        strides,
        dilations,
        pads,
        epilogue,
    } = prim
    {
        let out = crate::conv_blocked::eval(inputs, (strides, dilations, pads), epilogue, weights)?;
        return Ok(vec![Data::F32(out)]);
    }
    if let Prim::MatMulEpilogue { a, b, epilogue } = prim {
        let extra = &inputs[2..];
        // A bias per column, a residual and a ReLU go into the tile's registers; any other
        // epilogue (or a product off the tile) runs on the stored output.
        let product = Prim::MatMulOfViews {
            a: a.clone(),
            b: b.clone(),
        }
        .infer(&[type_of(inputs[0]), type_of(inputs[1])])?;
        let n = product[0].shape.last().copied().unwrap_or(1);
        let finish = crate::conv_finish::bias_relu_columns(epilogue, extra, n);
        let (mut out, finished) =
            matmul::matmul_of_views_finished(inputs[0], inputs[1], (a, b), weights, finish)?;
        let Data::F32(c) = &mut out else {
            return Err(Error::unsupported("MatMulEpilogue runs on f32"));
        };
        if !finished {
            crate::fused::apply_in_place(epilogue, extra, 0, c)?;
        }
        return Ok(vec![out]);
    }
    let Some(&x) = inputs.first() else {
        return Err(Error::invalid(format!("{} needs inputs", prim.name())));
    };
    let d = |i: usize| &inputs[i].data;
    let one = match prim {
        Prim::Unary(op) => unary::unary(*op, d(0))?,
        Prim::Binary(op) => binary::binary(*op, d(0), d(1))?,
        Prim::Where => select::select(d(0), d(1), d(2))?,
        Prim::Cast(to) => cast::cast(d(0), *to),
        Prim::Reduce { op, axes } => reduce::reduce(*op, d(0), &x.shape, axes)?,
        Prim::ArgReduce {
            max,
            axis,
            select_last,
        } => argreduce::argreduce(d(0), &x.shape, *axis, *max, *select_last)?,
        Prim::Cumulative {
            prod,
            axis,
            exclusive,
            reverse,
        } => cumulative::cumulative(d(0), &x.shape, *axis, *prod, *exclusive, *reverse)?,
        Prim::View {
            shape,
            strides,
            offset,
        } => view::view(d(0), shape, strides, *offset)?,
        Prim::PadConstant { pads } => pad::pad(d(0), d(1), &x.shape, pads, &want[0].shape)?,
        Prim::Concat { axis } => concat::concat(inputs, *axis, want[0].numel())?,
        Prim::Gather { axis } => gather::gather(x, inputs[1], *axis)?,
        Prim::GatherElements { axis } => gather::gather_elements(x, inputs[1], *axis)?,
        Prim::GatherNd { batch_dims } => gather::gather_nd(x, inputs[1], *batch_dims)?,
        Prim::ScatterElements { axis, reduction } => {
            scatter::scatter_elements(x, inputs[1], inputs[2], *axis, *reduction)?
        }
        Prim::ScatterNd { reduction } => scatter::scatter_nd(x, inputs[1], inputs[2], *reduction)?,
        Prim::MatMul => matmul::matmul_of_views(x, inputs[1], &None, &None, weights)?,
        Prim::MatMulOfViews { a, b } => matmul::matmul_of_views(x, inputs[1], a, b, weights)?,
        Prim::Conv {
            strides,
            dilations,
            groups,
        } => {
            let geom = Geom::new(
                &x.shape,
                &inputs[1].shape,
                &want[0].shape,
                strides,
                dilations,
                *groups,
            );
            let wt = conv::panel_weights(inputs[1], &geom, weights);
            conv::conv(d(0), d(1), &geom, wt.as_deref())?
        }
        Prim::SoftmaxRows => softmax::softmax_rows(d(0), &x.shape)?,
        Prim::MaskedSoftmaxRows {
            scale,
            divide,
            mask,
        } => softmax::masked_softmax_rows(d(0), d(1), &x.shape, (*scale, *divide), mask)?,
        Prim::LayerNormRows { eps } => {
            layer_norm::layer_norm_rows(d(0), &x.shape, (d(1), d(2)), *eps)?
        }
        Prim::Host(_) => return Err(Error::backend("host ops are evaluated by host::eval")),
        Prim::Fused(_)
        | Prim::ConvEpilogue { .. }
        | Prim::ConvBlocked { .. }
        | Prim::MatMulEpilogue { .. } => {
            return Err(Error::backend("fused kernels are evaluated above"))
        }
    };
    Ok(vec![one])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(t: &Tensor) -> &[f32] {
        match &t.data {
            Data::F32(v) => v,
            other => panic!("expected f32 data, got {}", other.dtype()),
        }
    }

    #[test]
    fn a_reshape_takes_its_input_buffer_only_when_no_one_else_holds_it() {
        let values: Vec<f32> = (0..6).map(|v| v as f32).collect();
        let x = Arc::new(Tensor::from_vec(vec![2, 3], values.clone()).expect("a tensor"));
        let at = f32s(&x).as_ptr();
        let view = |shape: Vec<usize>, strides: Vec<isize>| Prim::View {
            shape,
            strides,
            offset: 0,
        };
        let reshape = view(vec![3, 2], vec![2, 1]);
        // Held elsewhere too: copied.
        let held = x.clone();
        let out = eval_owned(&reshape, vec![x], &[], None).expect("the reshape runs");
        assert_eq!(
            (out[0].shape.as_slice(), f32s(&out[0])),
            (&[3, 2][..], &values[..])
        );
        assert_ne!(f32s(&out[0]).as_ptr(), at);
        // A transpose of an input held by no one else is still a copy.
        let transpose = view(vec![3, 2], vec![1, 3]);
        let out = eval_owned(&transpose, vec![held.clone()], &[], None).expect("runs");
        assert_eq!(f32s(&out[0]), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        // Alone, the reshape is the input's buffer.
        let out = eval_owned(&reshape, vec![held], &[], None).expect("the reshape runs");
        assert_eq!(
            (out[0].shape.as_slice(), f32s(&out[0])),
            (&[3, 2][..], &values[..])
        );
        assert_eq!(f32s(&out[0]).as_ptr(), at);
    }
}
