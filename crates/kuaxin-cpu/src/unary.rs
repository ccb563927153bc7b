//! `Prim::Unary`: elementwise functions of one tensor.
use crate::par;
use crate::scalar::{Float, Int};
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
    T::wrap(par::map(
        v,
        #[inline(always)]
        |x| T::down(f(x.up())),
    ))
}

fn ftest<T: Float>(v: &[T], f: impl Fn(T::C) -> bool + Sync + Send) -> Data {
    Data::Bool(par::map(
        v,
        #[inline(always)]
        |x| f(x.up()),
    ))
}

fn float_unary<T: Float>(op: UnaryOp, v: &[T]) -> Result<Data> {
    float_unary_op!(op, T::C, f => return Ok(fmap(v, f)), else {});
    float_test_op!(op, T::C, f => return Ok(ftest(v, f)), else {});
    Err(unsupported(op, T::DTYPE))
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
