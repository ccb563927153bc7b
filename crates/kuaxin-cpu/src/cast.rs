//! `Prim::Cast`: numpy `astype` semantics.
//!
//! float -> int truncates toward zero and saturates (NaN -> 0); anything -> bool is `!= 0`;
//! bool -> x is 0/1; int -> int wraps; -> f16/bf16 rounds to nearest even, once. Each source
//! value is lifted to a lossless [`Num`] (f64 for floats, i64/u64 for integers), so 64-bit
//! integers never pass through a lossy type before the target's own rounding.
use crate::par;
use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use kuaxin_core::{DType, Data};

#[derive(Clone, Copy)]
pub enum Num {
    F(f64),
    I(i64),
    U(u64),
    B(bool),
}

pub trait CastEl: Copy + Send + Sync {
    fn to_num(self) -> Num;
    fn from_num(n: Num) -> Self;
}

macro_rules! cast_int {
    ($t:ty, $lift:ident, $wide:ty) => {
        impl CastEl for $t {
            #[inline]
            fn to_num(self) -> Num {
                Num::$lift(self as $wide)
            }
            #[inline]
            fn from_num(n: Num) -> Self {
                match n {
                    Num::F(f) => f as $t,
                    Num::I(i) => i as $t,
                    Num::U(u) => u as $t,
                    Num::B(b) => b as $t,
                }
            }
        }
    };
}
cast_int!(i8, I, i64);
cast_int!(i16, I, i64);
cast_int!(i32, I, i64);
cast_int!(i64, I, i64);
cast_int!(u8, U, u64);
cast_int!(u16, U, u64);
cast_int!(u32, U, u64);
cast_int!(u64, U, u64);

macro_rules! cast_native_float {
    ($t:ty) => {
        impl CastEl for $t {
            #[inline]
            fn to_num(self) -> Num {
                Num::F(self as f64)
            }
            #[inline]
            fn from_num(n: Num) -> Self {
                match n {
                    Num::F(f) => f as $t,
                    Num::I(i) => i as $t,
                    Num::U(u) => u as $t,
                    Num::B(b) => b as u8 as $t,
                }
            }
        }
    };
}
cast_native_float!(f32);
cast_native_float!(f64);

macro_rules! cast_half {
    ($t:ty, $from_f64:path) => {
        impl CastEl for $t {
            #[inline]
            fn to_num(self) -> Num {
                Num::F(self.to_f64())
            }
            #[inline]
            fn from_num(n: Num) -> Self {
                // Integers below 2^53 are exact in f64, so this rounds once; larger ones are
                // infinite in f16 and differ from exact rounding in bf16 only at ties.
                match n {
                    Num::F(f) => $from_f64(f),
                    Num::I(i) => $from_f64(i as f64),
                    Num::U(u) => $from_f64(u as f64),
                    Num::B(b) => {
                        if b {
                            <$t>::ONE
                        } else {
                            <$t>::ZERO
                        }
                    }
                }
            }
        }
    };
}
cast_half!(f16, crate::round::f16_from_f64);
cast_half!(bf16, crate::round::bf16_from_f64);

impl CastEl for bool {
    #[inline]
    fn to_num(self) -> Num {
        Num::B(self)
    }
    #[inline]
    fn from_num(n: Num) -> Self {
        match n {
            Num::F(f) => f != 0.0,
            Num::I(i) => i != 0,
            Num::U(u) => u != 0,
            Num::B(b) => b,
        }
    }
}

fn conv<S: CastEl, D: CastEl>(v: &[S]) -> Vec<D> {
    par::map(v, |x| D::from_num(x.to_num()))
}

fn cast_from<S: CastEl>(v: &[S], to: DType) -> Data {
    match to {
        DType::F32 => Data::F32(conv(v)),
        DType::F64 => Data::F64(conv(v)),
        DType::F16 => Data::F16(conv(v)),
        DType::BF16 => Data::BF16(conv(v)),
        DType::I8 => Data::I8(conv(v)),
        DType::I16 => Data::I16(conv(v)),
        DType::I32 => Data::I32(conv(v)),
        DType::I64 => Data::I64(conv(v)),
        DType::U8 => Data::U8(conv(v)),
        DType::U16 => Data::U16(conv(v)),
        DType::U32 => Data::U32(conv(v)),
        DType::U64 => Data::U64(conv(v)),
        DType::Bool => Data::Bool(conv(v)),
    }
}

pub fn cast(x: &Data, to: DType) -> Data {
    if x.dtype() == to {
        return x.clone();
    }
    // Fast paths for the common half <-> f32 conversions (half's slice conversions use SIMD
    // where the CPU has it; same round-to-nearest-even results).
    match (x, to) {
        (Data::F16(v), DType::F32) => {
            return Data::F32(slices(v, |s, d| s.convert_to_f32_slice(d)))
        }
        (Data::BF16(v), DType::F32) => {
            return Data::F32(slices(v, |s, d| s.convert_to_f32_slice(d)))
        }
        (Data::F32(v), DType::F16) => {
            return Data::F16(slices(v, |s, d: &mut [f16]| d.convert_from_f32_slice(s)))
        }
        (Data::F32(v), DType::BF16) => {
            return Data::BF16(slices(v, |s, d: &mut [bf16]| d.convert_from_f32_slice(s)))
        }
        _ => {}
    }
    kuaxin_core::with_data!(x, v => cast_from(v, to))
}

/// Converts `src` chunk by chunk with `f(src_chunk, dst_chunk)`, in parallel when large.
fn slices<S: Sync, D: Copy + Default + Send>(
    src: &[S],
    f: impl Fn(&[S], &mut [D]) + Sync + Send,
) -> Vec<D> {
    let mut out = vec![D::default(); src.len()];
    par::for_chunks(&mut out, par::MIN_PAR, par::MIN_PAR, |i, d| {
        let start = i * par::MIN_PAR;
        f(&src[start..start + d.len()], d)
    });
    out
}
