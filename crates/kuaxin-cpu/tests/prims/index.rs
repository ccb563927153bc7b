use crate::common::*;
use kuaxin_core::prim::{Prim, ScatterReduction as SR};
use kuaxin_core::Data;

#[test]
fn gather_with_negative_indices() {
    let x = t(&[3, 2], vec![1.0f32, 1.2, 2.3, 3.4, 4.5, 5.7]);
    let i = t(&[2, 2], vec![0i64, 1, 1, 2]);
    let y = run1(Prim::Gather { axis: 0 }, &[&x, &i]);
    assert_eq!(y.shape, vec![2, 2, 2]);
    assert_eq!(f32s(&y), vec![1.0, 1.2, 2.3, 3.4, 2.3, 3.4, 4.5, 5.7]);
    let i = v1(vec![-1i32, 0]);
    let y = run1(Prim::Gather { axis: 1 }, &[&x, &i]);
    assert_eq!(
        (y.shape.clone(), f32s(&y)),
        (vec![3, 2], vec![1.2, 1.0, 3.4, 2.3, 5.7, 4.5])
    );
    let y = run1(Prim::Gather { axis: 0 }, &[&x, &scalar(2i64)]);
    assert_eq!((y.shape.clone(), f32s(&y)), (vec![2], vec![4.5, 5.7]));
}

#[test]
fn gather_out_of_range_is_an_error() {
    let x = t(&[3, 2], vec![0u8; 6]);
    let e = err(Prim::Gather { axis: 0 }, &[&x, &v1(vec![3i64])]);
    assert!(
        e.message.contains("index 3") && e.message.contains("size 3"),
        "{e}"
    );
    let e = err(Prim::Gather { axis: 1 }, &[&x, &v1(vec![-3i64])]);
    assert!(e.message.contains("-3"), "{e}");
    err(Prim::Gather { axis: 0 }, &[&x, &v1(vec![u64::MAX])]);
    err(Prim::Gather { axis: 0 }, &[&x, &v1(vec![i64::MIN])]);
}

#[test]
fn gather_elements() {
    let x = t(&[2, 2], vec![1i32, 2, 3, 4]);
    let i = t(&[2, 2], vec![0i64, 0, 1, 0]);
    assert_eq!(
        run1(Prim::GatherElements { axis: 1 }, &[&x, &i]).data,
        Data::I32(vec![1, 1, 4, 3])
    );
    let x = t(&[3, 3], vec![1i32, 2, 3, 4, 5, 6, 7, 8, 9]);
    let i = t(&[2, 3], vec![1i64, 2, 0, 2, 0, -3]);
    assert_eq!(
        run1(Prim::GatherElements { axis: 0 }, &[&x, &i]).data,
        Data::I32(vec![4, 8, 3, 7, 2, 3])
    );
    err(
        Prim::GatherElements { axis: 0 },
        &[&x, &t(&[1, 1], vec![3i64])],
    );
    err(
        Prim::GatherElements { axis: 0 },
        &[&x, &t(&[1, 4], vec![0i64; 4])],
    );
}

#[test]
fn gather_nd() {
    let x = t(&[2, 2], vec![0i32, 1, 2, 3]);
    let i = t(&[2, 2], vec![0i64, 0, 1, 1]);
    assert_eq!(
        run1(Prim::GatherNd { batch_dims: 0 }, &[&x, &i]).data,
        Data::I32(vec![0, 3])
    );
    let i = t(&[2, 1], vec![1i64, 0]);
    let y = run1(Prim::GatherNd { batch_dims: 0 }, &[&x, &i]);
    assert_eq!(
        (y.shape.clone(), y.data),
        (vec![2, 2], Data::I32(vec![2, 3, 0, 1]))
    );
    let x = t(&[2, 2, 2], (0..8).collect::<Vec<i32>>());
    let i = t(&[2, 1], vec![1i64, 0]);
    let y = run1(Prim::GatherNd { batch_dims: 1 }, &[&x, &i]);
    assert_eq!(
        (y.shape.clone(), y.data),
        (vec![2, 2], Data::I32(vec![2, 3, 4, 5]))
    );
    let i = t(&[2, 1, 2], vec![0i64, 1, 1, 0]);
    let y = run1(Prim::GatherNd { batch_dims: 0 }, &[&x, &i]);
    assert_eq!(
        (y.shape.clone(), y.data),
        (vec![2, 1, 2], Data::I32(vec![2, 3, 4, 5]))
    );
    err(
        Prim::GatherNd { batch_dims: 0 },
        &[&x, &t(&[1, 2], vec![0i64, 2])],
    );
}

#[test]
fn scatter_elements() {
    let x = t(&[3, 3], vec![0.0f32; 9]);
    let i = t(&[2, 3], vec![1i64, 0, 2, 0, 2, 1]);
    let u = t(&[2, 3], vec![1.0f32, 1.1, 1.2, 2.0, 2.1, 2.2]);
    let y = run1(
        Prim::ScatterElements {
            axis: 0,
            reduction: SR::None,
        },
        &[&x, &i, &u],
    );
    assert_eq!(f32s(&y), vec![2.0, 1.1, 0.0, 1.0, 0.0, 2.2, 0.0, 2.1, 1.2]);
    let x = t(&[1, 5], vec![1.0f32, 2.0, 3.0, 4.0, 5.0]);
    let i = t(&[1, 2], vec![1i64, -4]);
    let u = t(&[1, 2], vec![1.1f32, 2.1]);
    let add = run1(
        Prim::ScatterElements {
            axis: 1,
            reduction: SR::Add,
        },
        &[&x, &i, &u],
    );
    assert_close(
        &f32s(&add).iter().map(|&v| v as f64).collect::<Vec<_>>(),
        &[1.0, 5.2, 3.0, 4.0, 5.0],
        1e-6,
        0.0,
    );
    let mul = run1(
        Prim::ScatterElements {
            axis: 1,
            reduction: SR::Mul,
        },
        &[&x, &i, &u],
    );
    assert_close(
        &f32s(&mul).iter().map(|&v| v as f64).collect::<Vec<_>>(),
        &[1.0, 4.62, 3.0, 4.0, 5.0],
        1e-6,
        0.0,
    );
    let max = run1(
        Prim::ScatterElements {
            axis: 1,
            reduction: SR::Max,
        },
        &[&x, &i, &u],
    );
    assert_eq!(f32s(&max), vec![1.0, 2.1, 3.0, 4.0, 5.0]);
    let min = run1(
        Prim::ScatterElements {
            axis: 1,
            reduction: SR::Min,
        },
        &[&x, &i, &u],
    );
    assert_eq!(f32s(&min), vec![1.0, 1.1, 3.0, 4.0, 5.0]);
    let e = err(
        Prim::ScatterElements {
            axis: 1,
            reduction: SR::None,
        },
        &[&x, &t(&[1, 1], vec![5i64]), &t(&[1, 1], vec![0.0f32])],
    );
    assert!(e.message.contains("index 5"), "{e}");
}

#[test]
fn scatter_nd() {
    let x = v1((1..=8).collect::<Vec<i32>>());
    let i = t(&[4, 1], vec![4i64, 3, 1, 7]);
    let u = v1(vec![9i32, 10, 11, 12]);
    let y = run1(
        Prim::ScatterNd {
            reduction: SR::None,
        },
        &[&x, &i, &u],
    );
    assert_eq!(y.data, Data::I32(vec![1, 11, 3, 10, 9, 6, 7, 12]));
    let y = run1(Prim::ScatterNd { reduction: SR::Mul }, &[&x, &i, &u]);
    assert_eq!(y.data, Data::I32(vec![1, 22, 3, 40, 45, 6, 7, 96]));
    let y = run1(
        Prim::ScatterNd { reduction: SR::Add },
        &[&x, &t(&[2, 1], vec![0i64, 0]), &v1(vec![5i32, 6])],
    );
    assert_eq!(y.data, Data::I32(vec![12, 2, 3, 4, 5, 6, 7, 8]));
    // Slices: x [2, 2], index [[1]] replaces row 1.
    let x = t(&[2, 2], vec![1i64, 2, 3, 4]);
    let y = run1(
        Prim::ScatterNd { reduction: SR::Max },
        &[&x, &t(&[1, 1], vec![-1i64]), &t(&[1, 2], vec![0i64, 9])],
    );
    assert_eq!(i64s(&y), vec![1, 2, 3, 9]);
    err(
        Prim::ScatterNd {
            reduction: SR::None,
        },
        &[&x, &t(&[1, 1], vec![2i64]), &t(&[1, 2], vec![0i64, 9])],
    );
}
