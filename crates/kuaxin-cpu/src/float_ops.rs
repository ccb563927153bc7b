//! The scalar definition of every float unary and binary op, as macros that bind a closure
//! per op: the unfused kernels and the fused-kernel evaluator expand the same closures, so
//! both compute bit-identical results, and each expansion is a monomorphic loop the compiler
//! vectorises (a function pointer per element would not be).

/// `float_unary_op!(op, C, f => expr, else other)`: evaluates `expr` with `f: Fn(C) -> C`.
macro_rules! float_unary_op {
    ($op:expr, $C:ty, $f:ident => $then:expr, else $other:expr) => {{
        use kuaxin_core::prim::UnaryOp as U;
        use $crate::scalar::FMath as M;
        match $op {
            U::Neg => {
                let $f = |x: $C| -x;
                $then
            }
            U::Abs => {
                let $f = <$C as M>::abs;
                $then
            }
            U::Sqrt => {
                let $f = <$C as M>::sqrt;
                $then
            }
            U::Exp => {
                let $f = <$C as M>::exp;
                $then
            }
            U::Log => {
                let $f = <$C as M>::ln;
                $then
            }
            U::Sin => {
                let $f = <$C as M>::sin;
                $then
            }
            U::Cos => {
                let $f = <$C as M>::cos;
                $then
            }
            U::Tan => {
                let $f = <$C as M>::tan;
                $then
            }
            U::Asin => {
                let $f = <$C as M>::asin;
                $then
            }
            U::Acos => {
                let $f = <$C as M>::acos;
                $then
            }
            U::Atan => {
                let $f = <$C as M>::atan;
                $then
            }
            U::Sinh => {
                let $f = <$C as M>::sinh;
                $then
            }
            U::Cosh => {
                let $f = <$C as M>::cosh;
                $then
            }
            U::Tanh => {
                let $f = <$C as M>::tanh;
                $then
            }
            U::Asinh => {
                let $f = <$C as M>::asinh;
                $then
            }
            U::Acosh => {
                let $f = <$C as M>::acosh;
                $then
            }
            U::Atanh => {
                let $f = <$C as M>::atanh;
                $then
            }
            U::Erf => {
                let $f = <$C as M>::erf;
                $then
            }
            U::Floor => {
                let $f = <$C as M>::floor;
                $then
            }
            U::Ceil => {
                let $f = <$C as M>::ceil;
                $then
            }
            U::Round => {
                let $f = <$C as M>::round_even;
                $then
            }
            // numpy: sign(+-0) = +-0, sign(NaN) = NaN.
            U::Sign => {
                let $f = |x: $C| {
                    if x > <$C as M>::ZERO {
                        <$C as M>::ONE
                    } else if x < <$C as M>::ZERO {
                        -<$C as M>::ONE
                    } else {
                        x
                    }
                };
                $then
            }
            U::Reciprocal => {
                let $f = |x: $C| <$C as M>::ONE / x;
                $then
            }
            U::Sigmoid => {
                // e^-|x| never overflows; both quotients are formed and one kept, so the
                // loop has no branch.
                let $f = |x: $C| {
                    let e = <$C as M>::exp(-<$C as M>::abs(x));
                    let d = <$C as M>::ONE + e;
                    if x >= <$C as M>::ZERO {
                        <$C as M>::ONE / d
                    } else {
                        e / d
                    }
                };
                $then
            }
            _ => $other,
        }
    }};
}

/// `float_test_op!(op, C, f => expr, else other)` with `f: Fn(C) -> bool`.
macro_rules! float_test_op {
    ($op:expr, $C:ty, $f:ident => $then:expr, else $other:expr) => {{
        use kuaxin_core::prim::UnaryOp as U;
        use $crate::scalar::FMath as M;
        match $op {
            U::IsNan => {
                let $f = <$C as M>::is_nan;
                $then
            }
            U::IsPosInf => {
                let $f = <$C as M>::is_pos_inf;
                $then
            }
            U::IsNegInf => {
                let $f = <$C as M>::is_neg_inf;
                $then
            }
            _ => $other,
        }
    }};
}

/// `float_binary_op!(op, C, f => expr, else other)` with `f: Fn(C, C) -> C`. Max and Min are
/// not here: they work on the storage type (NaN-propagating, see `Scalar`).
macro_rules! float_binary_op {
    ($op:expr, $C:ty, $f:ident => $then:expr, else $other:expr) => {{
        use kuaxin_core::prim::BinaryOp as B;
        use $crate::scalar::FMath as M;
        match $op {
            B::Add => {
                let $f = |a: $C, b: $C| a + b;
                $then
            }
            B::Sub => {
                let $f = |a: $C, b: $C| a - b;
                $then
            }
            B::Mul => {
                let $f = |a: $C, b: $C| a * b;
                $then
            }
            B::Div => {
                let $f = |a: $C, b: $C| a / b;
                $then
            }
            B::Pow => {
                let $f = <$C as M>::powf;
                $then
            }
            B::FMod => {
                let $f = |a: $C, b: $C| a % b;
                $then
            }
            B::Mod => {
                let $f = |a: $C, b: $C| {
                    let z = <$C as M>::ZERO;
                    let r = a % b;
                    if r == z {
                        z.copysign(b)
                    } else if (r < z) != (b < z) {
                        r + b
                    } else {
                        r
                    }
                };
                $then
            }
            _ => $other,
        }
    }};
}

/// `float_cmp_op!(op, C, f => expr, else other)` with `f: Fn(C, C) -> bool`.
macro_rules! float_cmp_op {
    ($op:expr, $C:ty, $f:ident => $then:expr, else $other:expr) => {{
        use kuaxin_core::prim::BinaryOp as B;
        match $op {
            B::Eq => {
                let $f = |a: $C, b: $C| a == b;
                $then
            }
            B::Lt => {
                let $f = |a: $C, b: $C| a < b;
                $then
            }
            B::Le => {
                let $f = |a: $C, b: $C| a <= b;
                $then
            }
            B::Gt => {
                let $f = |a: $C, b: $C| a > b;
                $then
            }
            B::Ge => {
                let $f = |a: $C, b: $C| a >= b;
                $then
            }
            _ => $other,
        }
    }};
}
