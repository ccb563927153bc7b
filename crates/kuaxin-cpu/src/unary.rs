//! `Prim::Unary`: elementwise functions of one tensor.
use crate::par;
use crate::scalar::{FMath, Float, Int};
use kuaxin_core::prim::UnaryOp;
use kuaxin_core::{DType, Data, Error, Result};

pub fn unary(op: UnaryOp, x: &Data) -> Result<Data> {
    dispatch1!(x, v, float => float_unary(op, v), int => int_unary(op, v), bool => bool_unary(op, v))
}

fn unsupported(op: UnaryOp, dtype: DType) -> Error {
    Error::unsupported(format!("{op:?} is not defined on {dtype}"))
}

/// `f` applied in the compute type, rounded back to `T`.
fn fmap<T: Float>(v: &[T], f: impl Fn(T::C) -> T::C + Sync + Send) -> Data {
    T::wrap(par::map(v, |x| T::down(f(x.up()))))
}

fn ftest<T: Float>(v: &[T], f: impl Fn(T::C) -> bool + Sync + Send) -> Data {
    Data::Bool(par::map(v, |x| f(x.up())))
}

fn float_unary<T: Float>(op: UnaryOp, v: &[T]) -> Result<Data> {
    use UnaryOp::*;
    let one = <T::C as FMath>::ONE;
    let zero = <T::C as FMath>::ZERO;
    Ok(match op {
        Neg => fmap(v, |x| -x),
        Abs => fmap(v, FMath::abs),
        Sqrt => fmap(v, FMath::sqrt),
        Exp => fmap(v, FMath::exp),
        Log => fmap(v, FMath::ln),
        Sin => fmap(v, FMath::sin),
        Cos => fmap(v, FMath::cos),
        Tan => fmap(v, FMath::tan),
        Asin => fmap(v, FMath::asin),
        Acos => fmap(v, FMath::acos),
        Atan => fmap(v, FMath::atan),
        Sinh => fmap(v, FMath::sinh),
        Cosh => fmap(v, FMath::cosh),
        Tanh => fmap(v, FMath::tanh),
        Asinh => fmap(v, FMath::asinh),
        Acosh => fmap(v, FMath::acosh),
        Atanh => fmap(v, FMath::atanh),
        Erf => fmap(v, FMath::erf),
        Floor => fmap(v, FMath::floor),
        Ceil => fmap(v, FMath::ceil),
        Round => fmap(v, FMath::round_even),
        // numpy: sign(+-0) = +-0, sign(NaN) = NaN.
        Sign => fmap(v, move |x| if x > zero { one } else if x < zero { -one } else { x }),
        Reciprocal => fmap(v, move |x| one / x),
        Sigmoid => fmap(v, move |x| {
            if x >= zero {
                one / (one + (-x).exp())
            } else {
                let e = x.exp();
                e / (one + e)
            }
        }),
        IsNan => ftest(v, FMath::is_nan),
        IsPosInf => ftest(v, FMath::is_pos_inf),
        IsNegInf => ftest(v, FMath::is_neg_inf),
        Not | BitNot => return Err(unsupported(op, T::DTYPE)),
    })
}

fn int_unary<T: Int>(op: UnaryOp, v: &[T]) -> Result<Data> {
    use UnaryOp::*;
    Ok(match op {
        Neg => T::wrap(par::map(v, T::wneg)),
        Abs => T::wrap(par::map(v, T::wabs)),
        Sign => T::wrap(par::map(v, T::sign)),
        BitNot => T::wrap(par::map(v, |x: T| !x)),
        Floor | Ceil | Round => T::wrap(v.to_vec()),
        IsNan | IsPosInf | IsNegInf => Data::Bool(vec![false; v.len()]),
        _ => return Err(unsupported(op, T::DTYPE)),
    })
}

fn bool_unary(op: UnaryOp, v: &[bool]) -> Result<Data> {
    use UnaryOp::*;
    Ok(match op {
        Not | BitNot => Data::Bool(par::map(v, |x: bool| !x)),
        Abs | Floor | Ceil | Round => Data::Bool(v.to_vec()),
        IsNan | IsPosInf | IsNegInf => Data::Bool(vec![false; v.len()]),
        _ => return Err(unsupported(op, DType::Bool)),
    })
}
