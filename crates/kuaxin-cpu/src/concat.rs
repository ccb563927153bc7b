//! `Prim::Concat`: joins same-typed tensors along one axis. The output is written in pieces
//! spread over the threads (a SqueezeNet fire module joins two 0.8 MB halves per image).
use crate::par;
use crate::typed::Typed;
use kuaxin_core::tensor::Element;
use kuaxin_core::{Data, Error, Result, Tensor};
use std::mem::MaybeUninit;

pub fn concat(inputs: &[&Tensor], axis: usize, out_len: usize) -> Result<Data> {
    let first = &inputs[0].data;
    Ok(dispatch1!(first, v, any => Element::wrap(concat_as(v, inputs, axis, out_len)?)))
}

fn concat_as<T: Typed>(_: &[T], inputs: &[&Tensor], axis: usize, out_len: usize) -> Result<Vec<T>> {
    let outer: usize = inputs[0].shape[..axis].iter().product();
    // Per input: its values and the run it adds to each output row (its extent from `axis`).
    let parts = inputs
        .iter()
        .map(|t| {
            Ok((
                T::expect(&t.data, "Concat")?,
                t.shape[axis..].iter().product::<usize>(),
            ))
        })
        .collect::<Result<Vec<(&[T], usize)>>>()?;
    let row: usize = parts.iter().map(|&(_, run)| run).sum();
    if outer * row != out_len || parts.iter().any(|&(v, run)| v.len() != outer * run) {
        return Err(Error::invalid(format!(
            "Concat: inputs of {:?} elements do not make an output of {out_len}",
            parts.iter().map(|(v, _)| v.len()).collect::<Vec<_>>()
        )));
    }
    Ok(par::build(out_len, |start, out: &mut [MaybeUninit<T>]| {
        fill(&parts, row, start, out)
    }))
}

/// Output elements `start .. start + out.len()`: runs of each input in turn, row after row.
#[inline(always)]
fn fill<T: Copy>(parts: &[(&[T], usize)], row: usize, start: usize, out: &mut [MaybeUninit<T>]) {
    let (mut o, mut at) = (start / row, start % row);
    let mut done = 0;
    while done < out.len() {
        let mut first = 0;
        for &(v, run) in parts {
            if at < first + run {
                let within = at - first;
                let n = (run - within).min(out.len() - done);
                let src = &v[o * run + within..o * run + within + n];
                par::write_from(&mut out[done..done + n], src);
                done += n;
                at += n;
                if done == out.len() {
                    return;
                }
            }
            first += run;
        }
        (o, at) = (o + 1, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_anywhere_in_the_output_take_the_right_runs() {
        // Two rows; inputs adding runs of 2, 0 and 3 to each.
        let (a, b, c) = ([1, 2, 3, 4], [0i32; 0], [10, 20, 30, 40, 50, 60]);
        let parts: Vec<(&[i32], usize)> = vec![(&a, 2), (&b, 0), (&c, 3)];
        let want = [1, 2, 10, 20, 30, 3, 4, 40, 50, 60];
        par::check_pieces(&want, -1, |start, out| fill(&parts, 5, start, out));
    }
}
