//! Borrowing a `Data` as a slice of a statically known element type.
use half::{bf16, f16};
use kuaxin_core::tensor::Element;
use kuaxin_core::{Data, Error, Result};

pub trait Typed: Element {
    fn slice(d: &Data) -> Option<&[Self]>;
    /// The slice, or an error naming `what` when `d` holds another dtype.
    fn expect<'a>(d: &'a Data, what: &str) -> Result<&'a [Self]> {
        Self::slice(d).ok_or_else(|| {
            Error::invalid(format!(
                "{what}: expected {}, got {}",
                Self::DTYPE,
                d.dtype()
            ))
        })
    }
}

macro_rules! typed {
    ($($t:ty => $v:ident),*) => {
        $(impl Typed for $t {
            #[inline]
            fn slice(d: &Data) -> Option<&[Self]> {
                match d {
                    Data::$v(x) => Some(x),
                    _ => None,
                }
            }
        })*
    };
}
typed!(f32 => F32, f64 => F64, f16 => F16, bf16 => BF16, i8 => I8, i16 => I16, i32 => I32, i64 => I64,
       u8 => U8, u16 => U16, u32 => U32, u64 => U64, bool => Bool);
