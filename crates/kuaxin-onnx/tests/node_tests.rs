//! Loads every model (and its test data) of the official ONNX backend node tests, when they
//! have been unpacked into `target/onnx-node-tests/` (see the workspace scripts). A model or
//! value may be Unsupported (strings, float8, maps...), never Invalid: these files are
//! known-good, so an Invalid is a loader bug.
use kuaxin_core::graph::{Model, ValueType};
use std::path::{Path, PathBuf};

fn load_values(
    dir: &Path,
    m: &Model,
) -> Vec<(PathBuf, kuaxin_core::Result<kuaxin_core::HostValue>)> {
    let data = dir.join("test_data_set_0");
    let inputs = m.graph.real_inputs();
    let mut out = Vec::new();
    for (prefix, types) in [
        ("input", inputs.iter().map(|v| &v.ty).collect::<Vec<_>>()),
        ("output", m.graph.outputs.iter().map(|v| &v.ty).collect()),
    ] {
        for (i, ty) in types.into_iter().enumerate() {
            let p = data.join(format!("{prefix}_{i}.pb"));
            if p.exists() {
                let ty: &ValueType = ty;
                let r = kuaxin_onnx::load_value_file_as(&p, ty);
                out.push((p, r));
            }
        }
    }
    out
}

#[test]
fn onnx_backend_node_tests_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/onnx-node-tests");
    if !root.join("test_add/model.onnx").exists() {
        eprintln!("skipped: no ONNX node tests under {}", root.display());
        return;
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("read node test dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    dirs.sort();
    let (mut ok, mut unsupported, mut invalid) = (0, Vec::new(), Vec::new());
    let mut values = 0;
    for dir in &dirs {
        let mut errs = Vec::new();
        match kuaxin_onnx::load_model(&dir.join("model.onnx")) {
            Ok(m) => {
                for (_, r) in load_values(dir, &m) {
                    values += 1;
                    if let Err(e) = r {
                        errs.push(e);
                    }
                }
            }
            Err(e) => errs.push(e),
        }
        if errs.is_empty() {
            ok += 1;
        }
        for e in errs {
            if e.is_unsupported() {
                unsupported.push(e.message)
            } else {
                invalid.push(e.message)
            }
        }
    }
    println!(
        "{} node tests: {ok} fully loaded, {values} value files read",
        dirs.len()
    );
    println!("{} unsupported:", unsupported.len());
    for m in &unsupported {
        println!("  {m}");
    }
    assert!(
        invalid.is_empty(),
        "{} loader failures on known-good models:\n{}",
        invalid.len(),
        invalid.join("\n")
    );
}
