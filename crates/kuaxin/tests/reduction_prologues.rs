//! A pool whose input is a convolution's bias, residual and ReLU (SqueezeNet's and ResNet-50's
//! heads) is split when fused: the bias, residual and ReLU become the convolution's epilogue
//! and the pool reduces what the convolution stored. Fused, split or not, it computes what its
//! primitives compute unfused; and a convolution whose output is also read elsewhere is not
//! finished in place.
mod common;

use common::{node, run_on_cpu, vi};
use kuaxin::compare::{metrics, OpClass, Tolerance};
use kuaxin::random::{random_tensor, Rng};
use kuaxin::{DType, HostValue, Tensor};
use kuaxin_core::graph::{Attr, Graph, Model};
use kuaxin_core::prim::Prim;
use std::sync::Arc;

/// The head's last node and its attributes.
#[derive(Clone, Copy)]
enum Pool {
    /// GlobalAveragePool (SqueezeNet).
    Global,
    /// AveragePool over the whole 5 x 5 map (ResNet-50's 7 x 7 one).
    Window,
    /// ReduceMax over the spatial axes.
    Max,
}

/// x [2, 6, 5, 5] -> Conv 1 x 1 (24 channels, bias) [-> Add r] -> Relu -> pool; with
/// `conv_out`, the convolution's output is a second graph output.
fn model(pool: Pool, residual: bool, conv_out: bool) -> Model {
    let mut rng = Rng::new(41);
    let mut t = |shape: Vec<usize>| Arc::new(random_tensor(&mut rng, DType::F32, shape));
    let mut nodes = vec![node(
        "Conv",
        &["x", "W", "B"],
        "c",
        vec![("kernel_shape", Attr::Ints(vec![1, 1]))],
    )];
    let mut inputs = vec![vi("x", &[2, 6, 5, 5])];
    let relu_in = if residual {
        nodes.push(node("Add", &["c", "r"], "s", vec![]));
        inputs.push(vi("r", &[2, 24, 5, 5]));
        "s"
    } else {
        "c"
    };
    nodes.push(node("Relu", &[relu_in], "a", vec![]));
    nodes.push(match pool {
        Pool::Global => node("GlobalAveragePool", &["a"], "y", vec![]),
        Pool::Window => node(
            "AveragePool",
            &["a"],
            "y",
            vec![("kernel_shape", Attr::Ints(vec![5, 5]))],
        ),
        Pool::Max => node(
            "ReduceMax",
            &["a"],
            "y",
            vec![("axes", Attr::Ints(vec![2, 3]))],
        ),
    });
    let mut outputs = vec![vi("y", &[2, 24, 1, 1])];
    if conv_out {
        outputs.push(vi("c", &[2, 24, 5, 5]));
    }
    Model {
        graph: Graph {
            name: "head".into(),
            nodes,
            inputs,
            outputs,
            initializers: vec![
                ("W".into(), t(vec![24, 6, 1, 1])),
                ("B".into(), t(vec![24])),
            ],
            value_info: vec![],
        },
        opsets: [(String::new(), 17)].into(),
        producer: "test".into(),
        source: "head".into(),
    }
}

/// The outputs of `model` and whether its program holds a `ConvEpilogue`.
fn run(
    model: &Model,
    inputs: &[(String, HostValue)],
    fuse: bool,
    threads: usize,
) -> (Vec<Tensor>, bool) {
    let (outs, prims) = run_on_cpu(model, inputs, fuse, threads);
    let finished = prims.iter().any(|p| matches!(p, Prim::ConvEpilogue { .. }));
    (outs, finished)
}

#[test]
fn pooled_heads_agree_with_the_primitives_split_or_not() {
    let mut rng = Rng::new(7);
    let x = random_tensor(&mut rng, DType::F32, vec![2, 6, 5, 5]);
    let r = random_tensor(&mut rng, DType::F32, vec![2, 24, 5, 5]);
    for pool in [Pool::Global, Pool::Window, Pool::Max] {
        for (residual, conv_out) in [(false, false), (true, false), (true, true)] {
            let m = model(pool, residual, conv_out);
            let mut inputs = vec![("x".to_string(), HostValue::Tensor(x.clone()))];
            if residual {
                inputs.push(("r".to_string(), HostValue::Tensor(r.clone())));
            }
            let (want, unfused_finished) = run(&m, &inputs, false, 1);
            assert!(!unfused_finished, "unfused runs the primitives");
            for threads in [1, 2] {
                let (got, finished) = run(&m, &inputs, true, threads);
                let what = format!(
                    "pool {}, residual {residual}, conv output read too {conv_out}, {threads} threads",
                    pool as u8
                );
                // The prologue moves into the convolution only when nothing else reads it.
                assert_eq!(finished, !conv_out, "{what}: a ConvEpilogue");
                assert_eq!(got.len(), want.len(), "{what}");
                for (g, w) in got.iter().zip(&want) {
                    // A dot product of depth 6 (and a bias and a residual), then a mean of 25.
                    let tol = Tolerance::for_class(OpClass::Accumulating, DType::F32, 8 + 25, 1.0);
                    let mm = metrics(g, w, tol);
                    assert_eq!(mm.mismatches, 0, "{what}: {mm:?}");
                }
            }
        }
    }
}
