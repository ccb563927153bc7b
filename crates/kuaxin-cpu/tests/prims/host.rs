use crate::common::*;
use kuaxin_core::prim::{HostOp, Prim};
use kuaxin_core::{Data, Tensor};

fn host(op: HostOp, ins: &[&Tensor]) -> Vec<Tensor> {
    run(Prim::Host(op), ins)
}

#[test]
fn nonzero() {
    let x = t(&[2, 2], vec![1i32, 0, 1, 1]);
    let y = &host(HostOp::NonZero, &[&x])[0];
    assert_eq!(
        (y.shape.clone(), i64s(y)),
        (vec![2, 3], vec![0, 1, 1, 0, 0, 1])
    );
    let y = &host(HostOp::NonZero, &[&v1(vec![0.0f32, f32::NAN, -0.0, 2.0])])[0];
    assert_eq!((y.shape.clone(), i64s(y)), (vec![1, 2], vec![1, 3]));
    let y = &host(HostOp::NonZero, &[&scalar(true)])[0];
    assert_eq!((y.shape.clone(), i64s(y)), (vec![1, 1], vec![0]));
    let y = &host(HostOp::NonZero, &[&t(&[2, 3], vec![false; 6])])[0];
    assert_eq!(y.shape, vec![2, 0]);
}

fn unique(x: &Tensor, axis: Option<usize>, sorted: bool) -> (Tensor, Vec<i64>, Vec<i64>, Vec<i64>) {
    let out = host(HostOp::Unique { axis, sorted }, &[x]);
    (out[0].clone(), i64s(&out[1]), i64s(&out[2]), i64s(&out[3]))
}

#[test]
fn unique_flat() {
    let x = v1(vec![2.0f32, 1.0, 1.0, 3.0, 4.0, 3.0]);
    let (y, idx, inv, cnt) = unique(&x, None, false);
    assert_eq!(f32s(&y), vec![2.0, 1.0, 3.0, 4.0]);
    assert_eq!(
        (idx, inv, cnt),
        (vec![0, 1, 3, 4], vec![0, 1, 1, 2, 3, 2], vec![1, 2, 2, 1])
    );
    let (y, idx, inv, cnt) = unique(&x, None, true);
    assert_eq!(f32s(&y), vec![1.0, 2.0, 3.0, 4.0]);
    assert_eq!(
        (idx, inv, cnt),
        (vec![1, 0, 3, 4], vec![1, 0, 0, 2, 3, 2], vec![2, 1, 2, 1])
    );
    let x = t(&[2, 2], vec![3i64, -1, 3, 3]);
    let (y, idx, inv, cnt) = unique(&x, None, true);
    assert_eq!((y.shape.clone(), i64s(&y)), (vec![2], vec![-1, 3]));
    assert_eq!((idx, inv, cnt), (vec![1, 0], vec![1, 0, 1, 1], vec![1, 3]));
}

#[test]
fn unique_along_axis() {
    let x = t(&[3, 3], vec![1i32, 0, 0, 1, 0, 0, 2, 3, 4]);
    let (y, idx, inv, cnt) = unique(&x, Some(0), true);
    assert_eq!(
        (y.shape.clone(), y.data),
        (vec![2, 3], Data::I32(vec![1, 0, 0, 2, 3, 4]))
    );
    assert_eq!((idx, inv, cnt), (vec![0, 2], vec![0, 0, 1], vec![2, 1]));
    // ONNX test_unique_sorted_with_axis_3d: slices along axis 1.
    let x = t(
        &[2, 4, 2],
        vec![
            1.0f32, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 2.0, 1.0, 0.0, 1.0,
        ],
    );
    let (y, idx, inv, cnt) = unique(&x, Some(1), true);
    assert_eq!(y.shape, vec![2, 3, 2]);
    assert_eq!(
        f32s(&y),
        vec![0.0, 1.0, 1.0, 1.0, 2.0, 1.0, 0.0, 1.0, 1.0, 1.0, 2.0, 1.0]
    );
    assert_eq!(
        (idx, inv, cnt),
        (vec![1, 0, 2], vec![1, 0, 2, 0], vec![2, 1, 1])
    );
    let (y, idx, _, _) = unique(&x, Some(1), false);
    assert_eq!(
        f32s(&y),
        vec![1.0, 1.0, 0.0, 1.0, 2.0, 1.0, 1.0, 1.0, 0.0, 1.0, 2.0, 1.0]
    );
    assert_eq!(idx, vec![0, 1, 2]);
}

fn topk(x: &Tensor, k: usize, axis: usize, largest: bool) -> (Tensor, Vec<i64>) {
    let out = host(
        HostOp::TopK {
            k,
            axis,
            largest,
            sorted: true,
        },
        &[x],
    );
    (out[0].clone(), i64s(&out[1]))
}

#[test]
fn topk_largest_smallest_ties() {
    let x = t(&[3, 4], (0..12).map(|v| v as f32).collect());
    let (v, i) = topk(&x, 3, 1, true);
    assert_eq!(v.shape, vec![3, 3]);
    assert_eq!(
        f32s(&v),
        vec![3.0, 2.0, 1.0, 7.0, 6.0, 5.0, 11.0, 10.0, 9.0]
    );
    assert_eq!(i, vec![3, 2, 1, 3, 2, 1, 3, 2, 1]);
    let (v, i) = topk(&x, 2, 0, false);
    assert_eq!(v.shape, vec![2, 4]);
    assert_eq!(f32s(&v), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]);
    assert_eq!(i, vec![0, 0, 0, 0, 1, 1, 1, 1]);
    let x = v1(vec![1i64, 3, 3, 2, 3]);
    let (v, i) = topk(&x, 2, 0, true);
    assert_eq!((i64s(&v), i), (vec![3, 3], vec![1, 2]));
    let (v, i) = topk(&x, 5, 0, false);
    assert_eq!((i64s(&v), i), (vec![1, 2, 3, 3, 3], vec![0, 3, 1, 2, 4]));
    let x = v1(vec![1.0f32, f32::NAN, 5.0]);
    let (v, i) = topk(&x, 2, 0, true);
    assert!(f32s(&v)[0].is_nan());
    assert_eq!(i, vec![1, 2]);
    let (v, _) = topk(&x, 0, 0, true);
    assert_eq!(v.shape, vec![0]);
}

#[test]
fn topk_k_too_large_is_an_error() {
    let e = kuaxin_cpu::eval_infer(
        &Prim::Host(HostOp::TopK {
            k: 4,
            axis: 0,
            largest: true,
            sorted: true,
        }),
        &[&v1(vec![1i32, 2, 3])],
    )
    .unwrap_err();
    assert!(e.message.contains("k = 4"), "{e}");
}

fn nms(
    boxes: Vec<f32>,
    scores: Vec<f32>,
    classes: usize,
    max_out: i64,
    iou: f32,
    score: f32,
    center: bool,
) -> Vec<i64> {
    let n = boxes.len() / 4;
    let b = t(&[1, n, 4], boxes);
    let s = t(&[1, classes, n], scores);
    let out = host(
        HostOp::NonMaxSuppression {
            center_point_box: center,
        },
        &[&b, &s, &v1(vec![max_out]), &v1(vec![iou]), &v1(vec![score])],
    );
    assert_eq!(out[0].shape[1], 3);
    i64s(&out[0])
}

const BOXES: [f32; 24] = [
    0.0, 0.0, 1.0, 1.0, 0.0, 0.1, 1.0, 1.1, 0.0, -0.1, 1.0, 0.9, 0.0, 10.0, 1.0, 11.0, 0.0, 10.1,
    1.0, 11.1, 0.0, 100.0, 1.0, 101.0,
];
const SCORES: [f32; 6] = [0.9, 0.75, 0.6, 0.95, 0.5, 0.3];

#[test]
fn nms_onnx_cases() {
    // test_nonmaxsuppression_suppress_by_IOU
    assert_eq!(
        nms(BOXES.to_vec(), SCORES.to_vec(), 1, 3, 0.5, 0.0, false),
        vec![0, 0, 3, 0, 0, 0, 0, 0, 5]
    );
    // ..._suppress_by_IOU_and_scores
    assert_eq!(
        nms(BOXES.to_vec(), SCORES.to_vec(), 1, 3, 0.5, 0.4, false),
        vec![0, 0, 3, 0, 0, 0]
    );
    // ..._limit_output_size
    assert_eq!(
        nms(BOXES.to_vec(), SCORES.to_vec(), 1, 2, 0.5, 0.0, false),
        vec![0, 0, 3, 0, 0, 0]
    );
    // ..._flipped_coordinates
    let flipped = vec![
        1.0, 1.0, 0.0, 0.0, 0.0, 0.1, 1.0, 1.1, 0.0, 0.9, 1.0, -0.1, 0.0, 10.0, 1.0, 11.0, 1.0,
        10.1, 0.0, 11.1, 1.0, 101.0, 0.0, 100.0,
    ];
    assert_eq!(
        nms(flipped, SCORES.to_vec(), 1, 3, 0.5, 0.0, false),
        vec![0, 0, 3, 0, 0, 0, 0, 0, 5]
    );
    // ..._center_point_box_format
    let center = vec![
        0.5, 0.5, 1.0, 1.0, 0.5, 0.6, 1.0, 1.0, 0.5, 0.4, 1.0, 1.0, 0.5, 10.5, 1.0, 1.0, 0.5, 10.6,
        1.0, 1.0, 0.5, 100.5, 1.0, 1.0,
    ];
    assert_eq!(
        nms(center, SCORES.to_vec(), 1, 3, 0.5, 0.0, true),
        vec![0, 0, 3, 0, 0, 0, 0, 0, 5]
    );
    // ..._two_classes
    let two: Vec<f32> = SCORES.iter().chain(SCORES.iter()).copied().collect();
    assert_eq!(
        nms(BOXES.to_vec(), two, 2, 2, 0.5, 0.0, false),
        vec![0, 0, 3, 0, 0, 0, 0, 1, 3, 0, 1, 0]
    );
    // ..._identical_boxes: ten copies, one survives.
    let same: Vec<f32> = (0..10).flat_map(|_| [0.0f32, 0.0, 1.0, 1.0]).collect();
    assert_eq!(
        nms(same, vec![0.9; 10], 1, 3, 0.5, 0.0, false),
        vec![0, 0, 0]
    );
    // max_output_boxes_per_class 0 selects nothing.
    assert_eq!(
        nms(BOXES.to_vec(), SCORES.to_vec(), 1, 0, 0.5, 0.0, false),
        Vec::<i64>::new()
    );
}

#[test]
fn host_ops_check_arity() {
    err(Prim::Host(HostOp::NonZero), &[]);
    err(
        Prim::Host(HostOp::NonMaxSuppression {
            center_point_box: false,
        }),
        &[&v1(vec![1.0f32])],
    );
}
