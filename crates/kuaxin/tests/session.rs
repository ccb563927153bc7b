//! Sessions: tracing once, replaying after, and agreeing with a more precise reference.
use kuaxin::compare::{metrics, OpClass, Tolerance};
use kuaxin::demo::{transformer_block, BlockConfig};
use kuaxin::random::{random_tensor, Rng};
use kuaxin::{open_device, DType, HostValue, Session, Tensor};
use std::sync::Arc;

fn input(seed: u64, dtype: DType) -> Vec<(String, HostValue)> {
    let t = random_tensor(&mut Rng::new(seed), DType::F64, vec![2, 5, 64]).cast(dtype);
    vec![("x".into(), HostValue::Tensor(t))]
}

fn out(v: &[(String, HostValue)]) -> Tensor {
    v[0].1.as_tensor().expect("tensor output").clone()
}

#[test]
fn second_run_replays_the_cached_program_with_new_data() {
    let s = Session::new(
        transformer_block(&BlockConfig::default(), DType::F32, 7),
        open_device("cpu", Some(1)).unwrap(),
    )
    .unwrap();
    let a = out(&s.run(&input(1, DType::F32)).unwrap());
    assert!(s.last_stats().compiled);
    assert!(s.last_stats().reusable);
    let b = out(&s.run(&input(2, DType::F32)).unwrap());
    assert!(!s.last_stats().compiled, "same input types must replay");
    // A replay computes the new input, not the traced one.
    assert_ne!(a, b);
    let fresh = Session::new(
        transformer_block(&BlockConfig::default(), DType::F32, 7),
        open_device("cpu", Some(1)).unwrap(),
    )
    .unwrap();
    assert_eq!(out(&fresh.run(&input(2, DType::F32)).unwrap()), b);
    // New input dims trace again.
    let t = random_tensor(&mut Rng::new(3), DType::F32, vec![1, 9, 64]);
    s.run(&[("x".into(), HostValue::Tensor(t))]).unwrap();
    assert!(s.last_stats().compiled);
}

#[test]
fn shared_inputs_run_as_copied_ones_and_stay_the_callers() {
    let open = || {
        Session::new(
            transformer_block(&BlockConfig::default(), DType::F32, 7),
            open_device("cpu", Some(1)).unwrap(),
        )
        .unwrap()
    };
    let (copied, shared) = (open(), open());
    let tensor = |seed| Arc::new(input(seed, DType::F32)[0].1.as_tensor().unwrap().clone());
    for seed in [1, 2] {
        let x = tensor(seed);
        let want = out(&copied.run(&input(seed, DType::F32)).unwrap());
        let got = out(&shared.run_shared(&[("x".into(), x.clone())]).unwrap());
        // The first compiles, the second replays on the shared tensor.
        assert_eq!(shared.last_stats().compiled, seed == 1);
        assert_eq!(got, want, "seed {seed}");
        assert_eq!(Arc::strong_count(&x), 1, "the session keeps no handle");
    }
    // Once compiled, a name the model lacks is still an error (it must not replay the program
    // cached for these types), the same one through either call.
    let x = tensor(1);
    let copied_err = copied
        .run(&[("nope".into(), HostValue::Tensor(x.as_ref().clone()))])
        .unwrap_err()
        .to_string();
    let shared_err = shared
        .run_shared(&[("nope".into(), x)])
        .unwrap_err()
        .to_string();
    assert!(copied_err.contains("'x'"), "{copied_err}");
    assert_eq!(shared_err, copied_err);
}

#[test]
fn f32_block_agrees_with_f64_reference() {
    let cfg = BlockConfig::default();
    let f32s = Session::new(
        transformer_block(&cfg, DType::F32, 11),
        open_device("cpu", None).unwrap(),
    )
    .unwrap();
    let f64s = Session::new(
        transformer_block(&cfg, DType::F64, 11),
        open_device("cpu", None).unwrap(),
    )
    .unwrap();
    let got = out(&f32s.run(&input(5, DType::F32)).unwrap());
    let want = out(&f64s.run(&input(5, DType::F64)).unwrap()).cast(DType::F32);
    let scale = want.to_f64_vec().iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let m = metrics(
        &got,
        &want,
        Tolerance::for_class(OpClass::Accumulating, DType::F32, cfg.ffn, scale),
    );
    assert_eq!(m.mismatches, 0, "{m:?}");
    assert!(m.cosine > 0.999_999, "{m:?}");
    // And the comparison can fail: a perturbed element is caught.
    let mut bad = got.to_f64_vec();
    bad[3] += 1e-2 * scale;
    let bad = Tensor {
        shape: got.shape.clone(),
        data: kuaxin_core::Data::from_f64_iter(DType::F32, bad.into_iter()),
    };
    let m = metrics(
        &bad,
        &want,
        Tolerance::for_class(OpClass::Accumulating, DType::F32, cfg.ffn, scale),
    );
    assert_eq!(m.mismatches, 1, "{m:?}");
}

#[test]
fn wrong_inputs_are_clear_errors() {
    let s = Session::new(
        transformer_block(&BlockConfig::default(), DType::F32, 7),
        open_device("cpu", Some(1)).unwrap(),
    )
    .unwrap();
    let e = s.run(&input(1, DType::F64)).unwrap_err().to_string();
    assert!(e.contains("input 'x'") && e.contains("f32"), "{e}");
    let e = s.run(&[]).unwrap_err().to_string();
    assert!(e.contains("missing input 'x'"), "{e}");
    let wrong_rank = random_tensor(&mut Rng::new(1), DType::F32, vec![5, 64]);
    let e = s
        .run(&[("x".into(), HostValue::Tensor(wrong_rank))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("rank"), "{e}");
}

#[test]
fn unknown_devices_are_clear_errors() {
    let e = open_device("cuda", None)
        .err()
        .expect("cuda is not built in")
        .to_string();
    assert!(e.contains("cuda") && e.contains("not built"), "{e}");
    assert!(open_device("tpu:3", None).is_err());
}
