//! `Prim::Concat`: joins same-typed tensors along one axis.
use crate::typed::Typed;
use kuaxin_core::tensor::Element;
use kuaxin_core::{Data, Result, Tensor};

pub fn concat(inputs: &[&Tensor], axis: usize, out_len: usize) -> Result<Data> {
    let first = &inputs[0].data;
    Ok(dispatch1!(first, v, any => Element::wrap(concat_as(v, inputs, axis, out_len)?)))
}

fn concat_as<T: Typed>(_: &[T], inputs: &[&Tensor], axis: usize, out_len: usize) -> Result<Vec<T>> {
    let outer: usize = inputs[0].shape[..axis].iter().product();
    let parts = inputs
        .iter()
        .map(|t| {
            Ok((
                T::expect(&t.data, "Concat")?,
                t.shape[axis..].iter().product::<usize>(),
            ))
        })
        .collect::<Result<Vec<(&[T], usize)>>>()?;
    let mut out = Vec::with_capacity(out_len);
    for o in 0..outer {
        for &(v, chunk) in &parts {
            out.extend_from_slice(&v[o * chunk..(o + 1) * chunk]);
        }
    }
    Ok(out)
}
