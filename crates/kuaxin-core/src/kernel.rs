//! The kernel IR: what the fusion pass produces and back ends render.
//!
//! A kernel loops over an iteration `domain`, reads its arguments through index maps (views —
//! transpose, broadcast, slice, reshape — are strides here, never copies), evaluates an
//! expression DAG of elementwise ops, optionally reduces the trailing `reduce_dims` axes of the
//! domain, evaluates an epilogue on the reduced values, and stores one output.
//!
//! Sizes and strides are data of the kernel, not part of its code: a renderer passes them as
//! kernel arguments, so a new batch or sequence length reuses the compiled kernel
//! ([`Kernel::signature`] is what a compile cache keys on).
use crate::dtype::DType;
use crate::prim::{BinaryOp, ReduceOp, TensorType, UnaryOp};
use std::fmt;

/// One argument read through an index map: element `offset + sum(i_k * strides[k])` of the
/// argument's row-major storage, for domain index `i`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Load {
    pub arg: usize,
    pub dtype: DType,
    pub strides: Vec<isize>,
    pub offset: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Load(usize),
    Const(f64),
    Unary(UnaryOp, usize),
    Binary(BinaryOp, usize, usize),
    Where(usize, usize, usize),
    Cast(usize),
    /// The reduced value (only in the epilogue).
    Reduced,
}

impl Expr {
    /// The values (earlier ops of the same list) this expression reads.
    pub fn operands(&self) -> Vec<usize> {
        match *self {
            Expr::Unary(_, a) | Expr::Cast(a) => vec![a],
            Expr::Binary(_, x, y) => vec![x, y],
            Expr::Where(c, x, y) => vec![c, x, y],
            Expr::Load(_) | Expr::Const(_) | Expr::Reduced => vec![],
        }
    }
}

/// A value of the DAG: an expression and its dtype. Operands refer to earlier values of the
/// same list (`body` for the prologue, `epilogue` for after the reduction).
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub expr: Expr,
    pub dtype: DType,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reduction {
    pub op: ReduceOp,
    /// Value of `body` that is reduced.
    pub value: usize,
    /// How many trailing domain axes are reduced.
    pub dims: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    pub name: String,
    pub domain: Vec<usize>,
    pub loads: Vec<Load>,
    pub body: Vec<Op>,
    pub reduce: Option<Reduction>,
    /// Ops on the kept domain after the reduction; loads here ignore the reduced axes.
    pub epilogue: Vec<Op>,
    /// The output: its type (row-major over the kept domain, reshaped to `out.shape`).
    pub out: TensorType,
    /// Which graph ops this kernel holds, for reports.
    pub origins: Vec<String>,
}

impl Kernel {
    /// The value stored: the last op of the epilogue when reducing, else of the body.
    pub fn stored(&self) -> usize {
        if self.reduce.is_some() {
            self.epilogue.len() - 1
        } else {
            self.body.len() - 1
        }
    }
    /// Kept (non-reduced) domain axes.
    pub fn kept(&self) -> &[usize] {
        let r = self.reduce.as_ref().map(|r| r.dims).unwrap_or(0);
        &self.domain[..self.domain.len() - r]
    }
    /// The code of the kernel without its sizes: equal signatures render to equal source.
    pub fn signature(&self) -> String {
        let loads: Vec<String> = self
            .loads
            .iter()
            .map(|l| format!("{}:{}:{}", l.arg, l.dtype, l.strides.len()))
            .collect();
        format!(
            "{}|{:?}|{:?}|{:?}|{}|{}",
            self.domain.len(),
            loads,
            self.body,
            self.reduce.as_ref().map(|r| (r.op, r.value, r.dims)),
            self.epilogue.len(),
            self.out.dtype
        ) + &format!("{:?}", self.epilogue)
    }
}

fn write_ops(f: &mut fmt::Formatter<'_>, ops: &[Op], prefix: &str, loads: &[Load]) -> fmt::Result {
    for (i, op) in ops.iter().enumerate() {
        let e = match &op.expr {
            Expr::Load(l) => {
                let ld = &loads[*l];
                format!("load arg{}[{} + i·{:?}]", ld.arg, ld.offset, ld.strides)
            }
            Expr::Const(c) => format!("{c}"),
            Expr::Unary(u, a) => format!("{u:?}({prefix}{a})"),
            Expr::Binary(b, x, y) => format!("{b:?}({prefix}{x}, {prefix}{y})"),
            Expr::Where(c, x, y) => format!("where({prefix}{c}, {prefix}{x}, {prefix}{y})"),
            Expr::Cast(a) => format!("cast({prefix}{a})"),
            Expr::Reduced => "reduced".into(),
        };
        writeln!(f, "    {prefix}{i}: {} = {e}", op.dtype)?;
    }
    Ok(())
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "kernel {} domain {:?} -> {}",
            self.name, self.domain, self.out
        )?;
        write_ops(f, &self.body, "v", &self.loads)?;
        if let Some(r) = &self.reduce {
            writeln!(
                f,
                "    reduce {:?}(v{}) over the last {} axes",
                r.op, r.value, r.dims
            )?;
            write_ops(f, &self.epilogue, "e", &self.loads)?;
        }
        writeln!(
            f,
            "    store {}{}",
            if self.reduce.is_some() { "e" } else { "v" },
            self.stored()
        )
    }
}
