//! Elementwise primitives, views and reductions written as kernels of the kernel IR, so that a
//! back end's kernel renderer also covers these primitives unfused (the wgpu and CUDA back
//! ends both render them this way).
use crate::kernel::{Expr, Kernel, Load, Op, Reduction};
use crate::prim::{Prim, TensorType};
use crate::tensor::contiguous_strides;

/// `prim` on inputs `ins` with output `out` as one kernel; None for primitives that are not
/// elementwise, views or reductions. Types are those `Prim::infer` validated.
pub fn prim_kernel(prim: &Prim, ins: &[TensorType], out: &TensorType) -> Option<Kernel> {
    Some(match prim {
        Prim::Unary(op) => elementwise(ins, out, Expr::Unary(*op, 0)),
        Prim::Binary(op) => elementwise(ins, out, Expr::Binary(*op, 0, 1)),
        Prim::Where => elementwise(ins, out, Expr::Where(0, 1, 2)),
        Prim::Cast(_) => elementwise(ins, out, Expr::Cast(0)),
        Prim::View {
            shape,
            strides,
            offset,
        } => {
            let load = Load {
                arg: 0,
                dtype: ins.first()?.dtype,
                strides: strides.clone(),
                offset: *offset,
            };
            let body = vec![Op {
                expr: Expr::Load(0),
                dtype: out.dtype,
            }];
            kernel(shape.clone(), vec![load], body, out)
        }
        Prim::Reduce { op, axes } => {
            let x = ins.first()?;
            let s = contiguous_strides(&x.shape);
            // Kept axes first, reduced axes last: the kernel reduces trailing domain axes.
            let order: Vec<usize> = (0..x.shape.len())
                .filter(|a| !axes.contains(a))
                .chain((0..x.shape.len()).filter(|a| axes.contains(a)))
                .collect();
            let load = Load {
                arg: 0,
                dtype: x.dtype,
                strides: order.iter().map(|&a| s[a]).collect(),
                offset: 0,
            };
            let body = vec![Op {
                expr: Expr::Load(0),
                dtype: x.dtype,
            }];
            let mut k = kernel(
                order.iter().map(|&a| x.shape[a]).collect(),
                vec![load],
                body,
                out,
            );
            let reduced = (0..x.shape.len()).filter(|a| axes.contains(a)).count();
            k.reduce = Some(Reduction {
                op: *op,
                value: 0,
                dims: reduced,
            });
            k.epilogue = vec![Op {
                expr: Expr::Reduced,
                dtype: out.dtype,
            }];
            k
        }
        _ => return None,
    })
}

fn kernel(domain: Vec<usize>, loads: Vec<Load>, body: Vec<Op>, out: &TensorType) -> Kernel {
    Kernel {
        name: String::new(),
        domain,
        loads,
        body,
        reduce: None,
        epilogue: vec![],
        out: out.clone(),
        origins: vec![],
    }
}

/// Contiguous loads of every input over the output's shape, then `last`.
fn elementwise(ins: &[TensorType], out: &TensorType, last: Expr) -> Kernel {
    let loads: Vec<Load> = ins
        .iter()
        .enumerate()
        .map(|(i, t)| Load {
            arg: i,
            dtype: t.dtype,
            strides: contiguous_strides(&out.shape),
            offset: 0,
        })
        .collect();
    let mut body: Vec<Op> = ins
        .iter()
        .enumerate()
        .map(|(i, t)| Op {
            expr: Expr::Load(i),
            dtype: t.dtype,
        })
        .collect();
    body.push(Op {
        expr: last,
        dtype: out.dtype,
    });
    kernel(out.shape.clone(), loads, body, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prim::{BinaryOp, ReduceOp};
    use crate::DType;

    #[test]
    fn a_reduction_moves_its_axes_last() {
        let x = TensorType::new(DType::F32, vec![2, 3, 4]);
        let p = Prim::Reduce {
            op: ReduceOp::Sum,
            axes: vec![1],
        };
        let out = p.infer(&[x.clone()]).unwrap().remove(0);
        let k = prim_kernel(&p, &[x], &out).unwrap();
        assert_eq!(k.domain, vec![2, 4, 3]);
        assert_eq!(k.loads[0].strides, vec![12, 1, 4]);
        assert_eq!(k.reduce.as_ref().map(|r| r.dims), Some(1));
        assert!(Prim::Fused(std::sync::Arc::new(k))
            .infer(&[TensorType::new(DType::F32, vec![2, 3, 4])])
            .is_ok());
    }

    #[test]
    fn matmul_is_not_a_kernel() {
        let t = TensorType::new(DType::F32, vec![2, 2]);
        assert!(prim_kernel(&Prim::MatMul, &[t.clone(), t.clone()], &t).is_none());
        let k = prim_kernel(&Prim::Binary(BinaryOp::Add), &[t.clone(), t.clone()], &t).unwrap();
        assert_eq!(k.body.len(), 3);
    }
}
