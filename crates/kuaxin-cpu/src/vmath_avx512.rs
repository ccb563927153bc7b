//! [`crate::vmath::exp_f32`] on sixteen lanes with AVX-512 intrinsics, step for step (the same
//! multiplies, adds and fused multiply-adds in the same order as it and as
//! [`crate::vmath_avx2::exp8`]), so every lane is that function's bits: a softmax row's
//! exponentials and their running sum in one pass.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// e^x on every lane: [`crate::vmath::exp_f32`] bit for bit (NaN included). Callable where
/// AVX-512F is known to be there.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx512f")]
#[allow(clippy::excessive_precision)] // the constants of `exp_f32`, digit for digit.
pub fn exp16(x: __m512) -> __m512 {
    const ROUND_MAGIC: f32 = 12582912.0;
    const LN2_HI: f32 = 0.693359375;
    const LN2_LO: f32 = -2.12194440e-4;
    const P: [f32; 5] = [
        1.3981999507e-3,
        8.3334519073e-3,
        4.1665795894e-2,
        1.6666665459e-1,
        5.0000001201e-1,
    ];
    let s = _mm512_set1_ps;
    // `x.clamp(-104, 89)` lets NaN through: `max_ps` and `min_ps` return their second
    // operand when either is NaN, so x goes second.
    let xc = _mm512_min_ps(s(89.0), _mm512_max_ps(s(-104.0), x));
    let magic = s(ROUND_MAGIC);
    let t = _mm512_add_ps(_mm512_mul_ps(xc, s(std::f32::consts::LOG2_E)), magic);
    let n = _mm512_sub_ps(t, magic);
    // `(-n) * c` as `n * (-c)`: the same product, one negation fewer.
    let r = _mm512_fmadd_ps(n, s(-LN2_LO), _mm512_fmadd_ps(n, s(-LN2_HI), xc));
    let r2 = _mm512_mul_ps(r, r);
    let mut p = s(1.9875691500e-4);
    for c in P {
        p = _mm512_fmadd_ps(p, r, s(c));
    }
    let p = _mm512_add_ps(_mm512_fmadd_ps(p, r2, r), s(1.0));
    let ni = _mm512_sub_epi32(
        _mm512_castps_si512(t),
        _mm512_set1_epi32(ROUND_MAGIC.to_bits() as i32),
    );
    let n1 = _mm512_srai_epi32::<1>(ni);
    let pow2 = |e: __m512i| {
        _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            e,
            _mm512_set1_epi32(127),
        )))
    };
    _mm512_mul_ps(_mm512_mul_ps(p, pow2(n1)), pow2(_mm512_sub_epi32(ni, n1)))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::vmath::exp_f32;

    #[test]
    fn sixteen_lanes_are_the_scalar_function_bit_for_bit() {
        if crate::simd::level() != crate::simd::Level::Avx512 {
            eprintln!("skipped: this CPU has no AVX-512 (or KUAXIN_CPU_SIMD caps it)");
            return;
        }
        // Every 997th bit pattern of both signs (zeros, subnormals, the clamp's ends, the
        // range where results are subnormal or infinite, infinities and NaNs among them).
        let xs: Vec<f32> = (0..=u32::MAX / 997)
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
            .collect();
        for chunk in xs.chunks_exact(16) {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F checked above; `chunk` and `got` hold sixteen floats.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp16(_mm512_loadu_ps(chunk.as_ptr()))) };
            for (&x, g) in chunk.iter().zip(got) {
                let want = exp_f32(x);
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "exp({x:e}): {g:e} against {want:e}"
                );
            }
        }
    }
}
