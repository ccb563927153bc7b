//! The blocked layout between convolutions (`Prim::ConvBlocked`, where the CPU has AVX-512):
//! a chain of convolutions from a three-channel input, with padding, strides, a residual, a
//! max pool, a channel concat and a global pool, one of its blocked values also a program output, gives the unfused
//! program's answer within the tolerance of an accumulating op, and runs every convolution
//! blocked with nothing left of the paddings they absorbed; a head of 120 channels (not
//! whole blocks) runs blocked on zero-padded filters, its bias and ReLU in its finish.
mod common;

use common::{node, run_on_cpu, vi};
use kuaxin::compare::{metrics, OpClass, Tolerance};
use kuaxin::random::{random_tensor, Rng};
use kuaxin::{DType, HostValue};
use kuaxin_core::graph::{Attr, Model, Node, ValueInfo};
use kuaxin_core::prim::Prim;
use kuaxin_core::Tensor;
use std::sync::Arc;

fn conv(x: &str, w: &str, b: &str, out: &str, k: i64, stride: i64, pad: i64) -> Vec<Node> {
    let raw = format!("{out}_raw");
    vec![
        node(
            "Conv",
            &[x, w],
            &raw,
            vec![
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![stride, stride])),
                ("pads", Attr::Ints(vec![pad; 4])),
            ],
        ),
        node("Add", &[&raw, b], out, vec![]),
    ]
}

/// A model of `nodes` named `name`, each initializer made by `make` from its shape.
fn model_of(
    name: &str,
    nodes: Vec<Node>,
    initializers: &[(&str, Vec<usize>)],
    mut make: impl FnMut(Vec<usize>) -> Arc<Tensor>,
    (inputs, outputs): (Vec<ValueInfo>, Vec<ValueInfo>),
) -> Model {
    let initializers = initializers
        .iter()
        .map(|(n, shape)| (n.to_string(), make(shape.clone())))
        .collect();
    common::model(name, nodes, (inputs, outputs), initializers)
}

fn model() -> Model {
    let mut rng = Rng::new(41);
    let t = |shape: Vec<usize>| Arc::new(random_tensor(&mut rng, DType::F32, shape));
    let mut nodes = Vec::new();
    // 3 -> 32, 3 x 3 (a first layer: its plain input read as it is), then ReLU.
    nodes.extend(conv("x", "W1", "B1", "c1", 3, 1, 1));
    nodes.push(node("Relu", &["c1"], "a", vec![]));
    // 32 -> 32, 1 x 1, plus the residual `a`, then ReLU: `r` is also an output.
    nodes.extend(conv("a", "W2", "B2", "c2", 1, 1, 0));
    nodes.push(node("Add", &["c2", "a"], "s", vec![]));
    nodes.push(node("Relu", &["s"], "r", vec![]));
    nodes.push(node(
        "MaxPool",
        &["r"],
        "p",
        vec![
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("strides", Attr::Ints(vec![2, 2])),
            ("pads", Attr::Ints(vec![1, 1, 1, 1])),
        ],
    ));
    // Two branches of 16 concatenated on channels.
    nodes.extend(conv("p", "W3", "B3", "e1", 1, 1, 0));
    nodes.extend(conv("p", "W4", "B4", "e2", 3, 1, 1));
    nodes.push(node(
        "Concat",
        &["e1", "e2"],
        "c",
        vec![("axis", Attr::Int(1))],
    ));
    // 32 -> 48, 3 x 3, stride 2, a ReLU, then an average pool of the whole 3 x 3 map
    // (ResNet-50's head; its domain walks the layout's lanes before the pooled axes).
    nodes.extend(conv("c", "W5", "B5", "d0", 3, 2, 1));
    nodes.push(node("Relu", &["d0"], "d", vec![]));
    nodes.push(node(
        "AveragePool",
        &["d"],
        "g",
        vec![("kernel_shape", Attr::Ints(vec![3, 3]))],
    ));
    nodes.push(node("Flatten", &["g"], "y", vec![]));
    let initializers = [
        ("W1", vec![32, 3, 3, 3]),
        ("B1", vec![32, 1, 1]),
        ("W2", vec![32, 32, 1, 1]),
        ("B2", vec![32, 1, 1]),
        ("W3", vec![16, 32, 1, 1]),
        ("B3", vec![16, 1, 1]),
        ("W4", vec![16, 32, 3, 3]),
        ("B4", vec![16, 1, 1]),
        ("W5", vec![48, 32, 3, 3]),
        ("B5", vec![48, 1, 1]),
    ];
    let io = (
        vec![vi("x", &[2, 3, 11, 9])],
        vec![vi("y", &[2, 48]), vi("r", &[2, 32, 11, 9])],
    );
    model_of("blocked_layout", nodes, &initializers, t, io)
}

/// Whether the CPU back end claims the blocked layout here (AVX-512, not capped).
fn claimed() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::env::var("KUAXIN_CPU_SIMD").is_err() && std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[test]
fn a_blocked_chain_of_convolutions_gives_the_unfused_answer() {
    let m = model();
    let mut rng = Rng::new(5);
    let x = random_tensor(&mut rng, DType::F32, vec![2, 3, 11, 9]);
    let inputs = vec![("x".to_string(), HostValue::Tensor(x))];
    let (want, plain) = run_on_cpu(&m, &inputs, false, 1);
    assert!(!plain.iter().any(|p| matches!(p, Prim::ConvBlocked { .. })));
    for threads in [1, 2] {
        let (got, prims) = run_on_cpu(&m, &inputs, true, threads);
        let count = |f: fn(&Prim) -> bool| prims.iter().filter(|p| f(p)).count();
        let blocked = count(|p| matches!(p, Prim::ConvBlocked { .. }));
        let pads = count(|p| matches!(p, Prim::PadConstant { .. }));
        if claimed() {
            assert_eq!(blocked, 5, "every convolution blocked: {prims:?}");
            // The max pool's -inf padding is the one left.
            assert_eq!(pads, 1, "the convolutions' paddings absorbed: {prims:?}");
            // The last bias and ReLU are the convolution's finish, not the pool's prologue.
            let prologues =
                count(|p| matches!(p, Prim::Fused(k) if k.reduce.is_some() && k.body.len() > 1));
            assert_eq!(
                prologues, 0,
                "no reduction evaluates elementwise work: {prims:?}"
            );
        } else {
            println!("this CPU does not claim the blocked layout: checked the answer only");
        }
        for (g, w) in got.iter().zip(&want) {
            // The deepest sums: 32 channels x 9 taps, twice over (the concat's branch, then
            // the last convolution), of values of order 1.
            let tol = Tolerance::for_class(OpClass::Accumulating, DType::F32, 2 * 32 * 9, 10.0);
            let m = metrics(g, w, tol);
            assert_eq!(m.mismatches, 0, "threads {threads}: {m:?}");
        }
        assert_eq!(got.len(), 2);
    }
}

/// A classifier head of 120 classes, not whole blocks (SqueezeNet's has 1000): a 1 x 1
/// convolution, its bias and ReLU, and a global average pool; beside it, another 120-channel
/// convolution and ReLU whose map is a program output.
fn head_model() -> Model {
    let mut rng = Rng::new(43);
    let t = |shape: Vec<usize>| Arc::new(random_tensor(&mut rng, DType::F32, shape));
    let mut nodes = Vec::new();
    nodes.extend(conv("x", "W1", "B1", "c1", 3, 1, 1));
    nodes.push(node("Relu", &["c1"], "a", vec![]));
    nodes.extend(conv("a", "W2", "B2", "c2", 1, 1, 0));
    nodes.push(node("Relu", &["c2"], "r", vec![]));
    nodes.push(node("GlobalAveragePool", &["r"], "g", vec![]));
    nodes.push(node("Flatten", &["g"], "y", vec![]));
    nodes.extend(conv("a", "W3", "B3", "c3", 1, 1, 0));
    nodes.push(node("Relu", &["c3"], "m", vec![]));
    let initializers = [
        ("W1", vec![32, 3, 3, 3]),
        ("B1", vec![32, 1, 1]),
        ("W2", vec![120, 32, 1, 1]),
        ("B2", vec![120, 1, 1]),
        ("W3", vec![120, 32, 1, 1]),
        ("B3", vec![120, 1, 1]),
    ];
    let io = (
        vec![vi("x", &[2, 3, 7, 5])],
        vec![vi("y", &[2, 120]), vi("m", &[2, 120, 7, 5])],
    );
    model_of("blocked_head", nodes, &initializers, t, io)
}

#[test]
fn a_head_of_channels_not_whole_blocks_runs_padded_and_gives_the_unfused_answer() {
    let m = head_model();
    let mut rng = Rng::new(7);
    let x = random_tensor(&mut rng, DType::F32, vec![2, 3, 7, 5]);
    let inputs = vec![("x".to_string(), HostValue::Tensor(x))];
    let (want, _) = run_on_cpu(&m, &inputs, false, 1);
    for threads in [1, 2] {
        let (got, prims) = run_on_cpu(&m, &inputs, true, threads);
        if claimed() {
            let padded = prims.iter().any(
                |p| matches!(p, Prim::ConvBlocked { epilogue: Some(k), .. } if k.domain[1] == 8),
            );
            assert!(
                padded,
                "the head runs blocked, 120 channels as 8 blocks: {prims:?}"
            );
            let prologues = prims
                .iter()
                .filter(|p| matches!(p, Prim::Fused(k) if k.reduce.is_some() && k.body.len() > 1))
                .count();
            assert_eq!(
                prologues, 0,
                "the bias and ReLU are the head's finish: {prims:?}"
            );
        } else {
            println!("this CPU does not claim the blocked layout: checked the answer only");
        }
        assert_eq!(got.len(), 2);
        for (g, w) in got.iter().zip(&want) {
            // The deepest sums: 3 channels x 9 taps, then 32 channels.
            let tol = Tolerance::for_class(OpClass::Accumulating, DType::F32, 32 + 27, 10.0);
            let m = metrics(g, w, tol);
            assert_eq!(m.mismatches, 0, "threads {threads}: {m:?}");
        }
    }
}

/// Residuals a blocked convolution may add in place: `e` at its last use (the sums of a
/// 128-channel 3 x 3 layer in two depth blocks start from it, its buffer the output, then
/// a ReLU and another convolution), and `b`, read again after its convolution, which must
/// be left as it is.
fn residual_model() -> Model {
    let mut rng = Rng::new(47);
    // Weights scaled by 1 / sqrt(fan-in), so every layer's values stay of order one.
    let t = |shape: Vec<usize>| {
        let fan: usize = shape[1..].iter().product();
        let mut w = random_tensor(&mut rng, DType::F32, shape);
        if let kuaxin_core::Data::F32(v) = &mut w.data {
            v.iter_mut().for_each(|x| *x /= (fan as f32).sqrt());
        }
        Arc::new(w)
    };
    let mut nodes = Vec::new();
    nodes.extend(conv("x", "W1", "B1", "c1", 3, 1, 1));
    nodes.push(node("Relu", &["c1"], "a", vec![]));
    nodes.extend(conv("a", "W2", "B2", "b", 1, 1, 0));
    nodes.extend(conv("a", "W3", "B3", "c3", 1, 1, 0));
    nodes.push(node("Add", &["c3", "b"], "s3", vec![]));
    nodes.push(node("Relu", &["s3"], "r", vec![]));
    nodes.extend(conv("a", "W6", "B6", "e", 1, 1, 0));
    nodes.extend(conv("r", "W4", "B4", "c4", 3, 1, 1));
    nodes.push(node("Add", &["c4", "e"], "s4", vec![]));
    nodes.push(node("Relu", &["s4"], "q", vec![]));
    nodes.extend(conv("q", "W5", "B5", "y1", 1, 1, 0));
    nodes.push(node("Add", &["b", "r"], "y2", vec![]));
    let initializers = [
        ("W1", vec![32, 3, 3, 3]),
        ("B1", vec![32, 1, 1]),
        ("W2", vec![128, 32, 1, 1]),
        ("B2", vec![128, 1, 1]),
        ("W3", vec![128, 32, 1, 1]),
        ("B3", vec![128, 1, 1]),
        ("W4", vec![32, 128, 3, 3]),
        ("B4", vec![32, 1, 1]),
        ("W5", vec![16, 32, 1, 1]),
        ("B5", vec![16, 1, 1]),
        ("W6", vec![32, 32, 1, 1]),
        ("B6", vec![32, 1, 1]),
    ];
    let io = (
        vec![vi("x", &[1, 3, 14, 13])],
        vec![vi("y1", &[1, 16, 14, 13]), vi("y2", &[1, 128, 14, 13])],
    );
    model_of("blocked_residuals", nodes, &initializers, t, io)
}

#[test]
fn residuals_added_in_place_give_the_unfused_answer() {
    let m = residual_model();
    let mut rng = Rng::new(11);
    let x = random_tensor(&mut rng, DType::F32, vec![1, 3, 14, 13]);
    let inputs = vec![("x".to_string(), HostValue::Tensor(x))];
    let (want, _) = run_on_cpu(&m, &inputs, false, 1);
    for threads in [1, 2] {
        let (got, prims) = run_on_cpu(&m, &inputs, true, threads);
        if claimed() {
            let blocked = prims
                .iter()
                .filter(|p| matches!(p, Prim::ConvBlocked { .. }))
                .count();
            assert_eq!(blocked, 6, "every convolution blocked: {prims:?}");
        } else {
            println!("this CPU does not claim the blocked layout: checked the answer only");
        }
        assert_eq!(got.len(), 2);
        for (g, w) in got.iter().zip(&want) {
            // The deepest sums: 32 channels after 128 channels x 9 taps after 32 channels
            // after 3 channels x 9 taps.
            let depth = 32 + 128 * 9 + 32 + 27;
            let tol = Tolerance::for_class(OpClass::Accumulating, DType::F32, depth, 10.0);
            let m = metrics(g, w, tol);
            assert_eq!(m.mismatches, 0, "threads {threads}: {m:?}");
        }
    }
}
