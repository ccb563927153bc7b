//! `Prim::SoftmaxRows`: softmax along the last axis, one row at a time while it is in cache:
//! the row's max, `exp(x - max)` written to the output, their sum, then the division. The
//! same f32 steps as the primitives it replaces (the max and the f64 sum folded as the fused
//! reductions fold them, `exp` the shared vectorisable one), in one pass over memory where
//! the primitives' four kernels each walk the whole tensor.
use crate::fold;
use crate::scalar::FMath;
use kuaxin_core::prim::ReduceOp;
use kuaxin_core::{Data, Error, Result};

pub fn softmax_rows(x: &Data, shape: &[usize]) -> Result<Data> {
    let Data::F32(x) = x else {
        return Err(Error::unsupported(format!(
            "SoftmaxRows runs on f32, not {}",
            x.dtype()
        )));
    };
    let Some(&n) = shape.last() else {
        return Err(Error::invalid("SoftmaxRows needs at least one axis"));
    };
    Ok(Data::F32(crate::rows::map_rows(
        x,
        n,
        || (),
        #[inline(always)]
        |_, x, out| row(x, out),
    )))
}

#[inline(always)]
fn row(x: &[f32], out: &mut [f32]) {
    // Already compiled for the vector level (`map_rows`): the folds inline here.
    let max = fold::row_any(ReduceOp::Max, fold::init(ReduceOp::Max), x) as f32;
    for (o, &v) in out.iter_mut().zip(x) {
        *o = <f32 as FMath>::exp(v - max);
    }
    let sum = fold::row_any(ReduceOp::Sum, fold::init(ReduceOp::Sum), out) as f32;
    for o in out.iter_mut() {
        *o /= sum;
    }
}
