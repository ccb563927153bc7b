//! A residual that is another product plus its bias (ResNet's projection blocks:
//! `relu((conv_a + bias_a) + (conv_b + bias_b))`): fused, `bias_b` moves into `conv_b`'s own
//! epilogue, so each product has one and neither is left bare; the outputs are the unfused
//! program's bits. Where the residual's bias is not a constant, nothing moves; where the
//! biased residual is read elsewhere too, it is stored; the answer is the same bits.
mod common;

use common::{node, run_on_cpu, vi};
use kuaxin::random::{random_tensor, Rng};
use kuaxin::{DType, HostValue, Tensor};
use kuaxin_core::graph::{Attr, Model};
use kuaxin_core::prim::Prim;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Product {
    /// x [2, 8, 6, 6] -> a 3 x 3 convolution (pads 1) and a 1 x 1 one, 12 channels each:
    /// not whole blocks of 16, so they stay on the NCHW tiles whose bits this test pins (the
    /// blocked layout sums in another order; `blocked_layout.rs` checks it).
    Conv,
    /// x [2, 5, 24] -> two MatMuls with weights [24, 16].
    MatMul,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Case {
    /// Both biases constants, the residual product read once: its bias moves.
    Moves,
    /// The residual product's biased output is a graph output too.
    ReadTwice,
    /// The residual's bias is a graph input, not a constant.
    InputBias,
}

/// A bias per output channel, broadcast over the positions (or rows).
fn bias_shape(product: Product) -> Vec<usize> {
    match product {
        Product::Conv => vec![12, 1, 1],
        Product::MatMul => vec![16],
    }
}

fn model(product: Product, case: Case) -> Model {
    let mut rng = Rng::new(23);
    let mut t = |shape: Vec<usize>| Arc::new(random_tensor(&mut rng, DType::F32, shape));
    let (x_shape, out_shape): (Vec<usize>, Vec<usize>) = match product {
        Product::Conv => (vec![2, 8, 6, 6], vec![2, 12, 6, 6]),
        Product::MatMul => (vec![2, 5, 24], vec![2, 5, 16]),
    };
    let bias_b_shape = bias_shape(product);
    let mut nodes = match product {
        Product::Conv => vec![
            node(
                "Conv",
                &["x", "Wa"],
                "pa",
                vec![
                    ("kernel_shape", Attr::Ints(vec![3, 3])),
                    ("pads", Attr::Ints(vec![1, 1, 1, 1])),
                ],
            ),
            node(
                "Conv",
                &["x", "Wb"],
                "pb",
                vec![("kernel_shape", Attr::Ints(vec![1, 1]))],
            ),
        ],
        Product::MatMul => vec![
            node("MatMul", &["x", "Wa"], "pa", vec![]),
            node("MatMul", &["x", "Wb"], "pb", vec![]),
        ],
    };
    nodes.extend([
        node("Add", &["pa", "Ba"], "a", vec![]),
        node("Add", &["pb", "Bb"], "b", vec![]),
        node("Add", &["a", "b"], "s", vec![]),
        node("Relu", &["s"], "y", vec![]),
    ]);
    let (wa, wb) = match product {
        Product::Conv => (vec![12, 8, 3, 3], vec![12, 8, 1, 1]),
        Product::MatMul => (vec![24, 16], vec![24, 16]),
    };
    let mut initializers = vec![
        ("Wa".to_string(), t(wa)),
        ("Wb".to_string(), t(wb)),
        ("Ba".to_string(), t(bias_b_shape.clone())),
    ];
    let mut inputs = vec![vi("x", &x_shape)];
    if case == Case::InputBias {
        inputs.push(vi("Bb", &bias_b_shape));
    } else {
        initializers.push(("Bb".to_string(), t(bias_b_shape)));
    }
    let mut outputs = vec![vi("y", &out_shape)];
    if case == Case::ReadTwice {
        outputs.push(vi("b", &out_shape));
    }
    common::model("residual_bias", nodes, (inputs, outputs), initializers)
}

/// The outputs, and how many products run with an epilogue and how many bare.
fn run(
    model: &Model,
    inputs: &[(String, HostValue)],
    fuse: bool,
    threads: usize,
) -> (Vec<Tensor>, usize, usize) {
    let (outs, prims) = run_on_cpu(model, inputs, fuse, threads);
    let count = |f: fn(&Prim) -> bool| prims.iter().filter(|p| f(p)).count();
    let finished = count(|p| matches!(p, Prim::ConvEpilogue { .. } | Prim::MatMulEpilogue { .. }));
    let bare = count(|p| {
        matches!(
            p,
            Prim::Conv { .. } | Prim::MatMul | Prim::MatMulOfViews { .. }
        )
    });
    (outs, finished, bare)
}

#[test]
fn a_residual_products_bias_moves_into_its_epilogue_and_changes_no_bit() {
    for product in [Product::Conv, Product::MatMul] {
        let mut rng = Rng::new(3);
        let x_shape = match product {
            Product::Conv => vec![2, 8, 6, 6],
            Product::MatMul => vec![2, 5, 24],
        };
        let x = random_tensor(&mut rng, DType::F32, x_shape);
        for case in [Case::Moves, Case::ReadTwice, Case::InputBias] {
            let m = model(product, case);
            let mut inputs = vec![("x".to_string(), HostValue::Tensor(x.clone()))];
            if case == Case::InputBias {
                let b = random_tensor(&mut rng, DType::F32, bias_shape(product));
                inputs.push(("Bb".to_string(), HostValue::Tensor(b)));
            }
            let (want, _, _) = run(&m, &inputs, false, 1);
            for threads in [1, 2] {
                let (got, finished, bare) = run(&m, &inputs, true, threads);
                let what = format!("{product:?}, {case:?}, {threads} threads");
                // Read twice, the biased output is stored whichever instruction adds the
                // bias (a kernel of its own, or the product's epilogue, as fusion decides).
                let want_counts = match case {
                    Case::Moves => Some((2, 0)),
                    Case::InputBias => Some((1, 1)),
                    Case::ReadTwice => None,
                };
                if let Some(counts) = want_counts {
                    assert_eq!(
                        (finished, bare),
                        counts,
                        "{what}: products with an epilogue and bare ones"
                    );
                }
                assert_eq!(got.len(), want.len(), "{what}");
                for (g, w) in got.iter().zip(&want) {
                    // The same f32 adds of the same operands in another instruction, and
                    // products whose sums the epilogues do not change: the same bits.
                    let (g, w) = (g.to_f64_vec(), w.to_f64_vec());
                    assert_eq!(g.len(), w.len(), "{what}");
                    let differ = (0..g.len()).filter(|&i| g[i].to_bits() != w[i].to_bits());
                    let first: Vec<usize> = differ.take(3).collect();
                    assert!(
                        first.is_empty(),
                        "{what}: fused differs from unfused at {first:?}: {:?} against {:?}",
                        first.iter().map(|&i| g[i]).collect::<Vec<_>>(),
                        first.iter().map(|&i| w[i]).collect::<Vec<_>>()
                    );
                }
            }
        }
    }
}

#[test]
fn the_plan_prints_both_products_epilogues() {
    let m = model(Product::Conv, Case::Moves);
    let x = random_tensor(&mut Rng::new(5), DType::F32, vec![2, 8, 6, 6]);
    let device = kuaxin::open_device("cpu", Some(1)).expect("a CPU device");
    let plan = kuaxin::plan::plan(&m, &*device, &[("x".into(), HostValue::Tensor(x))], true)
        .expect("a plan");
    let code = plan.kernel_code();
    let epilogues: Vec<&str> = code
        .lines()
        .filter(|l| l.starts_with("epilogue of "))
        .collect();
    assert_eq!(epilogues.len(), 2, "{code}");
    // The residual convolution's epilogue adds its bias; the other's adds its bias, then the
    // residual, then takes the maximum with zero (the ReLU).
    let adds = code.matches("= Add(").count();
    assert_eq!((adds, code.matches("= Max(").count()), (3, 1), "{code}");
}
