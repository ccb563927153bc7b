//! Measuring one device: timed runs, and error metrics of its values against a reference.
use crate::compare::{metrics, Metrics, OpClass, Tolerance};
use crate::session::Session;
use kuaxin_core::{HostValue, Result, Tensor};
use std::time::Instant;

/// Wall-clock times of whole-model runs, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// The first run (traces and compiles).
    pub first_ms: f64,
    /// Median of the timed runs after the first (the first run when there are none).
    pub median_ms: f64,
    pub samples: Vec<f64>,
}

/// Runs once (compiling), then `iters` timed replays.
pub fn timed_run(
    session: &Session,
    inputs: &[(String, HostValue)],
    iters: usize,
) -> Result<(Vec<(String, HostValue)>, Latency)> {
    let t0 = Instant::now();
    let out = session.run(inputs)?;
    let first_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        session.run(inputs)?;
        samples.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut sorted = samples.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median_ms = sorted.get(sorted.len() / 2).copied().unwrap_or(first_ms);
    Ok((
        out,
        Latency {
            first_ms,
            median_ms,
            samples,
        },
    ))
}

/// The tensors inside a value, named `name`, `name[i]` for sequence items.
pub fn flatten(name: &str, v: &HostValue, out: &mut Vec<(String, Tensor)>) {
    match v {
        HostValue::Tensor(t) => out.push((name.to_string(), t.clone())),
        HostValue::Sequence(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, x)| flatten(&format!("{name}[{i}]"), x, out)),
        HostValue::Optional(Some(x)) => flatten(name, x, out),
        HostValue::Optional(None) => {}
    }
}

/// Metrics of `got` against `want` with the tolerance of `class`. A float reference of another
/// precision (the f64 reference) is rounded to `got`'s dtype first. Different shapes or
/// non-float dtypes are an error describing the difference.
pub fn compare_tensor(
    got: &Tensor,
    want: &Tensor,
    class: OpClass,
    acc_len: usize,
) -> std::result::Result<(Metrics, Tolerance), String> {
    let want = if want.dtype() != got.dtype() && want.dtype().is_float() && got.dtype().is_float() {
        want.cast(got.dtype())
    } else {
        want.clone()
    };
    if want.dtype() != got.dtype() {
        return Err(format!(
            "dtype {} but the reference is {}",
            got.dtype(),
            want.dtype()
        ));
    }
    if want.shape != got.shape {
        return Err(format!(
            "shape {:?} but the reference has {:?}",
            got.shape, want.shape
        ));
    }
    let scale = want
        .to_f64_vec()
        .iter()
        .filter(|x| x.is_finite())
        .fold(0.0f64, |a, &b| a.max(b.abs()));
    let tol = Tolerance::for_class(class, got.dtype(), acc_len, scale);
    Ok((metrics(got, &want, tol), tol))
}

/// The comparison of one (flattened) output.
#[derive(Debug, Clone)]
pub struct OutputCheck {
    pub name: String,
    /// `f32[1, 128]`.
    pub ty: String,
    pub numel: usize,
    pub metrics: Option<Metrics>,
    pub tol: Option<Tolerance>,
    /// Why it could not be compared or differs structurally (missing, shape, dtype).
    pub problem: Option<String>,
}

impl OutputCheck {
    pub fn passed(&self) -> bool {
        self.problem.is_none() && self.metrics.as_ref().is_some_and(|m| m.mismatches == 0)
    }
}

/// Compares every output the reference has (others are reported as not compared).
pub fn compare_outputs(
    got: &[(String, HostValue)],
    want: &dyn Fn(&str) -> Option<HostValue>,
    class: OpClass,
    acc_len: usize,
) -> Vec<OutputCheck> {
    let mut checks = Vec::new();
    for (name, v) in got {
        let mut g = Vec::new();
        flatten(name, v, &mut g);
        let mut w = Vec::new();
        if let Some(wv) = want(name) {
            flatten(name, &wv, &mut w);
        }
        for (n, t) in g {
            let mut c = OutputCheck {
                name: n.clone(),
                ty: t.type_string(),
                numel: t.numel(),
                metrics: None,
                tol: None,
                problem: None,
            };
            match w.iter().find(|(wn, _)| *wn == n) {
                None => c.problem = Some("no reference value".into()),
                Some((_, wt)) => match compare_tensor(&t, wt, class, acc_len) {
                    Ok((m, tol)) => {
                        c.metrics = Some(m);
                        c.tol = Some(tol);
                    }
                    Err(e) => c.problem = Some(e),
                },
            }
            checks.push(c);
        }
    }
    checks
}

/// One line of metrics for several outputs: worst max errors, NMSE and cosine; element-weighted
/// shares; summed mismatches.
pub fn aggregate(checks: &[OutputCheck]) -> Metrics {
    let mut total = Metrics {
        cosine: 1.0,
        ..Default::default()
    };
    let (mut n, mut n1, mut n5) = (0.0, 0.0, 0.0);
    for c in checks {
        let Some(m) = &c.metrics else { continue };
        let numel = c.numel as f64;
        total.max_abs = total.max_abs.max(m.max_abs);
        total.max_rel = total.max_rel.max(m.max_rel);
        total.nmse = total.nmse.max(m.nmse);
        total.cosine = total.cosine.min(m.cosine);
        total.mismatches += m.mismatches;
        if total.first_mismatch.is_none() {
            total.first_mismatch = m.first_mismatch;
        }
        n += numel;
        n1 += m.beyond_1e3 * numel;
        n5 += m.beyond_5e3 * numel;
    }
    if n > 0.0 {
        total.beyond_1e3 = n1 / n;
        total.beyond_5e3 = n5 / n;
    }
    total
}
