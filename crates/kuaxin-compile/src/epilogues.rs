//! Epilogues: the elementwise work after a convolution or a matrix product runs on each of
//! its output blocks while the block is in cache (in the registers of the CPU tiles, for a
//! bias, a residual and a ReLU), and the product's output is never stored on its own.
//!
//! A reduction whose prologue is such work (SqueezeNet's head: the 1000-channel convolution's
//! bias and ReLU, then the global average pool; ResNet-50's last residual and ReLU before its
//! pool) is split first: the prologue becomes the product's epilogue and the reduction reads
//! what it stored. Left in the reduction's prologue, the bias and ReLU cost an evaluation per
//! element where the tile's finish costs nothing.
use crate::program::Instr;
use crate::value::Src;
use kuaxin_core::kernel::{Expr, Kernel, Load, Op, Reduction};
use kuaxin_core::prim::{Prim, TensorType};
use kuaxin_core::tensor::contiguous_strides;
use kuaxin_core::DType;
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A convolution or a matrix product whose output only an elementwise kernel reads, in its
/// own order, becomes a `ConvEpilogue` or `MatMulEpilogue` with that kernel. A reduction
/// kernel is taken the same way when its prologue ([`split_reduction`]) is such a kernel:
/// the prologue goes to the product, and the reduction, reading the product's output, stays.
pub fn merge_epilogues(
    instrs: Vec<Instr>,
    live_out: &HashSet<usize>,
    supports: &dyn Fn(&Prim) -> bool,
) -> Vec<Instr> {
    let uses = crate::program::slot_uses(&instrs, live_out);
    let producer = crate::program::producers(&instrs);
    let mut replaced: HashMap<usize, Vec<Instr>> = HashMap::new();
    let mut removed: HashSet<usize> = HashSet::new();
    for (i, ins) in instrs.iter().enumerate() {
        let Prim::Fused(k) = &ins.prim else { continue };
        if k.out.dtype != DType::F32 {
            continue;
        }
        let (kernel, reduction) = match split_reduction(k) {
            Some((prologue, reduction)) => (Cow::Owned(prologue), Some(reduction)),
            None if k.reduce.is_some() => continue,
            None => (Cow::Borrowed(&**k), None),
        };
        for (a, src) in ins.inputs.iter().enumerate() {
            let Src::Slot(s) = src else { continue };
            let Some(&p) = producer.get(s) else { continue };
            let product = &instrs[p];
            let made = &product.out_types[0];
            // A domain with unit axes the product's shape lacks (a pool's window of one
            // output), or the other way round, iterates over the product's shape instead.
            // So does one that walks the product's output in another order (a global pool's
            // domain puts the blocked layout's lanes before the pooled axes): the
            // reduction then reads the product's output in the order the kernel read it.
            let anchor = match kernel
                .loads
                .iter()
                .filter(|l| l.arg == a)
                .collect::<Vec<_>>()[..]
            {
                [l] => Some(l),
                _ => None,
            };
            let reshaped = match (&product.prim, anchor) {
                (Prim::Conv { .. } | Prim::ConvBlocked { .. }, Some(l))
                    if made.shape != kernel.domain
                        || !Prim::is_identity_load(l, &kernel.domain) =>
                {
                    on_shape(&kernel, &made.shape, &l.strides).map(Cow::Owned)
                }
                _ => None,
            };
            let anchor = anchor.map(|l| l.strides.clone());
            let elementwise = reshaped.unwrap_or(Cow::Borrowed(&*kernel));
            let fits = uses.get(s) == Some(&1)
                && !removed.contains(&p)
                && made.dtype == DType::F32
                && elementwise
                    .loads
                    .iter()
                    .filter(|l| l.arg == a)
                    .all(|l| Prim::is_identity_load(l, &elementwise.domain));
            if !fits {
                continue;
            }
            // The product's output becomes argument 0; the others follow in order.
            let remap = |b: usize| {
                if b == a {
                    0
                } else if b < a {
                    b + 1
                } else {
                    b
                }
            };
            let mut epilogue = elementwise.clone().into_owned();
            for l in &mut epilogue.loads {
                l.arg = remap(l.arg);
            }
            epilogue.origins.insert(0, product.origin.to_string());
            let epilogue = Arc::new(epilogue);
            let Some(prim) = finished_by(&product.prim, made, epilogue) else {
                continue;
            };
            if !supports(&prim) {
                break;
            }
            let mut inputs = product.inputs.clone();
            inputs.extend(
                ins.inputs
                    .iter()
                    .enumerate()
                    .filter(|(b, _)| *b != a)
                    .map(|(_, s)| s.clone()),
            );
            let origin = crate::program::joined_origin([&*product.origin, &*ins.origin]);
            let merged = match reduction {
                // The product, finished by the prologue, still fills its own slot (nothing
                // else reads it), and the reduction reads it there.
                Some(reduction) => vec![
                    Instr {
                        prim,
                        inputs,
                        outputs: product.outputs.clone(),
                        out_types: product.out_types.clone(),
                        origin,
                    },
                    Instr {
                        prim: Prim::Fused(Arc::new(read_as(reduction, anchor))),
                        inputs: vec![src.clone()],
                        outputs: ins.outputs.clone(),
                        out_types: ins.out_types.clone(),
                        origin: ins.origin.clone(),
                    },
                ],
                None => vec![Instr {
                    prim,
                    inputs,
                    outputs: ins.outputs.clone(),
                    out_types: ins.out_types.clone(),
                    origin,
                }],
            };
            replaced.insert(i, merged);
            removed.insert(p);
            break;
        }
    }
    crate::program::rewrite_into(instrs, &removed, replaced)
}

/// `product` (a convolution or a matrix product, as lowering or view merging made it) with
/// `epilogue` run on its output `made`; `None` for another primitive, or an epilogue that
/// does not cover the product's output in its order (a convolution's over its very shape).
pub(crate) fn finished_by(
    product: &Prim,
    made: &TensorType,
    epilogue: Arc<Kernel>,
) -> Option<Prim> {
    Some(match product {
        Prim::Conv {
            strides,
            dilations,
            groups,
        } if made.shape == epilogue.domain => Prim::ConvEpilogue {
            strides: strides.clone(),
            dilations: dilations.clone(),
            groups: *groups,
            epilogue,
        },
        Prim::ConvBlocked {
            strides,
            dilations,
            pads,
            epilogue: None,
        } if made.shape == epilogue.domain => Prim::ConvBlocked {
            strides: strides.clone(),
            dilations: dilations.clone(),
            pads: pads.clone(),
            epilogue: Some(epilogue),
        },
        Prim::MatMul if made.numel() == epilogue.out.numel() => Prim::MatMulEpilogue {
            a: None,
            b: None,
            epilogue,
        },
        Prim::MatMulOfViews { a, b } if made.numel() == epilogue.out.numel() => {
            Prim::MatMulEpilogue {
                a: a.clone(),
                b: b.clone(),
                epilogue,
            }
        }
        _ => return None,
    })
}

/// A reduction kernel as its prologue and the reduction of what the prologue computes: the
/// prologue an elementwise kernel over the whole domain (the body up to the reduced value,
/// reading every argument as before), the reduction a kernel of one argument (the prologue's
/// output, read in order) with the same reduction and epilogue. `None` for a kernel that does
/// not reduce, whose epilogue reads an argument, or whose reduced value is not f32.
pub fn split_reduction(k: &Kernel) -> Option<(Kernel, Kernel)> {
    let r = k.reduce.as_ref()?;
    let reads = |ops: &[Op]| ops.iter().any(|op| matches!(op.expr, Expr::Load(_)));
    let value = k.body.get(r.value)?;
    // A reduced value that is the body's first op (a load) has no prologue to split off.
    if r.value == 0 || value.dtype != DType::F32 || reads(&k.epilogue) {
        return None;
    }
    let full = TensorType {
        dtype: DType::F32,
        shape: k.domain.clone(),
    };
    let prologue = Kernel {
        name: format!("{}_prologue", k.name),
        domain: k.domain.clone(),
        loads: k.loads.clone(),
        body: k.body[..=r.value].to_vec(),
        reduce: None,
        epilogue: Vec::new(),
        out: full,
        origins: k.origins.clone(),
    };
    let reduction = Kernel {
        name: k.name.clone(),
        domain: k.domain.clone(),
        loads: vec![Load {
            arg: 0,
            dtype: DType::F32,
            strides: contiguous_strides(&k.domain),
            offset: 0,
        }],
        body: vec![Op {
            expr: Expr::Load(0),
            dtype: DType::F32,
        }],
        reduce: Some(Reduction {
            op: r.op,
            value: 0,
            dims: r.dims,
        }),
        epilogue: k.epilogue.clone(),
        out: k.out.clone(),
        origins: k.origins.clone(),
    };
    Some((prologue, reduction))
}

/// An elementwise kernel `k` over `shape` instead of its domain, when the two hold the same
/// axes (those of size one apart) in some order, and the load whose strides are `anchor`
/// reads `shape` in order: each axis of `shape` is the axis of the domain of its size along
/// which `anchor` steps as a contiguous `shape` does, and every load's strides move with it.
/// Then the kernel runs as the epilogue of the product that made `shape`.
fn on_shape(k: &Kernel, shape: &[usize], anchor: &[isize]) -> Option<Kernel> {
    if k.reduce.is_some() || anchor.len() != k.domain.len() {
        return None;
    }
    let steps = contiguous_strides(shape);
    let mut used = vec![false; k.domain.len()];
    let mut from = vec![None; shape.len()];
    for (t, &n) in shape.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let f =
            (0..k.domain.len()).find(|&f| !used[f] && k.domain[f] == n && anchor[f] == steps[t])?;
        used[f] = true;
        from[t] = Some(f);
    }
    if (0..k.domain.len()).any(|f| k.domain[f] != 1 && !used[f]) {
        return None;
    }
    let mut out = k.clone();
    out.domain = shape.to_vec();
    for l in &mut out.loads {
        l.strides = from.iter().map(|f| f.map_or(0, |f| l.strides[f])).collect();
    }
    out.out.shape = shape.to_vec();
    Some(out)
}

/// `reduction` (reading its one argument in order) reading it with the strides `anchor`
/// instead, when there are some: where its prologue, run as a product's epilogue over the
/// product's shape, stored the values.
fn read_as(mut reduction: Kernel, anchor: Option<Vec<isize>>) -> Kernel {
    if let (Some(anchor), [load]) = (anchor, reduction.loads.as_mut_slice()) {
        load.strides = anchor;
    }
    reduction
}
