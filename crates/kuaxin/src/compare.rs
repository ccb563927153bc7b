//! Comparing results: error metrics and tolerances by op class and dtype.
use kuaxin_core::{DType, HostValue, Tensor};

/// How an op computes, which decides how far results may drift between implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpClass {
    /// Moves or selects data, or computes on integers/bools: results must be bit-exact.
    Exact,
    /// Float elementwise math: a few ulp.
    Elementwise,
    /// Accumulates (reductions, matmul, conv, normalisation, attention): scales with dtype
    /// epsilon and accumulation length.
    Accumulating,
}

/// Op types whose float results are exact copies of input elements.
const MOVEMENT_OPS: &[&str] = &[
    "Identity",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Flatten",
    "Expand",
    "Slice",
    "Concat",
    "Split",
    "Tile",
    "Gather",
    "GatherElements",
    "GatherND",
    "Scatter",
    "ScatterElements",
    "ScatterND",
    "Pad",
    "DepthToSpace",
    "SpaceToDepth",
    "Constant",
    "ConstantOfShape",
    "Shape",
    "Size",
    "Compress",
    "NonZero",
    "Trilu",
    "ReverseSequence",
    "Where",
    "Cast",
    "CastLike",
    "Max",
    "Min",
    "Abs",
    "Neg",
    "Relu",
    "ReduceMax",
    "ReduceMin",
    "ArgMax",
    "ArgMin",
    "MaxPool",
    "GlobalMaxPool",
    "TopK",
    "Unique",
    "OneHot",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Dropout",
    "Optional",
    "OptionalGetElement",
    "OptionalHasElement",
    "SequenceAt",
    "SequenceConstruct",
    "SequenceInsert",
    "SequenceErase",
    "SequenceLength",
    "SequenceEmpty",
    "SplitToSequence",
    "ConcatFromSequence",
    "If",
    "EyeLike",
    "CenterCropPad",
    "IsNaN",
    "IsInf",
];

/// Op types that are elementwise float math (no accumulation).
const ELEMENTWISE_OPS: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sqrt",
    "Exp",
    "Log",
    "Sin",
    "Cos",
    "Tan",
    "Asin",
    "Acos",
    "Atan",
    "Sinh",
    "Cosh",
    "Tanh",
    "Asinh",
    "Acosh",
    "Atanh",
    "Erf",
    "Reciprocal",
    "Sigmoid",
    "Mod",
    "Clip",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Celu",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "Softplus",
    "Softsign",
    "Mish",
    "ThresholdedRelu",
    "Shrink",
    "Sum",
    "Mean",
    "Swish",
    "Range",
    "BitShift",
];

pub fn op_class(op_type: &str) -> OpClass {
    if MOVEMENT_OPS.contains(&op_type) {
        OpClass::Exact
    } else if ELEMENTWISE_OPS.contains(&op_type) {
        OpClass::Elementwise
    } else {
        OpClass::Accumulating
    }
}

/// Allowed error for results of `dtype` from ops of `class` accumulating over up to `acc_len`
/// terms: `|got - want| <= atol + rtol * |want|`.
#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub rtol: f64,
    pub atol: f64,
}

impl Tolerance {
    pub fn for_class(class: OpClass, dtype: DType, acc_len: usize, scale: f64) -> Tolerance {
        if !dtype.is_float() || class == OpClass::Exact {
            return Tolerance {
                rtol: 0.0,
                atol: 0.0,
            };
        }
        let eps = dtype.epsilon();
        // f16/bf16 results are computed in f32 and rounded once: a few ulp of the storage type.
        let ulps = match class {
            OpClass::Exact => 0.0,
            OpClass::Elementwise => 16.0,
            OpClass::Accumulating => (64.0f64).max(16.0 * (acc_len.max(1) as f64).sqrt()),
        };
        let rtol = ulps * eps;
        Tolerance {
            rtol,
            atol: rtol * scale.max(1e-3),
        }
    }
}

/// Error statistics of `got` against `want`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub max_abs: f64,
    pub max_rel: f64,
    /// Mean squared error divided by the mean square of `want`.
    pub nmse: f64,
    pub cosine: f64,
    /// Share of elements whose relative error exceeds 1e-3 and 5e-3.
    pub beyond_1e3: f64,
    pub beyond_5e3: f64,
    /// Elements outside the tolerance, and the first of them.
    pub mismatches: usize,
    pub first_mismatch: Option<(usize, f64, f64)>,
}

fn same_special(a: f64, b: f64) -> Option<bool> {
    if a.is_nan() || b.is_nan() {
        return Some(a.is_nan() && b.is_nan());
    }
    if a.is_infinite() || b.is_infinite() {
        return Some(a == b);
    }
    None
}

pub fn metrics(got: &Tensor, want: &Tensor, tol: Tolerance) -> Metrics {
    let exact_ints = !want.dtype().is_float();
    let (g, w) = if exact_ints && (want.dtype() == DType::I64 || want.dtype() == DType::U64) {
        (
            got.to_i64_vec()
                .into_iter()
                .map(|x| x as f64)
                .collect::<Vec<_>>(),
            want.to_i64_vec()
                .into_iter()
                .map(|x| x as f64)
                .collect::<Vec<_>>(),
        )
    } else {
        (got.to_f64_vec(), want.to_f64_vec())
    };
    let mut m = Metrics::default();
    let (mut se, mut sw, mut dot, mut gg, mut n1, mut n5) = (0.0, 0.0, 0.0, 0.0, 0usize, 0usize);
    let exact_i64 = exact_ints && (want.dtype() == DType::I64 || want.dtype() == DType::U64);
    let (gi, wi) = if exact_i64 {
        (got.to_i64_vec(), want.to_i64_vec())
    } else {
        (vec![], vec![])
    };
    for i in 0..w.len() {
        let (a, b) = (g[i], w[i]);
        let ok = if exact_i64 {
            gi[i] == wi[i]
        } else if let Some(s) = same_special(a, b) {
            s
        } else {
            let d = (a - b).abs();
            let rel = d / b.abs().max(f64::MIN_POSITIVE);
            m.max_abs = m.max_abs.max(d);
            m.max_rel = m.max_rel.max(if b == 0.0 {
                if d == 0.0 {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else {
                rel
            });
            se += d * d;
            sw += b * b;
            dot += a * b;
            gg += a * a;
            if d > 1e-3 * b.abs() {
                n1 += 1;
            }
            if d > 5e-3 * b.abs() {
                n5 += 1;
            }
            d <= tol.atol + tol.rtol * b.abs()
        };
        if !ok {
            m.mismatches += 1;
            if m.first_mismatch.is_none() {
                m.first_mismatch = Some((i, a, b));
            }
        }
    }
    let n = w.len().max(1) as f64;
    m.nmse = if sw > 0.0 {
        se / sw
    } else if se > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    // One square root of the product: for identical values (sw == gg == dot) it is sw
    // exactly, so the cosine is exactly 1; sqrt(sw) * sqrt(gg) can round to just below sw
    // (a check of a device against itself then read 0.9999999999999999). Apart when the
    // product overflows or underflows.
    let norms = sw * gg;
    m.cosine = if norms.is_normal() {
        dot / norms.sqrt()
    } else if sw > 0.0 && gg > 0.0 {
        dot / (sw.sqrt() * gg.sqrt())
    } else if sw == 0.0 && gg == 0.0 {
        1.0
    } else {
        0.0
    };
    m.beyond_1e3 = n1 as f64 / n;
    m.beyond_5e3 = n5 as f64 / n;
    m
}

/// Compares two values; `Err` describes the first difference.
/// `min_atol` raises the absolute tolerance for references known to be rounded.
pub fn compare_values(
    name: &str,
    got: &HostValue,
    want: &HostValue,
    class: OpClass,
    acc_len: usize,
    min_atol: f64,
) -> Result<(), String> {
    match (got, want) {
        (HostValue::Tensor(g), HostValue::Tensor(w)) => {
            if g.dtype() != w.dtype() {
                return Err(format!(
                    "output '{name}': dtype {} but expected {}",
                    g.dtype(),
                    w.dtype()
                ));
            }
            if g.shape != w.shape {
                return Err(format!(
                    "output '{name}': shape {:?} but expected {:?}",
                    g.shape, w.shape
                ));
            }
            let scale = w
                .to_f64_vec()
                .iter()
                .filter(|x| x.is_finite())
                .fold(0.0f64, |a, &b| a.max(b.abs()));
            let mut tol = Tolerance::for_class(class, w.dtype(), acc_len, scale);
            tol.atol = tol.atol.max(min_atol);
            let m = metrics(g, w, tol);
            if m.mismatches > 0 {
                let (i, a, b) = m.first_mismatch.unwrap_or_default();
                return Err(format!(
                    "output '{name}': {} of {} elements differ (first at {i}: got {a}, expected {b}; max abs {:.3e}, max rel {:.3e}, tolerance rtol {:.1e} atol {:.1e})",
                    m.mismatches, w.numel(), m.max_abs, m.max_rel, tol.rtol, tol.atol
                ));
            }
            Ok(())
        }
        (HostValue::Sequence(g), HostValue::Sequence(w)) => {
            if g.len() != w.len() {
                return Err(format!(
                    "output '{name}': sequence of {} but expected {}",
                    g.len(),
                    w.len()
                ));
            }
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                compare_values(&format!("{name}[{i}]"), a, b, class, acc_len, min_atol)?;
            }
            Ok(())
        }
        (HostValue::Optional(g), HostValue::Optional(w)) => match (g, w) {
            (None, None) => Ok(()),
            (Some(a), Some(b)) => compare_values(name, a, b, class, acc_len, min_atol),
            _ => Err(format!("output '{name}': optional presence differs")),
        },
        (HostValue::Optional(Some(a)), b) => compare_values(name, a, b, class, acc_len, min_atol),
        (a, HostValue::Optional(Some(b))) => compare_values(name, a, b, class, acc_len, min_atol),
        (g, w) => Err(format!(
            "output '{name}': got {} but expected {}",
            g.describe(),
            w.describe()
        )),
    }
}
