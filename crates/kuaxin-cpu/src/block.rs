//! The block evaluator of fused kernels: one expression DAG over a block of up to `BLOCK`
//! consecutive domain positions, op by op, so that each op is one vectorised loop and every
//! intermediate stays in L1.
//!
//! A value is materialised only when it varies over the block: a load that is contiguous
//! within the block is read in place, a load constant over the block (a broadcast scalar, a
//! bias along another axis) and every `Const` are scalars, and an op on scalars is a scalar.
//! Values are f32 (bools as 0/1), computed with the same scalar functions as the unfused
//! primitives, so both agree bit for bit.
use crate::scalar::Scalar;
use crate::simd;
use kuaxin_core::kernel::{Expr, Op};
use kuaxin_core::prim::{BinaryOp, UnaryOp};
use kuaxin_core::{DType, Error, Result};

pub const BLOCK: usize = 1024;

/// A value over the block.
#[derive(Clone, Copy)]
pub enum Val<'a> {
    /// In the op's own buffer.
    Buf,
    /// In place in an argument.
    Slice(&'a [f32]),
    /// The same at every position.
    Scalar(f32),
}

/// An operand, resolved.
#[derive(Clone, Copy)]
enum Arg<'b> {
    V(&'b [f32]),
    S(f32),
}

/// Buffers and value kinds for evaluating one op list block after block.
///
/// Each op's [`Val`] is kept field by field (kind, slice, scalar) rather than as one enum:
/// an enum written as a 4-byte tag and read back whole stalls store-to-load forwarding,
/// once per operand per block, which cost as much as the arithmetic.
pub struct Block<'a> {
    bufs: Vec<Vec<f32>>,
    kinds: Vec<Kind>,
    slices: Vec<&'a [f32]>,
    scalars: Vec<f32>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Buf,
    Slice,
    Scalar,
}

impl<'a> Block<'a> {
    pub fn new(ops: usize) -> Self {
        Block {
            bufs: vec![vec![0f32; BLOCK]; ops],
            kinds: vec![Kind::Scalar; ops],
            slices: vec![&[][..]; ops],
            scalars: vec![0.0; ops],
        }
    }

    #[inline(always)]
    fn set(&mut self, i: usize, v: Val<'a>) {
        match v {
            Val::Buf => self.kinds[i] = Kind::Buf,
            Val::Slice(s) => {
                self.kinds[i] = Kind::Slice;
                self.slices[i] = s;
            }
            Val::Scalar(c) => {
                self.kinds[i] = Kind::Scalar;
                self.scalars[i] = c;
            }
        }
    }

    #[inline(always)]
    fn get(&self, i: usize) -> Val<'a> {
        match self.kinds[i] {
            Kind::Buf => Val::Buf,
            Kind::Slice => Val::Slice(self.slices[i]),
            Kind::Scalar => Val::Scalar(self.scalars[i]),
        }
    }

    /// Evaluates `ops` over `n` positions. `load(l, dst)` returns load `l`'s values, or fills
    /// `dst` with them and returns `Val::Buf`; `reduced` is the reduced value (epilogues).
    pub fn eval(
        &mut self,
        ops: &[Op],
        n: usize,
        reduced: Option<&[f32]>,
        load: &mut dyn FnMut(usize, &mut [f32]) -> Val<'a>,
    ) -> Result<()> {
        simd::vectorized(
            #[inline(always)]
            || self.eval_any(ops, n, reduced, load, None),
        )
    }

    /// Evaluates `ops` over `out.len()` positions and writes the last op's values to `out`
    /// (computed there directly, without a copy).
    pub fn eval_into(
        &mut self,
        ops: &[Op],
        reduced: Option<&[f32]>,
        load: &mut dyn FnMut(usize, &mut [f32]) -> Val<'a>,
        out: &mut [f32],
    ) -> Result<()> {
        simd::vectorized(
            #[inline(always)]
            || -> Result<()> {
                let n = out.len();
                self.eval_any(ops, n, reduced, load, Some(&mut *out))?;
                match ops.len().checked_sub(1).map(|last| self.get(last)) {
                    Some(Val::Slice(s)) => out.copy_from_slice(&s[..n]),
                    Some(Val::Scalar(c)) => out.fill(c),
                    // Computed in `out`.
                    Some(Val::Buf) => {}
                    None => return Err(Error::backend("a fused kernel without ops")),
                }
                Ok(())
            },
        )
    }

    /// Value `i` of the last evaluation, as a slice (a scalar is spread into its buffer).
    pub fn slice(&mut self, i: usize, n: usize) -> &[f32] {
        match self.get(i) {
            Val::Buf => &self.bufs[i][..n],
            Val::Slice(s) => &s[..n],
            Val::Scalar(c) => {
                self.bufs[i][..n].fill(c);
                &self.bufs[i][..n]
            }
        }
    }

    #[inline(always)]
    fn eval_any(
        &mut self,
        ops: &[Op],
        n: usize,
        reduced: Option<&[f32]>,
        load: &mut dyn FnMut(usize, &mut [f32]) -> Val<'a>,
        mut dest: Option<&mut [f32]>,
    ) -> Result<()> {
        for (i, op) in ops.iter().enumerate() {
            let (before, rest) = self.bufs.split_at_mut(i);
            let out = match dest.as_deref_mut() {
                Some(d) if i + 1 == ops.len() => d,
                _ => &mut rest[0][..n],
            };
            let (kinds, slices, scalars) = (&self.kinds, &self.slices, &self.scalars);
            let arg = |k: usize| match kinds[k] {
                Kind::Buf => Arg::V(&before[k][..n]),
                Kind::Slice => Arg::V(&slices[k][..n]),
                Kind::Scalar => Arg::S(scalars[k]),
            };
            let val = match &op.expr {
                Expr::Load(l) => load(*l, out),
                Expr::Const(c) => Val::Scalar(*c as f32),
                Expr::Reduced => {
                    let r = reduced
                        .ok_or_else(|| Error::backend("reduced value outside the epilogue"))?;
                    out.copy_from_slice(&r[..n]);
                    Val::Buf
                }
                Expr::Unary(u, a) => {
                    let x = arg(*a);
                    float_unary_op!(*u, f32, f => map(out, x, f), else
                    float_test_op!(*u, f32, f => map(out, x, #[inline(always)] |v| bool_f32(f(v))), else
                    if *u == UnaryOp::Not {
                        map(out, x, #[inline(always)] |v| bool_f32(v == 0.0))
                    } else {
                        return Err(Error::unsupported(format!("fused {u:?}")));
                    }))
                }
                Expr::Binary(b, x, y) => {
                    let (x, y) = (arg(*x), arg(*y));
                    let logical = |f: fn(bool, bool) -> bool| {
                        #[inline(always)]
                        move |a: f32, b: f32| bool_f32(f(a != 0.0, b != 0.0))
                    };
                    float_binary_op!(*b, f32, f => zip(out, x, y, f), else
                    float_cmp_op!(*b, f32, f => zip(out, x, y, #[inline(always)] |a, b| bool_f32(f(a, b))), else
                    match b {
                        BinaryOp::Max => zip(out, x, y, f32::max_nan),
                        BinaryOp::Min => zip(out, x, y, f32::min_nan),
                        BinaryOp::And => zip(out, x, y, logical(|a, b| a & b)),
                        BinaryOp::Or => zip(out, x, y, logical(|a, b| a | b)),
                        BinaryOp::Xor => zip(out, x, y, logical(|a, b| a ^ b)),
                        _ => return Err(Error::unsupported(format!("fused {b:?}"))),
                    }))
                }
                Expr::Where(c, x, y) => select(out, arg(*c), arg(*x), arg(*y)),
                Expr::Cast(a) => {
                    if op.dtype == DType::Bool {
                        map(
                            out,
                            arg(*a),
                            #[inline(always)]
                            |v| bool_f32(v != 0.0),
                        )
                    } else {
                        match kinds[*a] {
                            Kind::Buf => {
                                out.copy_from_slice(&before[*a][..n]);
                                Val::Buf
                            }
                            Kind::Slice => Val::Slice(slices[*a]),
                            Kind::Scalar => Val::Scalar(scalars[*a]),
                        }
                    }
                }
            };
            self.set(i, val);
        }
        Ok(())
    }
}

#[inline(always)]
fn bool_f32(b: bool) -> f32 {
    b as u8 as f32
}

#[inline(always)]
fn map<'a>(out: &mut [f32], x: Arg, f: impl Fn(f32) -> f32) -> Val<'a> {
    match x {
        Arg::S(c) => Val::Scalar(f(c)),
        Arg::V(x) => {
            for (o, &v) in out.iter_mut().zip(x) {
                *o = f(v);
            }
            Val::Buf
        }
    }
}

#[inline(always)]
fn zip<'a>(out: &mut [f32], x: Arg, y: Arg, f: impl Fn(f32, f32) -> f32) -> Val<'a> {
    match (x, y) {
        (Arg::S(a), Arg::S(b)) => return Val::Scalar(f(a, b)),
        (Arg::V(x), Arg::V(y)) => {
            for ((o, &a), &b) in out.iter_mut().zip(x).zip(y) {
                *o = f(a, b);
            }
        }
        (Arg::V(x), Arg::S(b)) => {
            for (o, &a) in out.iter_mut().zip(x) {
                *o = f(a, b);
            }
        }
        (Arg::S(a), Arg::V(y)) => {
            for (o, &b) in out.iter_mut().zip(y) {
                *o = f(a, b);
            }
        }
    }
    Val::Buf
}

#[inline(always)]
fn select<'a>(out: &mut [f32], c: Arg, x: Arg, y: Arg) -> Val<'a> {
    let at = |a: Arg, j: usize| match a {
        Arg::V(v) => v[j],
        Arg::S(s) => s,
    };
    match (c, x, y) {
        (Arg::S(c), x, y) => {
            let chosen = if c != 0.0 { x } else { y };
            match chosen {
                Arg::S(s) => return Val::Scalar(s),
                Arg::V(v) => out.copy_from_slice(&v[..out.len()]),
            }
        }
        (Arg::V(c), Arg::V(x), Arg::V(y)) => {
            for (((o, &c), &a), &b) in out.iter_mut().zip(c).zip(x).zip(y) {
                *o = if c != 0.0 { a } else { b };
            }
        }
        (Arg::V(c), x, y) => {
            for (j, (o, &c)) in out.iter_mut().zip(c).enumerate() {
                *o = if c != 0.0 { at(x, j) } else { at(y, j) };
            }
        }
    }
    Val::Buf
}
