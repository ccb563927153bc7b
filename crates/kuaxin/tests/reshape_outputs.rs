//! A View that only reshapes a fused kernel's output is absorbed into the kernel (it stores
//! under the view's shape): a MaxPool's keep-dims reduction, and a Reshape after an
//! elementwise chain. The fused program has no View left for them and gives the unfused
//! program's values bit for bit; a transposing view and a reshape of a program output stay.
mod common;

use common::{node, run_on_cpu, vi};
use kuaxin::random::{random_tensor, Rng};
use kuaxin::{DType, HostValue, Tensor};
use kuaxin_core::graph::{Attr, Graph, Model};
use kuaxin_core::prim::Prim;
use std::sync::Arc;

fn i64_tensor(v: Vec<i64>) -> Arc<Tensor> {
    Arc::new(Tensor::from_vec(vec![v.len()], v).expect("a valid tensor"))
}

/// pool = MaxPool 3x3/2 (x [2, 3, 9, 9]); s = Relu(x) * 2 + 2, flat = Reshape(s, [2, 243]);
/// t = Transpose(Sigmoid(x) + 2); and, when `also_out`, s itself as an output. Each chain is a
/// fused kernel.
fn model(also_out: bool) -> Model {
    let mut outputs = vec![
        vi("pool", &[2, 3, 4, 4]),
        vi("flat", &[2, 243]),
        vi("t", &[9, 9, 3, 2]),
    ];
    if also_out {
        outputs.push(vi("s", &[2, 3, 9, 9]));
    }
    Model {
        graph: Graph {
            name: "reshapes".into(),
            nodes: vec![
                node(
                    "MaxPool",
                    &["x"],
                    "pool",
                    vec![
                        ("kernel_shape", Attr::Ints(vec![3, 3])),
                        ("strides", Attr::Ints(vec![2, 2])),
                    ],
                ),
                node("Relu", &["x"], "r", vec![]),
                node("Mul", &["r", "two"], "m", vec![]),
                node("Add", &["m", "two"], "s", vec![]),
                node("Reshape", &["s", "shape"], "flat", vec![]),
                node("Sigmoid", &["x"], "g", vec![]),
                node("Add", &["g", "two"], "h", vec![]),
                node("Transpose", &["h"], "t", vec![]),
            ],
            inputs: vec![vi("x", &[2, 3, 9, 9])],
            outputs,
            initializers: vec![
                (
                    "two".into(),
                    Arc::new(Tensor::from_vec(vec![], vec![2f32]).expect("a scalar")),
                ),
                ("shape".into(), i64_tensor(vec![2, 243])),
            ],
            value_info: vec![],
        },
        opsets: [(String::new(), 17)].into(),
        producer: "test".into(),
        source: "reshapes".into(),
    }
}

/// The outputs and the number of View instructions of the program.
fn run(model: &Model, x: &Tensor, fuse: bool) -> (Vec<Tensor>, usize) {
    let inputs = [("x".to_string(), HostValue::Tensor(x.clone()))];
    let (outs, prims) = run_on_cpu(model, &inputs, fuse, 1);
    let views = prims
        .iter()
        .filter(|p| matches!(p, Prim::View { .. }))
        .count();
    (outs, views)
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.to_f64_vec().iter().map(|v| v.to_bits()).collect()
}

#[test]
fn reshapes_of_kernel_outputs_are_absorbed_and_agree() {
    let mut x = random_tensor(&mut Rng::new(5), DType::F32, vec![2, 3, 9, 9]);
    if let kuaxin_core::Data::F32(v) = &mut x.data {
        v[10] = f32::NAN;
        v[40] = f32::NEG_INFINITY;
    }
    for also_out in [false, true] {
        let m = model(also_out);
        let (want, unfused_views) = run(&m, &x, false);
        let (got, fused_views) = run(&m, &x, true);
        assert!(unfused_views >= 3, "unfused: {unfused_views} views");
        // The transpose stays a view, and the reshape when its input is an output too; the
        // pool's view and the plain reshape are absorbed.
        let want_views = if also_out { 2 } else { 1 };
        assert_eq!(fused_views, want_views, "also_out {also_out}");
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.shape, w.shape, "output {i}");
            assert_eq!(bits(g), bits(w), "output {i}, also_out {also_out}");
        }
    }
}
