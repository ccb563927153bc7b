//! Host ops (`Prim::Host`): data-dependent output shapes or sequential algorithms. They
//! compute their own output shapes and check them against the allocation limit.
mod nms;
mod nonzero;
mod topk;
mod unique;

use kuaxin_core::prim::HostOp;
use kuaxin_core::{Error, Result, Tensor};

pub fn eval(op: &HostOp, inputs: &[&Tensor]) -> Result<Vec<Tensor>> {
    let want = match op {
        HostOp::NonMaxSuppression { .. } => 5,
        _ => 1,
    };
    if inputs.len() != want {
        return Err(Error::invalid(format!(
            "Host{op:?} takes {want} inputs, got {}",
            inputs.len()
        )));
    }
    match op {
        HostOp::NonZero => nonzero::nonzero(inputs[0]),
        HostOp::Unique { axis, sorted } => unique::unique(inputs[0], *axis, *sorted),
        HostOp::TopK {
            k,
            axis,
            largest,
            sorted: _,
        } => topk::topk(inputs[0], *k, *axis, *largest),
        HostOp::NonMaxSuppression { center_point_box } => nms::nms(inputs, *center_point_box),
    }
}
