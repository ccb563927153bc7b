//! Hostile and malformed models: each must give one clear error naming the file — never a
//! panic, an abort or a huge allocation.
//!
//! The corpus lives in `tests/bad-models/` at the workspace root, checked in so other
//! crates (and fuzzers) can use it. This test (re)creates any file of the table that is
//! missing, then loads *every* `.onnx` file there, including ones added by hand.
mod common;

use common::*;
use kuaxin_core::error::ErrorKind;
use kuaxin_onnx::prost::Message;
use kuaxin_onnx::proto::attribute_proto::AttributeType;
use kuaxin_onnx::proto::*;
use std::path::{Path, PathBuf};
use std::sync::Once;

/// `<workspace>/tests/bad-models`, created if missing.
fn corpus_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/bad-models");
    std::fs::create_dir_all(&dir).expect("create tests/bad-models");
    dir.canonicalize().expect("canonical tests/bad-models")
}

/// One corpus entry: the files to write (model first, then any side files), the error kind
/// and a fragment the message must contain.
struct Case {
    file: &'static str,
    build: fn() -> Vec<(&'static str, Vec<u8>)>,
    kind: ErrorKind,
    expect: &'static str,
}

fn one(name: &'static str, m: ModelProto) -> Vec<(&'static str, Vec<u8>)> {
    vec![(name, m.encode_to_vec())]
}

/// The relu model plus one initializer `w` (also a graph input, as ONNX allows).
fn with_initializer(t: TensorProto) -> ModelProto {
    let mut m = relu_model();
    edit(&mut m, |g| g.initializer.push(t));
    m
}

/// Applies `f` to the model's graph (the builders always set one).
fn edit(m: &mut ModelProto, f: impl FnOnce(&mut GraphProto)) {
    if let Some(g) = m.graph.as_mut() {
        f(g)
    }
}

fn f32_dims(name: &str, dims: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(FLOAT),
        dims: dims.to_vec(),
        ..Default::default()
    }
}

fn external(name: &str, dims: &[i64], kv: &[(&str, &str)]) -> TensorProto {
    TensorProto {
        data_location: Some(1),
        external_data: kv
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.to_string()),
                value: Some(v.to_string()),
            })
            .collect(),
        ..f32_dims(name, dims)
    }
}

fn if_node(then_branch: GraphProto) -> NodeProto {
    let mut n = node("If", "if", &["c"], &["out"]);
    n.attribute.push(AttributeProto {
        g: Some(then_branch.clone()),
        ..attr("then_branch", AttributeType::Graph)
    });
    n.attribute.push(AttributeProto {
        g: Some(then_branch),
        ..attr("else_branch", AttributeType::Graph)
    });
    n
}

fn if_model(then_branch: GraphProto) -> ModelProto {
    model(graph(
        "main",
        vec![if_node(then_branch)],
        vec![tensor_vi("c", 9, &[]), tensor_vi("x", FLOAT, &[D::N(2)])],
        vec![tensor_vi("out", FLOAT, &[D::N(2)])],
        vec![],
    ))
}

/// `depth` Ifs inside each other (then-branch only: both branches would double per level).
fn nested_ifs(depth: usize) -> GraphProto {
    let body = if depth == 0 {
        node("Relu", "r", &["x"], &["out"])
    } else {
        let mut n = node("If", "if", &["c"], &["out"]);
        n.attribute.push(AttributeProto {
            g: Some(nested_ifs(depth - 1)),
            ..attr("then_branch", AttributeType::Graph)
        });
        n
    };
    graph(
        "level",
        vec![body],
        vec![],
        vec![tensor_vi("out", FLOAT, &[])],
        vec![],
    )
}

fn garbage() -> Vec<u8> {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    (0..4096)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

fn cases() -> Vec<Case> {
    use ErrorKind::{Invalid, Io, Unsupported};
    vec![
        Case {
            file: "truncated.onnx",
            build: || {
                let b = with_initializer(f32_tensor("w", &[8], &[1.0; 8])).encode_to_vec();
                vec![("truncated.onnx", b[..b.len() / 2].to_vec())]
            },
            kind: Invalid,
            expect: "not a valid ONNX model",
        },
        Case {
            file: "garbage.onnx",
            build: || vec![("garbage.onnx", garbage())],
            kind: Invalid,
            expect: "",
        },
        Case {
            file: "empty.onnx",
            build: || vec![("empty.onnx", vec![])],
            kind: Invalid,
            expect: "no graph",
        },
        Case {
            file: "cycle.onnx",
            build: || {
                one(
                    "cycle.onnx",
                    model(graph(
                        "g",
                        vec![
                            node("Add", "a", &["x", "b"], &["a"]),
                            node("Relu", "b", &["a"], &["b"]),
                        ],
                        vec![tensor_vi("x", FLOAT, &[D::N(2)])],
                        vec![tensor_vi("b", FLOAT, &[D::N(2)])],
                        vec![],
                    )),
                )
            },
            kind: Invalid,
            expect: "cycle",
        },
        Case {
            file: "undefined_input.onnx",
            build: || {
                let mut m = relu_model();
                edit(&mut m, |g| g.node[0].input[0] = "nope".into());
                one("undefined_input.onnx", m)
            },
            kind: Invalid,
            expect: "'nope' is not defined",
        },
        Case {
            file: "undefined_output.onnx",
            build: || {
                let mut m = relu_model();
                edit(&mut m, |g| g.output[0].name = Some("z".into()));
                one("undefined_output.onnx", m)
            },
            kind: Invalid,
            expect: "'z' is never defined",
        },
        Case {
            file: "negative_dim.onnx",
            build: || {
                let mut m = relu_model();
                edit(&mut m, |g| {
                    g.input[0] = tensor_vi("x", FLOAT, &[D::N(3), D::N(-1)])
                });
                one("negative_dim.onnx", m)
            },
            kind: Invalid,
            expect: "value 'x': negative dimension -1",
        },
        Case {
            file: "negative_tensor_dim.onnx",
            build: || {
                one(
                    "negative_tensor_dim.onnx",
                    with_initializer(f32_dims("w", &[2, -3])),
                )
            },
            kind: Invalid,
            expect: "tensor 'w': negative dimension -3",
        },
        Case {
            file: "overflowing_dims.onnx",
            build: || {
                one(
                    "overflowing_dims.onnx",
                    with_initializer(f32_dims("w", &[1 << 40, 1 << 40])),
                )
            },
            kind: Invalid,
            expect: "overflow",
        },
        Case {
            file: "too_many_elements.onnx",
            build: || {
                let t = TensorProto {
                    data_type: Some(2),
                    ..f32_dims("w", &[1 << 20, 1 << 20])
                };
                one("too_many_elements.onnx", with_initializer(t))
            },
            kind: Invalid,
            expect: "limit of 2^34",
        },
        Case {
            file: "huge_initializer_100gib.onnx",
            build: || {
                one(
                    "huge_initializer_100gib.onnx",
                    with_initializer(f32_dims("w", &[25, 1024, 1024, 1024])),
                )
            },
            kind: Invalid,
            expect: "tensor 'w'",
        },
        Case {
            file: "huge_f64_initializer_32gib.onnx",
            build: || {
                let t = TensorProto {
                    data_type: Some(11),
                    ..f32_dims("w", &[1 << 32])
                };
                one("huge_f64_initializer_32gib.onnx", with_initializer(t))
            },
            kind: Invalid,
            expect: "16 GiB",
        },
        Case {
            file: "raw_data_short.onnx",
            build: || {
                let t = TensorProto {
                    raw_data: Some(vec![0; 8]),
                    ..f32_dims("w", &[4, 4])
                };
                one("raw_data_short.onnx", with_initializer(t))
            },
            kind: Invalid,
            expect: "need 64 bytes but raw_data holds 8",
        },
        Case {
            file: "typed_data_short.onnx",
            build: || {
                one(
                    "typed_data_short.onnx",
                    with_initializer(f32_tensor("w", &[4, 4], &[1.0, 2.0, 3.0])),
                )
            },
            kind: Invalid,
            expect: "float_data",
        },
        Case {
            file: "missing_data_type.onnx",
            build: || {
                let t = TensorProto {
                    data_type: None,
                    ..f32_tensor("w", &[1], &[1.0])
                };
                one("missing_data_type.onnx", with_initializer(t))
            },
            kind: Invalid,
            expect: "data_type is missing",
        },
        Case {
            file: "external_past_end.onnx",
            build: || {
                let m = with_initializer(external(
                    "w",
                    &[64],
                    &[("location", "external_past_end.bin")],
                ));
                vec![
                    ("external_past_end.onnx", m.encode_to_vec()),
                    ("external_past_end.bin", vec![7; 16]),
                ]
            },
            kind: Invalid,
            expect: "has only 16 bytes",
        },
        Case {
            file: "external_offset_past_end.onnx",
            build: || {
                let kv = [
                    ("location", "external_past_end.bin"),
                    ("offset", "18446744073709551615"),
                ];
                one(
                    "external_offset_past_end.onnx",
                    with_initializer(external("w", &[1], &kv)),
                )
            },
            kind: Invalid,
            expect: "has only 16 bytes",
        },
        Case {
            file: "external_outside_dir.onnx",
            build: || {
                let t = external(
                    "w",
                    &[4],
                    &[("location", "../bad-models/external_past_end.bin")],
                );
                one("external_outside_dir.onnx", with_initializer(t))
            },
            kind: Invalid,
            expect: "escapes the model directory",
        },
        Case {
            file: "external_absolute_path.onnx",
            build: || {
                one(
                    "external_absolute_path.onnx",
                    with_initializer(external("w", &[4], &[("location", "/etc/hostname")])),
                )
            },
            kind: Invalid,
            expect: "escapes the model directory",
        },
        Case {
            file: "external_missing_file.onnx",
            build: || {
                one(
                    "external_missing_file.onnx",
                    with_initializer(external("w", &[4], &[("location", "no_such_file.bin")])),
                )
            },
            kind: Io,
            expect: "cannot open external data file",
        },
        Case {
            file: "external_bad_length.onnx",
            build: || {
                let kv = [("location", "external_past_end.bin"), ("length", "12")];
                one(
                    "external_bad_length.onnx",
                    with_initializer(external("w", &[4], &kv)),
                )
            },
            kind: Invalid,
            expect: "has length 12 but the dims need 16 bytes",
        },
        Case {
            file: "external_overlapping_regions.onnx",
            build: || {
                // Two tensors on the same 16 bytes: the second exceeds the file's size in all.
                let mut m = with_initializer(external(
                    "w",
                    &[4],
                    &[("location", "external_past_end.bin")],
                ));
                edit(&mut m, |g| {
                    g.initializer.push(external(
                        "w2",
                        &[4],
                        &[("location", "./external_past_end.bin")],
                    ))
                });
                one("external_overlapping_regions.onnx", m)
            },
            kind: Invalid,
            expect: "external data regions overlap",
        },
        Case {
            file: "unsupported_dtype.onnx",
            build: || {
                let t = TensorProto {
                    data_type: Some(17),
                    raw_data: Some(vec![0, 0]),
                    ..f32_dims("w", &[2])
                };
                one("unsupported_dtype.onnx", with_initializer(t))
            },
            kind: Unsupported,
            expect: "tensor 'w': dtype FLOAT8E4M3FN is not supported",
        },
        Case {
            file: "string_initializer.onnx",
            build: || {
                let t = TensorProto {
                    data_type: Some(8),
                    string_data: vec![b"hi".to_vec()],
                    ..f32_dims("w", &[1])
                };
                one("string_initializer.onnx", with_initializer(t))
            },
            kind: Unsupported,
            expect: "dtype STRING is not supported",
        },
        Case {
            file: "sparse_initializer.onnx",
            build: || {
                let mut m = relu_model();
                edit(&mut m, |g| {
                    g.sparse_initializer.push(SparseTensorProto {
                        values: Some(f32_tensor("s", &[1], &[1.0])),
                        indices: Some(TensorProto {
                            data_type: Some(INT64),
                            dims: vec![1],
                            int64_data: vec![0],
                            ..Default::default()
                        }),
                        dims: vec![4],
                    })
                });
                one("sparse_initializer.onnx", m)
            },
            kind: Unsupported,
            expect: "sparse initializer 's'",
        },
        Case {
            file: "duplicate_outputs.onnx",
            build: || {
                let mut m = relu_model();
                edit(&mut m, |g| g.node.push(node("Relu", "r2", &["x"], &["y"])));
                one("duplicate_outputs.onnx", m)
            },
            kind: Invalid,
            expect: "produced by more than one node",
        },
        Case {
            file: "output_redefines_input.onnx",
            build: || {
                let mut m = relu_model();
                edit(&mut m, |g| {
                    g.input.push(tensor_vi("w", FLOAT, &[D::N(2)]));
                    g.node.push(node("Relu", "r2", &["w"], &["x"]))
                });
                one("output_redefines_input.onnx", m)
            },
            kind: Invalid,
            expect: "redefines a graph input",
        },
        Case {
            file: "duplicate_initializer.onnx",
            build: || {
                let mut m = with_initializer(f32_tensor("w", &[1], &[1.0]));
                edit(&mut m, |g| {
                    g.initializer.push(f32_tensor("w", &[1], &[2.0]))
                });
                one("duplicate_initializer.onnx", m)
            },
            kind: Invalid,
            expect: "initializer 'w' is defined twice",
        },
        Case {
            file: "empty_op_type.onnx",
            build: || {
                let mut m = relu_model();
                edit(&mut m, |g| g.node[0].op_type = Some(String::new()));
                one("empty_op_type.onnx", m)
            },
            kind: Invalid,
            expect: "op_type is empty",
        },
        Case {
            file: "bad_attribute_type.onnx",
            build: || {
                let mut m = relu_model();
                let a = AttributeProto {
                    name: Some("alpha".into()),
                    r#type: Some(99),
                    ..Default::default()
                };
                edit(&mut m, |g| g.node[0].attribute.push(a));
                one("bad_attribute_type.onnx", m)
            },
            kind: Invalid,
            expect: "node 'r' (Relu): attribute 'alpha': unknown attribute type code 99",
        },
        Case {
            file: "graph_attribute_without_graph.onnx",
            build: || {
                let mut m = if_model(graph("b", vec![], vec![], vec![], vec![]));
                edit(&mut m, |g| g.node[0].attribute[0].g = None);
                one("graph_attribute_without_graph.onnx", m)
            },
            kind: Invalid,
            expect: "field 'g' is absent",
        },
        Case {
            file: "subgraph_undefined_value.onnx",
            build: || {
                let body = graph(
                    "then",
                    vec![node("Relu", "inner", &["ghost"], &["t"])],
                    vec![],
                    vec![tensor_vi("t", FLOAT, &[D::N(2)])],
                    vec![],
                );
                one("subgraph_undefined_value.onnx", if_model(body))
            },
            kind: Invalid,
            expect: "'ghost' is not defined",
        },
        Case {
            file: "subgraph_undefined_output.onnx",
            build: || {
                let body = graph(
                    "then",
                    vec![],
                    vec![],
                    vec![tensor_vi("nowhere", FLOAT, &[D::N(2)])],
                    vec![],
                );
                one("subgraph_undefined_output.onnx", if_model(body))
            },
            kind: Invalid,
            expect: "'nowhere' is not defined",
        },
        Case {
            file: "subgraph_cycle.onnx",
            build: || {
                let body = graph(
                    "then",
                    vec![
                        node("Add", "p", &["x", "q"], &["p"]),
                        node("Relu", "q", &["p"], &["q"]),
                    ],
                    vec![],
                    vec![tensor_vi("q", FLOAT, &[D::N(2)])],
                    vec![],
                );
                one("subgraph_cycle.onnx", if_model(body))
            },
            kind: Invalid,
            expect: "graph 'then' has a cycle",
        },
        Case {
            file: "deeply_nested_subgraphs.onnx",
            build: || {
                let mut m = relu_model();
                m.graph = Some(nested_ifs(60));
                one("deeply_nested_subgraphs.onnx", m)
            },
            kind: Invalid,
            expect: "recursion limit",
        },
    ]
}

/// Writes the files of every case that are not in the corpus yet (existing files are kept:
/// the corpus is checked in and may hold hand-made entries).
fn ensure_corpus() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let dir = corpus_dir();
        for case in cases() {
            for (name, bytes) in (case.build)() {
                let path = dir.join(name);
                if !path.exists() {
                    std::fs::write(&path, bytes).expect("write corpus file");
                }
            }
        }
    });
}

fn load_no_panic(path: &Path) -> kuaxin_core::Result<kuaxin_core::graph::Model> {
    match std::panic::catch_unwind(|| kuaxin_onnx::load_model(path)) {
        Ok(r) => r,
        Err(_) => panic!("load_model panicked on {}", path.display()),
    }
}

#[test]
fn every_corpus_file_fails_cleanly_naming_the_file() {
    ensure_corpus();
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("read tests/bad-models")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        // run_*.onnx load fine and fail only when run (scripts/check-bad-models.sh runs them).
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .starts_with("run_")
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= cases().len(),
        "corpus has only {} models",
        files.len()
    );
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        match load_no_panic(&path) {
            Ok(_) => panic!("{name}: loaded without error"),
            Err(e) => {
                println!("{name}: {:?}: {}", e.kind, e.message);
                assert!(
                    e.message.contains(&name),
                    "{name}: message does not name the file: {}",
                    e.message
                );
            }
        }
    }
}

#[test]
fn each_defect_is_reported_as_itself() {
    ensure_corpus();
    for case in cases() {
        let e = match load_no_panic(&corpus_dir().join(case.file)) {
            Ok(_) => panic!("{}: loaded without error", case.file),
            Err(e) => e,
        };
        assert_eq!(e.kind, case.kind, "{}: {}", case.file, e.message);
        assert!(
            e.message.contains(case.expect),
            "{}: expected {:?} in: {}",
            case.file,
            case.expect,
            e.message
        );
    }
}

#[test]
fn external_data_without_a_directory_is_an_error() {
    let m = with_initializer(external("w", &[4], &[("location", "w.bin")]));
    let e = kuaxin_onnx::load_model_bytes(&m.encode_to_vec(), "mem.onnx", None)
        .expect_err("needs a dir");
    assert!(e.message.starts_with("mem.onnx: "), "{}", e.message);
    assert!(
        e.message.contains("needs the model's directory"),
        "{}",
        e.message
    );
}

#[test]
fn missing_model_file_is_an_io_error_naming_it() {
    let e = kuaxin_onnx::load_model(Path::new("/nonexistent/dir/model.onnx")).expect_err("missing");
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(
        e.message.contains("/nonexistent/dir/model.onnx"),
        "{}",
        e.message
    );
}

#[test]
fn every_truncation_of_a_valid_model_fails_or_loads_without_panicking() {
    // Cutting a model anywhere must never panic; most cuts are errors.
    let b = with_initializer(f32_tensor("w", &[3], &[1.0, 2.0, 3.0])).encode_to_vec();
    assert!(kuaxin_onnx::load_model_bytes(&b, "full.onnx", None).is_ok());
    let mut errors = 0;
    for n in 0..b.len() {
        if kuaxin_onnx::load_model_bytes(&b[..n], "cut.onnx", None).is_err() {
            errors += 1;
        }
    }
    assert!(
        errors > b.len() / 2,
        "only {errors} of {} truncations failed",
        b.len()
    );
}
