//! Entry point: trace a model for concrete inputs on a device.
use crate::lower::Cx;
use crate::program::Program;
use crate::trace::Trace;
use crate::value::Value;
use kuaxin_core::graph::{Dim, Model, ValueType};
use kuaxin_core::{Backend, Error, HostValue, Result};
use std::collections::HashMap;

/// A traced program plus what tracing learned.
pub struct Compiled {
    pub program: Program,
    /// Instructions before fusion, kernels made, instructions they replaced.
    pub unfused_instrs: usize,
    pub fused_kernels: usize,
    pub fused_instrs: usize,
    /// How many times tracing had to wait for device results (data-dependent values).
    pub flushes: usize,
}

/// Checks an input against its declared type; symbolic dims must agree across inputs.
fn check_input(
    name: &str,
    declared: &ValueType,
    given: &HostValue,
    syms: &mut HashMap<String, usize>,
) -> Result<()> {
    match (declared, given) {
        (ValueType::Tensor { dtype, shape }, HostValue::Tensor(t)) => {
            if *dtype != t.dtype() {
                return Err(Error::invalid(format!(
                    "input '{name}' should be {dtype}, got {}",
                    t.dtype()
                )));
            }
            if let Some(dims) = shape {
                if dims.len() != t.rank() {
                    return Err(Error::invalid(format!(
                        "input '{name}' should have rank {}, got shape {:?}",
                        dims.len(),
                        t.shape
                    )));
                }
                for (d, &n) in dims.iter().zip(&t.shape) {
                    match d {
                        Dim::Known(k) if *k != n => {
                            return Err(Error::invalid(format!(
                                "input '{name}' has shape {:?}, declared {}",
                                t.shape, declared
                            )));
                        }
                        Dim::Sym(s) => {
                            if let Some(&prev) = syms.get(s) {
                                if prev != n {
                                    return Err(Error::invalid(format!("input '{name}': dim '{s}' is {n} here but {prev} in another input")));
                                }
                            }
                            syms.insert(s.clone(), n);
                        }
                        _ => {}
                    }
                }
            }
            Ok(())
        }
        (ValueType::Tensor { .. }, other) => Err(Error::invalid(format!(
            "input '{name}' should be a tensor, got {}",
            other.describe()
        ))),
        _ => Ok(()),
    }
}

fn bind_host(trace: &mut Trace, v: &HostValue) -> Result<Value> {
    Ok(match v {
        HostValue::Tensor(t) => Value::Tensor(trace.input(t)?),
        HostValue::Sequence(items) => Value::Sequence(
            items
                .iter()
                .map(|i| bind_host(trace, i))
                .collect::<Result<_>>()?,
        ),
        HostValue::Optional(o) => Value::Optional(match o {
            None => None,
            Some(i) => Some(Box::new(bind_host(trace, i)?)),
        }),
    })
}

/// Traces `model` for `inputs` (by graph input name) on `device`, runs it, and returns the
/// reusable program and this run's outputs.
pub fn compile_and_run(
    model: &Model,
    device: &dyn Backend,
    host: &dyn Backend,
    inputs: &[(String, HostValue)],
    fuse: bool,
) -> Result<(Compiled, Vec<(String, HostValue)>)> {
    let mut trace = Trace::new(device, host);
    trace.fuse = fuse;
    let given: std::collections::HashSet<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
    let folded = crate::fold_bn::fold_batch_norms(&model.graph, model.default_opset(), &given);
    let graph = folded.as_ref().unwrap_or(&model.graph);
    let mut bound = Vec::new();
    let mut syms = HashMap::new();
    for vi in graph.real_inputs() {
        let given = inputs.iter().find(|(n, _)| *n == vi.name);
        match given {
            Some((_, v)) => {
                check_input(&vi.name, &vi.ty, v, &mut syms)?;
                bound.push((vi.name.clone(), bind_host(&mut trace, v)?));
            }
            None => {
                return Err(Error::invalid(format!(
                    "missing input '{}' ({})",
                    vi.name, vi.ty
                )))
            }
        }
    }
    for (n, _) in inputs {
        if !graph.inputs.iter().any(|vi| vi.name == *n) {
            return Err(Error::invalid(format!(
                "'{n}' is not an input of the model"
            )));
        }
    }
    // Initializers that are also inputs may be overridden.
    for (n, v) in inputs {
        if graph.initializer(n).is_some() {
            bound.push((n.clone(), bind_host(&mut trace, v)?));
        }
    }
    let outputs = {
        let mut cx = Cx::new(&mut trace, model.default_opset());
        for (n, v) in bound {
            cx.bind(&n, v);
        }
        cx.run_graph(graph)?
    };
    let flushes = trace.flushes;
    let unfused_instrs = trace.program.instrs.len();
    let named = graph
        .outputs
        .iter()
        .map(|o| o.name.clone())
        .zip(outputs)
        .collect();
    let (program, results, fused_kernels, fused_instrs) = trace.finish(named)?;
    Ok((
        Compiled {
            program,
            flushes,
            unfused_instrs,
            fused_kernels,
            fused_instrs,
        },
        results,
    ))
}
