//! The vocabulary lowerings are written in: numpy-like helpers that emit primitives.
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::prim::{BinaryOp, Prim, ReduceOp, UnaryOp};
use kuaxin_core::tensor::contiguous_strides;
use kuaxin_core::{DType, Error, Result, Tensor};

/// Resolves a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    if axis < -r || axis >= r.max(1) && !(rank == 0 && axis == 0) {
        return Err(Error::invalid(format!(
            "axis {axis} is out of range for rank {rank}"
        )));
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

pub fn norm_axes(axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut v: Vec<usize> = axes
        .iter()
        .map(|&a| norm_axis(a, rank))
        .collect::<Result<_>>()?;
    v.sort_unstable();
    let n = v.len();
    v.dedup();
    if v.len() != n {
        return Err(Error::invalid(format!("repeated axis in {axes:?}")));
    }
    Ok(v)
}

/// Numpy broadcasting of two shapes.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::invalid(format!(
                "shapes {a:?} and {b:?} do not broadcast"
            )));
        };
    }
    Ok(out)
}

impl Cx<'_, '_> {
    pub fn emit(&mut self, prim: Prim, inputs: &[&TVal]) -> Result<Vec<TVal>> {
        self.trace.emit(prim, inputs)
    }
    pub fn emit1(&mut self, prim: Prim, inputs: &[&TVal]) -> Result<TVal> {
        self.trace
            .emit(prim, inputs)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::backend("primitive gave no output"))
    }
    pub fn constant(&self, t: Tensor) -> TVal {
        TVal::constant(t)
    }
    pub fn scalar(&self, v: f64, dtype: DType) -> TVal {
        TVal::constant(Tensor::full(dtype, vec![], v))
    }
    pub fn i64s(&self, v: &[i64]) -> TVal {
        TVal::constant(Tensor {
            shape: vec![v.len()],
            data: kuaxin_core::Data::I64(v.to_vec()),
        })
    }
    /// A constant of `shape` filled with `v`, as a broadcast scalar (no large constant).
    pub fn full(&mut self, v: f64, dtype: DType, shape: &[usize]) -> Result<TVal> {
        let s = self.scalar(v, dtype);
        self.expand(&s, shape)
    }
    /// The value's data as i64s (runs device work if it is not constant).
    pub fn ints(&mut self, v: &TVal) -> Result<Vec<i64>> {
        Ok(self.trace.materialize(v)?.to_i64_vec())
    }
    pub fn floats(&mut self, v: &TVal) -> Result<Vec<f64>> {
        Ok(self.trace.materialize(v)?.to_f64_vec())
    }
    pub fn host(&mut self, v: &TVal) -> Result<std::sync::Arc<Tensor>> {
        self.trace.materialize(v)
    }

    // ---- elementwise ----
    pub fn unary(&mut self, op: UnaryOp, x: &TVal) -> Result<TVal> {
        self.emit1(Prim::Unary(op), &[x])
    }
    pub fn binary(&mut self, op: BinaryOp, a: &TVal, b: &TVal) -> Result<TVal> {
        if a.shape() == b.shape() {
            return self.emit1(Prim::Binary(op), &[a, b]);
        }
        let s = broadcast_shapes(a.shape(), b.shape())?;
        let a = self.expand(a, &s)?;
        let b = self.expand(b, &s)?;
        self.emit1(Prim::Binary(op), &[&a, &b])
    }
    pub fn add(&mut self, a: &TVal, b: &TVal) -> Result<TVal> {
        self.binary(BinaryOp::Add, a, b)
    }
    pub fn sub(&mut self, a: &TVal, b: &TVal) -> Result<TVal> {
        self.binary(BinaryOp::Sub, a, b)
    }
    pub fn mul(&mut self, a: &TVal, b: &TVal) -> Result<TVal> {
        self.binary(BinaryOp::Mul, a, b)
    }
    pub fn div(&mut self, a: &TVal, b: &TVal) -> Result<TVal> {
        self.binary(BinaryOp::Div, a, b)
    }
    /// `x op scalar` with the scalar in x's dtype.
    pub fn binary_scalar(&mut self, op: BinaryOp, x: &TVal, s: f64) -> Result<TVal> {
        let c = self.scalar(s, x.dtype());
        self.binary(op, x, &c)
    }
    pub fn where_(&mut self, c: &TVal, a: &TVal, b: &TVal) -> Result<TVal> {
        let s = broadcast_shapes(&broadcast_shapes(c.shape(), a.shape())?, b.shape())?;
        let (c, a, b) = (
            self.expand(c, &s)?,
            self.expand(a, &s)?,
            self.expand(b, &s)?,
        );
        self.emit1(Prim::Where, &[&c, &a, &b])
    }
    pub fn cast(&mut self, x: &TVal, to: DType) -> Result<TVal> {
        if x.dtype() == to {
            return Ok(x.clone());
        }
        self.emit1(Prim::Cast(to), &[x])
    }

    // ---- views ----
    pub fn view(
        &mut self,
        x: &TVal,
        shape: Vec<usize>,
        strides: Vec<isize>,
        offset: usize,
    ) -> Result<TVal> {
        if shape == x.shape() && offset == 0 && strides == contiguous_strides(&shape) {
            return Ok(x.clone());
        }
        self.emit1(
            Prim::View {
                shape,
                strides,
                offset,
            },
            &[x],
        )
    }
    pub fn reshape(&mut self, x: &TVal, shape: &[usize]) -> Result<TVal> {
        if shape.iter().product::<usize>() != x.numel() {
            return Err(Error::invalid(format!(
                "cannot reshape {} to {shape:?}",
                x.ty
            )));
        }
        self.view(x, shape.to_vec(), contiguous_strides(shape), 0)
    }
    /// Numpy broadcast of `x` to `shape`.
    pub fn expand(&mut self, x: &TVal, shape: &[usize]) -> Result<TVal> {
        if x.shape() == shape {
            return Ok(x.clone());
        }
        let r = shape.len();
        if x.rank() > r {
            return Err(Error::invalid(format!(
                "cannot broadcast {} to {shape:?}",
                x.ty
            )));
        }
        let xs = contiguous_strides(x.shape());
        let mut strides = vec![0isize; r];
        for i in 0..x.rank() {
            let o = r - x.rank() + i;
            let d = x.shape()[i];
            if d == shape[o] {
                strides[o] = if d == 1 { 0 } else { xs[i] };
            } else if d != 1 {
                return Err(Error::invalid(format!(
                    "cannot broadcast {} to {shape:?}",
                    x.ty
                )));
            }
        }
        self.view(x, shape.to_vec(), strides, 0)
    }
    pub fn permute(&mut self, x: &TVal, perm: &[usize]) -> Result<TVal> {
        let mut seen = vec![false; x.rank()];
        if perm.len() != x.rank()
            || perm
                .iter()
                .any(|&p| p >= x.rank() || std::mem::replace(&mut seen[p], true))
        {
            return Err(Error::invalid(format!(
                "permutation {perm:?} invalid for {}",
                x.ty
            )));
        }
        let xs = contiguous_strides(x.shape());
        let shape = perm.iter().map(|&p| x.shape()[p]).collect();
        let strides = perm.iter().map(|&p| xs[p]).collect();
        self.view(x, shape, strides, 0)
    }
    /// Elements `start, start+step, ...` (count of them) along `axis`; start already in range.
    pub fn slice_axis(
        &mut self,
        x: &TVal,
        axis: usize,
        start: usize,
        count: usize,
        step: isize,
    ) -> Result<TVal> {
        let xs = contiguous_strides(x.shape());
        let mut shape = x.shape().to_vec();
        shape[axis] = count;
        let mut strides = xs.clone();
        strides[axis] = xs[axis] * step;
        let offset = if count == 0 {
            0
        } else {
            start * xs[axis] as usize
        };
        self.view(x, shape, strides, offset)
    }
    pub fn unsqueeze(&mut self, x: &TVal, axes: &[i64]) -> Result<TVal> {
        let r = x.rank() + axes.len();
        let axes = norm_axes(axes, r)?;
        let mut shape = Vec::with_capacity(r);
        let mut it = x.shape().iter();
        for i in 0..r {
            if axes.contains(&i) {
                shape.push(1);
            } else {
                shape.push(
                    *it.next()
                        .ok_or_else(|| Error::invalid("unsqueeze axes out of range"))?,
                );
            }
        }
        self.reshape(x, &shape)
    }
    /// Removes `axes` (all size-1 axes when None).
    pub fn squeeze(&mut self, x: &TVal, axes: Option<&[i64]>) -> Result<TVal> {
        let axes: Vec<usize> = match axes {
            Some(a) => norm_axes(a, x.rank())?,
            None => (0..x.rank()).filter(|&i| x.shape()[i] == 1).collect(),
        };
        for &a in &axes {
            if x.shape()[a] != 1 {
                return Err(Error::invalid(format!(
                    "cannot squeeze axis {a} of {}",
                    x.ty
                )));
            }
        }
        let shape: Vec<usize> = (0..x.rank())
            .filter(|i| !axes.contains(i))
            .map(|i| x.shape()[i])
            .collect();
        self.reshape(x, &shape)
    }
    pub fn concat(&mut self, xs: &[TVal], axis: usize) -> Result<TVal> {
        if xs.len() == 1 {
            return Ok(xs[0].clone());
        }
        let refs: Vec<&TVal> = xs.iter().collect();
        self.emit1(Prim::Concat { axis }, &refs)
    }

    // ---- reductions ----
    pub fn reduce(
        &mut self,
        op: ReduceOp,
        x: &TVal,
        axes: &[usize],
        keepdims: bool,
    ) -> Result<TVal> {
        let r = if axes.is_empty() {
            x.clone()
        } else {
            self.emit1(
                Prim::Reduce {
                    op,
                    axes: axes.to_vec(),
                },
                &[x],
            )?
        };
        if keepdims {
            return Ok(r);
        }
        let shape: Vec<usize> = (0..x.rank())
            .filter(|i| !axes.contains(i))
            .map(|i| r.shape()[i])
            .collect();
        self.reshape(&r, &shape)
    }
    pub fn mean(&mut self, x: &TVal, axes: &[usize], keepdims: bool) -> Result<TVal> {
        let s = self.reduce(ReduceOp::Sum, x, axes, keepdims)?;
        let n: usize = axes.iter().map(|&a| x.shape()[a]).product();
        self.binary_scalar(BinaryOp::Div, &s, n as f64)
    }

    // ---- linear algebra ----
    /// Numpy `matmul`: 1-d operands promoted, batch dims broadcast.
    pub fn matmul(&mut self, a: &TVal, b: &TVal) -> Result<TVal> {
        if a.rank() == 0 || b.rank() == 0 {
            return Err(Error::invalid("MatMul operands must have rank >= 1"));
        }
        let a2 = if a.rank() == 1 {
            self.unsqueeze(a, &[0])?
        } else {
            a.clone()
        };
        let b2 = if b.rank() == 1 {
            self.unsqueeze(b, &[1])?
        } else {
            b.clone()
        };
        let (ra, rb) = (a2.rank(), b2.rank());
        if b.rank() == 2 && ra > 2 {
            // [.., M, K] x [K, N]: one [M', K] x [K, N] product. The weight is used as it is
            // (broadcasting it to the batch would copy it when the batch is 1).
            let lead = a2.shape()[..ra - 1].to_vec();
            let k = a2.shape()[ra - 1];
            let m: usize = lead.iter().product();
            let flat = self.reshape(&a2, &[m, k])?;
            let out = self.emit1(Prim::MatMul, &[&flat, &b2])?;
            let mut shape = lead;
            shape.push(b2.shape()[1]);
            return self.reshape(&out, &shape);
        }
        let batch = broadcast_shapes(&a2.shape()[..ra - 2], &b2.shape()[..rb - 2])?;
        let mut sa = batch.clone();
        sa.extend(&a2.shape()[ra - 2..]);
        let mut sb = batch.clone();
        sb.extend(&b2.shape()[rb - 2..]);
        let a3 = self.expand(&a2, &sa)?;
        let b3 = self.expand(&b2, &sb)?;
        let out = self.emit1(Prim::MatMul, &[&a3, &b3])?;
        // Drop the axes the 1-d promotion added, both in one squeeze.
        let added: Vec<i64> = [(a.rank() == 1, -2), (b.rank() == 1, -1)]
            .iter()
            .filter(|(p, _)| *p)
            .map(|(_, ax)| *ax)
            .collect();
        if added.is_empty() {
            Ok(out)
        } else {
            self.squeeze(&out, Some(&added))
        }
    }
}

/// Unwraps an input that must be a tensor.
pub fn tensor_arg<'v>(inputs: &'v [Option<Value>], i: usize, what: &str) -> Result<&'v TVal> {
    match inputs.get(i) {
        Some(Some(Value::Tensor(t))) => Ok(t),
        Some(Some(v)) => Err(Error::invalid(format!(
            "input {i} ({what}) must be a tensor, got a {}",
            v.kind()
        ))),
        _ => Err(Error::invalid(format!(
            "missing required input {i} ({what})"
        ))),
    }
}

/// An optional tensor input.
pub fn opt_tensor(inputs: &[Option<Value>], i: usize) -> Result<Option<&TVal>> {
    match inputs.get(i) {
        Some(Some(Value::Tensor(t))) => Ok(Some(t)),
        Some(Some(v)) => Err(Error::invalid(format!(
            "input {i} must be a tensor, got a {}",
            v.kind()
        ))),
        _ => Ok(None),
    }
}

pub fn tv(t: TVal) -> Value {
    Value::Tensor(t)
}
