//! Model inputs from `--input NAME=FILE.npy` and `--dim NAME=V`, random where not given.
use super::{parse_dims, split_pair};
use anyhow::{anyhow, Result};
use kuaxin::HostValue;
use kuaxin_core::graph::Model;

pub fn prepare(
    model: &Model,
    input_args: &[String],
    dims: &[String],
    seed: u64,
) -> Result<Vec<(String, HostValue)>> {
    let dims = parse_dims(dims)?;
    let mut given = Vec::new();
    for s in input_args {
        let (name, file) = split_pair(s, "--input")?;
        let t = kuaxin_npy::read_npy(std::path::Path::new(&file))?;
        given.push((name, HostValue::Tensor(t)));
    }
    // Random values for inputs not given; symbolic dims may also come from given inputs.
    let mut dims = dims;
    for (name, v) in &given {
        if let (Some(vi), Some(t)) = (
            model.graph.inputs.iter().find(|vi| vi.name == *name),
            v.as_tensor(),
        ) {
            if let kuaxin_core::graph::ValueType::Tensor { shape: Some(s), .. } = &vi.ty {
                for (d, &n) in s.iter().zip(&t.shape) {
                    if let kuaxin_core::graph::Dim::Sym(sym) = d {
                        dims.entry(sym.clone()).or_insert(n);
                    }
                }
            }
        } else if !model.graph.inputs.iter().any(|vi| vi.name == *name) {
            return Err(anyhow!(
                "--input {name}: the model has no input named '{name}'"
            ));
        }
    }
    let mut inputs = given.clone();
    let missing: Vec<_> = model
        .graph
        .real_inputs()
        .iter()
        .filter(|vi| !given.iter().any(|(n, _)| *n == vi.name))
        .map(|vi| vi.name.clone())
        .collect();
    if !missing.is_empty() {
        let random = kuaxin::random_inputs(model, &dims, seed)?;
        inputs.extend(random.into_iter().filter(|(n, _)| missing.contains(n)));
    }
    Ok(inputs)
}
