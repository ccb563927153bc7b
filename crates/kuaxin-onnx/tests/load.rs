//! Valid models load with everything the compiler needs: nodes, attributes, initializer
//! values, declared types with symbolic dims, subgraphs and external data.
mod common;

use common::*;
use half::{bf16, f16};
use kuaxin_core::graph::{Attr, Dim, ValueType};
use kuaxin_core::{DType, Data, Tensor};
use kuaxin_onnx::prost::Message;
use kuaxin_onnx::proto::attribute_proto::AttributeType;
use kuaxin_onnx::proto::*;

/// x[batch, 3] * w -> Mul -> Gemm-ish node with every attribute kind -> If with a subgraph.
fn rich_model() -> ModelProto {
    let mut mul = node("Mul", "mul", &["x", "w"], &["xw"]);
    mul.domain = Some("ai.onnx".into());
    let mut k = node("Custom", "", &["xw", "", "b"], &["k"]);
    k.domain = Some("com.example".into());
    k.attribute = vec![
        AttributeProto {
            f: Some(0.5),
            ..attr("alpha", AttributeType::Float)
        },
        AttributeProto {
            i: Some(-2),
            ..attr("axis", AttributeType::Int)
        },
        AttributeProto {
            s: Some(b"same".to_vec()),
            ..attr("pad", AttributeType::String)
        },
        AttributeProto {
            floats: vec![1.0, 2.0],
            ..attr("scales", AttributeType::Floats)
        },
        AttributeProto {
            ints: vec![1, 2, 3],
            ..attr("perm", AttributeType::Ints)
        },
        AttributeProto {
            strings: vec![b"a".to_vec(), b"b".to_vec()],
            ..attr("names", AttributeType::Strings)
        },
        AttributeProto {
            t: Some(f32_tensor("tv", &[2], &[3.0, 4.0])),
            ..attr("value", AttributeType::Tensor)
        },
        AttributeProto {
            tp: Some(tensor_type(INT64, None)),
            ..attr("dtype", AttributeType::TypeProto)
        },
        // Declared INT: read `i` even though `f` is also (wrongly) set.
        AttributeProto {
            i: Some(7),
            f: Some(9.0),
            ..attr("declared", AttributeType::Int)
        },
        // IR version 1 style: no `type`, the field that is set decides.
        AttributeProto {
            name: Some("old_style".into()),
            ints: vec![4, 5],
            ..Default::default()
        },
    ];
    let then_g = graph(
        "then",
        vec![node("Relu", "inner", &["k"], &["t"])],
        vec![],
        vec![tensor_vi("t", FLOAT, &[])],
        vec![],
    );
    let else_g = graph(
        "else",
        vec![node("Neg", "inner2", &["w"], &["e"])],
        vec![],
        vec![tensor_vi("e", FLOAT, &[])],
        vec![],
    );
    let mut iff = node("If", "if", &["c"], &["out"]);
    iff.attribute = vec![
        AttributeProto {
            g: Some(then_g),
            ..attr("then_branch", AttributeType::Graph)
        },
        AttributeProto {
            g: Some(else_g),
            ..attr("else_branch", AttributeType::Graph)
        },
    ];
    let b = TensorProto {
        name: Some("b".into()),
        data_type: Some(INT64),
        dims: vec![2],
        raw_data: Some([5i64, -6].iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    };
    let h = TensorProto {
        name: Some("h".into()),
        data_type: Some(10),
        dims: vec![2],
        int32_data: vec![
            f16::from_f32(1.5).to_bits() as i32,
            f16::from_f32(-2.0).to_bits() as i32,
        ],
        ..Default::default()
    };
    let mut g = graph(
        "rich",
        vec![iff, k, mul], // deliberately not in topological order
        vec![
            tensor_vi("x", FLOAT, &[D::S("batch"), D::N(3)]),
            tensor_vi("c", 9, &[]),
            vi(
                "s",
                TypeProto {
                    value: Some(kuaxin_onnx::proto::type_proto::Value::SequenceType(
                        Box::new(kuaxin_onnx::proto::type_proto::Sequence {
                            elem_type: Some(Box::new(tensor_type(FLOAT, None))),
                        }),
                    )),
                    denotation: None,
                },
            ),
        ],
        vec![tensor_vi("out", FLOAT, &[D::S("batch"), D::U])],
        vec![f32_tensor("w", &[3], &[1.0, 2.0, 3.0]), b, h],
    );
    // A string-typed hint is dropped to Unknown rather than failing the model.
    g.value_info = vec![
        tensor_vi("xw", FLOAT, &[D::U, D::N(3)]),
        tensor_vi("str", 8, &[]),
    ];
    let mut m = model(g);
    m.opset_import = vec![
        OperatorSetIdProto {
            domain: Some("ai.onnx".into()),
            version: Some(13),
        },
        OperatorSetIdProto {
            domain: Some("com.example".into()),
            version: Some(1),
        },
    ];
    m.producer_version = Some("1.0".into());
    m
}

#[test]
fn small_model_round_trips() {
    let dir = scratch("round_trip");
    let path = dir.join("rich.onnx");
    std::fs::write(&path, rich_model().encode_to_vec()).unwrap();
    let m = kuaxin_onnx::load_model(&path).unwrap();

    assert_eq!(m.source, path.display().to_string());
    assert_eq!(m.producer, "kuaxin-tests 1.0");
    assert_eq!(m.opsets.get(""), Some(&13));
    assert_eq!(m.opsets.get("com.example"), Some(&1));
    assert_eq!(m.default_opset(), 13);

    let g = &m.graph;
    assert_eq!(g.name, "rich");
    assert_eq!(
        g.nodes
            .iter()
            .map(|n| n.op_type.as_str())
            .collect::<Vec<_>>(),
        ["If", "Custom", "Mul"]
    );
    assert_eq!(g.nodes[2].domain, "", "ai.onnx is the default domain");
    let k = &g.nodes[1];
    assert_eq!(k.domain, "com.example");
    assert_eq!(
        k.inputs,
        ["xw", "", "b"],
        "omitted optional inputs stay as empty names"
    );
    assert_eq!(k.input(1), None);
    assert_eq!(k.attr_float("alpha").unwrap(), Some(0.5));
    assert_eq!(k.attr_int("axis").unwrap(), Some(-2));
    assert_eq!(k.attr_string("pad").unwrap().as_deref(), Some("same"));
    assert_eq!(k.attr_floats("scales").unwrap(), Some(vec![1.0, 2.0]));
    assert_eq!(k.attr_ints("perm").unwrap(), Some(vec![1, 2, 3]));
    assert!(
        matches!(k.attr("names"), Some(Attr::Strings(v)) if v == &[b"a".to_vec(), b"b".to_vec()])
    );
    assert_eq!(
        *k.attr_tensor("value").unwrap().unwrap(),
        Tensor::from_vec(vec![2], vec![3.0f32, 4.0]).unwrap()
    );
    assert!(matches!(
        k.attr("dtype"),
        Some(Attr::Type(ValueType::Tensor {
            dtype: DType::I64,
            shape: None
        }))
    ));
    assert_eq!(k.attr_int("declared").unwrap(), Some(7));
    assert_eq!(k.attr_ints("old_style").unwrap(), Some(vec![4, 5]));

    let then_g = g.nodes[0].attr_graph("then_branch").unwrap().unwrap();
    assert_eq!(then_g.name, "then");
    assert_eq!(then_g.nodes[0].inputs, ["k"]);
    assert_eq!(
        then_g.outputs[0].ty,
        ValueType::Tensor {
            dtype: DType::F32,
            shape: Some(vec![])
        }
    );

    assert_eq!(
        g.inputs[0].ty,
        ValueType::Tensor {
            dtype: DType::F32,
            shape: Some(vec![Dim::Sym("batch".into()), Dim::Known(3)])
        }
    );
    assert_eq!(
        g.inputs[2].ty,
        ValueType::Sequence(Box::new(ValueType::Tensor {
            dtype: DType::F32,
            shape: None
        }))
    );
    assert_eq!(
        g.outputs[0].ty,
        ValueType::Tensor {
            dtype: DType::F32,
            shape: Some(vec![Dim::Sym("batch".into()), Dim::Unknown])
        }
    );
    assert_eq!(
        g.value_info[0].ty,
        ValueType::Tensor {
            dtype: DType::F32,
            shape: Some(vec![Dim::Unknown, Dim::Known(3)])
        }
    );
    assert_eq!(g.value_info[1].ty, ValueType::Unknown);

    assert_eq!(
        g.initializer("w").unwrap().data,
        Data::F32(vec![1.0, 2.0, 3.0])
    );
    assert_eq!(g.initializer("b").unwrap().data, Data::I64(vec![5, -6]));
    assert_eq!(
        g.initializer("h").unwrap().data,
        Data::F16(vec![f16::from_f32(1.5), f16::from_f32(-2.0)])
    );
    assert_eq!(g.parameter_count(), 7);
}

#[test]
fn subgraphs_may_read_and_pass_through_enclosing_values() {
    // then: output the outer `x` unchanged; else: a Loop-like nested body reading `x` two levels down.
    let inner = graph(
        "inner",
        vec![node("Neg", "neg", &["x"], &["nx"])],
        vec![],
        vec![tensor_vi("nx", FLOAT, &[])],
        vec![],
    );
    let mut mid = node("If", "mid", &["c"], &["e"]);
    mid.attribute = vec![
        AttributeProto {
            g: Some(inner.clone()),
            ..attr("then_branch", AttributeType::Graph)
        },
        AttributeProto {
            g: Some(inner),
            ..attr("else_branch", AttributeType::Graph)
        },
    ];
    let then_g = graph(
        "then",
        vec![],
        vec![],
        vec![tensor_vi("x", FLOAT, &[])],
        vec![],
    );
    let else_g = graph(
        "else",
        vec![mid],
        vec![],
        vec![tensor_vi("e", FLOAT, &[])],
        vec![],
    );
    let mut iff = node("If", "if", &["c"], &["out"]);
    iff.attribute = vec![
        AttributeProto {
            g: Some(then_g),
            ..attr("then_branch", AttributeType::Graph)
        },
        AttributeProto {
            g: Some(else_g),
            ..attr("else_branch", AttributeType::Graph)
        },
    ];
    let m = model(graph(
        "g",
        vec![iff],
        vec![tensor_vi("c", 9, &[]), tensor_vi("x", FLOAT, &[])],
        vec![tensor_vi("out", FLOAT, &[])],
        vec![],
    ));
    let m = kuaxin_onnx::load_model_bytes(&m.encode_to_vec(), "nested.onnx", None).unwrap();
    let mut ops = std::collections::BTreeMap::new();
    m.graph.op_histogram(&mut ops);
    assert_eq!(ops.get("If"), Some(&2));
    assert_eq!(ops.get("Neg"), Some(&2));
}

#[test]
fn bytes_and_file_loading_agree() {
    let bytes = rich_model().encode_to_vec();
    let m = kuaxin_onnx::load_model_bytes(&bytes, "mem", None).unwrap();
    assert_eq!(m.source, "mem");
    assert_eq!(m.graph.nodes.len(), 3);
}

#[test]
fn attribute_kind_mismatch_is_left_to_node_accessors() {
    let mut m = relu_model();
    m.graph.as_mut().unwrap().node[0]
        .attribute
        .push(AttributeProto {
            f: Some(0.1),
            ..attr("axis", AttributeType::Float)
        });
    let m = kuaxin_onnx::load_model_bytes(&m.encode_to_vec(), "m.onnx", None).unwrap();
    let e = m.graph.nodes[0].attr_int("axis").unwrap_err();
    // The accessor names the attribute and both kinds; the graph walker adds the node.
    assert!(
        e.message.contains("'axis'") && e.message.contains("int") && e.message.contains("float"),
        "{}",
        e.message
    );
}

#[test]
fn unknown_ops_and_domains_load() {
    let mut m = relu_model();
    let n = &mut m.graph.as_mut().unwrap().node[0];
    n.op_type = Some("NoSuchOp".into());
    n.domain = Some("no.such.domain".into());
    let m = kuaxin_onnx::load_model_bytes(&m.encode_to_vec(), "m.onnx", None).unwrap();
    assert_eq!(m.graph.nodes[0].op_type, "NoSuchOp");
}

fn external(name: &str, dtype: i32, dims: &[i64], kv: &[(&str, &str)]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(dtype),
        dims: dims.to_vec(),
        data_location: Some(1),
        external_data: kv
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.to_string()),
                value: Some(v.to_string()),
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn external_data_loads_relative_to_the_model() {
    let dir = scratch("external");
    // Like torch: one side file, tensors at page-aligned offsets, plus one in a subfolder.
    let mut data = vec![0u8; 4096];
    data.extend([1.0f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()));
    std::fs::write(dir.join("model.onnx.data"), &data).unwrap();
    std::fs::create_dir_all(dir.join("weights")).unwrap();
    std::fs::write(dir.join("weights/b.bin"), [1u8, 0, 1]).unwrap();
    let mut m = relu_model();
    let g = m.graph.as_mut().unwrap();
    g.initializer.push(external(
        "w",
        FLOAT,
        &[2, 2],
        &[
            ("location", "model.onnx.data"),
            ("offset", "4096"),
            ("length", "16"),
        ],
    ));
    g.initializer.push(external(
        "first",
        FLOAT,
        &[0],
        &[("location", "model.onnx.data")],
    ));
    g.initializer.push(external(
        "b",
        9,
        &[3],
        &[("location", "./weights/b.bin"), ("checksum", "ignored")],
    ));
    let path = dir.join("model.onnx");
    std::fs::write(&path, m.encode_to_vec()).unwrap();

    let m = kuaxin_onnx::load_model(&path).unwrap();
    let w = m.graph.initializer("w").unwrap();
    assert_eq!(w.shape, [2, 2]);
    assert_eq!(w.data, Data::F32(vec![1.0, 2.0, 3.0, 4.0]));
    assert_eq!(m.graph.initializer("first").unwrap().numel(), 0);
    assert_eq!(
        m.graph.initializer("b").unwrap().data,
        Data::Bool(vec![true, false, true])
    );

    // Same bytes, given the directory explicitly.
    let bytes = std::fs::read(&path).unwrap();
    assert!(kuaxin_onnx::load_model_bytes(&bytes, "model.onnx", Some(&dir)).is_ok());
}

fn typed(dtype: i32, dims: &[i64]) -> TensorProto {
    TensorProto {
        name: Some("t".into()),
        data_type: Some(dtype),
        dims: dims.to_vec(),
        ..Default::default()
    }
}

#[test]
fn typed_fields_follow_the_spec() {
    let cases: Vec<(TensorProto, Data)> = vec![
        (
            TensorProto {
                double_data: vec![1.5, -2.0],
                ..typed(11, &[2])
            },
            Data::F64(vec![1.5, -2.0]),
        ),
        (
            TensorProto {
                int32_data: vec![-1, 127],
                ..typed(3, &[2])
            },
            Data::I8(vec![-1, 127]),
        ),
        (
            TensorProto {
                int32_data: vec![-300],
                ..typed(5, &[1])
            },
            Data::I16(vec![-300]),
        ),
        (
            TensorProto {
                int32_data: vec![1 << 30],
                ..typed(6, &[1])
            },
            Data::I32(vec![1 << 30]),
        ),
        (
            TensorProto {
                int64_data: vec![i64::MIN],
                ..typed(7, &[1])
            },
            Data::I64(vec![i64::MIN]),
        ),
        (
            TensorProto {
                int32_data: vec![255],
                ..typed(2, &[1])
            },
            Data::U8(vec![255]),
        ),
        (
            TensorProto {
                int32_data: vec![65535],
                ..typed(4, &[1])
            },
            Data::U16(vec![65535]),
        ),
        (
            TensorProto {
                uint64_data: vec![u32::MAX as u64],
                ..typed(12, &[1])
            },
            Data::U32(vec![u32::MAX]),
        ),
        (
            TensorProto {
                uint64_data: vec![u64::MAX],
                ..typed(13, &[1])
            },
            Data::U64(vec![u64::MAX]),
        ),
        (
            TensorProto {
                int32_data: vec![0, 1, 2],
                ..typed(9, &[3])
            },
            Data::Bool(vec![false, true, true]),
        ),
        (
            TensorProto {
                int32_data: vec![bf16::from_f32(0.75).to_bits() as i32],
                ..typed(16, &[1])
            },
            Data::BF16(vec![bf16::from_f32(0.75)]),
        ),
        (
            TensorProto {
                float_data: vec![7.0],
                ..typed(1, &[])
            },
            Data::F32(vec![7.0]),
        ),
        (typed(1, &[0, 5]), Data::F32(vec![])),
    ];
    for (proto, want) in cases {
        let t = kuaxin_onnx::tensor_from_proto(&proto, None).unwrap();
        assert_eq!(t.data, want, "{proto:?}");
        assert_eq!(
            t.shape,
            proto.dims.iter().map(|&d| d as usize).collect::<Vec<_>>()
        );
    }
}

#[test]
fn raw_data_wins_over_typed_fields_and_is_little_endian() {
    let p = TensorProto {
        raw_data: Some(vec![1, 0, 0, 0, 0, 0, 0, 0x80]),
        ..typed(7, &[1])
    };
    assert_eq!(
        kuaxin_onnx::tensor_from_proto(&p, None).unwrap().data,
        Data::I64(vec![i64::MIN + 1])
    );
}

#[test]
fn save_tensor_pb_round_trips_every_dtype() {
    for dtype in DType::ALL {
        let t = Tensor::new(
            vec![2, 3],
            Data::from_f64_iter(dtype, (0..6).map(|i| i as f64 - 1.0)),
        )
        .unwrap();
        let bytes = kuaxin_onnx::save_tensor_pb(&t, "v");
        let proto = TensorProto::decode(bytes.as_slice()).unwrap();
        assert_eq!(proto.name(), "v");
        assert_eq!(kuaxin_onnx::dtype_from_onnx(proto.data_type()), Some(dtype));
        assert_eq!(
            kuaxin_onnx::tensor_from_proto(&proto, None).unwrap(),
            t,
            "{dtype}"
        );
    }
}

#[test]
fn dtype_names() {
    assert_eq!(kuaxin_onnx::dtype_name_onnx(1), "FLOAT");
    assert_eq!(kuaxin_onnx::dtype_name_onnx(22), "INT4");
    assert_eq!(kuaxin_onnx::dtype_from_onnx(16), Some(DType::BF16));
    assert_eq!(kuaxin_onnx::dtype_from_onnx(14), None);
    for code in [8, 14, 15, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26] {
        let p = TensorProto {
            raw_data: Some(vec![0; 4]),
            ..typed(code, &[1])
        };
        let e = kuaxin_onnx::tensor_from_proto(&p, None).unwrap_err();
        assert!(e.is_unsupported(), "{code}: {}", e.message);
        assert!(
            e.message.contains(kuaxin_onnx::dtype_name_onnx(code)),
            "{}",
            e.message
        );
    }
}
