//! How each dtype is stored and computed in C-style kernel text. Every dtype lives in device
//! memory in its own width (bool as one byte 0/1); f16 and bf16 compute in `float` and are
//! rounded back after each op, the other dtypes compute in their own type.
use crate::dialect::Dialect;
use kuaxin_core::DType;

/// The kind of arithmetic a dtype gets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    Float,
    Signed,
    Unsigned,
    Bool,
}

pub fn class(d: DType) -> Class {
    match d {
        DType::F32 | DType::F64 | DType::F16 | DType::BF16 => Class::Float,
        DType::I8 | DType::I16 | DType::I32 | DType::I64 => Class::Signed,
        DType::U8 | DType::U16 | DType::U32 | DType::U64 => Class::Unsigned,
        DType::Bool => Class::Bool,
    }
}

/// The element type in device memory.
pub fn storage(d: DType, dl: &Dialect) -> &'static str {
    match d {
        DType::F16 => dl.half.f16,
        DType::BF16 => dl.half.bf16,
        DType::Bool => "unsigned char",
        other => compute(other),
    }
}

/// The type values of `d` are computed in.
pub fn compute(d: DType) -> &'static str {
    match d {
        DType::F32 | DType::F16 | DType::BF16 => "float",
        DType::F64 => "double",
        DType::I8 => "signed char",
        DType::I16 => "short",
        DType::I32 => "int",
        DType::I64 => "long long",
        DType::U8 => "unsigned char",
        DType::U16 => "unsigned short",
        DType::U32 => "unsigned int",
        DType::U64 => "unsigned long long",
        DType::Bool => "bool",
    }
}

/// The type a reduction or a shuffle accumulates `d` in (shuffles need 32 or 64 bits).
pub fn accumulator(d: DType) -> &'static str {
    match d {
        DType::I8 | DType::I16 | DType::Bool => "int",
        DType::U8 | DType::U16 => "unsigned int",
        other => compute(other),
    }
}

/// A stored element `e` as a compute value.
pub fn load(d: DType, e: &str) -> String {
    match d {
        DType::F16 => format!("kx_h2f({e})"),
        DType::BF16 => format!("kx_b2f({e})"),
        DType::Bool => format!("({e} != 0)"),
        _ => e.to_string(),
    }
}

/// A compute value `e` (of type `compute(d)`, or `double` when `from_double`) as a stored element.
pub fn store(d: DType, e: &str) -> String {
    match d {
        DType::F16 => format!("kx_f2h({e})"),
        DType::BF16 => format!("kx_f2b({e})"),
        DType::Bool => format!("(unsigned char)({e})"),
        _ => format!("({})({e})", compute(d)),
    }
}

/// A compute value rounded to `d` and back: f16/bf16 round after every op, like the CPU.
pub fn round(d: DType, e: &str) -> String {
    match d {
        DType::F16 | DType::BF16 => load(d, &store(d, e)),
        _ => e.to_string(),
    }
}

/// A literal of `d` (in its compute type) with the value `v`, exact to the bit.
pub fn constant(v: f64, d: DType, dl: &Dialect) -> String {
    match d {
        DType::F64 => format!(
            "{}((long long){:#x}ULL)",
            dl.longlong_as_double,
            v.to_bits()
        ),
        DType::F32 => format!("{}({:#x}u)", dl.uint_as_float, (v as f32).to_bits()),
        DType::F16 => {
            let r = half::f16::from_f64(v).to_f32();
            format!("{}({:#x}u)", dl.uint_as_float, r.to_bits())
        }
        DType::BF16 => {
            let r = half::bf16::from_f64(v).to_f32();
            format!("{}({:#x}u)", dl.uint_as_float, r.to_bits())
        }
        DType::Bool => (if v != 0.0 { "true" } else { "false" }).into(),
        DType::U64 => format!("{}ULL", v as u64),
        DType::I64 => match v as i64 {
            i64::MIN => "(-9223372036854775807LL - 1)".into(),
            i => format!("({i}LL)"),
        },
        d if class(d) == Class::Signed => format!("(({})({}LL))", compute(d), v as i64),
        d => format!("(({})({}ULL))", compute(d), v as i64 as u64),
    }
}

/// The smallest and largest value of `d` as compute literals (identities of max and min).
pub fn lowest(d: DType, dl: &Dialect) -> String {
    match d {
        DType::F64 | DType::F32 | DType::F16 | DType::BF16 => constant(f64::NEG_INFINITY, d, dl),
        DType::I64 => "(-9223372036854775807LL - 1)".into(),
        DType::I32 => "(-2147483647 - 1)".into(),
        DType::I16 => "(-32768)".into(),
        DType::I8 => "(-128)".into(),
        _ => "0".into(),
    }
}

pub fn highest(d: DType, dl: &Dialect) -> String {
    match d {
        DType::F64 | DType::F32 | DType::F16 | DType::BF16 => constant(f64::INFINITY, d, dl),
        DType::I64 => "9223372036854775807LL".into(),
        DType::I32 => "2147483647".into(),
        DType::I16 => "32767".into(),
        DType::I8 => "127".into(),
        DType::U64 => "18446744073709551615ULL".into(),
        DType::U32 => "4294967295u".into(),
        DType::U16 => "65535u".into(),
        DType::U8 => "255u".into(),
        DType::Bool => "1".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::CUDA;

    #[test]
    fn constants_keep_every_bit() {
        assert_eq!(
            constant(1.0, DType::F32, &CUDA),
            "__uint_as_float(0x3f800000u)"
        );
        assert_eq!(
            constant(-0.0, DType::F64, &CUDA),
            "__longlong_as_double((long long)0x8000000000000000ULL)"
        );
        // f16 constants are rounded to f16 first: 0.1 is not exact there.
        let c = constant(0.1, DType::F16, &CUDA);
        assert_eq!(
            c,
            format!(
                "__uint_as_float({:#x}u)",
                half::f16::from_f64(0.1).to_f32().to_bits()
            )
        );
        assert_eq!(constant(-3.0, DType::I8, &CUDA), "((signed char)(-3LL))");
        assert_eq!(
            constant(i64::MIN as f64, DType::I64, &CUDA),
            "(-9223372036854775807LL - 1)"
        );
    }

    #[test]
    fn halves_compute_in_float_and_round_back() {
        assert_eq!(compute(DType::BF16), "float");
        assert_eq!(round(DType::F16, "x"), "kx_h2f(kx_f2h(x))");
        assert_eq!(round(DType::F32, "x"), "x");
        assert_eq!(storage(DType::Bool, &CUDA), "unsigned char");
    }
}
