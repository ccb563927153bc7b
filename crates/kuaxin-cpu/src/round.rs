//! Correctly rounded f64 -> f16 / bf16.
//!
//! `half`'s `from_f64` is not: with F16C it converts through f32 (rounding twice), and its
//! software path ignores the low 32 mantissa bits when detecting ties. Rounding f64 to f32
//! *to odd* first and then to the 16-bit type to nearest-even rounds once, exactly, because
//! f32 carries at least two more bits than either 16-bit format.
use half::{bf16, f16};

/// `x` rounded to f32 toward zero, with the last bit set when inexact ("round to odd").
#[inline]
fn f32_round_to_odd(x: f64) -> f32 {
    let r = x as f32;
    if r as f64 == x || x.is_nan() {
        return r;
    }
    // Step back toward zero when round-to-nearest went away from zero (this also turns an
    // overflow to infinity into f32::MAX).
    let t = if (r as f64).abs() > x.abs() {
        f32::from_bits(r.to_bits() - 1)
    } else {
        r
    };
    f32::from_bits(t.to_bits() | 1)
}

#[inline]
pub fn f16_from_f64(x: f64) -> f16 {
    f16::from_f32(f32_round_to_odd(x))
}

#[inline]
pub fn bf16_from_f64(x: f64) -> bf16 {
    bf16::from_f32(f32_round_to_odd(x))
}
