//! `Prim::PadConstant`: surrounds the input with a constant (`pads[d] = (before, after)`).
use crate::shape::{next_index, strides};
use crate::typed::Typed;
use kuaxin_core::tensor::Element;
use kuaxin_core::{Data, Result};

pub fn pad(
    x: &Data,
    value: &Data,
    shape: &[usize],
    pads: &[(usize, usize)],
    out_shape: &[usize],
) -> Result<Data> {
    Ok(dispatch1!(x, v, any => Element::wrap(pad_typed(v, value, shape, pads, out_shape)?)))
}

fn pad_typed<T: Typed>(
    v: &[T],
    value: &Data,
    shape: &[usize],
    pads: &[(usize, usize)],
    out_shape: &[usize],
) -> Result<Vec<T>> {
    let fill = *T::expect(value, "PadConstant value")?
        .first()
        .unwrap_or(&T::default());
    let mut out = vec![fill; out_shape.iter().product()];
    if v.is_empty() {
        return Ok(out);
    }
    let Some(&last) = shape.last() else {
        return Ok(v.to_vec());
    };
    let r = shape.len();
    let ostr = strides(out_shape);
    let outer = &shape[..r - 1];
    let mut idx = vec![0usize; r - 1];
    for row in v.chunks(last) {
        let dst = idx
            .iter()
            .enumerate()
            .map(|(d, &i)| (i + pads[d].0) * ostr[d])
            .sum::<usize>()
            + pads[r - 1].0;
        out[dst..dst + last].copy_from_slice(row);
        next_index(&mut idx, outer);
    }
    Ok(out)
}
