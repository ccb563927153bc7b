//! Elementwise ops: each is one unary/binary primitive (with numpy broadcasting) or a short
//! composition of them.
use super::Registry;
use crate::builder::{tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::prim::{BinaryOp, UnaryOp};
use kuaxin_core::{bail_invalid, DType, Error, Result};

fn unary(cx: &mut Cx, ins: &[Option<Value>], op: UnaryOp) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    Ok(vec![tv(cx.unary(op, x)?)])
}

fn binary(cx: &mut Cx, ins: &[Option<Value>], op: BinaryOp) -> Result<Vec<Value>> {
    let a = tensor_arg(ins, 0, "A")?;
    let b = tensor_arg(ins, 1, "B")?;
    if a.dtype() != b.dtype() {
        bail_invalid!("operands have different dtypes: {} and {}", a.ty, b.ty);
    }
    Ok(vec![tv(cx.binary(op, a, b)?)])
}

macro_rules! unary_ops {
    ($r:ident, $($name:literal => $op:ident),* $(,)?) => {
        $( $r.insert($name, |cx, _n, ins| unary(cx, ins, UnaryOp::$op)); )*
    };
}
macro_rules! binary_ops {
    ($r:ident, $($name:literal => $op:ident),* $(,)?) => {
        $( $r.insert($name, |cx, _n, ins| binary(cx, ins, BinaryOp::$op)); )*
    };
}

/// Folds a variadic op (Max, Min, Sum) over its inputs with broadcasting.
fn variadic(cx: &mut Cx, ins: &[Option<Value>], op: BinaryOp) -> Result<TVal> {
    let mut acc = tensor_arg(ins, 0, "data_0")?.clone();
    for i in 1..ins.len() {
        let x = tensor_arg(ins, i, "data")?;
        acc = cx.binary(op, &acc, x)?;
    }
    Ok(acc)
}

fn pow(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let y = tensor_arg(ins, 1, "Y")?;
    if x.dtype().is_int() && y.dtype().is_float() {
        // Integer base with a float exponent: compute in f64, truncate back like numpy's cast.
        let xf = cx.cast(x, DType::F64)?;
        let yf = cx.cast(y, DType::F64)?;
        let r = cx.binary(BinaryOp::Pow, &xf, &yf)?;
        return Ok(vec![tv(cx.cast(&r, x.dtype())?)]);
    }
    let y = cx.cast(y, x.dtype())?;
    Ok(vec![tv(cx.binary(BinaryOp::Pow, x, &y)?)])
}

fn modulo(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let fmod = n.int_or("fmod", 0)? != 0;
    // Float Mod with fmod=0 takes the sign of the divisor, like Python's % (onnx >= 1.23).
    binary(cx, ins, if fmod { BinaryOp::FMod } else { BinaryOp::Mod })
}

fn bit_shift(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let dir = n.string_or("direction", "")?;
    let op = match dir.as_str() {
        "LEFT" => BinaryOp::Shl,
        "RIGHT" => BinaryOp::Shr,
        other => {
            return Err(Error::invalid(format!(
                "BitShift direction must be LEFT or RIGHT, got '{other}'"
            )))
        }
    };
    binary(cx, ins, op)
}

fn is_inf(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let pos = n.int_or("detect_positive", 1)? != 0;
    let neg = n.int_or("detect_negative", 1)? != 0;
    let out = match (pos, neg) {
        (true, true) => {
            let p = cx.unary(UnaryOp::IsPosInf, x)?;
            let q = cx.unary(UnaryOp::IsNegInf, x)?;
            cx.binary(BinaryOp::Or, &p, &q)?
        }
        (true, false) => cx.unary(UnaryOp::IsPosInf, x)?,
        (false, true) => cx.unary(UnaryOp::IsNegInf, x)?,
        (false, false) => cx.full(0.0, DType::Bool, x.shape())?,
    };
    Ok(vec![tv(out)])
}

fn mean(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let s = variadic(cx, ins, BinaryOp::Add)?;
    Ok(vec![tv(cx.binary_scalar(
        BinaryOp::Div,
        &s,
        ins.len() as f64,
    )?)])
}

fn where_op(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let c = tensor_arg(ins, 0, "condition")?;
    let a = tensor_arg(ins, 1, "X")?;
    let b = tensor_arg(ins, 2, "Y")?;
    Ok(vec![tv(cx.where_(c, a, b)?)])
}

fn le_ge(cx: &mut Cx, ins: &[Option<Value>], op: BinaryOp) -> Result<Vec<Value>> {
    binary(cx, ins, op)
}

pub fn register(r: &mut Registry) {
    unary_ops!(r,
        "Abs" => Abs, "Neg" => Neg, "Sqrt" => Sqrt, "Exp" => Exp, "Log" => Log, "Sin" => Sin,
        "Cos" => Cos, "Tan" => Tan, "Asin" => Asin, "Acos" => Acos, "Atan" => Atan, "Sinh" => Sinh,
        "Cosh" => Cosh, "Tanh" => Tanh, "Asinh" => Asinh, "Acosh" => Acosh, "Atanh" => Atanh,
        "Erf" => Erf, "Floor" => Floor, "Ceil" => Ceil, "Round" => Round, "Sign" => Sign,
        "Reciprocal" => Reciprocal, "Not" => Not, "BitwiseNot" => BitNot, "IsNaN" => IsNan,
        "Sigmoid" => Sigmoid,
    );
    binary_ops!(r,
        "Add" => Add, "Sub" => Sub, "Mul" => Mul, "Div" => Div, "Equal" => Eq, "Less" => Lt,
        "Greater" => Gt, "And" => And, "Or" => Or, "Xor" => Xor, "BitwiseAnd" => BitAnd,
        "BitwiseOr" => BitOr, "BitwiseXor" => BitXor,
    );
    r.insert("LessOrEqual", |cx, _n, ins| le_ge(cx, ins, BinaryOp::Le));
    r.insert("GreaterOrEqual", |cx, _n, ins| le_ge(cx, ins, BinaryOp::Ge));
    r.insert("Pow", pow);
    r.insert("Mod", modulo);
    r.insert("BitShift", bit_shift);
    r.insert("IsInf", is_inf);
    r.insert("Max", |cx, _n, ins| {
        Ok(vec![tv(variadic(cx, ins, BinaryOp::Max)?)])
    });
    r.insert("Min", |cx, _n, ins| {
        Ok(vec![tv(variadic(cx, ins, BinaryOp::Min)?)])
    });
    r.insert("Sum", |cx, _n, ins| {
        Ok(vec![tv(variadic(cx, ins, BinaryOp::Add)?)])
    });
    r.insert("Mean", mean);
    r.insert("Where", where_op);
}
