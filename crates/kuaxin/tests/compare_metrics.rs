//! The comparison metrics on values compared with themselves: a device checked against itself
//! must read as exactly equal, whatever the values (the cosine had read 0.9999999999999999 for
//! some, as the check of the CPU against itself did on a Zen 3 machine).
use kuaxin::compare::{metrics, OpClass, Tolerance};
use kuaxin_core::{DType, Tensor};

#[test]
fn values_against_themselves_have_cosine_exactly_one() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 8.0
    };
    let tol = Tolerance::for_class(OpClass::Elementwise, DType::F32, 1, 1.0);
    let mut below_one_apart = 0;
    for len in [1usize, 2, 3, 7, 100, 192, 1000, 4097] {
        for _ in 0..50 {
            let v: Vec<f32> = (0..len).map(|_| next()).collect();
            let t = Tensor::from_vec(vec![len], v.clone()).expect("a tensor of len values");
            let m = metrics(&t, &t, tol);
            assert_eq!(
                (m.max_abs, m.nmse, m.cosine, m.mismatches),
                (0.0, 0.0, 1.0, 0),
                "{len} values"
            );
            // How often the two square roots apart would have missed 1.
            let sw: f64 = v.iter().map(|&x| x as f64 * x as f64).sum();
            if sw / (sw.sqrt() * sw.sqrt()) != 1.0 {
                below_one_apart += 1;
            }
        }
    }
    eprintln!("{below_one_apart} of 400 value sets read below 1 with the square roots apart");
}
