use crate::common::*;
use half::f16;
use kuaxin_core::prim::{Prim, ReduceOp as R};
use kuaxin_core::{Data, Tensor};

fn red(op: R, axes: &[usize], x: &Tensor) -> Tensor {
    run1(
        Prim::Reduce {
            op,
            axes: axes.to_vec(),
        },
        &[x],
    )
}

#[test]
fn sum_over_axes_keeps_dims() {
    let x = t(&[2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = red(R::Sum, &[1], &x);
    assert_eq!((y.shape.clone(), f32s(&y)), (vec![2, 1], vec![6.0, 15.0]));
    let y = red(R::Sum, &[0], &x);
    assert_eq!(
        (y.shape.clone(), f32s(&y)),
        (vec![1, 3], vec![5.0, 7.0, 9.0])
    );
    let y = red(R::Sum, &[0, 1], &x);
    assert_eq!((y.shape.clone(), f32s(&y)), (vec![1, 1], vec![21.0]));
    let y = red(R::Sum, &[], &x);
    assert_eq!(f32s(&y), f32s(&x));
}

#[test]
fn sum_over_outer_and_inner_axes() {
    // x[i, j, k] = 12 i + 4 j + k; summing i and k: 60 + 32 j.
    let x = t(&[2, 3, 4], (0..24).map(|v| v as i64).collect());
    let y = red(R::Sum, &[0, 2], &x);
    assert_eq!(y.shape, vec![1, 3, 1]);
    assert_eq!(i64s(&y), vec![60, 92, 124]);
    // Summing j only: for each (i, k), 3 (12 i + k) + 12.
    let y = red(R::Sum, &[1], &x);
    assert_eq!(y.shape, vec![2, 1, 4]);
    assert_eq!(i64s(&y), vec![12, 15, 18, 21, 48, 51, 54, 57]);
}

#[test]
fn prod_max_min() {
    let x = t(&[2, 2], vec![2i32, 3, -4, 5]);
    assert_eq!(red(R::Prod, &[1], &x).data, Data::I32(vec![6, -20]));
    assert_eq!(red(R::Max, &[0], &x).data, Data::I32(vec![2, 5]));
    assert_eq!(red(R::Min, &[0, 1], &x).data, Data::I32(vec![-4]));
    let x = t(&[2, 2], vec![1.0f32, f32::NAN, 3.0, 2.0]);
    assert_same_f32(&f32s(&red(R::Max, &[1], &x)), &[f32::NAN, 3.0]);
    assert_same_f32(&f32s(&red(R::Min, &[1], &x)), &[f32::NAN, 2.0]);
    assert_same_f32(&f32s(&red(R::Max, &[0], &x)), &[3.0, f32::NAN]);
}

#[test]
fn empty_reductions_give_identities() {
    let x = Tensor::zeros(kuaxin_core::DType::F32, vec![2, 0]);
    assert_eq!(f32s(&red(R::Sum, &[1], &x)), vec![0.0, 0.0]);
    assert_eq!(f32s(&red(R::Prod, &[1], &x)), vec![1.0, 1.0]);
    assert_eq!(f32s(&red(R::Max, &[1], &x)), vec![f32::NEG_INFINITY; 2]);
    assert_eq!(f32s(&red(R::Min, &[1], &x)), vec![f32::INFINITY; 2]);
    let x = Tensor::zeros(kuaxin_core::DType::I32, vec![0, 3]);
    assert_eq!(red(R::Max, &[0], &x).data, Data::I32(vec![i32::MIN; 3]));
    assert_eq!(red(R::Min, &[0], &x).data, Data::I32(vec![i32::MAX; 3]));
    let y = red(R::Sum, &[1], &x);
    assert_eq!(y.shape, vec![0, 1]);
    let x = Tensor::zeros(kuaxin_core::DType::F16, vec![0]);
    assert_eq!(
        red(R::Max, &[0], &x).data,
        Data::F16(vec![f16::NEG_INFINITY])
    );
}

#[test]
fn float_sums_accumulate_in_f64() {
    // In f32, 1e8 + 1 == 1e8, so a naive f32 sum gives 1; the exact sum is 2.
    let x = v1(vec![1e8f32, 1.0, -1e8, 1.0]);
    assert_eq!(f32s(&red(R::Sum, &[0], &x)), vec![2.0]);
    let x = v1(vec![f16::from_f32(2048.0), f16::ONE, f16::ONE]);
    // f16 accumulation would stick at 2048 (2049 rounds to even); exact: 2050.
    assert_eq!(
        red(R::Sum, &[0], &x).data,
        Data::F16(vec![f16::from_f32(2050.0)])
    );
}

#[test]
fn integer_sums_wrap_and_bool_reduces_logically() {
    assert_eq!(
        red(R::Sum, &[0], &v1(vec![100i8, 100])).data,
        Data::I8(vec![-56])
    );
    assert_eq!(
        red(R::Prod, &[0], &v1(vec![16u8, 16])).data,
        Data::U8(vec![0])
    );
    let b = t(&[2, 2], vec![true, false, false, false]);
    assert_eq!(red(R::Max, &[1], &b).data, Data::Bool(vec![true, false]));
    assert_eq!(red(R::Min, &[0], &b).data, Data::Bool(vec![false, false]));
}

#[test]
fn large_reductions_in_parallel() {
    let cpu = kuaxin_cpu::CpuBackend::new(Some(2)).unwrap();
    let n = 1 << 20;
    let x = v1(vec![1.0f32; n]);
    let y = cpu.install(|| red(R::Sum, &[0], &x));
    assert_eq!(f32s(&y), vec![n as f32]);
    // [1024, 300] over axis 0 (kept inner dim) and axis 1 (reduced inner dim).
    let (r, c) = (1024, 300);
    let v: Vec<i64> = (0..r * c).map(|i| (i % 1000) as i64).collect();
    let x = t(&[r, c], v.clone());
    let col: Vec<i64> = (0..c).map(|j| (0..r).map(|i| v[i * c + j]).sum()).collect();
    let row: Vec<i64> = (0..r).map(|i| v[i * c..(i + 1) * c].iter().sum()).collect();
    assert_eq!(i64s(&cpu.install(|| red(R::Sum, &[0], &x))), col);
    assert_eq!(i64s(&cpu.install(|| red(R::Sum, &[1], &x))), row);
}

fn arg(max: bool, axis: usize, last: bool, x: &Tensor) -> Tensor {
    run1(
        Prim::ArgReduce {
            max,
            axis,
            select_last: last,
        },
        &[x],
    )
}

#[test]
fn argmax_argmin_ties_and_nan() {
    let x = t(&[2, 4], vec![1.0f32, 5.0, 5.0, 2.0, 7.0, 0.0, 0.0, 7.0]);
    let y = arg(true, 1, false, &x);
    assert_eq!((y.shape.clone(), i64s(&y)), (vec![2, 1], vec![1, 0]));
    assert_eq!(i64s(&arg(true, 1, true, &x)), vec![2, 3]);
    assert_eq!(i64s(&arg(false, 1, false, &x)), vec![0, 1]);
    assert_eq!(i64s(&arg(false, 1, true, &x)), vec![0, 2]);
    let y = arg(true, 0, false, &x);
    assert_eq!((y.shape.clone(), i64s(&y)), (vec![1, 4], vec![1, 0, 0, 1]));
    let x = v1(vec![1.0f32, f32::NAN, 3.0, f32::NAN]);
    assert_eq!(i64s(&arg(true, 0, false, &x)), vec![1]);
    assert_eq!(i64s(&arg(false, 0, false, &x)), vec![1]);
    assert_eq!(i64s(&arg(true, 0, true, &x)), vec![3]);
    assert_eq!(
        i64s(&arg(true, 0, false, &v1(vec![3u64, u64::MAX, 2]))),
        vec![1]
    );
}

fn cum(prod: bool, axis: usize, exclusive: bool, reverse: bool, x: &Tensor) -> Tensor {
    run1(
        Prim::Cumulative {
            prod,
            axis,
            exclusive,
            reverse,
        },
        &[x],
    )
}

#[test]
fn cumulative_sum_and_prod() {
    let x = v1(vec![1.0f64, 2.0, 3.0, 4.0]);
    assert_eq!(
        f64s(&cum(false, 0, false, false, &x)),
        vec![1.0, 3.0, 6.0, 10.0]
    );
    assert_eq!(
        f64s(&cum(false, 0, true, false, &x)),
        vec![0.0, 1.0, 3.0, 6.0]
    );
    assert_eq!(
        f64s(&cum(false, 0, false, true, &x)),
        vec![10.0, 9.0, 7.0, 4.0]
    );
    assert_eq!(
        f64s(&cum(false, 0, true, true, &x)),
        vec![9.0, 7.0, 4.0, 0.0]
    );
    assert_eq!(
        f64s(&cum(true, 0, false, false, &x)),
        vec![1.0, 2.0, 6.0, 24.0]
    );
    assert_eq!(
        f64s(&cum(true, 0, true, false, &x)),
        vec![1.0, 1.0, 2.0, 6.0]
    );
    let x = t(&[2, 3], vec![1i32, 2, 3, 4, 5, 6]);
    assert_eq!(
        cum(false, 0, false, false, &x).data,
        Data::I32(vec![1, 2, 3, 5, 7, 9])
    );
    assert_eq!(
        cum(false, 1, false, false, &x).data,
        Data::I32(vec![1, 3, 6, 4, 9, 15])
    );
    assert_eq!(
        cum(false, 0, false, false, &v1(vec![200u8, 100])).data,
        Data::U8(vec![200, 44])
    );
}
