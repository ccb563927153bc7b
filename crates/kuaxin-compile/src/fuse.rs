//! Graph-kernel fusion: clusters primitive instructions into kernels of the kernel IR.
//!
//! Chains of elementwise instructions become one kernel; a reduction joins the elementwise
//! producers of its input (prologue) and the elementwise consumers of its result (epilogue);
//! views feeding a kernel become index maps of its loads instead of copies. A value leaves a
//! kernel (is materialised) only when something outside it reads it. The rules are
//! deliberately simple so that `kuaxin info --plan` can explain every decision.
use crate::program::Instr;
use crate::value::Src;
use kuaxin_core::kernel::{Expr, Kernel, Load, Op, Reduction};
use kuaxin_core::prim::{BinaryOp, Prim, TensorType, UnaryOp};
use kuaxin_core::tensor::contiguous_strides;
use kuaxin_core::{DType, Tensor};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Element types fused kernels compute in today (the CPU evaluates them in f32 blocks).
fn fusible_dtype(d: DType) -> bool {
    matches!(d, DType::F32 | DType::Bool)
}

fn types_ok(ins: &Instr, slot_types: &[TensorType], consts_ok: bool) -> bool {
    let in_ok = ins.inputs.iter().all(|s| match s {
        Src::Slot(id) => slot_types.get(*id).is_some_and(|t| fusible_dtype(t.dtype)),
        Src::Const(t) => consts_ok && fusible_dtype(t.dtype()),
    });
    in_ok && ins.out_types.iter().all(|t| fusible_dtype(t.dtype))
}

fn is_elementwise(ins: &Instr, slot_types: &[TensorType]) -> bool {
    let op_ok = match &ins.prim {
        Prim::Unary(u) => !matches!(u, UnaryOp::BitNot),
        Prim::Binary(b) => !matches!(
            b,
            BinaryOp::BitAnd | BinaryOp::BitOr | BinaryOp::BitXor | BinaryOp::Shl | BinaryOp::Shr
        ),
        Prim::Where | Prim::Cast(_) => true,
        _ => false,
    };
    op_ok && types_ok(ins, slot_types, true)
}

fn is_reduce(ins: &Instr, slot_types: &[TensorType]) -> bool {
    matches!(ins.prim, Prim::Reduce { .. })
        && types_ok(ins, slot_types, true)
        && ins.out_types[0].dtype == DType::F32
}

fn is_view(ins: &Instr, slot_types: &[TensorType]) -> bool {
    matches!(ins.prim, Prim::View { .. }) && types_ok(ins, slot_types, true)
}

#[derive(Debug, Clone)]
struct Group {
    members: Vec<usize>,
    reduce: Option<usize>,
    /// Shape of the live-out value (the last member's output).
    shape: Vec<usize>,
}

/// Fusion decisions for one segment of a program.
pub struct FusionReport {
    pub kernels: usize,
    pub fused_instrs: usize,
}

/// Fuses `instrs` (a segment none of whose values has been computed yet). Slots in `live_out`
/// are read after the segment and are always materialised. `supports` says whether the
/// device runs a kernel.
pub fn fuse(
    instrs: &[Instr],
    slot_types: &[TensorType],
    live_out: &HashSet<usize>,
    supports: &dyn Fn(&Prim) -> bool,
) -> (Vec<Instr>, FusionReport) {
    let instrs = crate::row_ops::merge_row_ops(instrs.to_vec(), slot_types, live_out, supports);
    let instrs = instrs.as_slice();
    let consumers = crate::program::slot_uses(instrs, live_out);
    let producer = crate::program::producers(instrs);
    let single_use = |s: usize| consumers.get(&s).copied().unwrap_or(0) == 1;

    let mut groups: Vec<Option<Group>> = Vec::new();
    let mut group_of_slot: HashMap<usize, usize> = HashMap::new();
    for (i, ins) in instrs.iter().enumerate() {
        let elementwise = is_elementwise(ins, slot_types);
        let reduce = is_reduce(ins, slot_types);
        if !elementwise && !reduce {
            continue;
        }
        let out_shape = ins.out_types[0].shape.clone();
        // Groups whose single-use live-out this instruction reads.
        let mut cands: Vec<usize> = Vec::new();
        for s in &ins.inputs {
            if let Src::Slot(id) = s {
                if let Some(&g) = group_of_slot.get(id) {
                    if single_use(*id) && !cands.contains(&g) {
                        cands.push(g);
                    }
                }
            }
        }
        let mut chosen: Vec<usize> = Vec::new();
        if reduce {
            let in_shape = match &ins.inputs[0] {
                Src::Slot(id) => slot_types[*id].shape.clone(),
                Src::Const(t) => t.shape.clone(),
            };
            if let Some(&g) = cands.first() {
                let grp = groups[g].as_ref().expect("live group");
                if grp.reduce.is_none() && grp.shape == in_shape {
                    chosen.push(g);
                }
            }
        } else if let Some(&g) = cands
            .iter()
            .find(|&&g| groups[g].as_ref().is_some_and(|x| x.reduce.is_some()))
        {
            // An epilogue joins the one reduction group it reads.
            if groups[g].as_ref().is_some_and(|x| x.shape == out_shape) {
                chosen.push(g);
            }
        } else {
            chosen = cands
                .into_iter()
                .filter(|&g| groups[g].as_ref().is_some_and(|x| x.shape == out_shape))
                .collect();
        }
        let mut merged = Group {
            members: vec![],
            reduce: None,
            shape: out_shape,
        };
        for g in chosen {
            if let Some(old) = groups[g].take() {
                merged.members.extend(old.members);
                merged.reduce = merged.reduce.or(old.reduce);
            }
        }
        merged.members.push(i);
        merged.members.sort_unstable();
        if reduce {
            merged.reduce = Some(i);
        }
        groups.push(Some(merged));
        group_of_slot.insert(ins.outputs[0], groups.len() - 1);
    }

    // Build kernels where fusion pays: two or more instructions, a view turned into a load, or
    // a reduction.
    let mut replaced: HashMap<usize, Instr> = HashMap::new();
    let mut removed: HashSet<usize> = HashSet::new();
    let mut report = FusionReport {
        kernels: 0,
        fused_instrs: 0,
    };
    for g in groups.into_iter().flatten() {
        let reads_view = g.members.iter().any(|&m| {
            instrs[m].inputs.iter().any(|s| matches!(s, Src::Slot(id) if producer.get(id).is_some_and(|&p| is_view(&instrs[p], slot_types))))
        });
        // A lone reduction is a kernel too: the blocked evaluator beats the generic Reduce.
        if g.members.len() < 2 && !reads_view && g.reduce.is_none() {
            continue;
        }
        let Some(instr) = build_kernel(&g, instrs, slot_types, &producer, report.kernels) else {
            continue;
        };
        if !supports(&instr.prim) {
            continue;
        }
        report.kernels += 1;
        report.fused_instrs += g.members.len();
        let last = *g.members.last().expect("non-empty group");
        for &m in &g.members {
            removed.insert(m);
        }
        replaced.insert(last, instr);
    }
    let mut out: Vec<Instr> = Vec::with_capacity(instrs.len());
    for (i, ins) in instrs.iter().enumerate() {
        if let Some(k) = replaced.remove(&i) {
            out.push(k);
        } else if !removed.contains(&i) {
            out.push(ins.clone());
        }
    }
    let mut out = crate::matmul_views::merge_view_matmuls(out, slot_types, supports);
    // Views whose every reader became a kernel load or a product's operand map are gone (and
    // then the views only those read).
    loop {
        let mut used: HashSet<usize> = live_out.clone();
        for ins in &out {
            for s in &ins.inputs {
                if let Src::Slot(id) = s {
                    used.insert(*id);
                }
            }
        }
        let before = out.len();
        out.retain(|ins| {
            !(matches!(ins.prim, Prim::View { .. })
                && ins.outputs.iter().all(|o| !used.contains(o)))
        });
        if out.len() == before {
            break;
        }
    }
    let (out, dissolved) = crate::inline::inline_producers(out, live_out, supports);
    report.kernels -= dissolved;
    let out = crate::epilogues::merge_epilogues(out, live_out, supports);
    let out = crate::residual_bias::move_residual_biases(out, live_out, supports);
    let out = crate::reshape_outputs::absorb_reshapes(out, live_out);
    (out, report)
}

/// The single value of a constant that holds one value everywhere.
fn uniform_value(t: &Tensor) -> Option<f64> {
    let v = t.to_f64_vec();
    let first = *v.first()?;
    v.iter()
        .all(|&x| x.to_bits() == first.to_bits())
        .then_some(first)
}

/// The index of `load` in `loads`, appended if it is not there yet.
pub(crate) fn intern_load(loads: &mut Vec<Load>, load: Load) -> usize {
    loads.iter().position(|l| *l == load).unwrap_or_else(|| {
        loads.push(load);
        loads.len() - 1
    })
}

struct KernelBuilder<'a> {
    instrs: &'a [Instr],
    slot_types: &'a [TensorType],
    producer: &'a HashMap<usize, usize>,
    args: Vec<Src>,
    loads: Vec<Load>,
    /// Domain axis order: `perm[j]` is the value axis at domain position j.
    perm: Vec<usize>,
    reduced_axes: Vec<usize>,
    /// Value id of each load already emitted, per list (body: false, epilogue: true).
    loaded: HashMap<(bool, usize), usize>,
}

impl KernelBuilder<'_> {
    fn arg(&mut self, src: &Src) -> usize {
        if let Some(i) = self.args.iter().position(|a| a.is_same(src)) {
            return i;
        }
        self.args.push(src.clone());
        self.args.len() - 1
    }

    /// A load of an outside value of shape `shape` (value axes), read on the kernel domain.
    /// `epilogue` loads see the reduced axes as size 1 and ignore them.
    fn load(&mut self, src: &Src, shape: &[usize], epilogue: bool) -> Expr {
        if let Src::Const(t) = src {
            if let Some(v) = uniform_value(t) {
                return Expr::Const(v);
            }
        }
        // So is any view of such a constant (the blocked layout's reorder of a mean's
        // divisor).
        if let Some(Instr { prim, inputs, .. }) = match src {
            Src::Slot(id) => self.producer.get(id).map(|&p| &self.instrs[p]),
            Src::Const(_) => None,
        } {
            if let (Some(_), Some(Src::Const(t))) = (prim.as_view(), inputs.first()) {
                if let Some(v) = uniform_value(t) {
                    return Expr::Const(v);
                }
            }
        }
        // A view of a stored value is an index map on that value.
        let (base, mut strides, offset, dtype) = match src {
            Src::Slot(id) => match self.producer.get(id).map(|&p| &self.instrs[p]) {
                Some(Instr {
                    prim:
                        Prim::View {
                            strides, offset, ..
                        },
                    inputs,
                    ..
                }) if is_view(&self.instrs[self.producer[id]], self.slot_types) => {
                    let dt = self.slot_types[*id].dtype;
                    (inputs[0].clone(), strides.clone(), *offset, dt)
                }
                _ => (
                    src.clone(),
                    contiguous_strides(shape),
                    0,
                    self.slot_types[*id].dtype,
                ),
            },
            Src::Const(t) => (src.clone(), contiguous_strides(shape), 0, t.dtype()),
        };
        for (ax, &d) in shape.iter().enumerate() {
            if d == 1 {
                strides[ax] = 0;
            }
        }
        let mut dom: Vec<isize> = self.perm.iter().map(|&ax| strides[ax]).collect();
        if epilogue {
            let kept = self.perm.len() - self.reduced_axes.len();
            for s in dom.iter_mut().skip(kept) {
                *s = 0;
            }
        }
        let arg = self.arg(&base);
        let load = Load {
            arg,
            dtype,
            strides: dom,
            offset,
        };
        Expr::Load(intern_load(&mut self.loads, load))
    }
}

fn build_kernel(
    g: &Group,
    instrs: &[Instr],
    slot_types: &[TensorType],
    producer: &HashMap<usize, usize>,
    n: usize,
) -> Option<Instr> {
    let first = &instrs[g.members[0]];
    let (domain_shape, perm, reduced_axes) = match g.reduce.map(|r| &instrs[r]) {
        Some(Instr {
            prim: Prim::Reduce { axes, .. },
            inputs,
            ..
        }) => {
            let x = match &inputs[0] {
                Src::Slot(id) => slot_types[*id].shape.clone(),
                Src::Const(t) => t.shape.clone(),
            };
            let mut perm: Vec<usize> = (0..x.len()).filter(|a| !axes.contains(a)).collect();
            perm.extend(axes.iter().copied());
            (
                perm.iter().map(|&a| x[a]).collect::<Vec<_>>(),
                perm,
                axes.clone(),
            )
        }
        _ => {
            let s = first.out_types[0].shape.clone();
            let r = s.len();
            (s, (0..r).collect(), vec![])
        }
    };
    let mut kb = KernelBuilder {
        instrs,
        slot_types,
        producer,
        args: vec![],
        loads: vec![],
        perm,
        reduced_axes,
        loaded: HashMap::new(),
    };
    let mut body: Vec<Op> = Vec::new();
    let mut epilogue: Vec<Op> = Vec::new();
    // Value id of each member's output slot, and which list it lives in.
    let mut value_of: HashMap<usize, (bool, usize)> = HashMap::new();
    let mut reduction = None;
    let mut origins: Vec<String> = Vec::new();
    for &m in &g.members {
        let ins = &instrs[m];
        if !origins.contains(&ins.origin.to_string()) {
            origins.push(ins.origin.to_string());
        }
        let in_epilogue = g.reduce.is_some_and(|r| m > r);
        if let (Prim::Reduce { op, axes }, true) = (&ins.prim, g.reduce == Some(m)) {
            let v = operand(
                &mut kb,
                &mut body,
                &value_of,
                &ins.inputs[0],
                false,
                slot_types,
            )?;
            reduction = Some(Reduction {
                op: *op,
                value: v,
                dims: axes.len(),
            });
            epilogue.push(Op {
                expr: Expr::Reduced,
                dtype: ins.out_types[0].dtype,
            });
            value_of.insert(ins.outputs[0], (true, epilogue.len() - 1));
            continue;
        }
        let list = if in_epilogue {
            &mut epilogue
        } else {
            &mut body
        };
        let mut ops_in: Vec<usize> = Vec::new();
        for s in &ins.inputs {
            ops_in.push(operand(
                &mut kb,
                list,
                &value_of,
                s,
                in_epilogue,
                slot_types,
            )?);
        }
        let expr = match &ins.prim {
            Prim::Unary(u) => Expr::Unary(*u, ops_in[0]),
            Prim::Binary(b) => Expr::Binary(*b, ops_in[0], ops_in[1]),
            Prim::Where => Expr::Where(ops_in[0], ops_in[1], ops_in[2]),
            Prim::Cast(_) => Expr::Cast(ops_in[0]),
            _ => return None,
        };
        list.push(Op {
            expr,
            dtype: ins.out_types[0].dtype,
        });
        value_of.insert(ins.outputs[0], (in_epilogue, list.len() - 1));
    }
    let last = &instrs[*g.members.last()?];
    let out = last.out_types[0].clone();
    let name = format!(
        "k{n}_{}",
        origins
            .first()
            .map(|o| o.split(['(', ')']).nth(1).unwrap_or("fused"))
            .unwrap_or("fused")
            .to_lowercase()
    );
    let kernel = Kernel {
        name,
        domain: domain_shape,
        loads: kb.loads,
        body,
        reduce: reduction,
        epilogue,
        out: out.clone(),
        origins,
    };
    Some(Instr {
        prim: Prim::Fused(Arc::new(kernel)),
        inputs: kb.args,
        outputs: last.outputs.clone(),
        out_types: vec![out],
        origin: Arc::from(format!(
            "fused: {}",
            g.members
                .iter()
                .map(|&m| instrs[m].origin.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    })
}

/// The value id for an operand: a member's result in the same list, or a new load.
fn operand(
    kb: &mut KernelBuilder,
    list: &mut Vec<Op>,
    value_of: &HashMap<usize, (bool, usize)>,
    src: &Src,
    epilogue: bool,
    slot_types: &[TensorType],
) -> Option<usize> {
    if let Src::Slot(id) = src {
        if let Some(&(in_epi, v)) = value_of.get(id) {
            if in_epi != epilogue {
                return None;
            }
            return Some(v);
        }
    }
    let (shape, dtype) = match src {
        Src::Slot(id) => (slot_types[*id].shape.clone(), slot_types[*id].dtype),
        Src::Const(t) => (t.shape.clone(), t.dtype()),
    };
    let expr = kb.load(src, &shape, epilogue);
    if let Expr::Load(l) = expr {
        if let Some(&v) = kb.loaded.get(&(epilogue, l)) {
            return Some(v);
        }
        kb.loaded.insert((epilogue, l), list.len());
    }
    list.push(Op { expr, dtype });
    Some(list.len() - 1)
}
