//! `Prim::PadConstant`: surrounds the input with a constant (`pads[d] = (before, after)`).
//! The output is written row by row (its last dim) in pieces spread over the threads, each
//! element once: constant, or copied from its input row.
use crate::par;
use crate::shape::strides;
use crate::typed::Typed;
use kuaxin_core::tensor::Element;
use kuaxin_core::{Data, Error, Result};
use std::mem::MaybeUninit;

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
    let consistent = shape.len() == pads.len()
        && shape.len() == out_shape.len()
        && (0..shape.len()).all(|d| shape[d] + pads[d].0 + pads[d].1 == out_shape[d])
        && v.len() == shape.iter().product::<usize>();
    if !consistent {
        return Err(Error::invalid(format!(
            "PadConstant: input {shape:?} with pads {pads:?} does not make {out_shape:?}"
        )));
    }
    if out_shape.is_empty() {
        return Ok(v.to_vec());
    }
    let (shape, pads, out_shape) = merge_unpadded_tail(shape, pads);
    let rows = Rows::new(&shape, &pads, &out_shape);
    Ok(par::build(out_shape.iter().product(), |start, out| {
        rows.fill(v, fill, start, out)
    }))
}

/// The same padding with a last dim that is not padded merged into the one before (its
/// pads scaled), as long as there is one: the rows the fill copies are then whole, where a
/// blocked layout's padding (`[N, C/16, H, W, 16]`, pads on H and W) has rows of sixteen.
fn merge_unpadded_tail(
    shape: &[usize],
    pads: &[(usize, usize)],
) -> (Vec<usize>, Vec<(usize, usize)>, Vec<usize>) {
    let (mut shape, mut pads) = (shape.to_vec(), pads.to_vec());
    while shape.len() >= 2 && pads[shape.len() - 1] == (0, 0) {
        let last = shape.pop().unwrap_or(1);
        pads.pop();
        let r = shape.len() - 1;
        shape[r] *= last;
        pads[r] = (pads[r].0 * last, pads[r].1 * last);
    }
    let out = shape
        .iter()
        .zip(&pads)
        .map(|(&n, &(b, a))| n + b + a)
        .collect();
    (shape, pads, out)
}

/// The output's rows (along its last dim) and the input rows they hold.
struct Rows<'a> {
    shape: &'a [usize],
    pads: &'a [(usize, usize)],
    out_shape: &'a [usize],
    /// Input strides.
    istr: Vec<usize>,
}

impl<'a> Rows<'a> {
    fn new(shape: &'a [usize], pads: &'a [(usize, usize)], out_shape: &'a [usize]) -> Rows<'a> {
        Rows {
            shape,
            pads,
            out_shape,
            istr: strides(shape),
        }
    }

    /// Output row `q`'s index along each outer dim (the last entry unused).
    fn index(&self, mut q: usize) -> Vec<usize> {
        let r = self.shape.len();
        let mut idx = vec![0; r];
        for d in (0..r - 1).rev() {
            idx[d] = q % self.out_shape[d];
            q /= self.out_shape[d];
        }
        idx
    }

    /// Where the output row at `idx` (over the output's outer dims) starts in the input, when
    /// it is an input row and not padding.
    #[inline(always)]
    fn source(&self, idx: &[usize]) -> Option<usize> {
        let outer = self.shape.len() - 1;
        let mut at = 0;
        for (((&i, &(before, _)), &n), &stride) in idx
            .iter()
            .zip(self.pads)
            .zip(self.shape)
            .zip(&self.istr)
            .take(outer)
        {
            if i < before || i >= before + n {
                return None;
            }
            at += (i - before) * stride;
        }
        Some(at)
    }

    /// Moves `idx` to the next output row (the outer dims as an odometer).
    #[inline(always)]
    fn next_row(&self, idx: &mut [usize]) {
        for d in (0..self.shape.len() - 1).rev() {
            idx[d] += 1;
            if idx[d] < self.out_shape[d] {
                return;
            }
            idx[d] = 0;
        }
    }

    /// Output elements `start .. start + out.len()`.
    fn fill<T: Copy>(&self, v: &[T], value: T, start: usize, out: &mut [MaybeUninit<T>]) {
        let r = self.shape.len();
        let ol = self.out_shape[r - 1];
        let (before, last) = (self.pads[r - 1].0, self.shape[r - 1]);
        // Row by row, the row's index stepped on rather than divided out again (a 3x3
        // convolution's padded input is rows of 9 to 58 values: the divisions cost more than
        // the copy).
        let mut j = start % ol;
        let mut idx = self.index(start / ol);
        let mut done = 0;
        while done < out.len() {
            let n = (ol - j).min(out.len() - done);
            let row = &mut out[done..done + n];
            let src = self.source(&idx);
            if n == ol {
                // A whole row (nearly all of them): padding, input values, padding.
                let (head, rest) = row.split_at_mut(before);
                let (body, tail) = rest.split_at_mut(last);
                match src {
                    Some(at) => {
                        let from = &v[at..at + last];
                        for (d, &x) in body.iter_mut().zip(from) {
                            d.write(x);
                        }
                    }
                    None => body.iter_mut().for_each(|d| {
                        d.write(value);
                    }),
                }
                for d in head.iter_mut().chain(tail) {
                    d.write(value);
                }
                done += n;
                self.next_row(&mut idx);
                continue;
            }
            // The row's padding before, its input values, its padding after; clipped to the
            // columns j .. j + n this piece holds.
            let spans = [
                (0, before, None),
                (before, before + last, src),
                (before + last, ol, None),
            ];
            for (a, b, from) in spans {
                let (a, b) = (a.max(j), b.min(j + n));
                if a >= b {
                    continue;
                }
                let dst = &mut row[a - j..b - j];
                match from {
                    Some(at) => par::write_from(dst, &v[at + a - before..at + b - before]),
                    None => dst.iter_mut().for_each(|d| {
                        d.write(value);
                    }),
                }
            }
            done += n;
            j = 0;
            self.next_row(&mut idx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_anywhere_in_the_output_hold_padding_and_input() {
        // A 2 x 3 input padded to 4 x 6: one row before, one after, 2 columns before, 1 after.
        let v = [1, 2, 3, 4, 5, 6];
        let (shape, pads, out_shape) = ([2, 3], [(1, 1), (2, 1)], [4, 6]);
        #[rustfmt::skip]
        let want = [
            0, 0, 0, 0, 0, 0,
            0, 0, 1, 2, 3, 0,
            0, 0, 4, 5, 6, 0,
            0, 0, 0, 0, 0, 0,
        ];
        let rows = Rows::new(&shape, &pads, &out_shape);
        par::check_pieces(&want, -1, |start, out| rows.fill(&v, 0, start, out));
    }

    #[test]
    fn unpadded_last_dims_merge_and_the_padding_is_the_same() {
        // [2, 3, 2, 2] padded on dims 1 and 2 only: its last dim merges into dim 2.
        let shape = [2, 3, 2, 2];
        let pads = [(0, 0), (1, 0), (1, 2), (0, 0)];
        let (m_shape, m_pads, m_out) = merge_unpadded_tail(&shape, &pads);
        assert_eq!(m_shape, [2, 3, 4]);
        assert_eq!(m_pads, [(0, 0), (1, 0), (2, 4)]);
        assert_eq!(m_out, [2, 4, 10]);
        let v: Vec<i32> = (1..=24).collect();
        let out_shape = [2, 4, 5, 2];
        let got = pad_typed(&v, &Data::I32(vec![-7]), &shape, &pads, &out_shape).unwrap();
        // By the definition: each output index inside the pads reads the input, else -7.
        let mut want = Vec::new();
        for a in 0..2 {
            for b in 0..4 {
                for c in 0..5 {
                    for d in 0..2 {
                        let inside = b >= 1 && (1..3).contains(&c);
                        want.push(if inside {
                            v[((a * 3 + b - 1) * 2 + c - 1) * 2 + d]
                        } else {
                            -7
                        });
                    }
                }
            }
        }
        assert_eq!(got, want);
    }
}
