//! `Prim::Binary`: elementwise functions of two same-typed, same-shaped tensors.
use crate::par;
use crate::scalar::{Float, Int, Scalar};
use kuaxin_core::prim::BinaryOp;
use kuaxin_core::{Data, Error, Result};

pub fn binary(op: BinaryOp, a: &Data, b: &Data) -> Result<Data> {
    dispatch2!(a, b, x, y,
        float => float_binary(op, x, y),
        int => int_binary(op, x, y),
        bool => bool_binary(op, x, y),
        else => Err(Error::invalid(format!("{op:?}: operand types differ: {} vs {}", a.dtype(), b.dtype()))))
}

fn unsupported<T: Scalar>(op: BinaryOp) -> Error {
    Error::unsupported(format!("{op:?} is not defined on {}", T::DTYPE))
}

/// `f` in the compute type, rounded back to `T`.
fn fzip<T: Float>(x: &[T], y: &[T], f: impl Fn(T::C, T::C) -> T::C + Sync + Send) -> Data {
    T::wrap(par::zip(
        x,
        y,
        #[inline(always)]
        |a, b| T::down(f(a.up(), b.up())),
    ))
}

fn tzip<T: Scalar>(x: &[T], y: &[T], f: impl Fn(T, T) -> T + Sync + Send) -> Data {
    T::wrap(par::zip(x, y, f))
}

fn cmp<T: Copy + Sync>(x: &[T], y: &[T], f: impl Fn(T, T) -> bool + Sync + Send) -> Data {
    Data::Bool(par::zip(x, y, f))
}

fn float_binary<T: Float>(op: BinaryOp, x: &[T], y: &[T]) -> Result<Data> {
    float_binary_op!(op, T::C, f => return Ok(fzip(x, y, f)), else {});
    float_cmp_op!(op, T::C, f => return Ok(cmp(x, y, move |a: T, b: T| f(a.up(), b.up()))), else {});
    match op {
        BinaryOp::Max => Ok(tzip(x, y, T::max_nan)),
        BinaryOp::Min => Ok(tzip(x, y, T::min_nan)),
        _ => Err(unsupported::<T>(op)),
    }
}

fn int_binary<T: Int>(op: BinaryOp, x: &[T], y: &[T]) -> Result<Data> {
    use BinaryOp::*;
    Ok(match op {
        Add => tzip(x, y, T::add),
        Sub => tzip(x, y, T::wsub),
        Mul => tzip(x, y, T::mul),
        Div => tzip(x, y, T::wdiv),
        Pow => tzip(x, y, T::wpow),
        Max => tzip(x, y, Ord::max),
        Min => tzip(x, y, Ord::min),
        Mod => tzip(x, y, T::pymod),
        FMod => tzip(x, y, T::fmod),
        Eq => cmp(x, y, |a, b| a == b),
        Lt => cmp(x, y, |a, b| a < b),
        Le => cmp(x, y, |a, b| a <= b),
        Gt => cmp(x, y, |a, b| a > b),
        Ge => cmp(x, y, |a, b| a >= b),
        BitAnd => tzip(x, y, |a, b| a & b),
        BitOr => tzip(x, y, |a, b| a | b),
        BitXor => tzip(x, y, |a, b| a ^ b),
        Shl => tzip(x, y, T::shl),
        Shr => tzip(x, y, T::shr),
        And | Or | Xor => return Err(unsupported::<T>(op)),
    })
}

fn bool_binary(op: BinaryOp, x: &[bool], y: &[bool]) -> Result<Data> {
    use BinaryOp::*;
    Ok(match op {
        And | BitAnd | Min | Mul => tzip(x, y, |a, b| a & b),
        Or | BitOr | Max => tzip(x, y, |a, b| a | b),
        Xor | BitXor => tzip(x, y, |a, b| a ^ b),
        Eq => cmp(x, y, |a, b| a == b),
        Lt => cmp(x, y, |a, b| !a & b),
        Le => cmp(x, y, |a, b| a <= b),
        Gt => cmp(x, y, |a, b| a & !b),
        Ge => cmp(x, y, |a, b| a >= b),
        Add | Sub | Div | Pow | Mod | FMod | Shl | Shr => return Err(unsupported::<bool>(op)),
    })
}
