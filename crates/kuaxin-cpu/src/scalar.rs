//! Per-element arithmetic, generic over the 13 dtypes.
//!
//! - [`Scalar`] (every dtype): the operations reductions, scatters and integer matmul need.
//!   Integers wrap; bool adds as `or` and multiplies as `and`; f16/bf16 compute in f32.
//! - [`Float`]: the four float dtypes, each with a compute type ([`FMath`]: f32 or f64).
//! - [`Int`]: the eight integer dtypes (wrapping, never panicking).
use half::{bf16, f16};
use kuaxin_core::tensor::Element;
use std::ops::{Add, BitAnd, BitOr, BitXor, Div, Mul, Neg, Not, Rem, Sub};

pub trait Scalar: Element + PartialOrd {
    const ZERO: Self;
    const ONE: Self;
    /// Identity of max: -inf for floats, MIN for integers, false.
    const LOWEST: Self;
    /// Identity of min: +inf for floats, MAX for integers, true.
    const HIGHEST: Self;
    /// Accumulator for sums and products: f64 for floats, the type itself otherwise.
    type Acc: Scalar;
    fn to_acc(self) -> Self::Acc;
    fn from_acc(a: Self::Acc) -> Self;
    fn add(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    /// Max that propagates NaN.
    fn max_nan(self, o: Self) -> Self;
    /// Min that propagates NaN.
    fn min_nan(self, o: Self) -> Self;
    #[inline]
    #[allow(clippy::eq_op)]
    fn is_nan(self) -> bool {
        self != self
    }
    #[inline]
    fn is_zero(self) -> bool {
        self == Self::ZERO
    }
}

/// Math in a float compute type (f32 or f64).
pub trait FMath:
    Copy
    + Send
    + Sync
    + PartialOrd
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Rem<Output = Self>
    + Neg<Output = Self>
{
    const ZERO: Self;
    const ONE: Self;
    fn sqrt(self) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn sin(self) -> Self;
    fn cos(self) -> Self;
    fn tan(self) -> Self;
    fn asin(self) -> Self;
    fn acos(self) -> Self;
    fn atan(self) -> Self;
    fn sinh(self) -> Self;
    fn cosh(self) -> Self;
    fn tanh(self) -> Self;
    fn asinh(self) -> Self;
    fn acosh(self) -> Self;
    fn atanh(self) -> Self;
    fn erf(self) -> Self;
    fn floor(self) -> Self;
    fn ceil(self) -> Self;
    fn round_even(self) -> Self;
    fn abs(self) -> Self;
    fn powf(self, e: Self) -> Self;
    fn copysign(self, s: Self) -> Self;
    fn is_nan(self) -> bool;
    fn is_pos_inf(self) -> bool;
    fn is_neg_inf(self) -> bool;
}

macro_rules! fmath {
    ($t:ident, $erf:expr, $exp:expr) => {
        impl FMath for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            #[inline]
            fn sqrt(self) -> Self {
                $t::sqrt(self)
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                $t::ln(self)
            }
            #[inline]
            fn sin(self) -> Self {
                $t::sin(self)
            }
            #[inline]
            fn cos(self) -> Self {
                $t::cos(self)
            }
            #[inline]
            fn tan(self) -> Self {
                $t::tan(self)
            }
            #[inline]
            fn asin(self) -> Self {
                $t::asin(self)
            }
            #[inline]
            fn acos(self) -> Self {
                $t::acos(self)
            }
            #[inline]
            fn atan(self) -> Self {
                $t::atan(self)
            }
            #[inline]
            fn sinh(self) -> Self {
                $t::sinh(self)
            }
            #[inline]
            fn cosh(self) -> Self {
                $t::cosh(self)
            }
            #[inline]
            fn tanh(self) -> Self {
                $t::tanh(self)
            }
            #[inline]
            fn asinh(self) -> Self {
                $t::asinh(self)
            }
            #[inline]
            fn acosh(self) -> Self {
                $t::acosh(self)
            }
            #[inline]
            fn atanh(self) -> Self {
                $t::atanh(self)
            }
            #[inline(always)]
            fn erf(self) -> Self {
                $erf(self)
            }
            #[inline]
            fn floor(self) -> Self {
                $t::floor(self)
            }
            #[inline]
            fn ceil(self) -> Self {
                $t::ceil(self)
            }
            #[inline]
            fn round_even(self) -> Self {
                $t::round_ties_even(self)
            }
            #[inline]
            fn abs(self) -> Self {
                $t::abs(self)
            }
            #[inline]
            fn powf(self, e: Self) -> Self {
                $t::powf(self, e)
            }
            #[inline]
            fn copysign(self, s: Self) -> Self {
                $t::copysign(self, s)
            }
            #[inline]
            fn is_nan(self) -> bool {
                $t::is_nan(self)
            }
            #[inline]
            fn is_pos_inf(self) -> bool {
                self == $t::INFINITY
            }
            #[inline]
            fn is_neg_inf(self) -> bool {
                self == $t::NEG_INFINITY
            }
        }
    };
}
fmath!(f32, crate::vmath::erf_f32, crate::vmath::exp_f32);
fmath!(f64, crate::erf::erf, f64::exp);

/// A float dtype and the type it computes in.
pub trait Float: Scalar {
    type C: FMath;
    fn up(self) -> Self::C;
    fn down(c: Self::C) -> Self;
}

macro_rules! float_scalar {
    ($t:ty, $c:ty, $up:expr, $down:expr, $from_f64:expr, $zero:expr, $one:expr, $ninf:expr, $inf:expr) => {
        impl Float for $t {
            type C = $c;
            #[inline]
            fn up(self) -> $c {
                $up(self)
            }
            #[inline]
            fn down(c: $c) -> Self {
                $down(c)
            }
        }
        impl Scalar for $t {
            const ZERO: Self = $zero;
            const ONE: Self = $one;
            const LOWEST: Self = $ninf;
            const HIGHEST: Self = $inf;
            type Acc = f64;
            #[inline]
            fn to_acc(self) -> f64 {
                Element::to_f64(self)
            }
            #[inline]
            fn from_acc(a: f64) -> Self {
                $from_f64(a)
            }
            #[inline]
            fn add(self, o: Self) -> Self {
                Self::down(self.up() + o.up())
            }
            #[inline]
            fn mul(self, o: Self) -> Self {
                Self::down(self.up() * o.up())
            }
            #[inline]
            fn max_nan(self, o: Self) -> Self {
                if Scalar::is_nan(self) {
                    self
                } else if Scalar::is_nan(o) || o > self {
                    o
                } else {
                    self
                }
            }
            #[inline]
            fn min_nan(self, o: Self) -> Self {
                if Scalar::is_nan(self) {
                    self
                } else if Scalar::is_nan(o) || o < self {
                    o
                } else {
                    self
                }
            }
        }
    };
}
float_scalar!(
    f32,
    f32,
    |x| x,
    |c| c,
    |a| a as f32,
    0.0,
    1.0,
    f32::NEG_INFINITY,
    f32::INFINITY
);
float_scalar!(
    f64,
    f64,
    |x| x,
    |c| c,
    |a| a,
    0.0,
    1.0,
    f64::NEG_INFINITY,
    f64::INFINITY
);
float_scalar!(
    f16,
    f32,
    f16::to_f32,
    f16::from_f32,
    crate::round::f16_from_f64,
    f16::ZERO,
    f16::ONE,
    f16::NEG_INFINITY,
    f16::INFINITY
);
float_scalar!(
    bf16,
    f32,
    bf16::to_f32,
    bf16::from_f32,
    crate::round::bf16_from_f64,
    bf16::ZERO,
    bf16::ONE,
    bf16::NEG_INFINITY,
    bf16::INFINITY
);

impl Scalar for bool {
    const ZERO: Self = false;
    const ONE: Self = true;
    const LOWEST: Self = false;
    const HIGHEST: Self = true;
    type Acc = bool;
    #[inline]
    fn to_acc(self) -> bool {
        self
    }
    #[inline]
    fn from_acc(a: bool) -> bool {
        a
    }
    #[inline]
    fn add(self, o: Self) -> Self {
        self | o
    }
    #[inline]
    fn mul(self, o: Self) -> Self {
        self & o
    }
    #[inline]
    fn max_nan(self, o: Self) -> Self {
        self | o
    }
    #[inline]
    fn min_nan(self, o: Self) -> Self {
        self & o
    }
}

/// An integer dtype. Every operation is total: wrapping arithmetic, x / 0 = x % 0 = 0.
pub trait Int:
    Scalar
    + Ord
    + BitAnd<Output = Self>
    + BitOr<Output = Self>
    + BitXor<Output = Self>
    + Not<Output = Self>
{
    fn wneg(self) -> Self;
    fn wabs(self) -> Self;
    fn wsub(self, o: Self) -> Self;
    /// Truncating division; 0 when dividing by 0; MIN / -1 wraps to MIN.
    fn wdiv(self, o: Self) -> Self;
    /// Remainder with the dividend's sign (C `%`, `fmod`); 0 for a zero divisor.
    fn fmod(self, o: Self) -> Self;
    /// Remainder with the divisor's sign (Python `%`); 0 for a zero divisor.
    fn pymod(self, o: Self) -> Self;
    /// -1, 0 or 1.
    fn sign(self) -> Self;
    /// Shifts; counts past the bit width (or negative) give 0 (or all sign bits for `>>`).
    fn shl(self, o: Self) -> Self;
    fn shr(self, o: Self) -> Self;
    /// Wrapping power; a negative exponent gives 0 unless the base is 1 or -1.
    fn wpow(self, e: Self) -> Self;
}

macro_rules! int_common {
    ($t:ty) => {
        impl Scalar for $t {
            const ZERO: Self = 0;
            const ONE: Self = 1;
            const LOWEST: Self = <$t>::MIN;
            const HIGHEST: Self = <$t>::MAX;
            type Acc = $t;
            #[inline]
            fn to_acc(self) -> Self {
                self
            }
            #[inline]
            fn from_acc(a: Self) -> Self {
                a
            }
            #[inline]
            fn add(self, o: Self) -> Self {
                self.wrapping_add(o)
            }
            #[inline]
            fn mul(self, o: Self) -> Self {
                self.wrapping_mul(o)
            }
            #[inline]
            fn max_nan(self, o: Self) -> Self {
                Ord::max(self, o)
            }
            #[inline]
            fn min_nan(self, o: Self) -> Self {
                Ord::min(self, o)
            }
            #[inline]
            fn is_nan(self) -> bool {
                false
            }
        }
    };
}

macro_rules! int_impl {
    (signed $t:ty) => {
        int_common!($t);
        impl Int for $t {
            #[inline]
            fn wneg(self) -> Self {
                self.wrapping_neg()
            }
            #[inline]
            fn wabs(self) -> Self {
                self.wrapping_abs()
            }
            #[inline]
            fn wsub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            #[inline]
            fn wdiv(self, o: Self) -> Self {
                if o == 0 {
                    0
                } else {
                    self.wrapping_div(o)
                }
            }
            #[inline]
            fn fmod(self, o: Self) -> Self {
                if o == 0 {
                    0
                } else {
                    self.wrapping_rem(o)
                }
            }
            #[inline]
            fn pymod(self, o: Self) -> Self {
                if o == 0 {
                    return 0;
                }
                let r = self.wrapping_rem(o);
                if r != 0 && ((r < 0) != (o < 0)) {
                    r.wrapping_add(o)
                } else {
                    r
                }
            }
            #[inline]
            fn sign(self) -> Self {
                self.signum()
            }
            #[inline]
            fn shl(self, o: Self) -> Self {
                if o < 0 {
                    0
                } else {
                    u32::try_from(o)
                        .ok()
                        .and_then(|s| self.checked_shl(s))
                        .unwrap_or(0)
                }
            }
            #[inline]
            fn shr(self, o: Self) -> Self {
                let fill = if self < 0 { -1 } else { 0 };
                if o < 0 {
                    fill
                } else {
                    u32::try_from(o)
                        .ok()
                        .and_then(|s| self.checked_shr(s))
                        .unwrap_or(fill)
                }
            }
            #[inline]
            fn wpow(self, e: Self) -> Self {
                if e < 0 {
                    return match self {
                        1 => 1,
                        -1 => {
                            if e & 1 == 0 {
                                1
                            } else {
                                -1
                            }
                        }
                        _ => 0,
                    };
                }
                pow_u64(self, e as u64)
            }
        }
    };
    (unsigned $t:ty) => {
        int_common!($t);
        impl Int for $t {
            #[inline]
            fn wneg(self) -> Self {
                self.wrapping_neg()
            }
            #[inline]
            fn wabs(self) -> Self {
                self
            }
            #[inline]
            fn wsub(self, o: Self) -> Self {
                self.wrapping_sub(o)
            }
            #[inline]
            fn wdiv(self, o: Self) -> Self {
                if o == 0 {
                    0
                } else {
                    self / o
                }
            }
            #[inline]
            fn fmod(self, o: Self) -> Self {
                if o == 0 {
                    0
                } else {
                    self % o
                }
            }
            #[inline]
            fn pymod(self, o: Self) -> Self {
                if o == 0 {
                    0
                } else {
                    self % o
                }
            }
            #[inline]
            fn sign(self) -> Self {
                (self != 0) as $t
            }
            #[inline]
            fn shl(self, o: Self) -> Self {
                u32::try_from(o)
                    .ok()
                    .and_then(|s| self.checked_shl(s))
                    .unwrap_or(0)
            }
            #[inline]
            fn shr(self, o: Self) -> Self {
                u32::try_from(o)
                    .ok()
                    .and_then(|s| self.checked_shr(s))
                    .unwrap_or(0)
            }
            #[inline]
            fn wpow(self, e: Self) -> Self {
                pow_u64(self, e as u64)
            }
        }
    };
}

/// Exponentiation by squaring with wrapping multiplies.
#[inline]
fn pow_u64<T: Scalar>(mut base: T, mut e: u64) -> T {
    let mut acc = T::ONE;
    while e > 0 {
        if e & 1 == 1 {
            acc = acc.mul(base);
        }
        e >>= 1;
        if e > 0 {
            base = base.mul(base);
        }
    }
    acc
}

int_impl!(signed i8);
int_impl!(signed i16);
int_impl!(signed i32);
int_impl!(signed i64);
int_impl!(unsigned u8);
int_impl!(unsigned u16);
int_impl!(unsigned u32);
int_impl!(unsigned u64);

/// A total order for sorting: NaN sorts after everything and equals NaN.
#[inline]
#[allow(clippy::eq_op)]
pub fn total_cmp<T: PartialOrd>(a: &T, b: &T) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match a.partial_cmp(b) {
        Some(o) => o,
        None => match (a != a, b != b) {
            (true, true) => Equal,
            (true, false) => Greater,
            _ => Less,
        },
    }
}
