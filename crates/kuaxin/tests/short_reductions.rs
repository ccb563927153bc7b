//! Short reductions (at most 64 positions) fold across output rows, except when every load
//! reads the reduced positions as one contiguous run of at least 16 (a global average pool
//! over 7 x 7 after a per-channel bias, whose load is constant over the reduced axes; a
//! ReduceMax over H and W), which fold along the rows in vectors. Both paths agree with the
//! unfused primitives, NaN and infinities included; a strided window (MaxPool) keeps the
//! first. Longer reductions whose positions are strided while the output rows run in unit
//! steps (a sum over the tokens of `[tokens, features]`) fold across output rows too.
mod common;

use common::{node, run_on_cpu, vi};
use kuaxin::compare::{metrics, OpClass, Tolerance};
use kuaxin::random::{random_tensor, Rng};
use kuaxin::{DType, HostValue, Tensor};
use kuaxin_core::graph::{Attr, Graph, Model};
use std::sync::Arc;

/// gap = GlobalAveragePool(Relu(x + b)); mx = ReduceMax(x) over H and W; win = MaxPool 3x3/2
/// of x (a strided window, not contiguous), for x [2, 5, 7, 7].
fn model() -> Model {
    let b: Vec<f32> = (0..5).map(|c| c as f32 * 0.5 - 1.0).collect();
    Model {
        graph: Graph {
            name: "short".into(),
            nodes: vec![
                node("Add", &["x", "b"], "xb", vec![]),
                node("Relu", &["xb"], "r", vec![]),
                node("GlobalAveragePool", &["r"], "gap", vec![]),
                node(
                    "ReduceMax",
                    &["x"],
                    "mx",
                    vec![("axes", Attr::Ints(vec![2, 3])), ("keepdims", Attr::Int(0))],
                ),
                node(
                    "MaxPool",
                    &["x"],
                    "win",
                    vec![
                        ("kernel_shape", Attr::Ints(vec![3, 3])),
                        ("strides", Attr::Ints(vec![2, 2])),
                    ],
                ),
            ],
            inputs: vec![vi("x", &[2, 5, 7, 7])],
            outputs: vec![
                vi("gap", &[2, 5, 1, 1]),
                vi("mx", &[2, 5]),
                vi("win", &[2, 5, 3, 3]),
            ],
            initializers: vec![(
                "b".into(),
                Arc::new(Tensor::from_vec(vec![1, 5, 1, 1], b).expect("a bias")),
            )],
            value_info: vec![],
        },
        opsets: [(String::new(), 13)].into(),
        producer: "test".into(),
        source: "short".into(),
    }
}

fn run(m: &Model, x: &Tensor, fuse: bool, threads: usize) -> Vec<Tensor> {
    let inputs = [("x".to_string(), HostValue::Tensor(x.clone()))];
    run_on_cpu(m, &inputs, fuse, threads).0
}

#[test]
fn short_contiguous_reductions_agree_with_the_primitives() {
    let mut x = random_tensor(&mut Rng::new(11), DType::F32, vec![2, 5, 7, 7]);
    if let kuaxin_core::Data::F32(v) = &mut x.data {
        v[3] = f32::NAN; // image 0, channel 0, inside the first pooling window
        v[49 * 2 + 25] = f32::INFINITY; // image 0, channel 2
        v[49 * 7 + 30] = f32::NEG_INFINITY; // image 1, channel 2
    }
    let m = model();
    let want = run(&m, &x, false, 1);
    for threads in [1, 2] {
        let got = run(&m, &x, true, threads);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.shape, w.shape, "output {i}");
            let n = if i == 2 { 9 } else { 49 };
            let tol = Tolerance::for_class(OpClass::Accumulating, DType::F32, n, 1.0);
            let mm = metrics(g, w, tol);
            assert_eq!(mm.mismatches, 0, "output {i}, {threads} threads: {mm:?}");
            let nan = |t: &Tensor| {
                t.to_f64_vec()
                    .iter()
                    .map(|v| v.is_nan())
                    .collect::<Vec<_>>()
            };
            assert_eq!(nan(g), nan(w), "output {i}: NaN positions");
            assert!(nan(w).iter().any(|&b| b), "output {i}: the NaN reaches it");
        }
    }
}

/// s = ReduceSum(x * w) and mx = ReduceMax(x) over axis 1 of x [2, 200, 48]: 200 reduced
/// positions, 48 apart, for output rows in unit steps.
fn strided_model() -> Model {
    let w = random_tensor(&mut Rng::new(5), DType::F32, vec![1, 200, 48]);
    let axis1 = || vec![("axes", Attr::Ints(vec![1])), ("keepdims", Attr::Int(0))];
    Model {
        graph: Graph {
            name: "strided".into(),
            nodes: vec![
                node("Mul", &["x", "w"], "xw", vec![]),
                node("ReduceSum", &["xw"], "s", axis1()),
                node("ReduceMax", &["x"], "mx", axis1()),
            ],
            inputs: vec![vi("x", &[2, 200, 48])],
            outputs: vec![vi("s", &[2, 48]), vi("mx", &[2, 48])],
            initializers: vec![("w".into(), Arc::new(w))],
            value_info: vec![],
        },
        opsets: [(String::new(), 13)].into(),
        producer: "test".into(),
        source: "strided".into(),
    }
}

#[test]
fn long_strided_reductions_agree_with_the_primitives() {
    let mut x = random_tensor(&mut Rng::new(12), DType::F32, vec![2, 200, 48]);
    if let kuaxin_core::Data::F32(v) = &mut x.data {
        v[48 * 150 + 7] = f32::NAN; // image 0, feature 7
        v[200 * 48 + 48 * 3 + 20] = f32::INFINITY; // image 1, feature 20
    }
    let m = strided_model();
    let want = run(&m, &x, false, 1);
    for threads in [1, 2] {
        let got = run(&m, &x, true, threads);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.shape, w.shape, "output {i}");
            let tol = Tolerance::for_class(OpClass::Accumulating, DType::F32, 200, 1.0);
            let mm = metrics(g, w, tol);
            assert_eq!(mm.mismatches, 0, "output {i}, {threads} threads: {mm:?}");
            let special = |t: &Tensor| {
                t.to_f64_vec()
                    .iter()
                    .map(|v| (v.is_nan(), v.is_infinite()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                special(g),
                special(w),
                "output {i}: NaN and infinity positions"
            );
            assert!(special(w)[7].0, "output {i}: the NaN reaches feature 7");
        }
    }
}
