//! [`crate::vmath::exp_f32`] on eight lanes with AVX2 and FMA intrinsics, step for step (the
//! same multiplies, adds and fused multiply-adds in the same order), so every lane is that
//! function's bits. For loops that do more per element than the compiler vectorises on its
//! own: a softmax row's exponentials and their running sum in one pass.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// e^x on every lane: [`crate::vmath::exp_f32`] bit for bit (NaN included). Callable where
/// AVX2 and FMA are known to be there.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
pub fn exp8(x: __m256) -> __m256 {
    crate::vmath::exp_lanes!(
        x,
        _mm256_set1_ps,
        _mm256_min_ps,
        _mm256_max_ps,
        _mm256_add_ps,
        _mm256_sub_ps,
        _mm256_mul_ps,
        _mm256_fmadd_ps,
        _mm256_castps_si256,
        _mm256_castsi256_ps,
        _mm256_set1_epi32,
        _mm256_add_epi32,
        _mm256_sub_epi32,
        _mm256_srai_epi32,
        _mm256_slli_epi32
    )
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn eight_lanes_are_the_scalar_function_bit_for_bit() {
        if !crate::tile_avx2::supported() {
            eprintln!("skipped: this CPU has no AVX2 and FMA");
            return;
        }
        crate::vmath::check_exp_lanes(8, |chunk, got| {
            // SAFETY: AVX2 and FMA checked above; `chunk` and `got` hold eight floats.
            unsafe { _mm256_storeu_ps(got.as_mut_ptr(), exp8(_mm256_loadu_ps(chunk.as_ptr()))) }
        });
    }
}
