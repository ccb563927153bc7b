//! Short reductions read straight from the source: pooling windows. When a fused reduction's
//! body is one load, output `j` of a row segment is `op` over the window positions `r` of
//! `src[base + offs[r] + j * stride]`. Sixteen outputs are folded at once in registers, the
//! window positions in order, so nothing is staged in a buffer and the result equals the
//! blocked path's bit for bit (sums in f64, NaN propagating through max and min).
use crate::fold::{max, min};
use crate::walk::Segments;
use crate::{window_avx2, window_avx512};
use kuaxin_core::kernel::{Expr, Kernel};
use kuaxin_core::prim::ReduceOp;
use kuaxin_core::{Error, Result};
use std::borrow::Cow;

/// A fused short reduction that is a pooling window: its body is one load, reduced by max,
/// min or sum.
pub struct Pooling<'a> {
    op: ReduceOp,
    src: &'a [f32],
    stride: usize,
    /// Each reduced position's offset, all non-negative.
    offs: Vec<usize>,
}

impl<'a> Pooling<'a> {
    /// The kernel `k` (reducing body value `value` with `op`; sources `srcs`, each reduced
    /// position's offset per load `red_offsets`, each load's stride along the output row
    /// `kinner`) as a pooling window, when it is one.
    pub fn of(
        k: &Kernel,
        op: ReduceOp,
        value: usize,
        srcs: &'a [Cow<[f32]>],
        red_offsets: &[Vec<isize>],
        kinner: &[isize],
    ) -> Option<Pooling<'a>> {
        let [body] = k.body.as_slice() else {
            return None;
        };
        if value != 0 || body.expr != Expr::Load(0) || op == ReduceOp::Prod {
            return None;
        }
        let offs = red_offsets
            .iter()
            .map(|o| usize::try_from(o[0]).ok())
            .collect::<Option<Vec<usize>>>()?;
        Some(Pooling {
            op,
            src: &srcs[k.loads[0].arg],
            stride: usize::try_from(kinner[0]).ok()?,
            offs,
        })
    }

    /// The windows of one block of output positions (its row segments `segs`) into `out`.
    pub fn fold_block(&self, segs: &Segments, out: &mut [f32]) -> Result<()> {
        let start_of = |base: isize| {
            usize::try_from(base).map_err(|_| {
                Error::backend(format!("pooling window starts before its source ({base})"))
            })
        };
        let vector = VectorFold::of(self.stride);
        if let (ReduceOp::Max | ReduceOp::Min, Some(vector)) = (self.op, vector) {
            // Every row is checked to stay in the source before the vector loop reads it.
            let reach = self.offs.iter().max().copied().unwrap_or(0);
            for (_, len, base) in segs.of_load(0) {
                reaches(start_of(base)?, len, self.stride, reach, self.src.len())?;
            }
            let rows = segs
                .of_load(0)
                .map(|(start, len, base)| (start, len, base as usize));
            let min = self.op == ReduceOp::Min;
            vector.rows(min, self.src, self.stride, &self.offs, rows, out);
            return Ok(());
        }
        for (start, len, base) in segs.of_load(0) {
            let dst = &mut out[start..start + len];
            if !fold(
                self.op,
                self.src,
                start_of(base)?,
                self.stride,
                &self.offs,
                dst,
            )? {
                return Err(Error::backend(format!(
                    "{:?} is not a pooling fold",
                    self.op
                )));
            }
        }
        Ok(())
    }
}

/// The vector max / min pooling fold this CPU has for a stride: AVX-512, else AVX2.
#[derive(Clone, Copy, Debug)]
enum VectorFold {
    /// Listed narrowest last: a CPU with one has the ones below it.
    Avx512 = 2,
    Avx2 = 1,
}

impl VectorFold {
    fn of(stride: usize) -> Option<VectorFold> {
        if window_avx512::takes(stride) {
            Some(VectorFold::Avx512)
        } else if window_avx2::takes(stride) {
            Some(VectorFold::Avx2)
        } else {
            None
        }
    }

    /// Row `(start, len, base)` folds `out[start..start + len]`: `out[start + j] = op_r
    /// src[base + offs[r] + j * stride]` (max, or min when `min`), all rows in one loop of
    /// this instruction set. Every element read is bounds-checked against `src`; `stride` is
    /// one [`VectorFold::of`] chose this fold for.
    fn rows(
        self,
        min: bool,
        src: &[f32],
        stride: usize,
        offs: &[usize],
        rows: impl Iterator<Item = (usize, usize, usize)>,
        out: &mut [f32],
    ) {
        assert!(
            VectorFold::of(stride).is_some_and(|v| v as u8 >= self as u8),
            "{self:?} pooling fold of stride {stride}"
        );
        macro_rules! fold_rows {
            ($isa:ident) => {
                // SAFETY: the CPU has the instruction set (`of` chose it, or a wider one, for
                // this stride); the rows read and write only through checked slices.
                unsafe {
                    match (stride, min) {
                        (1, false) => $isa::fold_rows::<1, false>(src, offs, rows, out),
                        (1, true) => $isa::fold_rows::<1, true>(src, offs, rows, out),
                        (_, false) => $isa::fold_rows::<2, false>(src, offs, rows, out),
                        (_, true) => $isa::fold_rows::<2, true>(src, offs, rows, out),
                    }
                }
            };
        }
        #[cfg(target_arch = "x86_64")]
        match self {
            VectorFold::Avx512 => fold_rows!(window_avx512),
            VectorFold::Avx2 => fold_rows!(window_avx2),
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (min, src, offs, rows, out);
    }
}

/// The last element `len` outputs of windows reaching `reach` past their start read from
/// `base`, checked to lie in a source of `src_len`.
fn reaches(base: usize, len: usize, stride: usize, reach: usize, src_len: usize) -> Result<usize> {
    let Some(last) = len.checked_sub(1) else {
        return Ok(base);
    };
    last.checked_mul(stride)
        .and_then(|r| r.checked_add(reach))
        .and_then(|r| base.checked_add(r))
        .filter(|end| *end < src_len)
        .ok_or_else(|| {
            Error::backend(format!(
                "pooling window of {len} outputs, stride {stride}, from {base} reaches past its \
                 source of {src_len}"
            ))
        })
}

/// Folds `out.len()` outputs: `out[j] = op_r src[base + offs[r] + j * stride]`. Returns false
/// (leaving `out` alone) for an op this path does not take (`Prod`).
pub fn fold(
    op: ReduceOp,
    src: &[f32],
    base: usize,
    stride: usize,
    offs: &[usize],
    out: &mut [f32],
) -> Result<bool> {
    if out.is_empty() {
        return Ok(true);
    }
    let reach = offs.iter().max().copied().unwrap_or(0);
    let end = reaches(base, out.len(), stride, reach, src.len())?;
    let w = Windows {
        src: &src[base..=end],
        stride,
        offs,
    };
    if let (ReduceOp::Max | ReduceOp::Min, Some(vector)) = (op, VectorFold::of(stride)) {
        let one_row = [(0, out.len(), 0)].into_iter();
        vector.rows(op == ReduceOp::Min, w.src, stride, offs, one_row, out);
        return Ok(true);
    }
    match op {
        ReduceOp::Max => w.fold(Fold::new(f32::NEG_INFINITY, max, |a| a), out),
        ReduceOp::Min => w.fold(Fold::new(f32::INFINITY, min, |a| a), out),
        ReduceOp::Sum => w.fold(Fold::new(0f64, |a, x| a + x as f64, |a| a as f32), out),
        ReduceOp::Prod => return Ok(false),
    }
    Ok(true)
}

/// Output j's window: `src[offs[r] + j * stride]` for every r.
struct Windows<'a> {
    src: &'a [f32],
    stride: usize,
    offs: &'a [usize],
}

/// A fold: its start, its step, and the f32 its accumulator ends as.
#[derive(Clone, Copy)]
struct Fold<A, St, Fi> {
    init: A,
    step: St,
    finish: Fi,
}

impl<A: Copy, St: Fn(A, f32) -> A + Copy, Fi: Fn(A) -> f32 + Copy> Fold<A, St, Fi> {
    fn new(init: A, step: St, finish: Fi) -> Self {
        Fold { init, step, finish }
    }
}

impl Windows<'_> {
    /// The common strides (unit rows, pooling strides 2 to 4) as constants, so their loads
    /// compile to wide loads and shuffles; any other stride as a variable.
    #[inline(always)]
    fn fold<A, St, Fi>(&self, f: Fold<A, St, Fi>, out: &mut [f32])
    where
        A: Copy,
        St: Fn(A, f32) -> A + Copy,
        Fi: Fn(A) -> f32 + Copy,
    {
        crate::simd::vectorized(
            #[inline(always)]
            || match self.stride {
                1 => self.outputs::<A, St, Fi, 1>(f, out),
                2 => self.outputs::<A, St, Fi, 2>(f, out),
                3 => self.outputs::<A, St, Fi, 3>(f, out),
                4 => self.outputs::<A, St, Fi, 4>(f, out),
                _ => self.outputs::<A, St, Fi, 0>(f, out),
            },
        )
    }

    /// Chunks of 16 outputs (8 in a shorter row, one at a time in a row under 8). `S` is the
    /// stride when non-zero.
    #[inline(always)]
    fn outputs<A, St, Fi, const S: usize>(&self, f: Fold<A, St, Fi>, out: &mut [f32])
    where
        A: Copy,
        St: Fn(A, f32) -> A + Copy,
        Fi: Fn(A) -> f32 + Copy,
    {
        let n = out.len();
        // A row's last chunk overlaps the one before it rather than running one output at a
        // time (a 55-wide pooling row is three chunks and a tail of seven): the outputs it
        // repeats are the same values written again.
        if n >= 16 {
            let j = self.chunks::<A, St, Fi, S, 16>(f, out, 0);
            if j < n {
                self.chunks::<A, St, Fi, S, 16>(f, out, n - 16);
            }
        } else if n >= 8 {
            self.chunks::<A, St, Fi, S, 8>(f, out, 0);
            self.chunks::<A, St, Fi, S, 8>(f, out, n - 8);
        } else {
            self.chunks::<A, St, Fi, S, 1>(f, out, 0);
        }
    }

    /// Folds outputs from `j` in chunks of `W` held in registers; returns where it stopped.
    #[inline(always)]
    fn chunks<A, St, Fi, const S: usize, const W: usize>(
        &self,
        f: Fold<A, St, Fi>,
        out: &mut [f32],
        mut j: usize,
    ) -> usize
    where
        A: Copy,
        St: Fn(A, f32) -> A + Copy,
        Fi: Fn(A) -> f32 + Copy,
    {
        let stride = if S == 0 { self.stride } else { S };
        while j + W <= out.len() {
            let mut acc = [f.init; W];
            for &o in self.offs {
                let start = o + j * stride;
                let row = &self.src[start..=start + (W - 1) * stride];
                for (l, a) in acc.iter_mut().enumerate() {
                    *a = (f.step)(*a, row[l * stride]);
                }
            }
            for (o, &a) in out[j..j + W].iter_mut().zip(&acc) {
                *o = (f.finish)(a);
            }
            j += W;
        }
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one output and one window position at a time.
    fn reference(
        op: ReduceOp,
        src: &[f32],
        base: usize,
        stride: usize,
        offs: &[usize],
        n: usize,
    ) -> Vec<f32> {
        (0..n)
            .map(|j| {
                let vals = offs.iter().map(|&o| src[base + o + j * stride]);
                match op {
                    ReduceOp::Sum => vals.map(|v| v as f64).sum::<f64>() as f32,
                    ReduceOp::Max => vals.fold(f32::NEG_INFINITY, |a, v| {
                        if a.is_nan() || v.is_nan() {
                            f32::NAN
                        } else {
                            a.max(v)
                        }
                    }),
                    ReduceOp::Min => vals.fold(f32::INFINITY, |a, v| {
                        if a.is_nan() || v.is_nan() {
                            f32::NAN
                        } else {
                            a.min(v)
                        }
                    }),
                    ReduceOp::Prod => unreachable!(),
                }
            })
            .collect()
    }

    #[test]
    fn every_stride_and_length_folds_each_window() {
        let src: Vec<f32> = (0..400)
            .map(|v| ((v * 37 % 101) as f32 - 50.0) * 0.25)
            .collect();
        let offs = [0usize, 1, 2, 19, 20, 21, 38, 39, 40];
        for op in [ReduceOp::Max, ReduceOp::Min, ReduceOp::Sum] {
            for stride in 0..=5 {
                for n in [0usize, 1, 7, 8, 15, 16, 17, 25, 40] {
                    for base in [0usize, 3] {
                        let mut out = vec![-7f32; n];
                        assert!(fold(op, &src, base, stride, &offs, &mut out).unwrap());
                        let want = reference(op, &src, base, stride, &offs, n);
                        assert_eq!(out, want, "{op:?} stride {stride}, {n} outputs from {base}");
                    }
                }
            }
        }
    }

    #[test]
    fn the_vector_fold_equals_the_portable_one_bit_for_bit() {
        let folds: Vec<VectorFold> = [
            window_avx512::takes(1).then_some(VectorFold::Avx512),
            window_avx2::takes(1).then_some(VectorFold::Avx2),
        ]
        .into_iter()
        .flatten()
        .collect();
        if folds.len() < 2 {
            eprintln!(
                "only {folds:?}: this CPU lacks AVX-512 or AVX2, and that fold is not checked"
            );
        }
        // Signed zeros, infinities and NaNs of two payloads among ordinary values: which of
        // two equal values, and which NaN, is kept must match too.
        let specials = [0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN];
        let quiet = f32::from_bits(0x7fc0_1234);
        let mixed: Vec<f32> = (0..700)
            .map(|v| match v % 23 {
                3 | 11 => specials[v % 5],
                17 if v % 3 == 0 => quiet,
                _ => ((v * 37 % 101) as f32 - 50.0) * 0.5,
            })
            .collect();
        // Windows whose extreme is a zero of either sign (max over zeros and -1, min over
        // zeros and 1).
        let zeros = |other: f32| -> Vec<f32> {
            (0..700)
                .map(|v| [0.0, -0.0, other][v * 7 % 11 % 3])
                .collect()
        };
        // Without NaNs (infinities of both signs, so some windows sum to NaN without one):
        // the AVX2 fold's fast path and its false alarms.
        let no_nan: Vec<f32> = mixed
            .iter()
            .enumerate()
            .map(|(v, &x)| match (x.is_nan(), v % 2) {
                (true, 0) => f32::INFINITY,
                (true, _) => f32::NEG_INFINITY,
                _ => x,
            })
            .collect();
        // A 3 x 3 window (stride 2 pairs each row's first two columns), and one whose
        // neighbours come in falling order or alone.
        let windows: [&[usize]; 2] = [&[0, 1, 2, 40, 41, 42, 80, 81, 82], &[3, 2, 40, 60, 61]];
        for (op, src, offs) in [
            (ReduceOp::Max, mixed.clone()),
            (ReduceOp::Min, mixed),
            (ReduceOp::Max, no_nan.clone()),
            (ReduceOp::Min, no_nan),
            (ReduceOp::Max, zeros(-1.0)),
            (ReduceOp::Min, zeros(1.0)),
        ]
        .into_iter()
        .flat_map(|(op, src)| windows.map(|offs| (op, src.clone(), offs)))
        {
            for stride in [1usize, 2] {
                for (n, &vector) in [1usize, 5, 7, 8, 9, 13, 15, 16, 17, 27, 31, 32, 55, 100]
                    .into_iter()
                    .flat_map(|n| folds.iter().map(move |v| (n, v)))
                {
                    // The source ends at the last window's last element: no load may read
                    // past it.
                    let reach = offs.iter().max().copied().unwrap_or(0);
                    let src = &src[..reach + (n - 1) * stride + 1];
                    let mut fast = vec![7f32; n];
                    let one_row = [(0, n, 0)].into_iter();
                    vector.rows(op == ReduceOp::Min, src, stride, offs, one_row, &mut fast);
                    let w = Windows { src, stride, offs };
                    let mut portable = vec![7f32; n];
                    match op {
                        ReduceOp::Max => {
                            w.fold(Fold::new(f32::NEG_INFINITY, max, |a| a), &mut portable)
                        }
                        _ => w.fold(Fold::new(f32::INFINITY, min, |a| a), &mut portable),
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&fast),
                        bits(&portable),
                        "{vector:?} {op:?} stride {stride}, {n} outputs"
                    );
                }
            }
        }
    }

    #[test]
    fn nan_propagates_through_max_and_min() {
        let mut src: Vec<f32> = (0..64).map(|v| v as f32).collect();
        src[21] = f32::NAN;
        for op in [ReduceOp::Max, ReduceOp::Min] {
            let mut out = vec![0f32; 20];
            fold(op, &src, 0, 2, &[0, 1, 2], &mut out).unwrap();
            // Output j reads 2j..2j+2: outputs 9 (18..20) misses 21, 10 (20..22) holds it.
            assert!(
                out[10].is_nan() && !out[9].is_nan() && !out[11].is_nan(),
                "{op:?} {out:?}"
            );
        }
    }

    #[test]
    fn a_window_past_the_source_is_an_error() {
        let src = vec![0f32; 10];
        let mut out = vec![0f32; 4];
        assert!(fold(ReduceOp::Max, &src, 0, 2, &[0, 4], &mut out).is_err());
        assert!(fold(ReduceOp::Max, &src, 1, 2, &[0, 2], &mut out).unwrap());
        assert!(!fold(ReduceOp::Prod, &src, 0, 1, &[0], &mut out).unwrap());
    }
}
