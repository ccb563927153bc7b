//! Macros that turn a `Data` (or a pair of same-typed `Data`s) into typed slices, grouped by
//! dtype category so each category's generic kernel is instantiated only where it compiles.

/// `dispatch1!(data, v, float => .., int => .., bool => ..)`: binds `v` to the typed `Vec`.
macro_rules! dispatch1 {
    ($d:expr, $v:ident, any => $body:expr) => {
        dispatch1!($d, $v, float => $body, int => $body, bool => $body)
    };
    ($d:expr, $v:ident, float => $f:expr, int => $i:expr, bool => $b:expr) => {
        match $d {
            kuaxin_core::Data::F32($v) => $f,
            kuaxin_core::Data::F64($v) => $f,
            kuaxin_core::Data::F16($v) => $f,
            kuaxin_core::Data::BF16($v) => $f,
            kuaxin_core::Data::I8($v) => $i,
            kuaxin_core::Data::I16($v) => $i,
            kuaxin_core::Data::I32($v) => $i,
            kuaxin_core::Data::I64($v) => $i,
            kuaxin_core::Data::U8($v) => $i,
            kuaxin_core::Data::U16($v) => $i,
            kuaxin_core::Data::U32($v) => $i,
            kuaxin_core::Data::U64($v) => $i,
            kuaxin_core::Data::Bool($v) => $b,
        }
    };
}

/// `dispatch2!(a, b, x, y, float => .., int => .., bool => .., else => ..)`: both operands of
/// the same dtype; `else` runs when they differ.
macro_rules! dispatch2 {
    ($a:expr, $b:expr, $x:ident, $y:ident, any => $body:expr, else => $e:expr) => {
        dispatch2!($a, $b, $x, $y, float => $body, int => $body, bool => $body, else => $e)
    };
    ($a:expr, $b:expr, $x:ident, $y:ident, float => $f:expr, int => $i:expr, bool => $bo:expr, else => $e:expr) => {
        match ($a, $b) {
            (kuaxin_core::Data::F32($x), kuaxin_core::Data::F32($y)) => $f,
            (kuaxin_core::Data::F64($x), kuaxin_core::Data::F64($y)) => $f,
            (kuaxin_core::Data::F16($x), kuaxin_core::Data::F16($y)) => $f,
            (kuaxin_core::Data::BF16($x), kuaxin_core::Data::BF16($y)) => $f,
            (kuaxin_core::Data::I8($x), kuaxin_core::Data::I8($y)) => $i,
            (kuaxin_core::Data::I16($x), kuaxin_core::Data::I16($y)) => $i,
            (kuaxin_core::Data::I32($x), kuaxin_core::Data::I32($y)) => $i,
            (kuaxin_core::Data::I64($x), kuaxin_core::Data::I64($y)) => $i,
            (kuaxin_core::Data::U8($x), kuaxin_core::Data::U8($y)) => $i,
            (kuaxin_core::Data::U16($x), kuaxin_core::Data::U16($y)) => $i,
            (kuaxin_core::Data::U32($x), kuaxin_core::Data::U32($y)) => $i,
            (kuaxin_core::Data::U64($x), kuaxin_core::Data::U64($y)) => $i,
            (kuaxin_core::Data::Bool($x), kuaxin_core::Data::Bool($y)) => $bo,
            _ => $e,
        }
    };
}
