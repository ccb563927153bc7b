#![allow(dead_code)]
use kuaxin_core::prim::Prim;
use kuaxin_core::tensor::Element;
use kuaxin_core::{Data, Error, Tensor};

pub fn t<T: Element>(shape: &[usize], v: Vec<T>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

pub fn v1<T: Element>(v: Vec<T>) -> Tensor {
    let n = v.len();
    t(&[n], v)
}

pub fn scalar<T: Element>(v: T) -> Tensor {
    Tensor::scalar(v)
}

pub fn run(prim: Prim, ins: &[&Tensor]) -> Vec<Tensor> {
    kuaxin_cpu::eval_infer(&prim, ins).unwrap_or_else(|e| panic!("{prim:?} failed: {e}"))
}

pub fn run1(prim: Prim, ins: &[&Tensor]) -> Tensor {
    let mut out = run(prim, ins);
    assert_eq!(out.len(), 1);
    out.remove(0)
}

pub fn err(prim: Prim, ins: &[&Tensor]) -> Error {
    match kuaxin_cpu::eval_infer(&prim, ins) {
        Ok(out) => panic!("{prim:?} should fail, gave {out:?}"),
        Err(e) => e,
    }
}

pub fn f32s(t: &Tensor) -> Vec<f32> {
    match &t.data {
        Data::F32(v) => v.clone(),
        d => panic!("expected f32, got {}", d.dtype()),
    }
}

pub fn f64s(t: &Tensor) -> Vec<f64> {
    match &t.data {
        Data::F64(v) => v.clone(),
        d => panic!("expected f64, got {}", d.dtype()),
    }
}

pub fn i64s(t: &Tensor) -> Vec<i64> {
    match &t.data {
        Data::I64(v) => v.clone(),
        d => panic!("expected i64, got {}", d.dtype()),
    }
}

pub fn bools(t: &Tensor) -> Vec<bool> {
    match &t.data {
        Data::Bool(v) => v.clone(),
        d => panic!("expected bool, got {}", d.dtype()),
    }
}

/// Element-wise equality that treats NaN as equal to NaN (and -0 as equal to +0).
pub fn same_f64(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x.is_nan() && y.is_nan()) || x == y)
}

pub fn assert_same_f32(got: &[f32], want: &[f32]) {
    let g: Vec<f64> = got.iter().map(|&x| x as f64).collect();
    let w: Vec<f64> = want.iter().map(|&x| x as f64).collect();
    assert!(same_f64(&g, &w), "got {got:?}, want {want:?}");
}

pub fn assert_close(got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(got.len(), want.len(), "length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || (g - w).abs() <= atol + rtol * w.abs();
        assert!(
            ok,
            "element {i}: got {g}, want {w} (rtol {rtol}, atol {atol})"
        );
    }
}

/// Deterministic pseudo-random numbers (SplitMix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform()).collect()
    }
}
