//! f32 `exp` and `erf` written without branches or library calls, so that a loop over them
//! vectorises (libm's `expf` and the f64 fdlibm `erf` are one call per element). Plain `*` and
//! `+` only: Rust never contracts them into FMAs, so the scalar, AVX2 and fused loops that
//! inline these functions all round identically. Accuracy (tested below against f64):
//! `exp` within 1 ulp, `erf` within 6 ulp, subnormal results and special values included.

#![allow(clippy::excessive_precision)] // published constants, kept digit for digit.

/// 1.5 * 2^23: adding it to |v| < 2^22 rounds v to an integer, which then sits in the low
/// mantissa bits.
pub(crate) const ROUND_MAGIC: f32 = 12582912.0;

/// 2^n for -126 <= n <= 127, built from its exponent bits.
#[inline(always)]
fn pow2i(n: i32) -> f32 {
    f32::from_bits(((n + 127) << 23) as u32)
}

/// ln 2 split so that n * LN2_HI is exact for |n| < 2^15 (`exp`).
pub(crate) const EXP_LN2_HI: f32 = 0.693359375;
pub(crate) const EXP_LN2_LO: f32 = -2.12194440e-4;
/// The leading coefficient of `exp`'s polynomial, and the rest in Horner order.
pub(crate) const EXP_P0: f32 = 1.9875691500e-4;
pub(crate) const EXP_P: [f32; 5] = [
    1.3981999507e-3,
    8.3334519073e-3,
    4.1665795894e-2,
    1.6666665459e-1,
    5.0000001201e-1,
];

/// e^x: x = n ln2 + r with |r| <= ln2 / 2, e^r by Cephes' `expf` polynomial, times 2^n in two
/// factors so that results down to the subnormals round once.
///
/// The clamp to [-104, 89] is all the range handling there is, with no selects after it: from
/// 89 the two factors make 1.3 * 2^128, which rounds to infinity as e^x does above
/// 128 ln 2 = 88.72; at -104 they make 0.97 * 2^-150, which rounds to 0 as e^x does below
/// -150 ln 2 = -103.97; a NaN passes the clamp and every step after. (Three selects for these
/// cases cost a fifth of the function.)
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    let xc = x.clamp(-104.0, 89.0);
    let t = xc * std::f32::consts::LOG2_E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let r = (-n).mul_add(EXP_LN2_LO, (-n).mul_add(EXP_LN2_HI, xc));
    let r2 = r * r;
    let mut p = EXP_P0;
    for c in EXP_P {
        p = p.mul_add(r, c);
    }
    let p = p.mul_add(r2, r) + 1.0;
    let ni = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let n1 = ni >> 1;
    p * pow2i(n1) * pow2i(ni - n1)
}

/// [`exp_f32`] on a vector of lanes, step for step (the same multiplies, adds and fused
/// multiply-adds in the same order), so every lane is that function's bits: the body of the
/// AVX2 and AVX-512 forms (`vmath_avx2::exp8`, `vmath_avx512::exp16`), given the width's
/// intrinsics, in the order: broadcast, min, max, add, sub, mul, fused multiply-add; float to
/// int bits, int bits to float, integer broadcast, add, sub, arithmetic shift right by one,
/// shift left by 23.
macro_rules! exp_lanes {
    ($x:expr, $set1:ident, $min:ident, $max:ident, $add:ident, $sub:ident, $mul:ident,
     $fmadd:ident, $to_int:ident, $to_float:ident, $set1_i:ident, $add_i:ident,
     $sub_i:ident, $srai:ident, $slli:ident) => {{
        use $crate::vmath::{EXP_LN2_HI, EXP_LN2_LO, EXP_P, EXP_P0, ROUND_MAGIC};
        let s = $set1;
        // `x.clamp(-104, 89)` lets NaN through: `max` and `min` return their second operand
        // when either is NaN, so x goes second.
        let xc = $min(s(89.0), $max(s(-104.0), $x));
        let magic = s(ROUND_MAGIC);
        let t = $add($mul(xc, s(std::f32::consts::LOG2_E)), magic);
        let n = $sub(t, magic);
        // `(-n) * c` as `n * (-c)`: the same product, one negation fewer.
        let r = $fmadd(n, s(-EXP_LN2_LO), $fmadd(n, s(-EXP_LN2_HI), xc));
        let r2 = $mul(r, r);
        let mut p = s(EXP_P0);
        for c in EXP_P {
            p = $fmadd(p, r, s(c));
        }
        let p = $add($fmadd(p, r2, r), s(1.0));
        let ni = $sub_i($to_int(t), $set1_i(ROUND_MAGIC.to_bits() as i32));
        let n1 = $srai::<1>(ni);
        let pow2 = |e| $to_float($slli::<23>($add_i(e, $set1_i(127))));
        $mul($mul(p, pow2(n1)), pow2($sub_i(ni, n1)))
    }};
}
pub(crate) use exp_lanes;

/// Every 997th f32 bit pattern of both signs (zeros, subnormals, the clamp's ends, the range
/// where results are subnormal or infinite, infinities and NaNs among them), then the edges:
/// what the vector forms of `exp` are checked on, lane by lane, against [`exp_f32`].
#[cfg(test)]
pub(crate) fn exp_lane_cases() -> Vec<f32> {
    (0..=u32::MAX / 997)
        .map(|i| f32::from_bits(i.wrapping_mul(997)))
        .chain([
            -104.0,
            89.0,
            -103.97,
            88.72,
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
        ])
        .collect()
}

/// Asserts that `lanes(chunk, out)` writes [`exp_f32`]'s bits (any NaN for a NaN) for every
/// chunk of `width` of [`exp_lane_cases`].
#[cfg(test)]
pub(crate) fn check_exp_lanes(width: usize, lanes: impl Fn(&[f32], &mut [f32])) {
    let mut got = vec![0f32; width];
    for chunk in exp_lane_cases().chunks_exact(width) {
        lanes(chunk, &mut got);
        for (&x, &g) in chunk.iter().zip(&got) {
            let want = exp_f32(x);
            assert!(
                g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                "exp({x:e}) on {width} lanes: {g:e} against {want:e}"
            );
        }
    }
}

/// erf(x) = x P(x^2) / Q(x^2) on |x| < 4 and +-1 from there on (erf(4) rounds to 1): a
/// rational function fitted for relative error (2e-9 in exact arithmetic; P of degree 6, Q of
/// degree 5, all coefficients but P's first positive, so Horner's rule does not cancel). Its
/// f32 evaluation rounds to within 6 ulp (worst near |x| = 3.7, where erf is 1 - 2e-7; 4e-7
/// absolute), inside the 16 ulp the comparisons allow float elementwise math. Thirteen fused
/// multiply-adds and one division, no exp: a third of the cost of a series below 0.875 and
/// an exp-scaled tail above, which was within 2 ulp.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    const P: [f32; 7] = [
        -1.3202400755973898e-08,
        4.68481332000989e-06,
        3.7960997534861995e-04,
        3.849605616864453e-03,
        5.431691024841069e-02,
        1.8520298004518929e-01,
        1.1283791693817298,
    ];
    const Q: [f32; 6] = [
        6.311091522599559e-05,
        1.3075701424330702e-03,
        1.5462081896894821e-02,
        1.139583436288207e-01,
        4.974652814705476e-01,
        1.0,
    ];
    // NaN passes the clamp (Rust's `clamp` returns it) and every step after.
    let a = x.clamp(-4.0, 4.0);
    let z = a * a;
    let mut p = P[0];
    for &c in &P[1..] {
        p = p.mul_add(z, c);
    }
    let mut q = Q[0];
    for &c in &Q[1..] {
        q = q.mul_add(z, c);
    }
    a * p / q
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between an f32 and the correctly rounded value of
    /// an f64 reference (0 when they agree; subnormals count their own ulp).
    fn ulps(got: f32, want: f64) -> u32 {
        let w = want as f32;
        if got == w || (got.is_nan() && w.is_nan()) {
            return 0;
        }
        let key = |v: f32| {
            let b = v.to_bits() as i64;
            if b < 0x8000_0000 {
                b
            } else {
                0x8000_0000 - b
            }
        };
        (key(got) - key(w)).unsigned_abs().min(u32::MAX as u64) as u32
    }

    /// Every `step`-th f32 bit pattern in [lo, hi] (both signs as given), plus the ends.
    fn samples(lo: f32, hi: f32, count: u32) -> Vec<f32> {
        (0..=count)
            .map(|i| lo + (hi - lo) * (i as f32 / count as f32))
            .collect()
    }

    fn worst(f: fn(f32) -> f32, reference: fn(f64) -> f64, xs: &[f32]) -> (u32, f32) {
        xs.iter()
            .map(|&x| (ulps(f(x), reference(x as f64)), x))
            .max_by_key(|p| p.0)
            .unwrap_or((0, 0.0))
    }

    #[test]
    fn exp_is_within_one_ulp_over_its_whole_range() {
        let mut xs = samples(-104.5, 89.5, 400_000);
        xs.extend(samples(-1.0, 1.0, 100_000));
        // Where it overflows, and where it leaves the subnormals for 0.
        xs.extend(samples(88.70, 88.75, 50_000));
        xs.extend(samples(-104.01, -103.93, 50_000));
        xs.extend([
            0.0, -0.0, 1e-30, -1e-30, 88.72, 88.7228, -87.33, -103.9, -103.97,
        ]);
        let (u, at) = worst(exp_f32, f64::exp, &xs);
        eprintln!("exp: worst {u} ulp at {at:e}");
        assert!(u <= 1, "exp: {u} ulp at {at:e}");
    }

    #[test]
    fn exp_special_values() {
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(100.0), f32::INFINITY);
        assert_eq!(exp_f32(-200.0), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0), 1.0);
        // A subnormal result: e^-100 = 3.72e-44.
        assert_eq!(exp_f32(-100.0), (-100f64).exp() as f32);
    }

    fn erf64(x: f64) -> f64 {
        crate::erf::erf(x)
    }

    #[test]
    fn erf_is_within_six_ulp() {
        let mut xs = samples(-5.0, 5.0, 400_000);
        xs.extend(samples(-1e-3, 1e-3, 10_000));
        xs.extend([
            0.0, -0.0, 1e-38, -1e-38, 1e-45, 0.875, -0.875, 3.99, 4.0, 6.0,
        ]);
        let (u, at) = worst(erf_f32, erf64, &xs);
        eprintln!("erf: worst {u} ulp at {at:e}");
        assert!(u <= 6, "erf: {u} ulp at {at:e}");
    }

    #[test]
    fn erf_special_values() {
        assert_eq!(erf_f32(f32::INFINITY), 1.0);
        assert_eq!(erf_f32(f32::NEG_INFINITY), -1.0);
        assert!(erf_f32(f32::NAN).is_nan());
        assert_eq!(erf_f32(0.0).to_bits(), 0f32.to_bits());
        assert_eq!(erf_f32(-0.0).to_bits(), (-0f32).to_bits());
    }
}
