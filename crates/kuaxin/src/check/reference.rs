//! What devices are compared against: another device, the model promoted to f64 on the CPU,
//! or a bundle of saved values (`.npz` with arrays named like the model's values).
use super::graph_views::{expose, node_values};
use super::measure::{timed_run, Latency};
use super::promote::{promote_to_f64, promote_value};
use crate::session::Session;
use kuaxin_core::graph::Model;
use kuaxin_core::{Error, HostValue, Result};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub enum Reference {
    /// A device name (`cpu`, `cuda:0`).
    Device(String),
    /// Every float op in f64 on the CPU.
    F64,
    /// Saved values by name: outputs, and optionally inputs and intermediates.
    Bundle {
        path: String,
        values: HashMap<String, HostValue>,
    },
}

impl Reference {
    /// `f64`, a path ending in `.npz` (read now), or a device name.
    pub fn parse(s: &str) -> Result<Reference> {
        if s == "f64" {
            Ok(Reference::F64)
        } else if s.ends_with(".npz") {
            let arrays = kuaxin_npy::read_npz(std::path::Path::new(s))?;
            Ok(Reference::Bundle {
                path: s.to_string(),
                values: arrays
                    .into_iter()
                    .map(|(n, t)| (n, HostValue::Tensor(t)))
                    .collect(),
            })
        } else if s.is_empty() {
            Err(Error::invalid(
                "--reference: empty (use a device name, f64 or BUNDLE.npz)",
            ))
        } else {
            Ok(Reference::Device(s.to_string()))
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Reference::Device(d) => d.clone(),
            Reference::F64 => "f64 (cpu)".into(),
            Reference::Bundle { path, values } => format!("{path} ({} arrays)", values.len()),
        }
    }

    pub fn is_f64(&self) -> bool {
        matches!(self, Reference::F64)
    }

    /// Bundle arrays named like inputs of `model` (used for inputs not given explicitly).
    pub fn bundle_inputs(&self, model: &Model) -> Vec<(String, HostValue)> {
        match self {
            Reference::Bundle { values, .. } => model
                .graph
                .real_inputs()
                .iter()
                .filter_map(|vi| values.get(&vi.name).map(|v| (vi.name.clone(), v.clone())))
                .collect(),
            _ => vec![],
        }
    }
}

/// The reference's outputs, and its latency when it is a device run.
pub struct ReferenceRun {
    pub outputs: HashMap<String, HostValue>,
    pub latency: Option<Latency>,
}

fn device_for(
    reference: &Reference,
    threads: Option<usize>,
) -> Result<std::sync::Arc<dyn kuaxin_core::Backend>> {
    match reference {
        Reference::Device(d) => crate::open_device(d, threads),
        _ => crate::open_device("cpu", threads),
    }
}

fn promoted_inputs(inputs: &[(String, HostValue)], f64: bool) -> Vec<(String, HostValue)> {
    inputs
        .iter()
        .map(|(n, v)| (n.clone(), if f64 { promote_value(v) } else { v.clone() }))
        .collect()
}

/// Runs the reference on `inputs` (timed `iters` times after the first run for a device).
pub fn run_reference(
    reference: &Reference,
    model: &Model,
    inputs: &[(String, HostValue)],
    iters: usize,
    threads: Option<usize>,
) -> Result<ReferenceRun> {
    if let Reference::Bundle { path, values } = reference {
        let mut outputs = HashMap::new();
        for o in &model.graph.outputs {
            let v = values.get(&o.name).ok_or_else(|| {
                Error::invalid(format!("{path}: no array for output '{}'", o.name))
            })?;
            outputs.insert(o.name.clone(), v.clone());
        }
        return Ok(ReferenceRun {
            outputs,
            latency: None,
        });
    }
    let f64 = reference.is_f64();
    let m = if f64 {
        promote_to_f64(model)
    } else {
        model.clone()
    };
    let session = Session::new(m, device_for(reference, threads)?)?;
    let ins = promoted_inputs(inputs, f64);
    let (out, latency) = timed_run(&session, &ins, if f64 { 0 } else { iters })
        .map_err(|e| e.context(format!("reference {}", reference.describe())))?;
    Ok(ReferenceRun {
        outputs: out.into_iter().collect(),
        latency: (!f64).then_some(latency),
    })
}

/// The reference value of every value a top-level node produces, plus the inputs (a bundle
/// gives what it holds).
pub fn reference_values(
    reference: &Reference,
    model: &Model,
    inputs: &[(String, HostValue)],
    threads: Option<usize>,
) -> Result<HashMap<String, HostValue>> {
    if let Reference::Bundle { values, .. } = reference {
        let mut all = values.clone();
        all.extend(inputs.iter().cloned());
        return Ok(all);
    }
    let f64 = reference.is_f64();
    let exposed = expose(model, &node_values(model)?);
    let m = if f64 {
        promote_to_f64(&exposed)
    } else {
        exposed
    };
    let session = Session::new(m, device_for(reference, threads)?)?;
    let ins = promoted_inputs(inputs, f64);
    let mut all: HashMap<String, HostValue> = session
        .run(&ins)
        .map_err(|e| e.context(format!("reference {}", reference.describe())))?
        .into_iter()
        .collect();
    all.extend(ins);
    Ok(all)
}
