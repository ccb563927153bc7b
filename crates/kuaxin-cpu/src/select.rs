//! `Prim::Where`: `cond ? a : b` elementwise.
use crate::par;
use kuaxin_core::{Data, Error, Result};

pub fn select(cond: &Data, a: &Data, b: &Data) -> Result<Data> {
    let Data::Bool(c) = cond else {
        return Err(Error::invalid(format!(
            "Where: condition must be bool, got {}",
            cond.dtype()
        )));
    };
    dispatch2!(a, b, x, y,
        any => Ok(kuaxin_core::tensor::Element::wrap(par::zip3(c, x, y, |c, a, b| if c { a } else { b }))),
        else => Err(Error::invalid(format!("Where: operand types differ: {} vs {}", a.dtype(), b.dtype()))))
}
