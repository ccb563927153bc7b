//! Softmax along the last axis as one `Prim::SoftmaxRows`, for back ends that claim it.
//!
//! Lowered, a softmax is seven primitives: `m = max(x)`, `m` broadcast, `d = x - m`,
//! `e = exp(d)`, `s = sum(e)`, `s` broadcast, `e / s`. Fused, they are four kernels (max,
//! exp, sum, divide), each a walk over the whole tensor that evaluates its expression op by
//! op; MiniLM's attention softmax took 0.45 ms a layer that way against onnxruntime's 0.08.
//! Matched here before clustering, the chain becomes one primitive whose CPU kernel takes a
//! row at a time while it is in cache. Whatever made `x` (an attention scale and mask) stays
//! a fused kernel of its own.
use crate::program::Instr;
use crate::value::Src;
use kuaxin_core::prim::{BinaryOp, Prim, ReduceOp, TensorType, UnaryOp};
use kuaxin_core::tensor::contiguous_strides;
use kuaxin_core::DType;
use std::collections::{HashMap, HashSet};

/// Replaces every f32 softmax chain over the last axis whose intermediates nothing else
/// reads (and that are not outputs) by one `SoftmaxRows`, where `supports` claims it.
pub fn merge_softmax_rows(
    instrs: Vec<Instr>,
    slot_types: &[TensorType],
    live_out: &HashSet<usize>,
    supports: &dyn Fn(&Prim) -> bool,
) -> Vec<Instr> {
    if !supports(&Prim::SoftmaxRows) {
        return instrs;
    }
    let mut uses: HashMap<usize, usize> = HashMap::new();
    for ins in &instrs {
        for s in &ins.inputs {
            if let Src::Slot(id) = s {
                *uses.entry(*id).or_default() += 1;
            }
        }
    }
    let producer: HashMap<usize, usize> = instrs
        .iter()
        .enumerate()
        .flat_map(|(i, ins)| ins.outputs.iter().map(move |&o| (o, i)))
        .collect();
    let chain = Chain {
        instrs: &instrs,
        slot_types,
        producer: &producer,
        uses: &uses,
        live_out,
    };
    let mut removed: HashSet<usize> = HashSet::new();
    let mut replaced: HashMap<usize, Instr> = HashMap::new();
    for (i, ins) in instrs.iter().enumerate() {
        let Some((x, parts)) = chain.softmax(ins) else {
            continue;
        };
        if parts.iter().any(|p| removed.contains(p)) {
            continue;
        }
        removed.extend(parts);
        replaced.insert(
            i,
            Instr {
                prim: Prim::SoftmaxRows,
                inputs: vec![x],
                ..ins.clone()
            },
        );
    }
    instrs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !removed.contains(i))
        .map(|(i, ins)| replaced.remove(&i).unwrap_or(ins))
        .collect()
}

struct Chain<'a> {
    instrs: &'a [Instr],
    slot_types: &'a [TensorType],
    producer: &'a HashMap<usize, usize>,
    uses: &'a HashMap<usize, usize>,
    live_out: &'a HashSet<usize>,
}

impl Chain<'_> {
    /// When `div` ends a softmax chain over the last axis: its input `x` and the six
    /// instructions before the division.
    fn softmax(&self, div: &Instr) -> Option<(Src, Vec<usize>)> {
        if div.prim != Prim::Binary(BinaryOp::Div) || div.out_types[0].dtype != DType::F32 {
            return None;
        }
        let shape = &div.out_types[0].shape;
        let [e_src, sb_src] = div.inputs.as_slice() else {
            return None;
        };
        // e / broadcast(sum(e)), e read twice: by the sum and the division.
        let (s_src, sb) = self.broadcast_of(sb_src, shape)?;
        let (sum, _) = self.made_by(&s_src, 1)?;
        if !self.reduces_last(sum, ReduceOp::Sum, e_src)? {
            return None;
        }
        let (exp, _) = self.made_by(e_src, 2)?;
        let [d_src] = self.instrs[exp].inputs.as_slice() else {
            return None;
        };
        if self.instrs[exp].prim != Prim::Unary(UnaryOp::Exp) {
            return None;
        }
        // d = x - broadcast(max(x)).
        let (sub, _) = self.made_by(d_src, 1)?;
        let [x, mb_src] = self.instrs[sub].inputs.as_slice() else {
            return None;
        };
        if self.instrs[sub].prim != Prim::Binary(BinaryOp::Sub) {
            return None;
        }
        let (m_src, mb) = self.broadcast_of(mb_src, shape)?;
        let (max, _) = self.made_by(&m_src, 1)?;
        if !self.reduces_last(max, ReduceOp::Max, x)? {
            return None;
        }
        Some((x.clone(), vec![max, mb, sub, exp, sum, sb]))
    }

    /// The instruction that makes `s` and `s`'s slot, when `s` is an f32 intermediate read
    /// `reads` times and not an output.
    fn made_by(&self, s: &Src, reads: usize) -> Option<(usize, usize)> {
        let Src::Slot(id) = *s else {
            return None;
        };
        let p = *self.producer.get(&id)?;
        let ins = &self.instrs[p];
        let ok = self.uses.get(&id) == Some(&reads)
            && !self.live_out.contains(&id)
            && ins.outputs.len() == 1
            && ins.out_types.first().is_some_and(|t| t.dtype == DType::F32);
        ok.then_some((p, id))
    }

    /// Whether instruction `r` reduces `x` with `op` over its last axis only.
    fn reduces_last(&self, r: usize, op: ReduceOp, x: &Src) -> Option<bool> {
        let ins = &self.instrs[r];
        let Prim::Reduce { op: o, axes } = &ins.prim else {
            return Some(false);
        };
        let rank = ins.out_types[0].shape.len();
        let [input] = ins.inputs.as_slice() else {
            return Some(false);
        };
        let x_ty = match x {
            Src::Slot(id) => self.slot_types.get(*id)?,
            Src::Const(_) => return Some(false),
        };
        Some(
            *o == op
                && rank > 0
                && axes.as_slice() == [rank - 1]
                && input.is_same(x)
                && x_ty.dtype == DType::F32,
        )
    }

    /// When `b` is a view that broadcasts a `[.., 1]` value along the last axis to `shape`:
    /// the value, and the view's instruction (read once, not an output).
    fn broadcast_of(&self, b: &Src, shape: &[usize]) -> Option<(Src, usize)> {
        let (v, _) = self.made_by(b, 1)?;
        let ins = &self.instrs[v];
        let Prim::View {
            shape: vs,
            strides,
            offset,
        } = &ins.prim
        else {
            return None;
        };
        let [src] = ins.inputs.as_slice() else {
            return None;
        };
        let src_shape = match src {
            Src::Slot(id) => &self.slot_types.get(*id)?.shape,
            Src::Const(t) => &t.shape,
        };
        let rank = shape.len();
        let mut want = shape.to_vec();
        *want.last_mut()? = 1;
        let contiguous = contiguous_strides(&want);
        let fits = vs.as_slice() == shape
            && *offset == 0
            && src_shape == &want
            && (0..rank).all(|d| {
                shape[d] == 1 || strides[d] == if d + 1 == rank { 0 } else { contiguous[d] }
            });
        fits.then(|| (src.clone(), v))
    }
}
