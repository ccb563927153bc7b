//! Normalisations along the last axis as one row primitive each, for back ends that claim
//! them: `SoftmaxRows` and `LayerNormRows`.
//!
//! Lowered, a softmax is seven primitives (`m = max(x)`, `m` broadcast, `d = x - m`,
//! `e = exp(d)`, `s = sum(e)`, `s` broadcast, `e / s`) and a LayerNorm seventeen (mean,
//! centring, variance, `1 / sqrt(var + eps)`, scale, bias). Fused, they are four and three
//! kernels, each a walk over the whole tensor that evaluates its expression op by op (and a
//! LayerNorm's kernels each recompute what made their input): MiniLM's attention softmax took
//! 0.45 ms a layer that way against onnxruntime's 0.08, each LayerNorm 0.19 ms against 0.06.
//! Matched here before clustering, a chain becomes one primitive whose CPU kernel takes a row
//! at a time while it is in cache, with the same f32 steps. Whatever made the input (an
//! attention scale and mask, a bias and a residual) stays a fused kernel of its own.
use crate::program::Instr;
use crate::value::Src;
use kuaxin_core::prim::{BinaryOp, Prim, ReduceOp, TensorType, UnaryOp, ViewMap};
use kuaxin_core::tensor::contiguous_strides;
use kuaxin_core::{DType, Tensor};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Replaces every f32 softmax or LayerNorm chain over the last axis whose intermediates
/// nothing else reads (and that are not outputs) by its row primitive, where `supports`
/// claims it.
pub fn merge_row_ops(
    instrs: Vec<Instr>,
    slot_types: &[TensorType],
    live_out: &HashSet<usize>,
    supports: &dyn Fn(&Prim) -> bool,
) -> Vec<Instr> {
    let softmax = supports(&Prim::SoftmaxRows);
    let masked = supports(&Prim::MaskedSoftmaxRows {
        scale: 1.0,
        divide: true,
        mask: ViewMap {
            shape: vec![],
            strides: vec![],
            offset: 0,
        },
    });
    let layer_norm = supports(&Prim::LayerNormRows { eps: 0.0 });
    if !softmax && !layer_norm {
        return instrs;
    }
    let uses = crate::program::slot_uses(&instrs, []);
    let producer = crate::program::producers(&instrs);
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
        let found = if softmax {
            chain
                .softmax(ins)
                .map(|found| chain.with_scale_and_mask(found, masked))
        } else {
            None
        };
        let Some((prim, inputs, parts)) = found.or_else(|| {
            if layer_norm {
                chain.layer_norm(ins)
            } else {
                None
            }
        }) else {
            continue;
        };
        if parts.iter().any(|p| removed.contains(p)) {
            continue;
        }
        // The nodes it runs: the last instruction's first, then any other the parts came
        // from (an attention's scale and mask).
        let mut origins: Vec<&str> = vec![&ins.origin];
        let mut sorted = parts.clone();
        sorted.sort_unstable();
        for &p in &sorted {
            let o: &str = &instrs[p].origin;
            if !origins.contains(&o) {
                origins.push(o);
            }
        }
        let origin = crate::program::joined_origin(origins);
        removed.extend(parts);
        replaced.insert(
            i,
            Instr {
                prim,
                inputs,
                origin,
                ..ins.clone()
            },
        );
    }
    crate::program::rewrite(instrs, &removed, replaced)
}

struct Chain<'a> {
    instrs: &'a [Instr],
    slot_types: &'a [TensorType],
    producer: &'a HashMap<usize, usize>,
    uses: &'a HashMap<usize, usize>,
    live_out: &'a HashSet<usize>,
}

impl Chain<'_> {
    /// When `div` ends a softmax chain over the last axis: the primitive, its input `x` and
    /// the six instructions before the division.
    fn softmax(&self, div: &Instr) -> Option<(Prim, Vec<Src>, Vec<usize>)> {
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
        Some((
            Prim::SoftmaxRows,
            vec![x.clone()],
            vec![max, mb, sub, exp, sum, sb],
        ))
    }

    /// A softmax found by [`Chain::softmax`], of `x / scale + mask` (or `x * scale + mask`)
    /// with a constant scale and a mask broadcast to the rows, as the primitive that takes
    /// `x` and the mask (when `masked`, and the sum and the scaling are read by nothing
    /// else); otherwise as found. An attention's scores: scaled, masked and normalised in one
    /// pass over each row, where a fused kernel wrote the masked scores out and the softmax
    /// read them back (MiniLM-L3: 0.13 ms a layer).
    fn with_scale_and_mask(
        &self,
        found: (Prim, Vec<Src>, Vec<usize>),
        masked: bool,
    ) -> (Prim, Vec<Src>, Vec<usize>) {
        if !masked {
            return found;
        }
        let matched = || -> Option<(Prim, Vec<Src>, Vec<usize>)> {
            let (_, inputs, parts) = &found;
            let x = inputs.first()?;
            let shape = match x {
                Src::Slot(id) => self.slot_types.get(*id)?.shape.clone(),
                Src::Const(_) => return None,
            };
            // x is read by the max and the subtraction.
            let (add, _) = self.made_by(x, 2)?;
            let [a, b] = self.binary(&self.instrs[add], BinaryOp::Add)?;
            // The scaled scores on either side of the addition, the mask on the other.
            let (((scores, scale, divide), scaled_parts), mask) = self
                .scaled(a)
                .zip(Some(b))
                .or_else(|| self.scaled(b).zip(Some(a)))?;
            let (mask_src, view, view_part) = self.broadcast_to(mask, &shape)?;
            let mut all = parts.clone();
            all.push(add);
            all.extend(scaled_parts);
            all.extend(view_part);
            Some((
                Prim::MaskedSoftmaxRows {
                    scale,
                    divide,
                    mask: view,
                },
                vec![scores, mask_src],
                all,
            ))
        };
        matched().unwrap_or(found)
    }

    /// When `s` is `q / c` or `q * c`, read once, with `c` a constant of one value (or a view
    /// of one, read once): `(q, c, divide)` and the instructions that make `s`.
    #[allow(clippy::type_complexity)]
    fn scaled(&self, s: &Src) -> Option<((Src, f32, bool), Vec<usize>)> {
        let (i, _) = self.made_by(s, 1)?;
        let ins = &self.instrs[i];
        let divide = match ins.prim {
            Prim::Binary(BinaryOp::Div) => true,
            Prim::Binary(BinaryOp::Mul) => false,
            _ => return None,
        };
        let [q, c] = self.binary(ins, if divide { BinaryOp::Div } else { BinaryOp::Mul })?;
        if let Some(v) = all_equal(c) {
            return Some(((q.clone(), v, divide), vec![i]));
        }
        let (view, src, _, _) = self.view_of(c)?;
        let v = all_equal(src)?;
        Some(((q.clone(), v, divide), vec![i, view]))
    }

    /// `m` as an f32 tensor read through a view of `shape`: `m`'s own source and the view's
    /// map when `m` is a view read once (and its instruction), or `m` itself read in row-major
    /// order when it has `shape`.
    fn broadcast_to(&self, m: &Src, shape: &[usize]) -> Option<(Src, ViewMap, Option<usize>)> {
        if let Some((v, src, ty, (vs, strides, offset))) = self.view_of(m) {
            if vs != shape || ty.dtype != DType::F32 {
                return None;
            }
            let map = ViewMap {
                shape: vs.to_vec(),
                strides: strides.to_vec(),
                offset,
            };
            return Some((src.clone(), map, Some(v)));
        }
        let ty = match m {
            Src::Slot(id) => self.slot_types.get(*id)?.clone(),
            Src::Const(t) => TensorType::new(t.dtype(), t.shape.clone()),
        };
        if ty.shape != shape || ty.dtype != DType::F32 {
            return None;
        }
        let map = ViewMap {
            shape: shape.to_vec(),
            strides: contiguous_strides(shape),
            offset: 0,
        };
        Some((m.clone(), map, None))
    }

    /// When `add` ends a LayerNorm over the last axis with a scale and a bias (the chain
    /// `standardize` and `layer_norm` lower): the primitive, its inputs `[x, scale, bias]`
    /// (scale and bias the sources of their row broadcasts) and the sixteen instructions
    /// before the addition.
    fn layer_norm(&self, add: &Instr) -> Option<(Prim, Vec<Src>, Vec<usize>)> {
        let shape = &add.out_types[0].shape;
        let n = *shape.last()?;
        let [y1, bb] = self.binary(add, BinaryOp::Add)?;
        let (bias, bview) = self.row_vector(bb, shape)?;
        let (scale_mul, _) = self.made_by(y1, 1)?;
        let [y0, sb] = self.binary(&self.instrs[scale_mul], BinaryOp::Mul)?;
        let (scale, sview) = self.row_vector(sb, shape)?;
        let (norm, _) = self.made_by(y0, 1)?;
        let [d, rb] = self.binary(&self.instrs[norm], BinaryOp::Mul)?;
        // r = 1 / sqrt(sum((x - mean)^2) / n + eps)
        let (r, rview) = self.broadcast_of(rb, shape)?;
        let (recip, _) = self.made_by(&r, 1)?;
        let sd = self.unary(recip, UnaryOp::Reciprocal)?;
        let (sqrt, _) = self.made_by(sd, 1)?;
        let ve = self.unary(sqrt, UnaryOp::Sqrt)?;
        let (plus_eps, _) = self.made_by(ve, 1)?;
        let [var, eps] = self.binary(&self.instrs[plus_eps], BinaryOp::Add)?;
        let eps = all_equal(eps)?;
        let (var_div, _) = self.made_by(var, 1)?;
        let [s2, count] = self.binary(&self.instrs[var_div], BinaryOp::Div)?;
        let (sum2, _) = self.made_by(s2, 1)?;
        let (square, _) = self.made_by(&self.instrs[sum2].inputs.first()?.clone(), 1)?;
        let [d1, d2] = self.binary(&self.instrs[square], BinaryOp::Mul)?;
        if !self.reduces_last(sum2, ReduceOp::Sum, &self.instrs[sum2].inputs[0])?
            || !d1.is_same(d)
            || !d2.is_same(d)
            || all_equal(count)? != n as f32
        {
            return None;
        }
        // d = x - mean, read by the square (twice) and the normalisation.
        let (sub, _) = self.made_by(d, 3)?;
        let [x, mb] = self.binary(&self.instrs[sub], BinaryOp::Sub)?;
        let (mean, mview) = self.broadcast_of(mb, shape)?;
        let (mean_div, _) = self.made_by(&mean, 1)?;
        let [s1, count] = self.binary(&self.instrs[mean_div], BinaryOp::Div)?;
        let (sum1, _) = self.made_by(s1, 1)?;
        if !self.reduces_last(sum1, ReduceOp::Sum, x)? || all_equal(count)? != n as f32 {
            return None;
        }
        let mut parts = vec![
            sum1, mean_div, mview, sub, square, sum2, var_div, plus_eps, sqrt, recip, rview, norm,
            scale_mul,
        ];
        parts.extend(sview.into_iter().chain(bview));
        Some((
            Prim::LayerNormRows { eps },
            vec![x.clone(), scale, bias],
            parts,
        ))
    }

    /// The operands of `ins` when it is the f32 binary `op`.
    fn binary<'b>(&self, ins: &'b Instr, op: BinaryOp) -> Option<&'b [Src; 2]> {
        if ins.prim != Prim::Binary(op) || ins.out_types.first()?.dtype != DType::F32 {
            return None;
        }
        ins.inputs.as_slice().try_into().ok()
    }

    /// The operand of instruction `i` when it is the unary `op`.
    fn unary(&self, i: usize, op: UnaryOp) -> Option<&Src> {
        let ins = &self.instrs[i];
        match ins.inputs.as_slice() {
            [a] if ins.prim == Prim::Unary(op) => Some(a),
            _ => None,
        }
    }

    /// When `b` repeats an f32 vector of the last axis's length over the other axes of
    /// `shape`: the vector, and the view that repeats it (none when `b` is a constant, as
    /// small broadcasts fold into).
    fn row_vector(&self, b: &Src, shape: &[usize]) -> Option<(Src, Option<usize>)> {
        if let Src::Const(t) = b {
            return repeated_row(t, shape).map(|row| (row, None));
        }
        let (v, src, src_ty, (vs, strides, offset)) = self.view_of(b)?;
        let rank = shape.len();
        let n = *shape.last()?;
        let fits = vs == shape
            && offset == 0
            && src_ty.dtype == DType::F32
            && src_ty.shape.iter().product::<usize>() == n
            && (0..rank).all(|d| {
                let want = if d + 1 == rank { 1 } else { 0 };
                shape[d] == 1 || strides[d] == want
            });
        fits.then(|| (src.clone(), Some(v)))
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

    /// When `b` is made by a view read once (and not an output): the view's instruction, its
    /// source and the source's type, and its map (shape, strides, offset).
    #[allow(clippy::type_complexity)]
    fn view_of(&self, b: &Src) -> Option<(usize, &Src, TensorType, (&[usize], &[isize], usize))> {
        let (v, _) = self.made_by(b, 1)?;
        let ins = &self.instrs[v];
        let map = ins.prim.as_view()?;
        let [src] = ins.inputs.as_slice() else {
            return None;
        };
        let ty = match src {
            Src::Slot(id) => self.slot_types.get(*id)?.clone(),
            Src::Const(t) => TensorType::new(t.dtype(), t.shape.clone()),
        };
        Some((v, src, ty, map))
    }

    /// When `b` is a view that broadcasts a `[.., 1]` value along the last axis to `shape`:
    /// the value, and the view's instruction (read once, not an output).
    fn broadcast_of(&self, b: &Src, shape: &[usize]) -> Option<(Src, usize)> {
        let (v, src, src_ty, (vs, strides, offset)) = self.view_of(b)?;
        let src_shape = &src_ty.shape;
        let rank = shape.len();
        let mut want = shape.to_vec();
        *want.last_mut()? = 1;
        let contiguous = contiguous_strides(&want);
        let fits = vs == shape
            && offset == 0
            && src_shape == &want
            && (0..rank).all(|d| {
                shape[d] == 1 || strides[d] == if d + 1 == rank { 0 } else { contiguous[d] }
            });
        fits.then(|| (src.clone(), v))
    }
}

/// The value of a constant whose elements are all the same f32.
fn all_equal(s: &Src) -> Option<f32> {
    let Src::Const(t) = s else { return None };
    let kuaxin_core::Data::F32(v) = &t.data else {
        return None;
    };
    let first = *v.first()?;
    v.iter()
        .all(|x| x.to_bits() == first.to_bits())
        .then_some(first)
}

/// The first row of a constant of `shape` whose rows along the last axis are all the same, as
/// a constant of its own.
fn repeated_row(t: &Arc<Tensor>, shape: &[usize]) -> Option<Src> {
    let kuaxin_core::Data::F32(v) = &t.data else {
        return None;
    };
    let n = *shape.last()?;
    if t.shape != shape || n == 0 || v.len() < n {
        return None;
    }
    let (first, rest) = v.split_at(n);
    let same = rest
        .chunks_exact(n)
        .all(|r| r.iter().zip(first).all(|(a, b)| a.to_bits() == b.to_bits()));
    if !same {
        return None;
    }
    let row = Tensor::new(vec![n], kuaxin_core::Data::F32(first.to_vec())).ok()?;
    Some(Src::Const(Arc::new(row)))
}
