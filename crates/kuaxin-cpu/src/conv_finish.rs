//! A convolution epilogue that is only a bias per channel, a residual added after it and a
//! ReLU, recognised in the kernel IR so the tiles can apply it to their sums in registers
//! ([`crate::panels::Columns`]) instead of a pass of the block evaluator over the stored
//! output. All of ResNet-50's convolutions end this way once their BatchNormalization is
//! folded into the weights.
use crate::panels::Columns;
use crate::tile::finish_one;
use kuaxin_core::kernel::{Expr, Kernel, Load};
use kuaxin_core::prim::BinaryOp;
use kuaxin_core::{DType, Data, Tensor};
use rayon::prelude::*;

/// Applies the finish to a block of a convolution's output stored by rows (`rows` channels
/// of `p` positions; the block's own biases and residual) as [`finish_one`] does, for a
/// convolution off the tiles (gemm): the same bits as the block evaluator, at the cost of a
/// plain loop. ResNet-50's last 1 x 1 layer (2048 x 49) took 0.24 ms more with its bias,
/// residual and ReLU through the evaluator.
pub fn finish_rows(block: &mut [f32], p: usize, f: Columns, parallel: bool) {
    let row = |(i, row): (usize, &mut [f32])| {
        let bias = f.bias.map(|b| b[i]);
        match f.residual {
            Some(r) => {
                for (v, &r) in row.iter_mut().zip(&r[i * p..]) {
                    *v = finish_one(*v, bias, Some(r), f.relu);
                }
            }
            None => {
                for v in row {
                    *v = finish_one(*v, bias, None, f.relu);
                }
            }
        }
    };
    if p == 0 {
        return;
    }
    if parallel {
        block
            .par_chunks_mut(p)
            .enumerate()
            .with_min_len(16)
            .for_each(row);
    } else {
        block.chunks_mut(p).enumerate().for_each(row);
    }
}

/// What a value of the epilogue is, in terms of the convolution's output `x`.
#[derive(Clone, Copy)]
enum Term<'a> {
    /// `x` itself (argument 0).
    Conv,
    /// A bias per channel.
    Bias(&'a [f32]),
    /// The constant +0.0 (an IR constant, or a scalar tensor broadcast).
    Zero,
    /// `x + bias` (or `bias + x`: the same f32 add).
    Biased(&'a [f32]),
    /// A tensor of the output's shape read in the output's order.
    Residual(&'a [f32]),
    /// `(x + bias) + residual`, in that association.
    Summed(&'a [f32], &'a [f32]),
    /// `max_nan(v, 0)` of `x`, `x + bias` or `(x + bias) + residual`.
    Relu(Columns<'a>),
    Other,
}

/// The finish when the epilogue `k` (argument 0 the convolution's output `x` over its domain
/// `[N, M, ..]`; arguments 1.. in `extra`) computes exactly `max_nan(x + bias[m], 0)`, `x +
/// bias[m]`, `max_nan(x, 0)`, or `max_nan((x + bias[m]) + residual, 0)` (the add with the
/// residual in either operand order, the ReLU optional).
pub fn bias_relu<'a>(k: &Kernel, extra: &[&'a Tensor]) -> Option<Columns<'a>> {
    if k.domain.len() < 3 {
        return None;
    }
    along(k, extra, 1)
}

/// The same finish for a matrix product's epilogue, its bias one value per column: along the
/// last axis of the kernel's domain, which must be the product's `n` columns.
pub fn bias_relu_columns<'a>(k: &Kernel, extra: &[&'a Tensor], n: usize) -> Option<Columns<'a>> {
    if k.domain.last() != Some(&n) {
        return None;
    }
    along(k, extra, k.domain.len() - 1)
}

/// Whether a product's epilogue `k` can be such a finish, from its ops alone (the values of
/// its arguments decide at run time): loads, adds and maxima only.
pub fn may_finish(k: &Kernel) -> bool {
    k.reduce.is_none()
        && !k.body.is_empty()
        && k.body.iter().all(|op| {
            matches!(
                op.expr,
                Expr::Load(_)
                    | Expr::Const(_)
                    | Expr::Binary(BinaryOp::Add, ..)
                    | Expr::Binary(BinaryOp::Max, ..)
            )
        })
}

/// The same finish for a blocked convolution's epilogue (domain `[N, M/16, OH, OW, 16]`):
/// its bias one value per channel, channel `16 b + i` at block `b`, lane `i`.
pub fn bias_relu_blocked<'a>(k: &Kernel, extra: &[&'a Tensor]) -> Option<Columns<'a>> {
    let d = &k.domain;
    if d.len() != 5 || d[4] != 16 {
        return None;
    }
    let channels = d[1] * 16;
    finish_of(k, extra, &|ld: &Load, t: &'a Tensor| {
        let s = &ld.strides;
        let per_channel = s.len() == 5
            && s[4] == 1
            && (s[1] == 16 || d[1] == 1)
            && [0, 2, 3].iter().all(|&i| s[i] == 0 || d[i] == 1);
        match &t.data {
            Data::F32(v) if per_channel && ld.dtype == DType::F32 => {
                v.get(ld.offset..ld.offset + channels)
            }
            _ => None,
        }
    })
}

/// [`bias_relu`] with the bias along domain axis `axis`.
fn along<'a>(k: &Kernel, extra: &[&'a Tensor], axis: usize) -> Option<Columns<'a>> {
    if axis >= k.domain.len() {
        return None;
    }
    finish_of(k, extra, &|ld: &Load, t: &'a Tensor| {
        per_channel(ld, &k.domain, axis, t)
    })
}

/// The finish `k` computes, with `bias` saying which loads read a bias and its values.
fn finish_of<'a>(
    k: &Kernel,
    extra: &[&'a Tensor],
    bias: &dyn Fn(&Load, &'a Tensor) -> Option<&'a [f32]>,
) -> Option<Columns<'a>> {
    if k.reduce.is_some() || k.body.is_empty() {
        return None;
    }
    let mut terms: Vec<Term<'a>> = Vec::with_capacity(k.body.len());
    for op in &k.body {
        if op.dtype != DType::F32 {
            return None;
        }
        let at = |i: usize| terms.get(i).copied().unwrap_or(Term::Other);
        let t = match &op.expr {
            Expr::Load(l) => {
                let ld = k.loads.get(*l)?;
                if ld.arg == 0 {
                    Term::Conv
                } else {
                    let t = extra.get(ld.arg - 1)?;
                    if is_zero(ld, t) {
                        Term::Zero
                    } else if let Some(r) = in_order(ld, &k.domain, t) {
                        Term::Residual(r)
                    } else {
                        bias(ld, t).map_or(Term::Other, Term::Bias)
                    }
                }
            }
            Expr::Const(c) if *c == 0.0 && c.is_sign_positive() => Term::Zero,
            Expr::Binary(BinaryOp::Add, a, b) => match (at(*a), at(*b)) {
                (Term::Conv, Term::Bias(s)) | (Term::Bias(s), Term::Conv) => Term::Biased(s),
                (Term::Biased(s), Term::Residual(r)) | (Term::Residual(r), Term::Biased(s)) => {
                    Term::Summed(s, r)
                }
                _ => Term::Other,
            },
            // `max_nan(v, 0)` keeps v's -0.0 and NaN; `max_nan(0, v)` would not: only this order.
            Expr::Binary(BinaryOp::Max, a, b) => match (at(*a), at(*b)) {
                (Term::Conv, Term::Zero) => Term::Relu(Columns {
                    bias: None,
                    residual: None,
                    relu: true,
                }),
                (Term::Biased(s), Term::Zero) => Term::Relu(Columns {
                    bias: Some(s),
                    residual: None,
                    relu: true,
                }),
                (Term::Summed(s, r), Term::Zero) => Term::Relu(Columns {
                    bias: Some(s),
                    residual: Some(r),
                    relu: true,
                }),
                _ => Term::Other,
            },
            _ => Term::Other,
        };
        terms.push(t);
    }
    match *terms.last()? {
        Term::Biased(s) => Some(Columns {
            bias: Some(s),
            residual: None,
            relu: false,
        }),
        Term::Summed(s, r) => Some(Columns {
            bias: Some(s),
            residual: Some(r),
            relu: false,
        }),
        Term::Relu(f) => Some(f),
        _ => None,
    }
}

/// Whether a load reads one +0.0 everywhere (a constant scalar broadcast over the domain).
fn is_zero(ld: &Load, t: &Tensor) -> bool {
    let Data::F32(v) = &t.data else { return false };
    ld.dtype == DType::F32
        && ld.strides.iter().all(|&s| s == 0)
        && v.get(ld.offset).is_some_and(|x| x.to_bits() == 0)
}

/// All of an f32 argument of the output's shape, when a load reads it in the output's order.
fn in_order<'a>(ld: &Load, domain: &[usize], t: &'a Tensor) -> Option<&'a [f32]> {
    let numel: usize = domain.iter().product();
    let identity = ld.offset == 0 && kuaxin_core::prim::Prim::is_identity_load(ld, domain);
    match &t.data {
        Data::F32(v) if identity && ld.dtype == DType::F32 && v.len() == numel => Some(v),
        _ => None,
    }
}

/// The values a load reads along domain axis `axis` (a channel, a column: stride 1 along it,
/// 0 elsewhere) of an f32 argument.
fn per_channel<'a>(ld: &Load, domain: &[usize], axis: usize, t: &'a Tensor) -> Option<&'a [f32]> {
    let m = domain[axis];
    let per_channel = ld.strides.len() == domain.len()
        && ld.strides[axis] == 1
        && ld
            .strides
            .iter()
            .enumerate()
            .all(|(i, &s)| i == axis || s == 0 || domain[i] == 1);
    match &t.data {
        Data::F32(v) if per_channel && ld.dtype == DType::F32 => v.get(ld.offset..ld.offset + m),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuaxin_core::kernel::Op;
    use kuaxin_core::prim::TensorType;

    const DOMAIN: [usize; 4] = [1, 3, 2, 2];

    fn kernel(body: Vec<Expr>, loads: Vec<Vec<isize>>) -> Kernel {
        Kernel {
            name: "k".into(),
            domain: DOMAIN.to_vec(),
            loads: loads
                .into_iter()
                .enumerate()
                .map(|(arg, strides)| Load {
                    arg,
                    dtype: DType::F32,
                    strides,
                    offset: 0,
                })
                .collect(),
            body: body
                .into_iter()
                .map(|expr| Op {
                    expr,
                    dtype: DType::F32,
                })
                .collect(),
            reduce: None,
            epilogue: vec![],
            out: TensorType::new(DType::F32, DOMAIN.to_vec()),
            origins: vec![],
        }
    }

    #[test]
    fn only_a_bias_and_relu_of_the_convolution_are_taken() {
        let x = vec![12, 4, 2, 1];
        let channel = vec![0, 1, 0, 0];
        let bias = Tensor::new(vec![3], Data::F32(vec![1.0, -2.0, 0.5])).unwrap();
        let zero = Tensor::new(vec![], Data::F32(vec![0.0])).unwrap();
        let neg_zero = Tensor::new(vec![], Data::F32(vec![-0.0])).unwrap();
        let add = Expr::Binary(BinaryOp::Add, 0, 1);
        let loads = || vec![x.clone(), channel.clone(), vec![0; 4]];
        let got = |k: &Kernel, extra: &[&Tensor]| {
            bias_relu(k, extra).map(|f| (f.bias.is_some(), f.residual.is_some(), f.relu))
        };
        // x + bias, then max with a broadcast zero (ResNet's form) or a constant zero.
        let mut body = vec![Expr::Load(0), Expr::Load(1), add.clone(), Expr::Load(2)];
        body.push(Expr::Binary(BinaryOp::Max, 2, 3));
        assert_eq!(
            got(&kernel(body.clone(), loads()), &[&bias, &zero]),
            Some((true, false, true))
        );
        let relu_only = vec![
            Expr::Load(0),
            Expr::Const(0.0),
            Expr::Binary(BinaryOp::Max, 0, 1),
        ];
        assert_eq!(
            got(&kernel(relu_only, loads()), &[]),
            Some((false, false, true))
        );
        let bias_only = vec![Expr::Load(1), Expr::Load(0), add.clone()];
        assert_eq!(
            got(&kernel(bias_only, loads()), &[&bias]),
            Some((true, false, false))
        );
        // (x + bias) + residual, then the ReLU; the residual's add in either operand order.
        let residual = Tensor::new(DOMAIN.to_vec(), Data::F32(vec![0.5; 12])).unwrap();
        let with_residual = |first: usize, second: usize| {
            let body = vec![
                Expr::Load(0),
                Expr::Load(1),
                add.clone(),
                Expr::Load(3),
                Expr::Binary(BinaryOp::Add, first, second),
                Expr::Load(2),
                Expr::Binary(BinaryOp::Max, 4, 5),
            ];
            kernel(
                body,
                vec![x.clone(), channel.clone(), vec![0; 4], x.clone()],
            )
        };
        for (a, b) in [(2, 3), (3, 2)] {
            assert_eq!(
                got(&with_residual(a, b), &[&bias, &zero, &residual]),
                Some((true, true, true))
            );
        }
        // Not (x + residual) + bias: another rounding.
        let other_order = kernel(
            vec![
                Expr::Load(0),
                Expr::Load(3),
                add.clone(),
                Expr::Load(1),
                Expr::Binary(BinaryOp::Add, 2, 3),
            ],
            vec![x.clone(), channel.clone(), vec![0; 4], x.clone()],
        );
        assert_eq!(got(&other_order, &[&bias, &zero, &residual]), None);
        // Not taken: the zero is -0.0; max(0, v) (other bits for -0.0); a bias varying along
        // positions; a further op.
        assert_eq!(
            got(&kernel(body.clone(), loads()), &[&bias, &neg_zero]),
            None
        );
        let mut swapped = body.clone();
        swapped[4] = Expr::Binary(BinaryOp::Max, 3, 2);
        assert_eq!(got(&kernel(swapped, loads()), &[&bias, &zero]), None);
        let along = vec![x.clone(), vec![0, 1, 0, 1], vec![0; 4]];
        assert_eq!(got(&kernel(body.clone(), along), &[&bias, &zero]), None);
        let mut more = body;
        more.push(Expr::Binary(BinaryOp::Mul, 4, 4));
        assert_eq!(got(&kernel(more, loads()), &[&bias, &zero]), None);
    }

    #[test]
    fn a_product_bias_runs_along_the_last_axis() {
        let x = vec![12, 4, 2, 1];
        let column = vec![0, 0, 0, 1];
        let channel = vec![0, 1, 0, 0];
        let bias2 = Tensor::new(vec![2], Data::F32(vec![1.0, -2.0])).unwrap();
        let bias3 = Tensor::new(vec![3], Data::F32(vec![1.0, -2.0, 0.5])).unwrap();
        let add = Expr::Binary(BinaryOp::Add, 0, 1);
        let body = vec![Expr::Load(0), Expr::Load(1), add.clone()];
        let by_column = kernel(body.clone(), vec![x.clone(), column]);
        let f = bias_relu_columns(&by_column, &[&bias2], 2).expect("a bias per column");
        assert_eq!(f.bias, Some(&[1.0f32, -2.0][..]));
        assert_eq!((f.residual, f.relu), (None, false));
        // Columns that are not the product's, and a bias per channel, are not a column finish.
        assert!(bias_relu_columns(&by_column, &[&bias2], 3).is_none());
        let by_channel = kernel(body.clone(), vec![x, channel]);
        assert!(bias_relu_columns(&by_channel, &[&bias3], 2).is_none());
        // Which epilogues a back end may claim for the tile: adds and maxima only.
        assert!(may_finish(&by_column));
        let mut erf = body;
        erf.push(Expr::Unary(kuaxin_core::prim::UnaryOp::Erf, 2));
        assert!(!may_finish(&kernel(
            erf,
            vec![vec![12, 4, 2, 1], vec![0, 0, 0, 1]]
        )));
    }
}
