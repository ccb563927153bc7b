//! Shape rules of the primitives: the preconditions every back end relies on.
use kuaxin_core::prim::{BinaryOp, Prim, ReduceOp, TensorType};
use kuaxin_core::DType;

fn t(dtype: DType, shape: &[usize]) -> TensorType {
    TensorType::new(dtype, shape.to_vec())
}

#[test]
fn binary_needs_identical_operands() {
    let ok = Prim::Binary(BinaryOp::Lt)
        .infer(&[t(DType::F32, &[2, 3]), t(DType::F32, &[2, 3])])
        .unwrap();
    assert_eq!(ok, vec![t(DType::Bool, &[2, 3])]);
    assert!(Prim::Binary(BinaryOp::Add)
        .infer(&[t(DType::F32, &[2, 3]), t(DType::F32, &[3])])
        .is_err());
    assert!(Prim::Binary(BinaryOp::Add)
        .infer(&[t(DType::F32, &[2]), t(DType::I64, &[2])])
        .is_err());
}

#[test]
fn views_may_not_read_outside_their_input() {
    let x = t(DType::F32, &[6]);
    let transpose = Prim::View {
        shape: vec![3, 2],
        strides: vec![1, 3],
        offset: 0,
    };
    assert_eq!(
        transpose.infer(&[x.clone()]).unwrap(),
        vec![t(DType::F32, &[3, 2])]
    );
    let reversed = Prim::View {
        shape: vec![6],
        strides: vec![-1],
        offset: 5,
    };
    assert!(reversed.infer(&[x.clone()]).is_ok());
    let outside = Prim::View {
        shape: vec![4],
        strides: vec![2],
        offset: 0,
    };
    assert!(outside.infer(&[x.clone()]).is_err());
    let before = Prim::View {
        shape: vec![2],
        strides: vec![-1],
        offset: 0,
    };
    assert!(before.infer(&[x]).is_err());
}

#[test]
fn hostile_sizes_are_rejected() {
    let x = t(DType::F32, &[1]);
    let huge = Prim::View {
        shape: vec![1 << 30, 1 << 30],
        strides: vec![0, 0],
        offset: 0,
    };
    assert!(huge
        .infer(&[x])
        .unwrap_err()
        .to_string()
        .contains("too large"));
}

#[test]
fn matmul_conv_and_reduce_shapes() {
    let mm = Prim::MatMul
        .infer(&[t(DType::F32, &[4, 2, 3]), t(DType::F32, &[4, 3, 5])])
        .unwrap();
    assert_eq!(mm, vec![t(DType::F32, &[4, 2, 5])]);
    assert!(Prim::MatMul
        .infer(&[t(DType::F32, &[2, 3]), t(DType::F32, &[4, 5])])
        .is_err());
    let conv = Prim::Conv {
        strides: vec![2, 2],
        dilations: vec![1, 1],
        groups: 1,
    };
    let out = conv
        .infer(&[t(DType::F32, &[1, 3, 9, 9]), t(DType::F32, &[8, 3, 3, 3])])
        .unwrap();
    // (9 - 3) / 2 + 1 = 4
    assert_eq!(out, vec![t(DType::F32, &[1, 8, 4, 4])]);
    let r = Prim::Reduce {
        op: ReduceOp::Sum,
        axes: vec![0, 2],
    }
    .infer(&[t(DType::F16, &[2, 3, 4])])
    .unwrap();
    assert_eq!(r, vec![t(DType::F16, &[1, 3, 1])]);
    assert!(Prim::Reduce {
        op: ReduceOp::Sum,
        axes: vec![3]
    }
    .infer(&[t(DType::F16, &[2, 3, 4])])
    .is_err());
}
