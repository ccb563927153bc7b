//! The driver of the row kernels (`softmax.rs`, `layer_norm.rs`): an f32 tensor's rows along
//! its last axis into a new tensor, whole rows per parallel task (between `MIN_TASK` and
//! `MIN_PAR` elements each), each task compiled for the CPU's vector level.
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// The fewest elements a row task takes: a softmax or LayerNorm row costs several operations
/// an element, so tasks can be smaller than elementwise ones.
const MIN_TASK: usize = 8192;

/// `row(scratch, r, x_row, out_row)` for every row `r` of `n` of `x`; `scratch` is made once
/// per task by `scratch()`. `row` is given its output uninitialised and must write all of it
/// (the output is not zeroed first: a pass over the whole tensor saved).
pub fn map_rows<S>(
    x: &[f32],
    n: usize,
    scratch: impl Fn() -> S + Sync,
    row: impl Fn(&mut S, usize, &[f32], &mut [MaybeUninit<f32>]) + Sync,
) -> kuaxin_core::Result<Vec<f32>> {
    if n == 0 || x.is_empty() {
        return Ok(vec![0f32; x.len()]);
    }
    if !x.len().is_multiple_of(n) {
        return Err(kuaxin_core::Error::invalid(format!(
            "rows of {n} do not divide a tensor of {} elements",
            x.len()
        )));
    }
    // About four tasks a thread (so a thread held up elsewhere costs little), but no task
    // under `MIN_TASK` elements.
    let rows = x.len() / n;
    let threads = rayon::current_num_threads().max(1);
    let per = rows
        .div_ceil(4 * threads)
        .clamp(MIN_TASK.div_ceil(n), (crate::par::MIN_PAR / n).max(1))
        * n;
    let fill = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(per)
            .zip(x.par_chunks(per))
            .enumerate()
            .for_each(|(t, (out, x))| {
                let mut s = scratch();
                let first = t * (per / n);
                crate::simd::vectorized(
                    #[inline(always)]
                    || {
                        let rows = out.chunks_exact_mut(n).zip(x.chunks_exact(n));
                        for (i, (out, x)) in rows.enumerate() {
                            row(&mut s, first + i, x, out);
                        }
                    },
                )
            });
    };
    // SAFETY: `x.len()` is a multiple of `n` (checked above), so the rows cover the output,
    // and `row` writes every element of each.
    Ok(unsafe { crate::par::filled(x.len(), fill) })
}
