//! Linear algebra: MatMul, Gemm, Einsum (permute/broadcast to a common index order, then
//! batched matmuls), Det (LU with partial pivoting, unrolled over the matrix size).
use super::Registry;
use crate::builder::{opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::prim::{BinaryOp, Prim, ReduceOp, UnaryOp};
use kuaxin_core::tensor::contiguous_strides;
use kuaxin_core::{bail_invalid, bail_unsupported, DType, Error, Result, Tensor};

impl Cx<'_, '_> {
    /// Swaps the last two axes.
    pub(crate) fn transpose_last2(&mut self, x: &TVal) -> Result<TVal> {
        let r = x.rank();
        if r < 2 {
            bail_invalid!("cannot transpose {} (rank < 2)", x.ty);
        }
        let mut perm: Vec<usize> = (0..r).collect();
        perm.swap(r - 2, r - 1);
        self.permute(x, &perm)
    }

    /// `x * s` for a host scalar in x's dtype, skipping the multiply when `s == 1`.
    pub(crate) fn scale_by(&mut self, x: &TVal, s: f64) -> Result<TVal> {
        if s == 1.0 {
            return Ok(x.clone());
        }
        self.binary_scalar(BinaryOp::Mul, x, s)
    }

    /// Sum over `axes`, dropping them.
    pub(crate) fn sum_axes(&mut self, x: &TVal, axes: &[usize]) -> Result<TVal> {
        self.reduce(ReduceOp::Sum, x, axes, false)
    }
}

fn matmul(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let a = tensor_arg(ins, 0, "A")?;
    let b = tensor_arg(ins, 1, "B")?;
    if a.dtype() != b.dtype() {
        bail_invalid!("MatMul operands differ in dtype: {} and {}", a.ty, b.ty);
    }
    if a.rank() == 1 && b.rank() == 1 {
        // Inner product: [1, K] x [K, 1] -> scalar.
        let a2 = cx.unsqueeze(a, &[0])?;
        let y = cx.matmul(&a2, b)?;
        return Ok(vec![tv(cx.reshape(&y, &[])?)]);
    }
    Ok(vec![tv(cx.matmul(a, b)?)])
}

fn gemm(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let mut a = tensor_arg(ins, 0, "A")?.clone();
    let mut b = tensor_arg(ins, 1, "B")?.clone();
    if a.rank() != 2 || b.rank() != 2 || a.dtype() != b.dtype() {
        bail_invalid!(
            "Gemm needs two 2-d operands of one dtype, got {} and {}",
            a.ty,
            b.ty
        );
    }
    if n.int_or("transA", 0)? != 0 {
        a = cx.transpose_last2(&a)?;
    }
    if n.int_or("transB", 0)? != 0 {
        b = cx.transpose_last2(&b)?;
    }
    let alpha = n.float_or("alpha", 1.0)? as f64;
    let beta = n.float_or("beta", 1.0)? as f64;
    let ab = cx.matmul(&a, &b)?;
    let mut y = cx.scale_by(&ab, alpha)?;
    if let Some(c) = opt_tensor(ins, 2)? {
        if beta != 0.0 {
            // Unidirectional broadcast: C must broadcast to Y's shape.
            let c = cx.expand(c, y.shape())?;
            let c = cx.cast(&c, y.dtype())?;
            let c = cx.scale_by(&c, beta)?;
            y = cx.add(&y, &c)?;
        }
    }
    Ok(vec![tv(y)])
}

// ---- Einsum ----

/// Label ids: ASCII letters are their code; ellipsis dims are `ELLIPSIS + k`, right-aligned.
const ELLIPSIS: u32 = 1000;

/// Parses one term (`ab...c`) into labels, expanding `...` to the operand's broadcast dims.
fn parse_term(term: &str, rank: Option<usize>, ell_total: usize) -> Result<Vec<u32>> {
    let letters = term.chars().filter(|c| c.is_ascii_alphabetic()).count();
    let has_ell = term.contains("...");
    if term.matches("...").count() > 1
        || term.chars().any(|c| !(c.is_ascii_alphabetic() || c == '.'))
    {
        bail_invalid!("Einsum: bad term '{term}'");
    }
    let ell = match rank {
        Some(r) if has_ell => r.checked_sub(letters).ok_or_else(|| {
            Error::invalid(format!(
                "Einsum: term '{term}' has more labels than rank {r}"
            ))
        })?,
        Some(r) => {
            if r != letters {
                bail_invalid!("Einsum: term '{term}' does not match rank {r}");
            }
            0
        }
        None => {
            if has_ell {
                ell_total
            } else {
                0
            }
        }
    };
    let mut out = Vec::new();
    let mut rest = term;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("...") {
            out.extend((ell_total - ell..ell_total).map(|k| ELLIPSIS + k as u32));
            rest = &rest[3..];
        } else if c.is_ascii_alphabetic() {
            out.push(c as u32);
            rest = &rest[1..];
        } else {
            bail_invalid!("Einsum: stray '.' in term '{term}'");
        }
    }
    Ok(out)
}

/// Input label lists and output labels of an equation for operands of `ranks`.
fn parse_equation(eq: &str, ranks: &[usize]) -> Result<(Vec<Vec<u32>>, Vec<u32>)> {
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ranks.len() {
        bail_invalid!(
            "Einsum: equation has {} terms for {} inputs",
            terms.len(),
            ranks.len()
        );
    }
    let mut ell_total = 0;
    for (t, &r) in terms.iter().zip(ranks) {
        if t.contains("...") {
            let letters = t.chars().filter(|c| c.is_ascii_alphabetic()).count();
            ell_total = ell_total.max(r.saturating_sub(letters));
        }
    }
    let inputs: Vec<Vec<u32>> = terms
        .iter()
        .zip(ranks)
        .map(|(t, &r)| parse_term(t, Some(r), ell_total))
        .collect::<Result<_>>()?;
    let output = match rhs {
        Some(r) => parse_term(r, None, ell_total)?,
        None => {
            // Implicit mode: broadcast dims, then labels seen exactly once, alphabetically.
            let mut out: Vec<u32> = (0..ell_total as u32).map(|k| ELLIPSIS + k).collect();
            let mut letters: Vec<u32> = inputs
                .iter()
                .flatten()
                .copied()
                .filter(|&l| l < ELLIPSIS)
                .collect();
            letters.sort_unstable();
            let once: Vec<u32> = letters
                .iter()
                .copied()
                .filter(|l| letters.iter().filter(|m| *m == l).count() == 1)
                .collect();
            out.extend(once);
            out
        }
    };
    let mut seen = output.clone();
    seen.sort_unstable();
    seen.dedup();
    if seen.len() != output.len() {
        bail_invalid!("Einsum: repeated output label in '{eq}'");
    }
    Ok((inputs, output))
}

/// An operand with one axis per distinct label.
struct Operand {
    x: TVal,
    labels: Vec<u32>,
}

impl Operand {
    fn has(&self, l: u32) -> bool {
        self.labels.contains(&l)
    }
    fn dim(&self, l: u32) -> usize {
        self.labels
            .iter()
            .position(|&m| m == l)
            .map_or(1, |i| self.x.shape()[i])
    }
}

/// Takes diagonals over repeated labels (`ii` -> `i`) with one strided view.
fn distinct_labels(cx: &mut Cx, x: &TVal, labels: &[u32]) -> Result<Operand> {
    let strides = contiguous_strides(x.shape());
    let mut uniq: Vec<u32> = Vec::new();
    let (mut shape, mut st) = (Vec::new(), Vec::new());
    for (i, &l) in labels.iter().enumerate() {
        match uniq.iter().position(|&m| m == l) {
            Some(j) => {
                if shape[j] != x.shape()[i] {
                    bail_invalid!(
                        "Einsum: repeated label has sizes {} and {}",
                        shape[j],
                        x.shape()[i]
                    );
                }
                st[j] += strides[i];
            }
            None => {
                uniq.push(l);
                shape.push(x.shape()[i]);
                st.push(strides[i]);
            }
        }
    }
    let x = if uniq.len() == labels.len() {
        x.clone()
    } else {
        cx.view(x, shape, st, 0)?
    };
    Ok(Operand { x, labels: uniq })
}

/// Sums out the labels of `op` that `keep` rejects.
fn sum_unneeded(cx: &mut Cx, op: Operand, keep: impl Fn(u32) -> bool) -> Result<Operand> {
    let axes: Vec<usize> = (0..op.labels.len())
        .filter(|&i| !keep(op.labels[i]))
        .collect();
    if axes.is_empty() {
        return Ok(op);
    }
    let x = cx.sum_axes(&op.x, &axes)?;
    let labels = op.labels.iter().copied().filter(|&l| keep(l)).collect();
    Ok(Operand { x, labels })
}

/// Permutes `op` to `order` (a permutation of its labels), then broadcasts each axis to `sizes`.
fn arrange(cx: &mut Cx, op: &Operand, order: &[u32], sizes: &[usize]) -> Result<TVal> {
    let perm: Vec<usize> = order
        .iter()
        .map(|&l| op.labels.iter().position(|&m| m == l).unwrap_or(0))
        .collect();
    let x = cx.permute(&op.x, &perm)?;
    cx.expand(&x, sizes)
}

/// Contracts two operands with one batched matmul; labels in `keep` survive.
fn contract(cx: &mut Cx, a: &Operand, b: &Operand, keep: &dyn Fn(u32) -> bool) -> Result<Operand> {
    let shared: Vec<u32> = a.labels.iter().copied().filter(|&l| b.has(l)).collect();
    let batch: Vec<u32> = shared.iter().copied().filter(|&l| keep(l)).collect();
    let summed: Vec<u32> = shared.iter().copied().filter(|&l| !keep(l)).collect();
    let a_only: Vec<u32> = a.labels.iter().copied().filter(|&l| !b.has(l)).collect();
    let b_only: Vec<u32> = b.labels.iter().copied().filter(|&l| !a.has(l)).collect();
    let size = |l: u32| a.dim(l).max(b.dim(l));
    for &l in &shared {
        let (da, db) = (a.dim(l), b.dim(l));
        if da != db && da != 1 && db != 1 {
            bail_invalid!("Einsum: label sizes {da} and {db} do not broadcast");
        }
    }
    let dims = |ls: &[u32], own: &Operand| -> Vec<usize> {
        ls.iter()
            .map(|&l| {
                if own.has(l) && !shared.contains(&l) {
                    own.dim(l)
                } else {
                    size(l)
                }
            })
            .collect()
    };
    let (bd, ad, sd, od) = (
        dims(&batch, a),
        dims(&a_only, a),
        dims(&summed, a),
        dims(&b_only, b),
    );
    let prod = |v: &[usize]| v.iter().product::<usize>();
    let order_a: Vec<u32> = [batch.as_slice(), &a_only, &summed].concat();
    let xa = arrange(cx, a, &order_a, &[bd.as_slice(), &ad, &sd].concat())?;
    let xa = cx.reshape(&xa, &[prod(&bd), prod(&ad), prod(&sd)])?;
    let order_b: Vec<u32> = [batch.as_slice(), &summed, &b_only].concat();
    let xb = arrange(cx, b, &order_b, &[bd.as_slice(), &sd, &od].concat())?;
    let xb = cx.reshape(&xb, &[prod(&bd), prod(&sd), prod(&od)])?;
    let y = cx.matmul(&xa, &xb)?;
    let y = cx.reshape(&y, &[bd.as_slice(), &ad, &od].concat())?;
    Ok(Operand {
        x: y,
        labels: [batch, a_only, b_only].concat(),
    })
}

fn einsum(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let eq = n
        .attr_string("equation")?
        .ok_or_else(|| Error::invalid("Einsum needs an equation"))?;
    let xs: Vec<&TVal> = (0..ins.len())
        .map(|i| tensor_arg(ins, i, "Inputs"))
        .collect::<Result<_>>()?;
    if xs.is_empty() {
        bail_invalid!("Einsum needs at least one input");
    }
    let dtype = xs[0].dtype();
    if xs.iter().any(|x| x.dtype() != dtype) {
        bail_invalid!("Einsum inputs differ in dtype");
    }
    // Half precision accumulates in f32 like the reference.
    let work = if matches!(dtype, DType::F16 | DType::BF16) {
        DType::F32
    } else {
        dtype
    };
    let ranks: Vec<usize> = xs.iter().map(|x| x.rank()).collect();
    let (labels, output) = parse_equation(&eq, &ranks)?;
    let mut ops = Vec::with_capacity(xs.len());
    for (x, l) in xs.iter().zip(&labels) {
        let x = cx.cast(x, work)?;
        ops.push(distinct_labels(cx, &x, l)?);
    }
    let mut rest = ops.into_iter();
    let mut acc = rest
        .next()
        .ok_or_else(|| Error::invalid("Einsum needs an input"))?;
    let later: Vec<Operand> = rest.collect();
    for (j, b) in later.iter().enumerate() {
        let needed = |l: u32| output.contains(&l) || later[j + 1..].iter().any(|o| o.has(l));
        let acc_r = sum_unneeded(cx, acc, |l| needed(l) || b.has(l))?;
        let b_r = sum_unneeded(
            cx,
            Operand {
                x: b.x.clone(),
                labels: b.labels.clone(),
            },
            |l| needed(l) || acc_r.has(l),
        )?;
        acc = contract(cx, &acc_r, &b_r, &needed)?;
    }
    let acc = sum_unneeded(cx, acc, |l| output.contains(&l))?;
    if let Some(l) = output.iter().find(|&&l| !acc.has(l)) {
        bail_invalid!(
            "Einsum: output label {} appears in no input",
            char::from_u32(*l).unwrap_or('?')
        );
    }
    let sizes: Vec<usize> = output.iter().map(|&l| acc.dim(l)).collect();
    let y = arrange(cx, &acc, &output, &sizes)?;
    Ok(vec![tv(cx.cast(&y, dtype)?)])
}

// ---- Det ----

/// Determinant by Gaussian elimination with partial pivoting, one unrolled step per column.
fn det(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let r = x.rank();
    if r < 2 || x.shape()[r - 1] != x.shape()[r - 2] || !x.dtype().is_float() {
        bail_invalid!("Det needs float square matrices, got {}", x.ty);
    }
    let n = x.shape()[r - 1];
    if n > 64 {
        bail_unsupported!("Det of {n}x{n} matrices (unrolled elimination) is not supported");
    }
    let dt = x.dtype();
    let batch = x.shape()[..r - 2].to_vec();
    let mut one_shape = batch.clone();
    one_shape.extend([1, 1]);
    let mut det = cx.full(1.0, dt, &one_shape)?;
    let mut a = x.clone();
    for m in (1..=n).rev() {
        // Pivot: the row with the largest |a[i, 0]|, swapped to the top.
        let col = cx.slice_axis(&a, r - 1, 0, 1, 1)?;
        let abs = cx.unary(UnaryOp::Abs, &col)?;
        let p = cx.emit1(
            Prim::ArgReduce {
                max: true,
                axis: r - 2,
                select_last: false,
            },
            &[&abs],
        )?;
        let rows = TVal::constant(Tensor::from_vec(
            vec![m, 1],
            (0..m as i64).collect::<Vec<_>>(),
        )?);
        let zero = cx.scalar(0.0, DType::I64);
        let is_top = cx.binary(BinaryOp::Eq, &rows, &zero)?;
        let is_piv = cx.binary(BinaryOp::Eq, &rows, &p)?;
        let other = cx.where_(&is_piv, &zero, &rows)?;
        let idx = cx.where_(&is_top, &p, &other)?;
        let idx = cx.expand(&idx, a.shape())?;
        a = cx.emit1(Prim::GatherElements { axis: r - 2 }, &[&a, &idx])?;
        let no_swap = cx.binary(BinaryOp::Eq, &p, &zero)?;
        let (pos, neg) = (cx.scalar(1.0, dt), cx.scalar(-1.0, dt));
        let sign = cx.where_(&no_swap, &pos, &neg)?;
        let top = cx.slice_axis(&a, r - 2, 0, 1, 1)?;
        let piv = cx.slice_axis(&top, r - 1, 0, 1, 1)?;
        det = cx.mul(&det, &piv)?;
        det = cx.mul(&det, &sign)?;
        if m == 1 {
            break;
        }
        // Eliminate below the pivot (dividing by 1 where it is 0: the det is 0 then anyway).
        let zf = cx.scalar(0.0, dt);
        let piv_zero = cx.binary(BinaryOp::Eq, &piv, &zf)?;
        let safe = cx.where_(&piv_zero, &pos, &piv)?;
        let below = cx.slice_axis(&a, r - 2, 1, m - 1, 1)?;
        let factor_col = cx.slice_axis(&below, r - 1, 0, 1, 1)?;
        let factor = cx.div(&factor_col, &safe)?;
        let top_rest = cx.slice_axis(&top, r - 1, 1, m - 1, 1)?;
        let below_rest = cx.slice_axis(&below, r - 1, 1, m - 1, 1)?;
        let upd = cx.mul(&factor, &top_rest)?;
        a = cx.sub(&below_rest, &upd)?;
    }
    Ok(vec![tv(cx.reshape(&det, &batch)?)])
}

pub fn register(r: &mut Registry) {
    r.insert("MatMul", matmul);
    r.insert("Gemm", gemm);
    r.insert("Einsum", einsum);
    r.insert("Det", det);
}
