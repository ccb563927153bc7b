//! The blocked layout between convolutions (onnxruntime's NCHWc): for a back end that claims
//! `Prim::ConvBlocked`, each one-group f32 2-D convolution of 16k input and output channels
//! runs on `[N, C/16, H, W, 16]` tensors, with its zero padding inside, and the elementwise
//! work between convolutions (bias, ReLU, residual adds) runs on the same layout, so a chain
//! of convolutions is reordered once on the way in and once on the way out.
//!
//! A first layer of fewer than 16 input channels (an image's three) reads its plain input
//! and writes the blocked layout. A convolution of a constant weight whose output channels
//! are not whole blocks (SqueezeNet's 1000-class head) runs on its weight padded with zero
//! filters to whole blocks; lane-wise work and pools follow its padded output, whose extra
//! lanes nothing reads but that work, until it is reordered back without them.
//!
//! A pass over the traced instructions, before fusion: a value made in the blocked layout
//! (by a convolution, or by elementwise work on such a value) gets a new slot of the blocked
//! shape; its own slot is filled only if something else reads it (a pool, a reshape, a
//! program output), by two views that reorder it back. Inputs of blocked work that are not
//! blocked (the first convolution's input, a bias broadcast, a constant) are read through a
//! view that reorders them: channel `c` of a view with strides `[s0, s1, s2, s3]` is lane
//! `c % 16` of block `c / 16` of the view with strides `[s0, 16 s1, s2, s3, s1]`, so a
//! broadcast stays a broadcast and fusion folds it into the kernel's loads.
use crate::program::Instr;
use crate::value::Src;
use kuaxin_core::prim::{Prim, TensorType};
use kuaxin_core::tensor::contiguous_strides;
use kuaxin_core::DType;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Channels in a block of the layout.
const BLOCK: usize = 16;

/// `instrs` (a segment, in order) with its eligible convolutions and the elementwise work
/// after them in the blocked layout; new slots are added to `slot_types`. Unchanged when
/// `supports` does not claim `ConvBlocked`.
pub fn block_convolutions(
    instrs: Vec<Instr>,
    slot_types: &mut Vec<TensorType>,
    live_out: &HashSet<usize>,
    supports: &dyn Fn(&Prim) -> bool,
) -> Vec<Instr> {
    let probe = Prim::ConvBlocked {
        strides: vec![1, 1],
        dilations: vec![1, 1],
        pads: vec![(0, 0); 2],
        epilogue: None,
    };
    if !supports(&probe) || !instrs.iter().any(|i| eligible(i, slot_types).is_some()) {
        return instrs;
    }
    let producer = crate::program::producers(&instrs);
    let mut pass = Pass {
        slot_types,
        out: Vec::with_capacity(instrs.len()),
        blocked: HashMap::new(),
        reordered: HashMap::new(),
        restored: HashSet::new(),
    };
    for ins in &instrs {
        if let Some(conv) = eligible(ins, pass.slot_types) {
            // The input before a zero padding that only this convolution's shape needs.
            let (x, pads) = match unpadded(&ins.inputs[0], &instrs, &producer) {
                Some((x, pads)) => (x, pads),
                None => (ins.inputs[0].clone(), vec![(0, 0); 2]),
            };
            let (strides, dilations, plain) = conv;
            let xb = if plain {
                x
            } else {
                pass.blocked_source(&x, &instrs, &producer, &ins.origin)
            };
            let prim = Prim::ConvBlocked {
                strides,
                dilations,
                pads,
                epilogue: None,
            };
            // Output channels not whole blocks: zero filters make them whole.
            let w = match &ins.inputs[1] {
                Src::Const(t) if !t.shape[0].is_multiple_of(BLOCK) => match zero_filters(t) {
                    Some(p) => Src::Const(Arc::new(p)),
                    None => {
                        pass.keep(ins);
                        continue;
                    }
                },
                w => w.clone(),
            };
            pass.emit_blocked(ins, prim, vec![xb, w]);
        } else if let Some(prim) = follows(ins, &pass, &instrs, &producer) {
            let inputs = match &ins.prim {
                // The padding value stays the scalar it is.
                Prim::PadConstant { .. } => {
                    let x = pass.blocked_source(&ins.inputs[0], &instrs, &producer, &ins.origin);
                    vec![x, ins.inputs[1].clone()]
                }
                _ => ins
                    .inputs
                    .iter()
                    .map(|s| pass.blocked_source(s, &instrs, &producer, &ins.origin))
                    .collect(),
            };
            pass.emit_blocked(ins, prim, inputs);
        } else {
            pass.keep(ins);
        }
    }
    let mut outs: Vec<usize> = live_out.iter().copied().collect();
    outs.sort_unstable();
    for s in outs {
        pass.restore(s, "program output");
    }
    drop_unused(pass.out, live_out)
}

/// (strides, dilations, whether it reads its input as it is) of a convolution the blocked
/// layout takes: one group, f32, 2-D, output channels a multiple of 16, input channels too
/// or fewer than 16 (a first layer's, read from the plain input).
fn eligible(ins: &Instr, slot_types: &[TensorType]) -> Option<(Vec<usize>, Vec<usize>, bool)> {
    let Prim::Conv {
        strides,
        dilations,
        groups: 1,
    } = &ins.prim
    else {
        return None;
    };
    let x = type_of(&ins.inputs[0], slot_types)?;
    let w = type_of(ins.inputs.get(1)?, slot_types)?;
    let fits = x.dtype == DType::F32
        && w.dtype == DType::F32
        && x.shape.len() == 4
        && w.shape.len() == 4
        && x.shape[1] > 0
        && w.shape[0] > 0
        && (x.shape[1].is_multiple_of(BLOCK) || x.shape[1] < BLOCK)
        && (w.shape[0].is_multiple_of(BLOCK) || padding_pays(w.shape[0], &ins.inputs[1]));
    fits.then(|| (strides.clone(), dilations.clone(), x.shape[1] < BLOCK))
}

/// Whether `m` output channels, not whole blocks, are worth padding to whole blocks: the
/// weight is a constant (it can be padded), and the extra filters are at most an eighth
/// more work (SqueezeNet's 1000 classes: 8 more; 24 channels would be a third more).
fn padding_pays(m: usize, w: &Src) -> bool {
    matches!(w, Src::Const(_)) && (m.div_ceil(BLOCK) * BLOCK - m) * 8 <= m
}

/// The f32 weight `t` (`[M, C, KH, KW]`) with zero filters after its own, to whole blocks.
fn zero_filters(t: &kuaxin_core::Tensor) -> Option<kuaxin_core::Tensor> {
    let kuaxin_core::Data::F32(v) = &t.data else {
        return None;
    };
    let mut shape = t.shape.clone();
    shape[0] = shape.first()?.div_ceil(BLOCK) * BLOCK;
    let mut data = v.clone();
    data.resize(shape.iter().product(), 0.0);
    kuaxin_core::Tensor::from_vec(shape, data).ok()
}

/// The constant `t` with values appended to its data so that a view reaching `reach`
/// elements reads only it: a bias or divisor read in the extra lanes of a padded value
/// (whatever those lanes hold, nothing else reads them).
fn extended(t: &Arc<kuaxin_core::Tensor>, reach: usize) -> Option<Src> {
    let kuaxin_core::Data::F32(v) = &t.data else {
        return None;
    };
    if reach <= v.len() {
        return Some(Src::Const(t.clone()));
    }
    // A constant of one value (a mean's divisor) stays one: the fusion then reads it as a
    // number, and the extra lanes divide by it, not by zero.
    let fill = match v.first() {
        Some(&f) if v.iter().all(|x| x.to_bits() == f.to_bits()) => f,
        _ => 0.0,
    };
    let mut data = v.clone();
    data.resize(reach, fill);
    let t = kuaxin_core::Tensor::from_vec(vec![reach], data).ok()?;
    Some(Src::Const(Arc::new(t)))
}

/// Elements a view of `shape` with `strides` (non-negative) from `offset` reaches.
fn view_reach(shape: &[usize], strides: &[isize], offset: usize) -> Option<usize> {
    shape
        .iter()
        .zip(strides)
        .try_fold(offset + 1, |r, (&d, &t)| {
            let t = usize::try_from(t).ok()?;
            r.checked_add(d.checked_sub(1)?.checked_mul(t)?)
        })
}

fn type_of(s: &Src, slot_types: &[TensorType]) -> Option<TensorType> {
    match s {
        Src::Slot(id) => slot_types.get(*id).cloned(),
        Src::Const(t) => Some(TensorType::new(t.dtype(), t.shape.clone())),
    }
}

/// The input and spatial pads of a constant +0.0 padding of only the spatial axes of `x`.
fn unpadded(
    x: &Src,
    instrs: &[Instr],
    producer: &HashMap<usize, usize>,
) -> Option<(Src, Vec<(usize, usize)>)> {
    let Src::Slot(id) = x else { return None };
    let pad = &instrs[*producer.get(id)?];
    let Prim::PadConstant { pads } = &pad.prim else {
        return None;
    };
    let Some(Src::Const(v)) = pad.inputs.get(1) else {
        return None;
    };
    let zero = matches!(&v.data, kuaxin_core::Data::F32(d) if d.len() == 1 && d[0].to_bits() == 0);
    (zero && pads.len() == 4 && pads[0] == (0, 0) && pads[1] == (0, 0))
        .then(|| (pad.inputs[0].clone(), pads[2..].to_vec()))
}

/// What `ins` becomes on blocked inputs, when at least one of its inputs is blocked and it
/// keeps channels on axis 1 (16k of them) with the other axes as they are: elementwise work,
/// a padding or reduction of other axes, a concatenation, a view that moves only other axes.
/// On channels that are not whole blocks (a padded convolution's), only elementwise work
/// whose other inputs are blocked or constants, and reductions of other axes.
fn follows(
    ins: &Instr,
    pass: &Pass,
    instrs: &[Instr],
    producer: &HashMap<usize, usize>,
) -> Option<Prim> {
    let [out] = ins.out_types.as_slice() else {
        return None;
    };
    let blocked_in = |s: &Src| matches!(s, Src::Slot(id) if pass.blocked.contains_key(id));
    let channels = |t: &TensorType| {
        t.dtype == DType::F32 && t.shape.len() >= 2 && t.shape[1].is_multiple_of(BLOCK)
    };
    if out.dtype != DType::F32 || out.shape.len() < 2 || !ins.inputs.iter().any(blocked_in) {
        return None;
    }
    let typed = |s: &Src| type_of(s, pass.slot_types);
    if !channels(out) {
        // A constant, or a view of one, can be read in the extra lanes once extended.
        let constant = |s: &Src| match s {
            Src::Const(_) => true,
            Src::Slot(id) => producer.get(id).is_some_and(|&p| {
                instrs[p].prim.as_view().is_some()
                    && matches!(instrs[p].inputs.first(), Some(Src::Const(_)))
            }),
        };
        return match &ins.prim {
            Prim::Unary(_) | Prim::Binary(_) => ins
                .inputs
                .iter()
                .all(|s| {
                    typed(s).is_some_and(|t| t.dtype == DType::F32 && t.shape == out.shape)
                        && (blocked_in(s) || constant(s))
                })
                .then(|| ins.prim.clone()),
            Prim::Reduce { op, axes } if axes.iter().all(|&a| a >= 2) => Some(Prim::Reduce {
                op: *op,
                axes: axes.clone(),
            }),
            _ => None,
        };
    }
    match &ins.prim {
        Prim::Unary(_) | Prim::Binary(_) => ins
            .inputs
            .iter()
            .all(|s| typed(s).is_some_and(|t| t.dtype == DType::F32 && t.shape == out.shape))
            .then(|| ins.prim.clone()),
        Prim::PadConstant { pads }
            if blocked_in(&ins.inputs[0]) && pads.get(1) == Some(&(0, 0)) =>
        {
            let mut pads = pads.clone();
            pads.push((0, 0));
            Some(Prim::PadConstant { pads })
        }
        Prim::Reduce { op, axes } if axes.iter().all(|&a| a >= 2) => Some(Prim::Reduce {
            op: *op,
            axes: axes.clone(),
        }),
        Prim::Concat { axis } => ins
            .inputs
            .iter()
            .all(|s| typed(s).is_some_and(|t| channels(&t) && t.shape.len() == out.shape.len()))
            .then_some(Prim::Concat { axis: *axis }),
        Prim::View {
            shape,
            strides,
            offset,
        } => {
            let Src::Slot(x) = ins.inputs[0] else {
                return None;
            };
            let (strides, offset) =
                view_on_blocked(&pass.slot_types[x].shape, shape, strides, *offset)?;
            Some(Prim::View {
                shape: blocked_shape(shape),
                strides,
                offset,
            })
        }
        _ => None,
    }
}

/// The strides and offset, on the blocked storage of a value of shape `input`, of the view
/// (`shape`, `strides`, `offset`) of that value, when the view keeps all its channels on
/// axis 1 and moves only along the other axes: the batch axis by whole images, the rest
/// within one channel's plane.
fn view_on_blocked(
    input: &[usize],
    shape: &[usize],
    strides: &[isize],
    offset: usize,
) -> Option<(Vec<isize>, usize)> {
    if input.len() < 2 || shape.len() < 2 || shape[1] != input[1] || shape.len() != strides.len() {
        return None;
    }
    let plane: usize = input[2..].iter().product();
    let image = input[1] * plane;
    if plane == 0 || strides[1] != plane as isize {
        return None;
    }
    let (n0, in_image) = (offset / image, offset % image);
    if in_image >= plane {
        return None;
    }
    let mut reach = in_image;
    let mut out = Vec::with_capacity(shape.len() + 1);
    for (k, (&d, &t)) in shape.iter().zip(strides).enumerate() {
        let t = usize::try_from(t).ok()?;
        out.push(if k == 1 {
            (BLOCK * plane) as isize
        } else if d == 1 || t % image == 0 {
            t as isize
        } else if t < plane {
            reach += (d - 1) * t;
            (BLOCK * t) as isize
        } else {
            return None;
        });
    }
    out.push(1);
    (reach < plane).then_some((out, n0 * image + BLOCK * in_image))
}

/// The blocked shape of `[N, C, ..]`: `[N, C/16, .., 16]` (the last block padded).
fn blocked_shape(s: &[usize]) -> Vec<usize> {
    let mut b = vec![s[0], s[1].div_ceil(BLOCK)];
    b.extend_from_slice(&s[2..]);
    b.push(BLOCK);
    b
}

/// The blocked strides of a view with strides `s` on `[N, C, ..]` (see the module doc).
fn blocked_strides(s: &[isize]) -> Vec<isize> {
    let mut b = vec![s[0], s[1] * BLOCK as isize];
    b.extend_from_slice(&s[2..]);
    b.push(s[1]);
    b
}

struct Pass<'a> {
    slot_types: &'a mut Vec<TensorType>,
    out: Vec<Instr>,
    /// A value's slot -> the slot of its blocked copy.
    blocked: HashMap<usize, usize>,
    /// A value not made blocked -> the slot of its reordered view.
    reordered: HashMap<usize, usize>,
    /// Blocked values whose own slot has been filled again.
    restored: HashSet<usize>,
}

impl Pass<'_> {
    fn new_slot(&mut self, ty: TensorType) -> usize {
        self.slot_types.push(ty);
        self.slot_types.len() - 1
    }

    /// `ins` (whose output is `[N, C, H, W]`) as `prim` on `inputs`, writing a new slot of the
    /// blocked shape.
    fn emit_blocked(&mut self, ins: &Instr, prim: Prim, inputs: Vec<Src>) {
        let ty = &ins.out_types[0];
        let bty = TensorType::new(ty.dtype, blocked_shape(&ty.shape));
        let slot = self.new_slot(bty.clone());
        self.blocked.insert(ins.outputs[0], slot);
        self.out.push(Instr {
            prim,
            inputs,
            outputs: vec![slot],
            out_types: vec![bty],
            origin: ins.origin.clone(),
        });
    }

    /// A view instruction on `input` writing a new slot.
    fn view(
        &mut self,
        input: Src,
        ty: TensorType,
        strides: Vec<isize>,
        offset: usize,
        origin: &Arc<str>,
    ) -> usize {
        let slot = self.new_slot(ty.clone());
        self.out.push(Instr {
            prim: Prim::View {
                shape: ty.shape.clone(),
                strides,
                offset,
            },
            inputs: vec![input],
            outputs: vec![slot],
            out_types: vec![ty],
            origin: origin.clone(),
        });
        slot
    }

    /// `x` (an f32 `[N, C, H, W]` value) in the blocked layout: its blocked slot, or a view
    /// reordering it (composed with the view that makes it, when a view does).
    fn blocked_source(
        &mut self,
        x: &Src,
        instrs: &[Instr],
        producer: &HashMap<usize, usize>,
        origin: &Arc<str>,
    ) -> Src {
        let id = match x {
            Src::Slot(id) => *id,
            Src::Const(t) => {
                let ty = TensorType::new(t.dtype(), blocked_shape(&t.shape));
                let strides = blocked_strides(&contiguous_strides(&t.shape));
                let src = view_reach(&ty.shape, &strides, 0)
                    .and_then(|reach| extended(t, reach))
                    .unwrap_or_else(|| x.clone());
                return Src::Slot(self.view(src, ty, strides, 0, origin));
            }
        };
        if let Some(&b) = self.blocked.get(&id) {
            return Src::Slot(b);
        }
        if let Some(&r) = self.reordered.get(&id) {
            return Src::Slot(r);
        }
        let ty = &self.slot_types[id];
        let bty = TensorType::new(ty.dtype, blocked_shape(&ty.shape));
        // A view of a value that is not blocked itself: the same view, reordered.
        let made_by_view = producer
            .get(&id)
            .map(|&p| &instrs[p])
            .and_then(|p| Some((p.prim.as_view()?, p.inputs.first()?)))
            .filter(|(_, src)| !matches!(src, Src::Slot(s) if self.blocked.contains_key(s)));
        let r = match made_by_view {
            Some(((_, strides, offset), src)) => {
                let strides = blocked_strides(strides);
                let src = match src {
                    Src::Const(t) => view_reach(&bty.shape, &strides, offset)
                        .and_then(|reach| extended(t, reach))
                        .unwrap_or_else(|| src.clone()),
                    _ => src.clone(),
                };
                self.view(src, bty, strides, offset, origin)
            }
            _ => {
                let strides = blocked_strides(&contiguous_strides(&ty.shape));
                self.view(x.clone(), bty, strides, 0, origin)
            }
        };
        self.reordered.insert(id, r);
        Src::Slot(r)
    }

    /// `ins` as it is, its blocked inputs reordered back first.
    fn keep(&mut self, ins: &Instr) {
        for s in &ins.inputs {
            if let Src::Slot(id) = s {
                self.restore(*id, &ins.origin);
            }
        }
        self.out.push(ins.clone());
    }

    /// Fills the slot of blocked value `id` again (NCHW) if it has not been, for a reader
    /// that is not blocked work.
    fn restore(&mut self, id: usize, origin: &str) {
        let Some(&b) = self.blocked.get(&id) else {
            return;
        };
        if !self.restored.insert(id) {
            return;
        }
        let ty = self.slot_types[id].clone();
        let s = &ty.shape;
        let rest: usize = s[2..].iter().product();
        // Channels with the padded last block's, of which the second view keeps the first.
        let padded = s[1].div_ceil(BLOCK) * BLOCK;
        let mut split = vec![s[0], padded / BLOCK, BLOCK];
        split.extend_from_slice(&s[2..]);
        let mut strides = vec![(padded * rest) as isize, (BLOCK * rest) as isize, 1];
        strides.extend(
            contiguous_strides(&s[2..])
                .iter()
                .map(|&t| t * BLOCK as isize),
        );
        let split = TensorType::new(ty.dtype, split);
        let origin: Arc<str> = format!("{origin} (back from blocked)").into();
        let t = self.view(Src::Slot(b), split, strides, 0, &origin);
        let mut kept = contiguous_strides(s);
        kept[0] = (padded * rest) as isize;
        self.out.push(Instr {
            prim: Prim::View {
                shape: s.clone(),
                strides: kept,
                offset: 0,
            },
            inputs: vec![Src::Slot(t)],
            outputs: vec![id],
            out_types: vec![ty],
            origin,
        });
    }
}

/// `instrs` less the instructions whose outputs nothing reads (the paddings and views the
/// blocked work no longer reads), repeatedly; host ops stay.
fn drop_unused(mut instrs: Vec<Instr>, live_out: &HashSet<usize>) -> Vec<Instr> {
    loop {
        let uses = crate::program::slot_uses(&instrs, live_out);
        let before = instrs.len();
        instrs.retain(|ins| {
            matches!(ins.prim, Prim::Host(_)) || ins.outputs.iter().any(|o| uses.contains_key(o))
        });
        if instrs.len() == before {
            return instrs;
        }
    }
}
