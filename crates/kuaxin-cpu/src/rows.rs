//! The driver of the row kernels (`softmax.rs`, `layer_norm.rs`): an f32 tensor's rows along
//! its last axis into a new tensor, whole rows per parallel task (at least `MIN_PAR` elements
//! of work each), each task compiled for the CPU's vector level.
use rayon::prelude::*;

/// `row(scratch, x_row, out_row)` for every row of `n` of `x`; `scratch` is made once per
/// task by `scratch()`.
pub fn map_rows<S>(
    x: &[f32],
    n: usize,
    scratch: impl Fn() -> S + Sync,
    row: impl Fn(&mut S, &[f32], &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    if n == 0 || x.is_empty() {
        return out;
    }
    let per = (crate::par::MIN_PAR / n).max(1) * n;
    out.par_chunks_mut(per)
        .zip(x.par_chunks(per))
        .for_each(|(out, x)| {
            let mut s = scratch();
            crate::simd::vectorized(
                #[inline(always)]
                || {
                    for (out, x) in out.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
                        row(&mut s, x, out);
                    }
                },
            )
        });
    out
}
