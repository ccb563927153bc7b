//! One elementwise op as a C expression on compute values, with the CPU back end's semantics
//! (numpy's): NaN-propagating max/min, Python `%`, integer division by zero gives 0, shifts
//! past the width give 0 (or the sign), float to integer casts truncate and saturate.
//! Operands are C++-overloaded math calls, so one spelling serves float and double.
use crate::ctype::{class, compute, constant, Class};
use crate::dialect::Dialect;
use kuaxin_core::prim::{BinaryOp as B, UnaryOp as U};
use kuaxin_core::DType;

type R<T> = std::result::Result<T, String>;

pub fn unary(op: U, d: DType, x: &str, dl: &Dialect) -> R<String> {
    let call = |f: &str| Ok(format!("{f}({x})"));
    match (class(d), op) {
        (Class::Float | Class::Signed | Class::Unsigned, U::Neg) => Ok(format!("(-{x})")),
        (Class::Float, U::Abs) => call("fabs"),
        (Class::Float, U::Sqrt) => call("sqrt"),
        (Class::Float, U::Exp) => call("exp"),
        (Class::Float, U::Log) => call("log"),
        (Class::Float, U::Sin) => call("sin"),
        (Class::Float, U::Cos) => call("cos"),
        (Class::Float, U::Tan) => call("tan"),
        (Class::Float, U::Asin) => call("asin"),
        (Class::Float, U::Acos) => call("acos"),
        (Class::Float, U::Atan) => call("atan"),
        (Class::Float, U::Sinh) => call("sinh"),
        (Class::Float, U::Cosh) => call("cosh"),
        (Class::Float, U::Tanh) => call("tanh"),
        (Class::Float, U::Asinh) => call("asinh"),
        (Class::Float, U::Acosh) => call("acosh"),
        (Class::Float, U::Atanh) => call("atanh"),
        (Class::Float, U::Erf) => call("erf"),
        (Class::Float, U::Floor) => call("floor"),
        (Class::Float, U::Ceil) => call("ceil"),
        (Class::Float, U::Round) => call("rint"),
        (Class::Float, U::Sign) => call("kx_fsign"),
        (Class::Float, U::Reciprocal) => Ok(format!("({} / {x})", constant(1.0, d, dl))),
        (Class::Float, U::Sigmoid) => call("kx_sigmoid"),
        (Class::Float, U::IsNan) => Ok(format!("({x} != {x})")),
        (Class::Float, U::IsPosInf) => Ok(format!("({x} == {})", constant(f64::INFINITY, d, dl))),
        (Class::Float, U::IsNegInf) => {
            Ok(format!("({x} == {})", constant(f64::NEG_INFINITY, d, dl)))
        }
        (Class::Signed, U::Abs) => Ok(format!("({x} < 0 ? -{x} : {x})")),
        (Class::Signed, U::Sign) => Ok(format!("(({x} > 0) - ({x} < 0))")),
        (Class::Unsigned, U::Abs) => Ok(x.to_string()),
        (Class::Unsigned, U::Sign) => Ok(format!("({x} != 0)")),
        (Class::Signed | Class::Unsigned, U::BitNot) => Ok(format!("(~{x})")),
        (Class::Bool, U::Not) => Ok(format!("(!{x})")),
        (c, op) => Err(format!("{op:?} on {c:?} values")),
    }
}

pub fn binary(op: B, d: DType, a: &str, b: &str) -> R<String> {
    let infix = |o: &str| Ok(format!("({a} {o} {b})"));
    let call = |f: &str| Ok(format!("{f}({a}, {b})"));
    // Integer helpers are templates on the compute type, so i8 stays i8 (C++ would promote).
    let tcall = |f: &str| Ok(format!("{f}<{}>({a}, {b})", compute(d)));
    match (class(d), op) {
        (Class::Float | Class::Signed | Class::Unsigned, B::Add) => infix("+"),
        (Class::Float | Class::Signed | Class::Unsigned, B::Sub) => infix("-"),
        (Class::Float | Class::Signed | Class::Unsigned, B::Mul) => infix("*"),
        (Class::Float, B::Div) => infix("/"),
        (Class::Float, B::Pow) => call("pow"),
        (Class::Float, B::Max) => call("kx_maxn"),
        (Class::Float, B::Min) => call("kx_minn"),
        (Class::Float, B::Mod) => call("kx_pymod"),
        (Class::Float, B::FMod) => call("fmod"),
        (_, B::Eq) => infix("=="),
        (_, B::Lt) => infix("<"),
        (_, B::Le) => infix("<="),
        (_, B::Gt) => infix(">"),
        (_, B::Ge) => infix(">="),
        (Class::Signed | Class::Unsigned, B::Max) => Ok(format!("({a} > {b} ? {a} : {b})")),
        (Class::Signed | Class::Unsigned, B::Min) => Ok(format!("({a} < {b} ? {a} : {b})")),
        (Class::Bool, B::Max | B::Or) => infix("||"),
        (Class::Bool, B::Min | B::And) => infix("&&"),
        (Class::Bool, B::Xor) => infix("!="),
        (Class::Signed | Class::Unsigned, B::BitAnd) => infix("&"),
        (Class::Signed | Class::Unsigned, B::BitOr) => infix("|"),
        (Class::Signed | Class::Unsigned, B::BitXor) => infix("^"),
        (Class::Signed | Class::Unsigned, B::Div) => tcall("kx_idiv"),
        (Class::Signed | Class::Unsigned, B::FMod) => tcall("kx_ifmod"),
        (Class::Signed | Class::Unsigned, B::Mod) => tcall("kx_imod"),
        (Class::Signed | Class::Unsigned, B::Shl) => tcall("kx_shl"),
        (Class::Signed | Class::Unsigned, B::Shr) => tcall("kx_shr"),
        (Class::Signed | Class::Unsigned, B::Pow) => tcall("kx_ipow"),
        (c, op) => Err(format!("{op:?} on {c:?} values")),
    }
}

/// `x` (a compute value of `from`) as a compute value of `to`, numpy `astype` semantics.
pub fn cast(from: DType, to: DType, x: &str) -> R<String> {
    Ok(match (class(from), class(to)) {
        _ if compute(from) == compute(to) => x.to_string(),
        (_, Class::Bool) => format!("({x} != 0)"),
        (Class::Float, Class::Signed | Class::Unsigned) => {
            format!("kx_f2i<{}>({x})", compute(to))
        }
        // f64 -> f16 rounds once, like the CPU (through float would round twice).
        (Class::Float, Class::Float) if from == DType::F64 && to == DType::F16 => {
            format!("kx_h2f(kx_d2h({x}))")
        }
        _ => format!("(({}){x})", compute(to)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::CUDA;

    #[test]
    fn ops_follow_the_cpu_semantics() {
        assert_eq!(
            binary(B::Div, DType::I32, "a", "b").unwrap(),
            "kx_idiv<int>(a, b)"
        );
        assert_eq!(
            binary(B::Max, DType::F32, "a", "b").unwrap(),
            "kx_maxn(a, b)"
        );
        assert_eq!(binary(B::Xor, DType::Bool, "a", "b").unwrap(), "(a != b)");
        assert_eq!(unary(U::Round, DType::F64, "x", &CUDA).unwrap(), "rint(x)");
        assert_eq!(
            cast(DType::F32, DType::U8, "x").unwrap(),
            "kx_f2i<unsigned char>(x)"
        );
        assert_eq!(cast(DType::F16, DType::F32, "x").unwrap(), "x");
        assert_eq!(cast(DType::I64, DType::Bool, "x").unwrap(), "(x != 0)");
    }

    #[test]
    fn ops_without_a_meaning_are_refused() {
        assert!(unary(U::Sqrt, DType::I32, "x", &CUDA).is_err());
        assert!(binary(B::Add, DType::Bool, "a", "b").is_err());
        assert!(binary(B::Shl, DType::F32, "a", "b").is_err());
    }
}
