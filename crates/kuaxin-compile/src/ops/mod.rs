//! Every supported op, defined once by its lowering to primitives. Each file registers a
//! family; the registry maps ONNX op type to lowering.
use crate::lower::Cx;
use crate::value::Value;
use kuaxin_core::graph::Node;
use kuaxin_core::Result;
use std::collections::HashMap;
use std::sync::OnceLock;

mod activation;
mod attention;
mod control;
mod elementwise;
mod index;
mod linalg;
mod loss;
mod misc;
mod movement;
mod nn;
mod norm;
mod pool;
mod quant;
mod reduce;
mod resize;
mod rnn;
mod sequence;
mod signal;

/// A lowering: node plus input values (None for omitted optional inputs) to output values.
pub type LowerFn = fn(&mut Cx, &Node, &[Option<Value>]) -> Result<Vec<Value>>;

pub type Registry = HashMap<&'static str, LowerFn>;

pub fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let mut r = Registry::new();
        activation::register(&mut r);
        attention::register(&mut r);
        control::register(&mut r);
        elementwise::register(&mut r);
        index::register(&mut r);
        linalg::register(&mut r);
        loss::register(&mut r);
        misc::register(&mut r);
        movement::register(&mut r);
        nn::register(&mut r);
        norm::register(&mut r);
        pool::register(&mut r);
        quant::register(&mut r);
        reduce::register(&mut r);
        resize::register(&mut r);
        rnn::register(&mut r);
        sequence::register(&mut r);
        signal::register(&mut r);
        r
    })
}

/// Names of all supported op types, sorted.
pub fn supported_ops() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = registry().keys().copied().collect();
    v.sort_unstable();
    v
}
