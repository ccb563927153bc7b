//! The conformance harness: runs ONNX backend node tests (model.onnx + test_data_set_N with
//! input_K.pb / output_K.pb) on a device and compares with the expected outputs.
use crate::compare::{compare_values, op_class, OpClass};
use crate::session::Session;
use kuaxin_core::graph::{Attr, Graph, Model};
use kuaxin_core::{Backend, Error, HostValue, Result};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    /// Unsupported op or dtype: not a pass.
    Skip,
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub status: Status,
    pub reason: String,
    pub millis: f64,
    /// Op types of the test's model (subgraphs included), when it loaded.
    pub ops: Vec<String>,
    /// Nodes that ran on the host.
    pub host_ops: Vec<String>,
}

/// What a run learnt about a test besides its outcome.
#[derive(Default)]
struct CaseInfo {
    ops: Vec<String>,
    host_ops: Vec<String>,
}

/// Test folders under `suite` (those holding a model.onnx), sorted by name.
pub fn list_cases(suite: &Path) -> Result<Vec<PathBuf>> {
    let rd =
        std::fs::read_dir(suite).map_err(|e| Error::io(format!("{}: {e}", suite.display())))?;
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").is_file())
        .collect();
    v.sort();
    Ok(v)
}

fn graph_class(g: &Graph, class: &mut OpClass) {
    for n in &g.nodes {
        *class = (*class).max(op_class(&n.op_type));
        for a in n.attrs.values() {
            match a {
                Attr::Graph(sg) => graph_class(sg, class),
                Attr::Graphs(gs) => gs.iter().for_each(|sg| graph_class(sg, class)),
                _ => {}
            }
        }
    }
}

/// The loosest op class in the model decides the tolerance of its outputs.
pub fn model_class(m: &Model) -> OpClass {
    let mut c = OpClass::Exact;
    graph_class(&m.graph, &mut c);
    c
}

fn data_sets(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_dir()
                        && p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("test_data_set_"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn largest_input(inputs: &[(String, HostValue)]) -> usize {
    inputs
        .iter()
        .filter_map(|(_, v)| v.as_tensor().map(|t| t.numel()))
        .max()
        .unwrap_or(1)
}

/// Tests whose expected outputs are written by hand to 4 decimals in the ONNX test generators:
/// compared within one unit of the last digit (they are not always correctly rounded). Printed by the harness when they run.
pub const ROUNDED_REFERENCES: &[(&str, f64)] = &[
    ("test_averagepool_2d_ceil_last_window_starts_on_pad", 1e-4),
    ("test_roialign_aligned_false", 1e-4),
    ("test_roialign_aligned_true", 1e-4),
];

fn rounding_allowance(dir: &Path) -> f64 {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    ROUNDED_REFERENCES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
        .unwrap_or(0.0)
}

fn run_case_inner(
    dir: &Path,
    device: Arc<dyn Backend>,
    fuse: bool,
    info: &Mutex<CaseInfo>,
) -> Result<()> {
    let min_atol = rounding_allowance(dir);
    let model = kuaxin_onnx::load_model(&dir.join("model.onnx"))?;
    let mut hist = std::collections::BTreeMap::new();
    model.graph.op_histogram(&mut hist);
    if let Ok(mut i) = info.lock() {
        i.ops = hist.into_keys().collect();
    }
    let class = model_class(&model);
    let input_infos: Vec<_> = model.graph.real_inputs().into_iter().cloned().collect();
    let output_infos = model.graph.outputs.clone();
    let opts = crate::SessionOptions {
        fuse,
        ..Default::default()
    };
    let session = Session::with_options(model, device, opts)?;
    let sets = data_sets(dir);
    if sets.is_empty() {
        return Err(Error::invalid("no test_data_set_* folder"));
    }
    for set in sets {
        let mut inputs = Vec::new();
        for (i, vi) in input_infos.iter().enumerate() {
            let f = set.join(format!("input_{i}.pb"));
            if !f.exists() {
                // Optional trailing inputs may be left out by the test.
                continue;
            }
            inputs.push((
                vi.name.clone(),
                kuaxin_onnx::load_value_file_as(&f, &vi.ty)?,
            ));
        }
        let acc_len = largest_input(&inputs);
        let outputs = session.run(&inputs)?;
        if let Ok(mut i) = info.lock() {
            i.host_ops.extend(session.last_stats().host_ops);
        }
        for (i, vi) in output_infos.iter().enumerate() {
            let f = set.join(format!("output_{i}.pb"));
            let want = kuaxin_onnx::load_value_file_as(&f, &vi.ty)?;
            let got = outputs
                .iter()
                .find(|(n, _)| *n == vi.name)
                .map(|(_, v)| v)
                .ok_or_else(|| Error::invalid(format!("output '{}' missing", vi.name)))?;
            compare_values(&vi.name, got, &want, class, acc_len, min_atol)
                .map_err(Error::invalid)?;
        }
    }
    Ok(())
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".into()
    }
}

/// Runs one test folder (with or without kernel fusion); a panic fails that test only.
pub fn run_case(dir: &Path, device: Arc<dyn Backend>, fuse: bool) -> CaseResult {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let t0 = Instant::now();
    let info = Mutex::new(CaseInfo::default());
    let r = catch_unwind(AssertUnwindSafe(|| {
        run_case_inner(dir, device, fuse, &info)
    }));
    let millis = t0.elapsed().as_secs_f64() * 1e3;
    let (status, reason) = match r {
        Ok(Ok(())) => (Status::Pass, String::new()),
        Ok(Err(e)) if e.is_unsupported() => (Status::Skip, e.to_string()),
        Ok(Err(e)) => (Status::Fail, e.to_string()),
        Err(p) => (Status::Fail, format!("panic: {}", panic_message(p))),
    };
    let info = info.into_inner().unwrap_or_default();
    CaseResult {
        name,
        status,
        reason,
        millis,
        ops: info.ops,
        host_ops: info.host_ops,
    }
}

/// The op a skip reason names ("op X is not supported"), if any.
fn unsupported_op(reason: &str) -> Option<&str> {
    let rest = reason.split("op ").nth(1)?;
    rest.strip_suffix(" is not supported")
        .or_else(|| rest.split(" is not supported").next())
        .filter(|op| !op.contains(' '))
}

/// The op x device coverage matrix of conformance results: a test counts for every op type of
/// its model (passes that ran an op on the host count as `host` for that op); a skip that names
/// its unsupported op counts for that op only.
pub fn coverage(results: &[(String, Vec<CaseResult>)]) -> crate::coverage::Coverage {
    use crate::coverage::{Coverage, Outcome};
    let mut cov = Coverage::new(results.iter().map(|(d, _)| d.clone()).collect());
    for (d, cases) in results.iter().enumerate() {
        for c in &cases.1 {
            for op in &c.ops {
                cov.add_op(op);
            }
            let named = if c.status == Status::Skip {
                unsupported_op(&c.reason).filter(|op| c.ops.iter().any(|o| o == op))
            } else {
                None
            };
            for op in &c.ops {
                let outcome = match c.status {
                    Status::Pass if c.host_ops.iter().any(|h| h.contains(&format!("({op})"))) => {
                        Outcome::Host
                    }
                    Status::Pass => Outcome::Pass,
                    Status::Fail => Outcome::Fail,
                    Status::Skip if named.is_some_and(|n| n != op) => continue,
                    Status::Skip => Outcome::Unsupported,
                };
                cov.record(op, d, outcome);
            }
        }
    }
    cov
}

/// Runs `cases` on `jobs` worker threads sharing `device`, calling `progress` after each.
pub fn run_cases(
    cases: &[PathBuf],
    device: Arc<dyn Backend>,
    fuse: bool,
    jobs: usize,
    progress: &(dyn Fn(&CaseResult) + Sync),
) -> Vec<CaseResult> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<CaseResult>>> = Mutex::new(vec![None; cases.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            let device = device.clone();
            let (next, results) = (&next, &results);
            std::thread::Builder::new()
                .stack_size(256 << 20)
                .spawn_scoped(s, move || loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= cases.len() {
                        break;
                    }
                    let r = run_case(&cases[i], device.clone(), fuse);
                    progress(&r);
                    if let Ok(mut v) = results.lock() {
                        v[i] = Some(r);
                    }
                })
                .expect("spawning a conformance worker thread");
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
}
