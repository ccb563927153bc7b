//! The inputs every device of a check receives: given values, then seeded random values for
//! the rest (symbolic dims from `dims` or learnt from the given inputs).
use kuaxin_core::graph::{Dim, Model, ValueType};
use kuaxin_core::{Error, HostValue, Result};
use std::collections::HashMap;

pub fn resolve_inputs(
    model: &Model,
    given: Vec<(String, HostValue)>,
    dims: &HashMap<String, usize>,
    seed: u64,
) -> Result<Vec<(String, HostValue)>> {
    let mut dims = dims.clone();
    for (name, v) in &given {
        let vi = model
            .graph
            .inputs
            .iter()
            .find(|vi| vi.name == *name)
            .ok_or_else(|| {
                let names: Vec<&str> = model
                    .graph
                    .real_inputs()
                    .iter()
                    .map(|vi| vi.name.as_str())
                    .collect();
                Error::invalid(format!(
                    "input '{name}': the model has no such input (inputs: {})",
                    names.join(", ")
                ))
            })?;
        if let (ValueType::Tensor { shape: Some(s), .. }, Some(t)) = (&vi.ty, v.as_tensor()) {
            for (d, &n) in s.iter().zip(&t.shape) {
                if let Dim::Sym(sym) = d {
                    dims.entry(sym.clone()).or_insert(n);
                }
            }
        }
    }
    let missing = model
        .graph
        .real_inputs()
        .iter()
        .any(|vi| !given.iter().any(|(n, _)| *n == vi.name));
    let mut inputs = given.clone();
    if missing {
        let random = crate::random_inputs(model, &dims, seed)?;
        inputs.extend(
            random
                .into_iter()
                .filter(|(n, _)| !given.iter().any(|(g, _)| g == n)),
        );
    }
    Ok(inputs)
}
