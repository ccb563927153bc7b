//! BatchNormalization folded into the convolution before it computes what the unfolded graph
//! does, within the rounding of a convolution.
mod common;

use common::{node, vi};
use kuaxin::compare::{metrics, OpClass, Tolerance};
use kuaxin::random::{random_tensor, Rng};
use kuaxin::{open_device, DType, HostValue, Session, Tensor};
use kuaxin_core::graph::{Attr, Graph, Model};
use std::sync::Arc;

/// x [1, 8, 12, 12] -> Conv 3x3 pad 1 (16 channels, bias) -> BatchNormalization -> Relu. The
/// BN scale is also a graph input: a run that passes it overrides the constant, and nothing
/// folds.
fn model() -> (Model, Tensor) {
    let mut rng = Rng::new(5);
    let mut t = |shape: Vec<usize>| Arc::new(random_tensor(&mut rng, DType::F32, shape));
    let positive = |t: Arc<Tensor>| {
        let v: Vec<f64> = t.to_f64_vec().iter().map(|x| 0.5 + x.abs()).collect();
        Arc::new(Tensor {
            shape: t.shape.clone(),
            data: kuaxin_core::Data::from_f64_iter(DType::F32, v.into_iter()),
        })
    };
    let scale = t(vec![16]);
    let graph = Graph {
        name: "conv_bn".into(),
        nodes: vec![
            node(
                "Conv",
                &["x", "W", "B"],
                "c",
                vec![
                    ("kernel_shape", Attr::Ints(vec![3, 3])),
                    ("pads", Attr::Ints(vec![1, 1, 1, 1])),
                ],
            ),
            node(
                "BatchNormalization",
                &["c", "scale", "beta", "mean", "var"],
                "n",
                vec![],
            ),
            node("Relu", &["n"], "y", vec![]),
        ],
        inputs: vec![vi("x", &[1, 8, 12, 12]), vi("scale", &[16])],
        outputs: vec![vi("y", &[1, 16, 12, 12])],
        initializers: vec![
            ("W".into(), t(vec![16, 8, 3, 3])),
            ("B".into(), t(vec![16])),
            ("scale".into(), scale.clone()),
            ("beta".into(), t(vec![16])),
            ("mean".into(), t(vec![16])),
            ("var".into(), positive(t(vec![16]))),
        ],
        value_info: vec![],
    };
    let model = Model {
        graph,
        opsets: [(String::new(), 17)].into(),
        producer: "test".into(),
        source: "conv_bn".into(),
    };
    (model, (*scale).clone())
}

#[test]
fn folded_and_unfolded_batchnorm_agree() {
    let (model, scale) = model();
    let x = random_tensor(&mut Rng::new(9), DType::F32, vec![1, 8, 12, 12]);
    let run = |inputs: Vec<(String, HostValue)>| {
        let s = Session::new(model.clone(), open_device("cpu", Some(1)).unwrap()).unwrap();
        let out = s.run(&inputs).unwrap()[0].1.as_tensor().unwrap().clone();
        (out, s.last_stats().instructions)
    };
    let x_in = ("x".to_string(), HostValue::Tensor(x));
    let (folded, folded_instrs) = run(vec![x_in.clone()]);
    let (unfolded, unfolded_instrs) = run(vec![x_in, ("scale".into(), HostValue::Tensor(scale))]);
    assert!(
        folded_instrs < unfolded_instrs,
        "the fold removes the normalisation's instructions ({folded_instrs} vs {unfolded_instrs})"
    );
    let scale = unfolded
        .to_f64_vec()
        .iter()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let tol = Tolerance::for_class(OpClass::Accumulating, DType::F32, 8 * 9, scale);
    let m = metrics(&folded, &unfolded, tol);
    assert_eq!(m.mismatches, 0, "{m:?}");
    assert!(m.cosine > 0.999_999, "{m:?}");
}
