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
    if let Some((&(rows, 1), planes)) = outer.split_last() {
        if last_s.unsigned_abs() > 1 {
            return transposed(v, planes, rows, (last_n, last_s), offset, numel);
        }
    }
    by_rows(numel, last_n, |first_row, chunk| {
        // Position of the chunk's first row.
        let mut idx = vec![0usize; outer.len()];
        let mut r = first_row;
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
    })
}

/// Columns of a tile of [`transposed`]: as many lines of the source, 4 KiB when the columns
/// lie a line or more apart.
const TILE: usize = 64;

/// A view whose last axis is strided and whose next-to-last has unit stride: planes (indexed
/// by `planes`) of `rows x cols` read as a transpose, element (i, c) of a plane at
/// `i + c * col_step` from its start (the blocked layout `[.., H * W, 16]` read back as
/// `[.., 16, H * W]`, NHWC read as NCHW). Row by row, each row would read one element from
/// every line of the plane; a tile of columns at a time, the tile's lines stay in L1 while
/// every row of the plane takes its elements from them. A 64-channel 55 x 55 map back from
/// the blocked layout (one Zen 5 core, minima): 0.082-0.089 ms row by row, 0.066-0.068 so.
fn transposed<T: Element>(
    v: &[T],
    planes: &[(usize, isize)],
    rows: usize,
    (cols, col_step): (usize, isize),
    offset: isize,
    numel: usize,
) -> Vec<T> {
    by_rows(numel, cols, |first_row, chunk| {
        let mut row = first_row;
        let mut rest = chunk;
        // The chunk's rows a plane at a time.
        while !rest.is_empty() {
            let (plane, i0) = (row / rows, row % rows);
            let take = (rows - i0).min(rest.len() / cols);
            let (block, next) = std::mem::take(&mut rest).split_at_mut(take * cols);
            let mut start = offset + i0 as isize;
            let mut p = plane;
            for &(n, stride) in planes.iter().rev() {
                start += (p % n) as isize * stride;
                p /= n;
            }
            for c0 in (0..cols).step_by(TILE) {
                let c1 = (c0 + TILE).min(cols);
                for (i, out_row) in block.chunks_exact_mut(cols).enumerate() {
                    let mut at = start + i as isize + c0 as isize * col_step;
                    for o in &mut out_row[c0..c1] {
                        *o = v[at as usize];
                        at += col_step;
                    }
                }
            }
            row += take;
            rest = next;
        }
    })
}

/// A contiguous output of `numel` elements in rows of `cols`, filled by `fill(first row, rows)`
/// over chunks of rows, in parallel when large enough.
fn by_rows<T: Element>(
    numel: usize,
    cols: usize,
    fill: impl Fn(usize, &mut [T]) + Sync + Send,
) -> Vec<T> {
    let rows_per_chunk = (par::MIN_PAR / cols).max(1);
    let mut out = vec![T::default(); numel];
    let chunk = rows_per_chunk * cols;
    par::for_chunks(&mut out, chunk, chunk, |ci, rows| {
        fill(ci * rows_per_chunk, rows)
    });
    out
}
