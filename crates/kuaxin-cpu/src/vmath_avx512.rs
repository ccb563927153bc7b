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
pub fn exp16(x: __m512) -> __m512 {
    crate::vmath::exp_lanes!(
        x,
        _mm512_set1_ps,
        _mm512_min_ps,
        _mm512_max_ps,
        _mm512_add_ps,
        _mm512_sub_ps,
        _mm512_mul_ps,
        _mm512_fmadd_ps,
        _mm512_castps_si512,
        _mm512_castsi512_ps,
        _mm512_set1_epi32,
        _mm512_add_epi32,
        _mm512_sub_epi32,
        _mm512_srai_epi32,
        _mm512_slli_epi32
    )
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn sixteen_lanes_are_the_scalar_function_bit_for_bit() {
        if crate::simd::level() != crate::simd::Level::Avx512 {
            eprintln!("skipped: this CPU has no AVX-512 (or KUAXIN_CPU_SIMD caps it)");
            return;
        }
        crate::vmath::check_exp_lanes(16, |chunk, got| {
            // SAFETY: AVX-512F checked above; `chunk` and `got` hold sixteen floats.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp16(_mm512_loadu_ps(chunk.as_ptr()))) }
        });
    }
}
