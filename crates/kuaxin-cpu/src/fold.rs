//! The reduction step of fused kernels: folding a block of f32 values into f64 accumulators,
//! with the op chosen once per block (not per element) and loops the compiler vectorises.
//! Max and Min are exact in any order; sums keep eight f64 lanes, which round no worse than
//! one running f64 sum. NaN propagates through Max and Min, as in the unfused `Reduce`.
use kuaxin_core::prim::ReduceOp;

const LANES: usize = 8;

/// The value a reduction starts from.
pub fn init(op: ReduceOp) -> f64 {
    match op {
        ReduceOp::Sum => 0.0,
        ReduceOp::Prod => 1.0,
        ReduceOp::Max => f64::NEG_INFINITY,
        ReduceOp::Min => f64::INFINITY,
    }
}

/// The float types accumulators are held in.
pub trait Float: Copy + PartialOrd {
    fn nan(self) -> bool;
}

impl Float for f32 {
    #[inline(always)]
    fn nan(self) -> bool {
        self.is_nan()
    }
}

impl Float for f64 {
    #[inline(always)]
    fn nan(self) -> bool {
        self.is_nan()
    }
}

/// NaN-propagating max and min (a NaN accumulator stays NaN: `x > NaN` is false), for
/// accumulators held in registers.
#[inline(always)]
pub fn max<T: Float>(a: T, x: T) -> T {
    if (x > a) | x.nan() {
        x
    } else {
        a
    }
}

#[inline(always)]
pub fn min<T: Float>(a: T, x: T) -> T {
    if (x < a) | x.nan() {
        x
    } else {
        a
    }
}

/// Accumulators for a block of output rows, one reduced position at a time: `add` folds
/// `v[j]` into lane j. Sums and products accumulate in f64; max and min, exact in any
/// precision, in f32 (twice the lanes per vector, no conversions), with a NaN flag per lane
/// beside `f32::max`/`min`: a select between the new value and the one already stored is what
/// the vectoriser turns into masked stores (microcoded on AMD, and the hot spot of pooling).
#[derive(Default)]
pub struct Lanes {
    acc: Vec<f64>,
    acc32: Vec<f32>,
    nan: Vec<u8>,
    op: Option<ReduceOp>,
}

impl Lanes {
    /// Starts `len` lanes at the reduction's initial value.
    pub fn start(&mut self, op: ReduceOp, len: usize) {
        self.op = Some(op);
        match op {
            ReduceOp::Sum | ReduceOp::Prod => {
                self.acc.clear();
                self.acc.resize(len, init(op));
            }
            ReduceOp::Max | ReduceOp::Min => {
                self.acc32.clear();
                self.acc32.resize(len, init(op) as f32);
                self.nan.clear();
                self.nan.resize(len, 0);
            }
        }
    }

    /// Folds `v[j]` into lane j with the op given to `start`.
    pub fn add(&mut self, v: &[f32]) {
        crate::simd::vectorized(
            #[inline(always)]
            || self.add_any(v),
        )
    }

    #[inline(always)]
    fn add_any(&mut self, v: &[f32]) {
        let Some(op) = self.op else { return };
        match op {
            ReduceOp::Sum => {
                let acc = &mut self.acc[..v.len()];
                acc.iter_mut().zip(v).for_each(|(a, &x)| *a += x as f64)
            }
            ReduceOp::Prod => {
                let acc = &mut self.acc[..v.len()];
                acc.iter_mut().zip(v).for_each(|(a, &x)| *a *= x as f64)
            }
            ReduceOp::Max => {
                let (acc, nan) = (&mut self.acc32[..v.len()], &mut self.nan[..v.len()]);
                for ((a, n), &x) in acc.iter_mut().zip(nan.iter_mut()).zip(v) {
                    *a = a.max(x);
                    *n |= x.is_nan() as u8;
                }
            }
            ReduceOp::Min => {
                let (acc, nan) = (&mut self.acc32[..v.len()], &mut self.nan[..v.len()]);
                for ((a, n), &x) in acc.iter_mut().zip(nan.iter_mut()).zip(v) {
                    *a = a.min(x);
                    *n |= x.is_nan() as u8;
                }
            }
        }
    }

    /// The reduced values, rounded to f32.
    pub fn finish(&self, out: &mut [f32]) {
        match self.op {
            Some(ReduceOp::Max | ReduceOp::Min) => {
                for ((o, &a), &n) in out.iter_mut().zip(&self.acc32).zip(&self.nan) {
                    *o = if n != 0 { f32::NAN } else { a };
                }
            }
            _ => {
                for (o, &a) in out.iter_mut().zip(&self.acc) {
                    *o = a as f32;
                }
            }
        }
    }
}

/// `acc op v[0] op v[1] ...`: a block along the reduced axis of one output row. For a caller
/// inside [`crate::simd::vectorized`], into which it inlines (every caller: a dispatch per
/// run cost a global average pool 2048 of them, and a softmax 5% of its time).
#[inline(always)]
pub fn row_any(op: ReduceOp, acc: f64, v: &[f32]) -> f64 {
    // Eight partial results folded into `acc` in a fixed order, then the tail.
    macro_rules! lanes_then_tail {
        ($f:expr) => {{
            let mut part = [init(op); LANES];
            let chunks = v.chunks_exact(LANES);
            let rest = chunks.remainder();
            for c in chunks {
                for i in 0..LANES {
                    part[i] = $f(part[i], c[i] as f64);
                }
            }
            let mut a = acc;
            for p in part {
                a = $f(a, p);
            }
            for &x in rest {
                a = $f(a, x as f64);
            }
            a
        }};
    }
    match op {
        ReduceOp::Sum => lanes_then_tail!(|a, x| a + x),
        ReduceOp::Max => extremum(acc, v, f32::max, max),
        ReduceOp::Min => extremum(acc, v, f32::min, min),
        // Products overflow and underflow by order; keep the sequential one.
        ReduceOp::Prod => v.iter().fold(acc, |a, &x| a * x as f64),
    }
}

/// Max or min of `acc` and `v`, exact in f32: sixteen f32 lanes (`lane` ignores NaN) and a
/// NaN flag per lane, then `fold` (NaN-propagating) in f64.
#[inline(always)]
fn extremum(
    acc: f64,
    v: &[f32],
    lane: impl Fn(f32, f32) -> f32,
    fold: impl Fn(f64, f64) -> f64,
) -> f64 {
    const L: usize = 16;
    let mut part = [v.first().copied().unwrap_or(0.0); L];
    let mut nan = [0u32; L];
    let chunks = v.chunks_exact(L);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..L {
            part[i] = lane(part[i], c[i]);
            nan[i] |= c[i].is_nan() as u32;
        }
    }
    if nan.iter().any(|&n| n != 0) {
        return f64::NAN;
    }
    let mut a = acc;
    if v.len() >= L {
        for p in part {
            a = fold(a, p as f64);
        }
    }
    for &x in rest {
        a = fold(a, x as f64);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequential(op: ReduceOp, v: &[f32]) -> f64 {
        let f: fn(f64, f64) -> f64 = match op {
            ReduceOp::Sum => |a, x| a + x,
            ReduceOp::Prod => |a, x| a * x,
            ReduceOp::Max => max,
            ReduceOp::Min => min,
        };
        v.iter().fold(init(op), |a, &x| f(a, x as f64))
    }

    #[test]
    fn row_matches_a_sequential_fold() {
        let v: Vec<f32> = (0..301)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.25)
            .collect();
        for op in [ReduceOp::Max, ReduceOp::Min, ReduceOp::Sum] {
            assert_eq!(row_any(op, init(op), &v), sequential(op, &v), "{op:?}");
        }
        let small: Vec<f32> = v.iter().map(|x| 1.0 + x * 1e-3).collect();
        assert_eq!(
            row_any(ReduceOp::Prod, 1.0, &small),
            sequential(ReduceOp::Prod, &small)
        );
    }

    #[test]
    fn nan_propagates_through_max_and_min_wherever_it_is() {
        for at in [0, 5, 8, 17] {
            let mut v = vec![1.0f32; 19];
            v[at] = f32::NAN;
            assert!(
                row_any(ReduceOp::Max, init(ReduceOp::Max), &v).is_nan(),
                "{at}"
            );
            assert!(
                row_any(ReduceOp::Min, init(ReduceOp::Min), &v).is_nan(),
                "{at}"
            );
            let mut lanes = Lanes::default();
            let mut out = vec![0f32; 19];
            for op in [ReduceOp::Max, ReduceOp::Min] {
                lanes.start(op, 19);
                lanes.add(&v);
                lanes.add(&[2.0; 19]);
                lanes.finish(&mut out);
                let other = if op == ReduceOp::Max { 2.0 } else { 1.0 };
                assert!(
                    out[at].is_nan() && out[(at + 1) % 19] == other,
                    "{op:?} {at}"
                );
            }
        }
    }

    #[test]
    fn lanes_fold_each_position() {
        let mut lanes = Lanes::default();
        let mut out = vec![0f32; 3];
        lanes.start(ReduceOp::Sum, 3);
        lanes.add(&[1.0, 2.0, 3.0]);
        lanes.add(&[0.5, 0.5, 0.5]);
        lanes.finish(&mut out);
        assert_eq!(out, vec![1.5, 2.5, 3.5]);
        lanes.start(ReduceOp::Min, 2);
        lanes.add(&[3.0, -1.0]);
        lanes.add(&[2.0, 4.0]);
        lanes.finish(&mut out[..2]);
        assert_eq!(out[..2], [2.0, -1.0]);
        lanes.start(ReduceOp::Max, 2);
        lanes.add(&[f32::NEG_INFINITY, -1.0]);
        lanes.finish(&mut out[..2]);
        assert_eq!(out[..2], [f32::NEG_INFINITY, -1.0]);
    }
}
