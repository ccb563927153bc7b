//! Value files (`test_data_set_*/*.pb`): tensors, sequences and optionals.
mod common;

use common::*;
use kuaxin_core::graph::ValueType;
use kuaxin_core::{DType, HostValue, Tensor};
use kuaxin_onnx::prost::Message;
use kuaxin_onnx::proto::{OptionalProto, SequenceProto};
use std::path::Path;

fn f32s(v: &[f32]) -> Tensor {
    Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap()
}

fn seq_ty() -> ValueType {
    ValueType::Sequence(Box::new(ValueType::Unknown))
}

fn opt_ty() -> ValueType {
    ValueType::Optional(Box::new(ValueType::Unknown))
}

#[test]
fn tensor_value_file() {
    let dir = scratch("value_tensor");
    let t = Tensor::from_vec(vec![2, 2], vec![1i32, -2, 3, -4]).unwrap();
    let path = dir.join("input_0.pb");
    std::fs::write(&path, kuaxin_onnx::save_tensor_pb(&t, "x")).unwrap();
    assert_eq!(
        kuaxin_onnx::load_value_file(&path).unwrap(),
        HostValue::Tensor(t.clone())
    );
    let ty = ValueType::Tensor {
        dtype: DType::I32,
        shape: None,
    };
    assert_eq!(
        kuaxin_onnx::load_value_file_as(&path, &ty).unwrap(),
        HostValue::Tensor(t)
    );
}

#[test]
fn sequence_value_files() {
    let dir = scratch("value_sequence");
    let seq = SequenceProto {
        name: Some("s".into()),
        elem_type: Some(1),
        tensor_values: vec![
            f32_tensor("", &[2], &[1.0, 2.0]),
            f32_tensor("", &[1], &[3.0]),
        ],
        ..Default::default()
    };
    let path = dir.join("seq.pb");
    std::fs::write(&path, seq.encode_to_vec()).unwrap();
    let want = HostValue::Sequence(vec![
        HostValue::Tensor(f32s(&[1.0, 2.0])),
        HostValue::Tensor(f32s(&[3.0])),
    ]);
    assert_eq!(
        kuaxin_onnx::load_value_file_as(&path, &seq_ty()).unwrap(),
        want
    );

    let empty = SequenceProto {
        elem_type: Some(1),
        ..Default::default()
    };
    std::fs::write(&path, empty.encode_to_vec()).unwrap();
    assert_eq!(
        kuaxin_onnx::load_value_file_as(&path, &seq_ty()).unwrap(),
        HostValue::Sequence(vec![])
    );

    let nested = SequenceProto {
        elem_type: Some(3),
        sequence_values: vec![seq],
        ..Default::default()
    };
    std::fs::write(&path, nested.encode_to_vec()).unwrap();
    assert_eq!(
        kuaxin_onnx::load_value_file_as(&path, &seq_ty()).unwrap(),
        HostValue::Sequence(vec![want])
    );
}

#[test]
fn optional_value_files() {
    let dir = scratch("value_optional");
    let path = dir.join("opt.pb");
    let full = OptionalProto {
        elem_type: Some(1),
        tensor_value: Some(f32_tensor("o", &[1], &[5.0])),
        ..Default::default()
    };
    std::fs::write(&path, full.encode_to_vec()).unwrap();
    assert_eq!(
        kuaxin_onnx::load_value_file_as(&path, &opt_ty()).unwrap(),
        HostValue::Optional(Some(Box::new(HostValue::Tensor(f32s(&[5.0])))))
    );
    let empty = OptionalProto {
        elem_type: Some(1),
        ..Default::default()
    };
    std::fs::write(&path, empty.encode_to_vec()).unwrap();
    assert_eq!(
        kuaxin_onnx::load_value_file_as(&path, &opt_ty()).unwrap(),
        HostValue::Optional(None)
    );
    let of_seq = OptionalProto {
        elem_type: Some(3),
        sequence_value: Some(SequenceProto {
            elem_type: Some(1),
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::write(&path, of_seq.encode_to_vec()).unwrap();
    assert_eq!(
        kuaxin_onnx::load_value_file_as(&path, &opt_ty()).unwrap(),
        HostValue::Optional(Some(Box::new(HostValue::Sequence(vec![]))))
    );
}

#[test]
fn bad_value_files_name_the_file() {
    let dir = scratch("value_bad");
    let path = dir.join("broken.pb");
    std::fs::write(&path, [0x0a, 0xff, 0xff]).unwrap();
    for ty in [ValueType::Unknown, seq_ty(), opt_ty()] {
        let e = kuaxin_onnx::load_value_file_as(&path, &ty).unwrap_err();
        assert!(
            e.message.contains("broken.pb") && e.message.contains("not a valid"),
            "{}",
            e.message
        );
    }
    let e = kuaxin_onnx::load_value_file(&dir.join("missing.pb")).unwrap_err();
    assert!(e.message.contains("missing.pb"), "{}", e.message);
    // A short tensor names both the file and the tensor.
    let short = kuaxin_onnx::proto::TensorProto {
        raw_data: Some(vec![0; 3]),
        ..f32_tensor("t", &[1], &[])
    };
    std::fs::write(&path, short.encode_to_vec()).unwrap();
    let e = kuaxin_onnx::load_value_file(&path).unwrap_err();
    assert!(e.message.contains("broken.pb: tensor 't'"), "{}", e.message);
}

#[test]
fn real_backend_test_values_if_present() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/onnx-node-tests");
    let seq = root.join("test_sequence_insert_at_back/test_data_set_0/input_0.pb");
    if !seq.exists() {
        eprintln!("skipped: {} not found", seq.display());
        return;
    }
    assert!(
        matches!(kuaxin_onnx::load_value_file_as(&seq, &seq_ty()).unwrap(), HostValue::Sequence(v) if !v.is_empty())
    );
    let opt = root.join("test_optional_get_element_optional_tensor/test_data_set_0/input_0.pb");
    assert!(matches!(
        kuaxin_onnx::load_value_file_as(&opt, &opt_ty()).unwrap(),
        HostValue::Optional(Some(_))
    ));
    let add = root.join("test_add/test_data_set_0/input_0.pb");
    assert!(
        matches!(kuaxin_onnx::load_value_file(&add).unwrap(), HostValue::Tensor(t) if t.shape == [3, 4, 5])
    );
}
