use crate::common::*;
use kuaxin_core::error::ErrorKind;
use kuaxin_core::prim::{BinaryOp, Prim, TensorType};
use kuaxin_core::{Backend, DType, DeviceTensor, Tensor};
use kuaxin_cpu::{host_tensor, wrap, CpuBackend};
use std::sync::Arc;

#[test]
fn backend_round_trip() {
    let cpu = CpuBackend::new(Some(2)).unwrap();
    assert_eq!(cpu.name(), "cpu");
    assert_eq!(cpu.threads(), 2);
    let a = cpu.upload(&v1(vec![1.0f32, 2.0])).unwrap();
    let b = cpu.upload(&v1(vec![10.0f32, 20.0])).unwrap();
    assert_eq!(a.ty, TensorType::new(DType::F32, vec![2]));
    let prim = Prim::Binary(BinaryOp::Add);
    let outs = cpu
        .execute(&prim, &[&a, &b], &[TensorType::new(DType::F32, vec![2])])
        .unwrap();
    cpu.synchronize().unwrap();
    assert_eq!(outs[0].ty, TensorType::new(DType::F32, vec![2]));
    assert_eq!(f32s(&cpu.download(&outs[0]).unwrap()), vec![11.0, 22.0]);
    assert_eq!(
        f32s(&host_tensor(&wrap(v1(vec![3.0f32]))).unwrap()),
        vec![3.0]
    );
    assert!(CpuBackend::new(None).unwrap().threads() >= 1);
}

#[test]
fn backend_rejects_foreign_tensors_and_wrong_outputs() {
    let cpu = CpuBackend::new(Some(1)).unwrap();
    let foreign = DeviceTensor {
        ty: TensorType::new(DType::F32, vec![1]),
        storage: Arc::new(5u32),
    };
    let e = cpu.download(&foreign).unwrap_err();
    assert!(e.message.contains("another back end"), "{e}");
    let a = cpu.upload(&v1(vec![1i32])).unwrap();
    let wrong = [TensorType::new(DType::I64, vec![1])];
    assert!(cpu
        .execute(&Prim::Binary(BinaryOp::Add), &[&a, &a], &wrong)
        .is_err());
}

#[test]
fn oversized_outputs_fail_before_allocating() {
    // A stride-0 view of one element to 2^34 elements: 64 GiB of f32, over the 8 GiB default.
    let x = v1(vec![1.0f32]);
    let e = err(
        Prim::View {
            shape: vec![1 << 17, 1 << 17],
            strides: vec![0, 0],
            offset: 0,
        },
        &[&x],
    );
    assert_eq!(e.kind, ErrorKind::Backend);
    assert!(
        e.message
            .starts_with("out of memory: tensor of 68719476736 bytes exceeds the limit"),
        "{e}"
    );
}

#[test]
fn malformed_tensors_are_errors() {
    let bad = Tensor {
        shape: vec![3],
        data: kuaxin_core::Data::F32(vec![1.0]),
    };
    err(Prim::Unary(kuaxin_core::prim::UnaryOp::Neg), &[&bad]);
    err(Prim::Unary(kuaxin_core::prim::UnaryOp::Neg), &[]);
    let e = kuaxin_cpu::eval(
        &Prim::Binary(BinaryOp::Add),
        &[&v1(vec![1i32]), &v1(vec![1i32])],
        &[TensorType::new(DType::I32, vec![2])],
    );
    assert!(e.is_err());
}
