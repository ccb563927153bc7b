//! A softmax or a LayerNorm over the last axis runs as one row primitive (`SoftmaxRows`,
//! `MaskedSoftmaxRows` with an attention's scale and mask, `LayerNormRows`) when fused, and
//! computes what its primitives compute unfused: with what made its input before it (a
//! scale and a mask broadcast in each way, with an infinite column; a bias and a residual), rows of one element and rows longer than an evaluator block, NaN and
//! infinities, a constant row. Over other axes, or without a LayerNorm bias, the primitives
//! stay.
mod common;

use common::{node, run_on_cpu, vi};
use kuaxin::compare::{metrics, OpClass, Tolerance};
use kuaxin::random::{random_tensor, Rng};
use kuaxin::{DType, HostValue, Tensor};
use kuaxin_core::graph::{Attr, Graph, Model};
use kuaxin_core::prim::Prim;
use std::sync::Arc;

fn f32_tensor(shape: Vec<usize>, v: Vec<f32>) -> Arc<Tensor> {
    Arc::new(Tensor::from_vec(shape, v).expect("a valid tensor"))
}

/// y = Softmax(x / 8 + mask, axis) with x [2, 3, 4, n] and a mask [1, 1, 1, n] of 0 and
/// -10000 (or -inf in the last column, when `n` > 2).
fn model(n: usize, axis: i64) -> Model {
    let mask: Vec<f32> = (0..n)
        .map(|j| match j % 5 {
            _ if n > 2 && j == n - 1 => f32::NEG_INFINITY,
            3 => -10000.0,
            _ => 0.0,
        })
        .collect();
    let shape = [2, 3, 4, n];
    Model {
        graph: Graph {
            name: "softmax".into(),
            nodes: vec![
                node("Div", &["x", "scale"], "a", vec![]),
                node("Add", &["a", "mask"], "b", vec![]),
                node("Softmax", &["b"], "y", vec![("axis", Attr::Int(axis))]),
            ],
            inputs: vec![vi("x", &shape)],
            outputs: vec![vi("y", &shape)],
            initializers: vec![
                ("scale".into(), f32_tensor(vec![], vec![8.0])),
                ("mask".into(), f32_tensor(vec![1, 1, 1, n], mask)),
            ],
            value_info: vec![],
        },
        opsets: [(String::new(), 17)].into(),
        producer: "test".into(),
        source: "softmax".into(),
    }
}

/// The output of `model` for `inputs` and whether its program holds `row_op`.
fn run_with(
    model: &Model,
    inputs: &[(&str, &Tensor)],
    fuse: bool,
    threads: usize,
    row_op: fn(&Prim) -> bool,
) -> (Tensor, bool) {
    let inputs: Vec<_> = inputs
        .iter()
        .map(|(name, t)| (name.to_string(), HostValue::Tensor((*t).clone())))
        .collect();
    let (outs, prims) = run_on_cpu(model, &inputs, fuse, threads);
    let out = outs.into_iter().next().expect("an output");
    (out, prims.iter().any(row_op))
}

/// Which elements are NaN.
fn nan(t: &Tensor) -> Vec<bool> {
    t.to_f64_vec().iter().map(|v| v.is_nan()).collect()
}

/// `got` agrees with `want` within the tolerance of an accumulation over `n` at `scale`, and
/// is NaN exactly where `want` is.
fn agree(got: &Tensor, want: &Tensor, n: usize, scale: f64, what: &str) {
    let tol = Tolerance::for_class(OpClass::Accumulating, DType::F32, n, scale);
    let mm = metrics(got, want, tol);
    assert_eq!(mm.mismatches, 0, "{what}: {mm:?}");
    assert_eq!(nan(got), nan(want), "{what}: NaN positions");
}

fn run(model: &Model, x: &Tensor, fuse: bool, threads: usize) -> (Tensor, bool) {
    run_with(model, &[("x", x)], fuse, threads, Prim::is_row_op)
}

fn is_masked(p: &Prim) -> bool {
    matches!(p, Prim::MaskedSoftmaxRows { .. })
}

/// How an attention-like softmax's input is made from x `[2, 3, 4, n]` (`mask` an input).
#[derive(Debug, Clone, Copy)]
enum Scores {
    /// Softmax(x).
    Plain,
    /// Softmax(x * 0.3 + mask), a mask of `[2, 1, 1, n]` (one per batch, broadcast).
    TimesAndBatchMask,
    /// Softmax(mask + x / 3), a mask of x's shape (no broadcast).
    DividedAndWholeMask,
    /// Softmax(x / 8 + mask), a mask of `[2, 3, 4, 1]` (one value per row).
    DividedAndRowMask,
}

/// The model for `scores` over rows of `n`, and the mask's shape (none for `Plain`).
fn scores_model(n: usize, scores: Scores) -> (Model, Option<Vec<usize>>) {
    let shape = [2, 3, 4, n];
    // The scaling op, whether the mask is the addition's first operand, the scale, the mask.
    let scaled = match scores {
        Scores::Plain => None,
        Scores::TimesAndBatchMask => Some(("Mul", false, 0.3, vec![2, 1, 1, n])),
        Scores::DividedAndWholeMask => Some(("Div", true, 3.0, shape.to_vec())),
        Scores::DividedAndRowMask => Some(("Div", false, 8.0, vec![2, 3, 4, 1])),
    };
    let (nodes, scale, mask) = match scaled {
        None => (vec![node("Softmax", &["x"], "y", vec![])], 1.0, None),
        Some((op, mask_first, scale, mask)) => {
            let add = if mask_first {
                ["mask", "a"]
            } else {
                ["a", "mask"]
            };
            let nodes = vec![
                node(op, &["x", "scale"], "a", vec![]),
                node("Add", &add, "b", vec![]),
                node("Softmax", &["b"], "y", vec![]),
            ];
            (nodes, scale, Some(mask))
        }
    };
    let mut inputs = vec![vi("x", &shape)];
    inputs.extend(mask.as_ref().map(|m| vi("mask", m)));
    let model = Model {
        graph: Graph {
            name: "scores".into(),
            nodes,
            inputs,
            outputs: vec![vi("y", &shape)],
            initializers: vec![("scale".into(), f32_tensor(vec![], vec![scale]))],
            value_info: vec![],
        },
        opsets: [(String::new(), 17)].into(),
        producer: "test".into(),
        source: "scores".into(),
    };
    (model, mask)
}

#[test]
fn scaled_and_masked_scores_are_one_row_primitive_that_agrees_with_the_primitives() {
    let mut rng = Rng::new(29);
    for scores in [
        Scores::Plain,
        Scores::TimesAndBatchMask,
        Scores::DividedAndWholeMask,
        Scores::DividedAndRowMask,
    ] {
        for n in [3, 37, 61, 128] {
            let (m, mask_shape) = scores_model(n, scores);
            let x = random_tensor(&mut rng, DType::F32, vec![2, 3, 4, n]);
            let mask = mask_shape.map(|s| {
                let mut t = random_tensor(&mut rng, DType::F32, s);
                // Masked-out positions as attention masks make them.
                if let kuaxin_core::Data::F32(v) = &mut t.data {
                    for (i, v) in v.iter_mut().enumerate() {
                        if i % 4 == 1 {
                            *v = -10000.0;
                        }
                    }
                }
                t
            });
            let mut inputs = vec![("x", &x)];
            inputs.extend(mask.as_ref().map(|t| ("mask", t)));
            let what = format!("{scores:?}, n = {n}");
            let (want, unfused) = run_with(&m, &inputs, false, 1, Prim::is_row_op);
            assert!(!unfused, "{what}: unfused runs the primitives");
            for threads in [1, 2] {
                let (got, masked) = run_with(&m, &inputs, true, threads, is_masked);
                let plain = matches!(scores, Scores::Plain);
                assert_eq!(masked, !plain, "{what}: the fused program's row primitive");
                agree(&got, &want, n, 1.0, &format!("{what}, {threads} threads"));
            }
        }
    }
}

#[test]
fn softmax_rows_agree_with_the_primitives() {
    let mut rng = Rng::new(17);
    for n in [1, 2, 7, 128, 1500] {
        let m = model(n, -1);
        let mut x = random_tensor(&mut rng, DType::F32, vec![2, 3, 4, n]);
        // A NaN in one row and an infinity in another (with n > 1 the second row is whole).
        if let kuaxin_core::Data::F32(v) = &mut x.data {
            v[0] = f32::NAN;
            if n > 1 {
                v[n] = f32::INFINITY;
            }
        }
        let (want, unfused_rows) = run(&m, &x, false, 1);
        assert!(!unfused_rows, "n = {n}: unfused runs the primitives");
        for threads in [1, 2] {
            let (got, fused_rows) = run(&m, &x, true, threads);
            // A row of one element lowers to fewer primitives (nothing to reduce): no chain.
            assert_eq!(
                fused_rows,
                n > 1,
                "n = {n}: the fused program holds a row primitive"
            );
            agree(&got, &want, n, 1.0, &format!("n = {n}, {threads} threads"));
            assert!(
                nan(&want).iter().any(|&b| b),
                "n = {n}: the NaN row stays NaN"
            );
        }
    }
}

#[test]
fn softmax_over_another_axis_keeps_its_primitives() {
    let m = model(6, 2);
    let x = random_tensor(&mut Rng::new(3), DType::F32, vec![2, 3, 4, 6]);
    let (got, rows) = run(&m, &x, true, 1);
    assert!(!rows, "only the last axis becomes SoftmaxRows");
    let (want, _) = run(&m, &x, false, 1);
    let mm = metrics(
        &got,
        &want,
        Tolerance::for_class(OpClass::Accumulating, DType::F32, 4, 1.0),
    );
    assert_eq!(mm.mismatches, 0, "{mm:?}");
}

/// y = LayerNormalization(x + b + r) over the last axis (or the last two with `axis` -2),
/// x and r [2, 5, n] inputs, b = 0.5, scale and bias constants (no bias when `with_bias` is
/// false).
fn layer_norm_model(n: usize, axis: i64, with_bias: bool) -> Model {
    let mut rng = Rng::new(23);
    let mut t = |shape: Vec<usize>| Arc::new(random_tensor(&mut rng, DType::F32, shape));
    let shape = [2, 5, n];
    let params = if axis == -1 { vec![n] } else { vec![5, n] };
    let mut ln_inputs = vec!["s", "scale"];
    let half = f32_tensor(vec![n], vec![0.5; n]);
    let mut initializers = vec![("b".into(), half), ("scale".into(), t(params.clone()))];
    if with_bias {
        ln_inputs.push("bias");
        initializers.push(("bias".into(), t(params)));
    }
    Model {
        graph: Graph {
            name: "layer_norm".into(),
            nodes: vec![
                node("Add", &["x", "b"], "xb", vec![]),
                node("Add", &["xb", "r"], "s", vec![]),
                node(
                    "LayerNormalization",
                    &ln_inputs,
                    "y",
                    vec![("axis", Attr::Int(axis)), ("epsilon", Attr::Float(1e-5))],
                ),
            ],
            inputs: vec![vi("x", &shape), vi("r", &shape)],
            outputs: vec![vi("y", &shape)],
            initializers,
            value_info: vec![],
        },
        opsets: [(String::new(), 17)].into(),
        producer: "test".into(),
        source: "layer_norm".into(),
    }
}

fn run_layer_norm(
    model: &Model,
    x: &Tensor,
    r: &Tensor,
    fuse: bool,
    threads: usize,
) -> (Tensor, bool) {
    run_with(model, &[("x", x), ("r", r)], fuse, threads, |p| {
        matches!(p, Prim::LayerNormRows { .. })
    })
}

#[test]
fn layer_norm_rows_agree_with_the_primitives() {
    let mut rng = Rng::new(29);
    for n in [1, 3, 384, 1500] {
        let m = layer_norm_model(n, -1, true);
        let mut x = random_tensor(&mut rng, DType::F32, vec![2, 5, n]);
        let r = random_tensor(&mut rng, DType::F32, vec![2, 5, n]);
        if let kuaxin_core::Data::F32(v) = &mut x.data {
            // Row 0 holds a NaN; row 1 sits far from zero (the centring cancels); in row 2
            // x + 0.5 + r is 1 up to rounding (a variance far below eps, which then decides
            // the scale).
            v[0] = f32::NAN;
            if let kuaxin_core::Data::F32(rv) = &r.data {
                for j in 0..n {
                    v[n + j] += 1.0e4;
                    v[2 * n + j] = 0.5 - rv[2 * n + j];
                }
            }
        }
        let (want, unfused_rows) = run_layer_norm(&m, &x, &r, false, 1);
        assert!(!unfused_rows, "n = {n}: unfused runs the primitives");
        for threads in [1, 2] {
            let (got, fused_rows) = run_layer_norm(&m, &x, &r, true, threads);
            assert_eq!(
                fused_rows,
                n > 1,
                "n = {n}: the fused program holds a LayerNormRows"
            );
            agree(&got, &want, n, 4.0, &format!("n = {n}, {threads} threads"));
            assert!(nan(&want)[0], "n = {n}: the NaN row stays NaN");
        }
    }
}

#[test]
fn layer_norms_over_two_axes_or_without_bias_keep_their_primitives() {
    for (axis, with_bias) in [(-2, true), (-1, false)] {
        let m = layer_norm_model(6, axis, with_bias);
        let x = random_tensor(&mut Rng::new(4), DType::F32, vec![2, 5, 6]);
        let r = random_tensor(&mut Rng::new(6), DType::F32, vec![2, 5, 6]);
        let (got, rows) = run_layer_norm(&m, &x, &r, true, 1);
        assert!(!rows, "axis {axis}, bias {with_bias}: primitives");
        let (want, _) = run_layer_norm(&m, &x, &r, false, 1);
        let tol = Tolerance::for_class(OpClass::Accumulating, DType::F32, 30, 4.0);
        let mm = metrics(&got, &want, tol);
        assert_eq!(mm.mismatches, 0, "axis {axis}, bias {with_bias}: {mm:?}");
    }
}
