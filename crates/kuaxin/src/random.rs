//! Seeded random inputs for a model's graph inputs, so `run`, `bench` and `check` work without
//! data files. A small splitmix/xorshift generator keeps results identical across machines.
use kuaxin_core::graph::{Dim, Model, ValueType};
use kuaxin_core::{DType, Data, Error, HostValue, Result, Tensor};
use std::collections::HashMap;

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.uniform().max(1e-300);
        let v = self.uniform();
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// A random tensor: floats ~ N(0,1), integers uniform in [0, 100), bools fair coins.
pub fn random_tensor(rng: &mut Rng, dtype: DType, shape: Vec<usize>) -> Tensor {
    let n: usize = shape.iter().product();
    let data = if dtype.is_float() {
        Data::from_f64_iter(dtype, (0..n).map(|_| rng.normal()))
    } else if dtype == DType::Bool {
        Data::Bool((0..n).map(|_| rng.next_u64() & 1 == 1).collect())
    } else {
        Data::from_i64_iter(dtype, (0..n).map(|_| (rng.next_u64() % 100) as i64))
    };
    Tensor { shape, data }
}

/// Random values for every graph input not backed by an initializer. Symbolic dims come from
/// `dims` (e.g. `batch=1`); a symbolic dim without a value is an error naming it.
pub fn random_inputs(
    model: &Model,
    dims: &HashMap<String, usize>,
    seed: u64,
) -> Result<Vec<(String, HostValue)>> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    for vi in model.graph.real_inputs() {
        let (dtype, shape) = match &vi.ty {
            ValueType::Tensor {
                dtype,
                shape: Some(s),
            } => (*dtype, s),
            ValueType::Tensor { shape: None, .. } => {
                return Err(Error::invalid(format!(
                    "input '{}' has unknown rank: pass it with --input",
                    vi.name
                )))
            }
            other => {
                return Err(Error::unsupported(format!(
                    "input '{}' is a {other}: pass it with --input",
                    vi.name
                )))
            }
        };
        let concrete = shape
            .iter()
            .map(|d| match d {
                Dim::Known(n) => Ok(*n),
                Dim::Sym(s) => dims.get(s).copied().ok_or_else(|| {
                    Error::invalid(format!(
                        "input '{}' has symbolic dim '{s}': set it with --dim {s}=N",
                        vi.name
                    ))
                }),
                Dim::Unknown => Err(Error::invalid(format!(
                    "input '{}' has an unnamed unknown dim: pass it with --input",
                    vi.name
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        out.push((
            vi.name.clone(),
            HostValue::Tensor(random_tensor(&mut rng, dtype, concrete)),
        ));
    }
    Ok(out)
}
