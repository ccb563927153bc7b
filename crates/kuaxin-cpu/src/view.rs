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
    by_rows(numel, last_n, 1, |first_row, chunk| {
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
/// the blocked layout (one Zen 5 core, minima): 0.082-0.089 ms row by row, 0.066-0.068 so;
/// 0.023-0.024 with 32-bit elements sixteen by sixteen through registers (onnxruntime's
/// reorder of the same map 0.021-0.025, measured beside it).
fn transposed<T: Element>(
    v: &[T],
    planes: &[(usize, isize)],
    rows: usize,
    (cols, col_step): (usize, isize),
    offset: isize,
    numel: usize,
) -> Vec<T> {
    // 32-bit elements go sixteen rows by sixteen columns through registers, in chunks of
    // whole groups of sixteen rows.
    let tiles = std::mem::size_of::<T>() == 4 && crate::transpose_avx512::available();
    let row_multiple = if tiles { 16 } else { 1 };
    by_rows(numel, cols, row_multiple, |first_row, chunk| {
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
            let tiled = tile_rows(v, start, (take, cols, col_step), block);
            for c0 in (0..cols).step_by(TILE) {
                let c1 = (c0 + TILE).min(cols);
                for (i, out_row) in block.chunks_exact_mut(cols).enumerate().skip(tiled) {
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

/// The first rows of `block` (`take` rows of `cols`, element (i, c) at `v[start + i + c *
/// col_step]`) in whole groups of sixteen, through [`crate::transpose_avx512::tile16`] (the
/// columns past the last whole sixteen one by one); returns how many rows it wrote (none for
/// other element widths, or without AVX-512).
fn tile_rows<T: Element>(
    v: &[T],
    start: isize,
    (take, cols, col_step): (usize, usize, isize),
    block: &mut [T],
) -> usize {
    let groups = take / 16 * 16;
    let last_col = (cols.max(1) - 1) as isize * col_step;
    // Every element of the block's first `groups` rows lies in `v` (a view inside its input,
    // which `Prim::infer` checked; checked again here, as the tiles read without bounds).
    let inside = crate::transpose_avx512::available()
        && groups > 0
        && start + last_col.min(0) >= 0
        && start + groups as isize - 1 + last_col.max(0) < v.len() as isize
        && block.len() >= groups * cols;
    if !inside || std::mem::size_of::<T>() != 4 {
        return 0;
    }
    let full = cols / 16 * 16;
    #[cfg(target_arch = "x86_64")]
    for r0 in (0..groups).step_by(16) {
        for c0 in (0..full).step_by(16) {
            let at = start + r0 as isize + c0 as isize * col_step;
            // SAFETY: AVX-512 is there (`available` above); the tile reads rows
            // `r0..r0 + 16` and columns `c0..c0 + 16` of the block's elements in `v` (checked
            // above) and writes those of `block`; `T` is 32 bits wide.
            unsafe {
                crate::transpose_avx512::tile16(
                    v.as_ptr().offset(at).cast::<u32>(),
                    col_step,
                    block[r0 * cols + c0..].as_mut_ptr().cast::<u32>(),
                    cols,
                )
            };
        }
        for (i, out_row) in block[r0 * cols..(r0 + 16) * cols]
            .chunks_exact_mut(cols)
            .enumerate()
        {
            let mut at = start + (r0 + i) as isize + full as isize * col_step;
            for o in &mut out_row[full..] {
                *o = v[at as usize];
                at += col_step;
            }
        }
    }
    groups
}

/// A contiguous output of `numel` elements in rows of `cols`, filled by `fill(first row, rows)`
/// over chunks of rows (a multiple of `row_multiple` rows but the last), in parallel when
/// large enough.
fn by_rows<T: Element>(
    numel: usize,
    cols: usize,
    row_multiple: usize,
    fill: impl Fn(usize, &mut [T]) + Sync + Send,
) -> Vec<T> {
    let rows_per_chunk = (par::MIN_PAR / cols)
        .max(1)
        .next_multiple_of(row_multiple.max(1));
    let mut out = vec![T::default(); numel];
    let chunk = rows_per_chunk * cols;
    par::for_chunks(&mut out, chunk, chunk, |ci, rows| {
        fill(ci * rows_per_chunk, rows)
    });
    out
}
