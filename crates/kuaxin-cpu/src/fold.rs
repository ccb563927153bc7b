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

/// NaN-propagating max and min (a NaN accumulator stays NaN: `x > NaN` is false). `|`, not
/// `||`: a short-circuit becomes a branch, which the vectoriser turns into masked stores
/// (microcoded, several times slower on AMD) instead of a blend.
#[inline(always)]
fn max(a: f64, x: f64) -> f64 {
    if (x > a) | x.is_nan() {
        x
    } else {
        a
    }
}

#[inline(always)]
fn min(a: f64, x: f64) -> f64 {
    if (x < a) | x.is_nan() {
        x
    } else {
        a
    }
}

/// Element-wise `acc[j] = acc[j] op v[j]`: one reduced position for a block of output rows.
pub fn lanes(op: ReduceOp, acc: &mut [f64], v: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, the only feature the copy is compiled for.
        return unsafe { lanes_avx2(op, acc, v) };
    }
    lanes_any(op, acc, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lanes_avx2(op: ReduceOp, acc: &mut [f64], v: &[f32]) {
    lanes_any(op, acc, v)
}

#[inline(always)]
fn lanes_any(op: ReduceOp, acc: &mut [f64], v: &[f32]) {
    macro_rules! each {
        ($f:expr) => {
            for (a, &x) in acc.iter_mut().zip(v) {
                *a = $f(*a, x as f64);
            }
        };
    }
    match op {
        ReduceOp::Sum => each!(|a, x| a + x),
        ReduceOp::Prod => each!(|a, x| a * x),
        ReduceOp::Max => each!(max),
        ReduceOp::Min => each!(min),
    }
}

/// `acc op v[0] op v[1] ...`: a block along the reduced axis of one output row.
pub fn row(op: ReduceOp, acc: f64, v: &[f32]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: as in `lanes`.
        return unsafe { row_avx2(op, acc, v) };
    }
    row_any(op, acc, v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_avx2(op: ReduceOp, acc: f64, v: &[f32]) -> f64 {
    row_any(op, acc, v)
}

#[inline(always)]
fn row_any(op: ReduceOp, acc: f64, v: &[f32]) -> f64 {
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
        ReduceOp::Max => lanes_then_tail!(max),
        ReduceOp::Min => lanes_then_tail!(min),
        // Products overflow and underflow by order; keep the sequential one.
        ReduceOp::Prod => v.iter().fold(acc, |a, &x| a * x as f64),
    }
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
            assert_eq!(row(op, init(op), &v), sequential(op, &v), "{op:?}");
        }
        let small: Vec<f32> = v.iter().map(|x| 1.0 + x * 1e-3).collect();
        assert_eq!(
            row(ReduceOp::Prod, 1.0, &small),
            sequential(ReduceOp::Prod, &small)
        );
    }

    #[test]
    fn nan_propagates_through_max_and_min_wherever_it_is() {
        for at in [0, 5, 8, 17] {
            let mut v = vec![1.0f32; 19];
            v[at] = f32::NAN;
            assert!(row(ReduceOp::Max, init(ReduceOp::Max), &v).is_nan(), "{at}");
            assert!(row(ReduceOp::Min, init(ReduceOp::Min), &v).is_nan(), "{at}");
            let mut acc = vec![init(ReduceOp::Max); 19];
            lanes(ReduceOp::Max, &mut acc, &v);
            lanes(ReduceOp::Max, &mut acc, &vec![2.0; 19]);
            assert!(acc[at].is_nan() && acc[(at + 1) % 19] == 2.0);
        }
    }

    #[test]
    fn lanes_fold_each_position() {
        let mut acc = vec![init(ReduceOp::Sum); 3];
        lanes(ReduceOp::Sum, &mut acc, &[1.0, 2.0, 3.0]);
        lanes(ReduceOp::Sum, &mut acc, &[0.5, 0.5, 0.5]);
        assert_eq!(acc, vec![1.5, 2.5, 3.5]);
        let mut acc = vec![init(ReduceOp::Min); 2];
        lanes(ReduceOp::Min, &mut acc, &[3.0, -1.0]);
        lanes(ReduceOp::Min, &mut acc, &[2.0, 4.0]);
        assert_eq!(acc, vec![2.0, -1.0]);
    }
}
