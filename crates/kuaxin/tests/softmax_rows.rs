//! A softmax over the last axis runs as one `SoftmaxRows` primitive when fused, and computes
//! what its seven primitives compute unfused: an attention-like scale and mask before it
//! (an infinite mask), rows of one element, rows longer than an evaluator block,
//! NaN and infinities. A softmax over another axis keeps its primitives.
use kuaxin::compare::{metrics, OpClass, Tolerance};
use kuaxin::random::{random_tensor, Rng};
use kuaxin::session::SessionOptions;
use kuaxin::{open_device, DType, HostValue, Session, Tensor};
use kuaxin_core::graph::{Attr, Dim, Graph, Model, Node, ValueInfo, ValueType};
use kuaxin_core::prim::Prim;
use std::sync::Arc;

fn vi(name: &str, shape: &[usize]) -> ValueInfo {
    ValueInfo {
        name: name.into(),
        ty: ValueType::Tensor {
            dtype: DType::F32,
            shape: Some(shape.iter().map(|&d| Dim::Known(d)).collect()),
        },
    }
}

fn node(op: &str, ins: &[&str], out: &str, attrs: Vec<(&str, Attr)>) -> Node {
    Node {
        name: out.into(),
        op_type: op.into(),
        domain: String::new(),
        inputs: ins.iter().map(|s| s.to_string()).collect(),
        outputs: vec![out.into()],
        attrs: attrs.into_iter().map(|(k, a)| (k.to_string(), a)).collect(),
    }
}

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

/// The output and whether the program holds a `SoftmaxRows`.
fn run(model: &Model, x: &Tensor, fuse: bool, threads: usize) -> (Tensor, bool) {
    let opts = SessionOptions {
        fuse,
        ..Default::default()
    };
    let s = Session::with_options(
        model.clone(),
        open_device("cpu", Some(threads)).expect("a CPU device"),
        opts,
    )
    .expect("a session");
    let inputs = vec![("x".to_string(), HostValue::Tensor(x.clone()))];
    let out = s.run(&inputs).expect("runs")[0]
        .1
        .as_tensor()
        .expect("a tensor")
        .clone();
    let rows = s
        .program_for(&inputs)
        .expect("a cached program")
        .instrs
        .iter()
        .any(|i| i.prim == Prim::SoftmaxRows);
    (out, rows)
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
                "n = {n}: the fused program holds a SoftmaxRows"
            );
            let tol = Tolerance::for_class(OpClass::Accumulating, DType::F32, n, 1.0);
            let mm = metrics(&got, &want, tol);
            assert_eq!(mm.mismatches, 0, "n = {n}, {threads} threads: {mm:?}");
            // NaN where the primitives give NaN, and only there.
            let nan = |t: &Tensor| {
                t.to_f64_vec()
                    .iter()
                    .map(|v| v.is_nan())
                    .collect::<Vec<_>>()
            };
            assert_eq!(nan(&got), nan(&want), "n = {n}: NaN positions");
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
