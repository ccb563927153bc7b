//! Unique (ONNX / `numpy.unique` semantics): outputs Y, indices (first occurrence), inverse
//! indices and counts, the last three i64. `sorted` orders Y ascending (slices compare
//! lexicographically; NaN sorts last and equals NaN); otherwise Y keeps first-occurrence
//! order. `axis` None flattens; with an axis, unique slices along it.
use crate::limits;
use crate::scalar::total_cmp;
use crate::shape::split_at_axis;
use kuaxin_core::tensor::Element;
use kuaxin_core::{DType, Data, Error, Result, Tensor};
use std::cmp::Ordering;

struct Found {
    /// First index (along the axis) of each unique slice, in output order.
    first: Vec<usize>,
    counts: Vec<usize>,
    inverse: Vec<usize>,
}

pub fn unique(x: &Tensor, axis: Option<usize>, sorted: bool) -> Result<Vec<Tensor>> {
    let (shape, axis) = match axis {
        None => (vec![x.numel()], 0),
        Some(a) if a < x.shape.len() => (x.shape.clone(), a),
        Some(a) => {
            return Err(Error::invalid(format!(
                "Unique: axis {a} out of range for {}",
                x.type_string()
            )))
        }
    };
    let (outer, n, inner) = split_at_axis(&shape, axis);
    let found = dispatch1!(&x.data, v, any => find(v, outer, n, inner, sorted));
    let u = found.first.len();
    let mut y_shape = shape.clone();
    y_shape[axis] = u;
    limits::check_alloc(x.dtype(), y_shape.iter().product())?;
    let y = dispatch1!(&x.data, v, any => {
        let mut out = Vec::with_capacity(outer * u * inner);
        for o in 0..outer {
            for &f in &found.first {
                let s = (o * n + f) * inner;
                out.extend_from_slice(&v[s..s + inner]);
            }
        }
        Element::wrap(out)
    });
    let i64s = |v: &[usize]| -> Result<Tensor> {
        limits::check_alloc(DType::I64, v.len())?;
        Tensor::new(
            vec![v.len()],
            Data::I64(v.iter().map(|&i| i as i64).collect()),
        )
    };
    Ok(vec![
        Tensor::new(y_shape, y)?,
        i64s(&found.first)?,
        i64s(&found.inverse)?,
        i64s(&found.counts)?,
    ])
}

fn find<T: Element + PartialOrd>(
    v: &[T],
    outer: usize,
    n: usize,
    inner: usize,
    sorted: bool,
) -> Found {
    let cmp = |a: usize, b: usize| -> Ordering {
        for o in 0..outer {
            let (sa, sb) = ((o * n + a) * inner, (o * n + b) * inner);
            for i in 0..inner {
                match total_cmp(&v[sa + i], &v[sb + i]) {
                    Ordering::Equal => {}
                    other => return other,
                }
            }
        }
        Ordering::Equal
    };
    // Stable, so each run of equal slices starts with its first occurrence.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| cmp(a, b));
    let mut first = vec![];
    let mut counts = vec![];
    let mut inverse = vec![0usize; n];
    for (pos, &i) in order.iter().enumerate() {
        if pos == 0 || cmp(*first.last().unwrap_or(&i), i) != Ordering::Equal {
            first.push(i);
            counts.push(0);
        }
        *counts.last_mut().unwrap_or(&mut 0) += 1;
        inverse[i] = first.len() - 1;
    }
    if !sorted {
        // Renumber the groups by first occurrence.
        let mut by_first: Vec<usize> = (0..first.len()).collect();
        by_first.sort_by_key(|&g| first[g]);
        let mut new_id = vec![0usize; first.len()];
        for (new, &old) in by_first.iter().enumerate() {
            new_id[old] = new;
        }
        first = by_first.iter().map(|&g| first[g]).collect();
        counts = by_first.iter().map(|&g| counts[g]).collect();
        for i in inverse.iter_mut() {
            *i = new_id[*i];
        }
    }
    Found {
        first,
        counts,
        inverse,
    }
}
