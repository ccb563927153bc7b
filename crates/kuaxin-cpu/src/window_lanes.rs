//! Max and min pooling windows over the blocked layout's lanes. A pool over
//! `[N, C/16, H, W, 16]` keeps a position's sixteen channels innermost, so (for a stride
//! above one) its output rows are sixteen long, and the row-by-row fold of
//! [`crate::window`] spends more on walking rows than on comparing: ResNet-50's stem max
//! pool took 0.43-0.50 ms, onnxruntime's 0.28. Here a position's lanes are one vector, and
//! each window position is one load and one compare-and-select (the rule of
//! [`crate::fold::max`] / [`crate::fold::min`], so the result is the same bit for bit).
use crate::walk::{Segments, Walk};
use crate::window_avx512;
use kuaxin_core::kernel::{Expr, Kernel};
use kuaxin_core::prim::ReduceOp;
use kuaxin_core::{Error, Result};
use rayon::prelude::*;
use std::borrow::Cow;

/// A fused max or min pool whose kept domain ends in an axis of at most sixteen lanes read
/// in unit steps: the window of output position `p` (lanes `l`) is
/// `src[base(p) + offs[r] + l]` over the window positions `r`.
pub struct LanePooling<'a> {
    min: bool,
    src: &'a [f32],
    lanes: usize,
    offs: Vec<usize>,
    /// The kept domain without its lane axis (coalesced), and the load's strides along it.
    dims: Vec<usize>,
    strides: Vec<isize>,
    offset: isize,
}

impl<'a> LanePooling<'a> {
    /// The kernel `k` as a lane pool, when it is one and the CPU has AVX-512: its body one
    /// load reduced by max or min and stored as it is, over the coalesced kept domain `kd`
    /// (the load's strides `ks`), each reduced position at `red_offsets` (per load).
    pub fn of(
        k: &Kernel,
        op: ReduceOp,
        srcs: &'a [Cow<[f32]>],
        red_offsets: &[Vec<isize>],
        kd: &[usize],
        ks: &[Vec<isize>],
    ) -> Option<LanePooling<'a>> {
        let [body] = k.body.as_slice() else {
            return None;
        };
        let ([load], [strides]) = (k.loads.as_slice(), ks) else {
            return None;
        };
        let min = match op {
            ReduceOp::Max => false,
            ReduceOp::Min => true,
            _ => return None,
        };
        let (&lanes, dims) = kd.split_last()?;
        let (&lane_stride, strides) = strides.split_last()?;
        // Windows that step backwards (a reversed view) stay with the row-by-row fold.
        if body.expr != Expr::Load(0)
            || lane_stride != 1
            || !(2..=16).contains(&lanes)
            || dims.is_empty()
            || strides.iter().any(|&s| s < 0)
            || !window_avx512::takes(1)
        {
            return None;
        }
        let offs = red_offsets
            .iter()
            .map(|o| usize::try_from(o[0]).ok())
            .collect::<Option<Vec<usize>>>()?;
        Some(LanePooling {
            min,
            src: srcs.get(load.arg)?,
            lanes,
            offs,
            dims: dims.to_vec(),
            strides: strides.to_vec(),
            offset: load.offset as isize,
        })
    }

    /// Every output position's lanes into `out` (the kept domain, row-major).
    pub fn run(&self, out: &mut [f32]) -> Result<()> {
        let lanes = self.lanes;
        let strides = [self.strides.clone()];
        let offsets = [self.offset];
        let inner = [self.strides.last().copied().unwrap_or(0)];
        let walk = Walk::rows(&self.dims, &strides, &offsets, &inner);
        let reach = self.offs.iter().max().copied().unwrap_or(0) + lanes;
        let per_task = (crate::par::MIN_PAR / (lanes * self.offs.len().max(1))).max(1);
        out.par_chunks_mut(per_task * lanes)
            .enumerate()
            .try_for_each(|(t, chunk)| -> Result<()> {
                let mut segs = Segments::default();
                walk.segments(t * per_task, chunk.len() / lanes, &mut segs);
                for (start, len, base) in segs.of_load(0) {
                    let step = inner[0];
                    let fits = usize::try_from(base).ok().zip(usize::try_from(step).ok());
                    let end = fits.and_then(|(base, step)| {
                        let last = (len.checked_sub(1)?).checked_mul(step)?;
                        base.checked_add(last)?.checked_add(reach)
                    });
                    let (Some((base, step)), Some(end)) = (fits, end) else {
                        return Err(self.outside(base, len));
                    };
                    if end > self.src.len() {
                        return Err(self.outside(base as isize, len));
                    }
                    let out = &mut chunk[start * lanes..(start + len) * lanes];
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `takes` found AVX-512; every read lies below `end`, checked to
                    // be within `src`.
                    unsafe {
                        let (src, offs) = (self.src, &self.offs);
                        if self.min {
                            window_avx512::fold_lanes::<true>(src, base, step, lanes, offs, out)
                        } else {
                            window_avx512::fold_lanes::<false>(src, base, step, lanes, offs, out)
                        }
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    let _ = (base, step, out);
                }
                Ok(())
            })
    }

    fn outside(&self, base: isize, len: usize) -> Error {
        Error::backend(format!(
            "pooling windows of {len} positions from {base} reach outside their source of {}",
            self.src.len()
        ))
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use crate::fold::{max, min};
    use crate::window_avx512;

    /// The definition, one lane and one window position at a time, with the scalar rule.
    fn reference(
        min_op: bool,
        src: &[f32],
        base: usize,
        step: usize,
        width: usize,
        offs: &[usize],
        n: usize,
    ) -> Vec<f32> {
        let mut out = vec![];
        for j in 0..n {
            for l in 0..width {
                let init = if min_op {
                    f32::INFINITY
                } else {
                    f32::NEG_INFINITY
                };
                out.push(offs.iter().fold(init, |a, &o| {
                    let x = src[base + j * step + o + l];
                    if min_op {
                        min(a, x)
                    } else {
                        max(a, x)
                    }
                }));
            }
        }
        out
    }

    #[test]
    fn lane_folds_are_the_scalar_rule_bit_for_bit() {
        if !window_avx512::takes(1) {
            eprintln!("skipped: this CPU has no AVX-512, so the lane fold is never chosen");
            return;
        }
        // Values with ties of opposite sign, NaNs and infinities; the same without NaNs
        // (the fast path, with infinities of both signs, which it hands to the rule); and
        // without NaNs all at most zero, then all at least zero, so that maxima, then
        // minima, are ties of -0 and +0 (the fast path throughout).
        let value = |i: usize, case: usize| {
            let v = match i % 23 {
                0 if case == 0 => f32::NAN,
                5 => return -0.0,
                6 => return 0.0,
                11 => f32::INFINITY,
                17 => f32::NEG_INFINITY,
                _ => ((i * 37 % 101) as f32 - 50.0) * 0.25,
            };
            match case {
                2 => -v.abs(),
                3 => v.abs(),
                _ => v,
            }
        };
        let sources: Vec<Vec<f32>> = (0..4)
            .map(|case| (0..700).map(|i| value(i, case)).collect())
            .collect();
        // A 3 x 3 window over rows of 9 positions (stride 2), a 2 x 2 window of width 5, a
        // 2 x 3 window.
        for src in &sources {
            for (width, step, offs) in [
                (
                    16usize,
                    32usize,
                    vec![0usize, 16, 32, 144, 160, 176, 288, 304, 320],
                ),
                (5, 7, vec![0, 5, 20, 25]),
                // Six window positions: the loop not unrolled (nine and four are).
                (16, 16, vec![0, 16, 32, 144, 160, 176]),
            ] {
                for min_op in [false, true] {
                    let n = 9;
                    let base = 3;
                    let want = reference(min_op, src, base, step, width, &offs, n);
                    let mut got = vec![0f32; n * width];
                    // SAFETY: AVX-512 is there; the windows end within `src`.
                    unsafe {
                        if min_op {
                            window_avx512::fold_lanes::<true>(
                                src, base, step, width, &offs, &mut got,
                            )
                        } else {
                            window_avx512::fold_lanes::<false>(
                                src, base, step, width, &offs, &mut got,
                            )
                        }
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "width {width}, min {min_op}");
                }
            }
        }
    }
}
