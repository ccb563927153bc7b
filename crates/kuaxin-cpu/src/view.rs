//! `Prim::View`: `out[i0, .., in] = in_flat[offset + sum(ik * stride_k)]`, copied into a
//! contiguous tensor. Reshape, transpose, expand (stride 0), slicing with any step (negative
//! too), sliding windows and diagonals are all views. `Prim::infer` has checked that every
//! read is in bounds.
use crate::par;
use kuaxin_core::tensor::Element;
use kuaxin_core::{Data, Result};

pub fn view(x: &Data, shape: &[usize], strides: &[isize], offset: usize) -> Result<Data> {
    let numel: usize = shape.iter().product();
    let dims = coalesce(shape, strides);
    Ok(dispatch1!(x, v, any => Element::wrap(view_typed(v, &dims, offset as isize, numel))))
}

/// Drops size-1 dims and merges neighbours that step through memory as one dim.
fn coalesce(shape: &[usize], strides: &[isize]) -> Vec<(usize, isize)> {
    let mut dims: Vec<(usize, isize)> = vec![];
    for (&n, &s) in shape.iter().zip(strides) {
        if n == 1 {
            continue;
        }
        match dims.last_mut() {
            Some((pn, ps)) if *ps == s * n as isize => {
                *pn *= n;
                *ps = s;
            }
            _ => dims.push((n, s)),
        }
    }
    dims
}

fn view_typed<T: Element>(v: &[T], dims: &[(usize, isize)], offset: isize, numel: usize) -> Vec<T> {
    if numel == 0 {
        return vec![];
    }
    let Some(&(last_n, last_s)) = dims.last() else {
        return vec![v[offset as usize]];
    };
    if dims.len() == 1 && last_s == 1 {
        let o = offset as usize;
        return v[o..o + last_n].to_vec();
    }
    let outer = &dims[..dims.len() - 1];
    let rows_per_chunk = (par::MIN_PAR / last_n).max(1);
    let mut out = vec![T::default(); numel];
    par::for_chunks(
        &mut out,
        rows_per_chunk * last_n,
        rows_per_chunk * last_n,
        |ci, chunk| {
            // Position of the chunk's first row.
            let mut idx = vec![0usize; outer.len()];
            let mut r = ci * rows_per_chunk;
            let mut base = offset;
            for d in (0..outer.len()).rev() {
                idx[d] = r % outer[d].0;
                r /= outer[d].0;
                base += idx[d] as isize * outer[d].1;
            }
            for row in chunk.chunks_mut(last_n) {
                if last_s == 1 {
                    let b = base as usize;
                    row.copy_from_slice(&v[b..b + last_n]);
                } else {
                    let mut p = base;
                    for o in row.iter_mut() {
                        *o = v[p as usize];
                        p += last_s;
                    }
                }
                for d in (0..outer.len()).rev() {
                    idx[d] += 1;
                    base += outer[d].1;
                    if idx[d] < outer[d].0 {
                        break;
                    }
                    base -= outer[d].1 * idx[d] as isize;
                    idx[d] = 0;
                }
            }
        },
    );
    out
}
