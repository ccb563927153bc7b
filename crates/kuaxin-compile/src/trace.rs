//! Tracing: lowerings emit primitives here. Constant inputs fold on the host at once;
//! everything else is recorded into a [`Program`] and runs on the device when a value is
//! needed on the host (a flush) or when the trace finishes.
use crate::program::{Executor, Instr, OutputSpec, Program};
use crate::value::{Src, TVal, Value};
use kuaxin_core::prim::{HostOp, Prim, TensorType};
use kuaxin_core::{Backend, DeviceTensor, Error, HostValue, Result, Tensor};
use std::sync::Arc;

/// Programs longer than this are treated as runaway input (loops unroll while tracing).
pub const MAX_INSTRUCTIONS: usize = 1 << 22;

pub struct Trace<'a> {
    pub program: Program,
    exec: Executor<'a>,
    /// `program.instrs[..executed]` have run.
    executed: usize,
    /// Where the next instruction came from (set by the graph walker), for reports.
    pub origin: Arc<str>,
    /// Count of host round trips forced by data-dependent values.
    pub flushes: usize,
    /// Fuse the instructions that have not run yet when the trace finishes.
    pub fuse: bool,
    /// Kernels made by fusion, and how many instructions they replaced.
    pub fused_kernels: usize,
    pub fused_instrs: usize,
}

impl<'a> Trace<'a> {
    pub fn new(device: &'a dyn Backend, host: &'a dyn Backend) -> Self {
        Trace {
            program: Program {
                reusable: true,
                ..Default::default()
            },
            exec: Executor::new(device, host, 0),
            executed: 0,
            origin: Arc::from(""),
            flushes: 0,
            fuse: true,
            fused_kernels: 0,
            fused_instrs: 0,
        }
    }

    pub fn device(&self) -> &'a dyn Backend {
        self.exec.device
    }

    fn new_slot(&mut self, ty: TensorType) -> usize {
        self.program.slot_types.push(ty);
        let n = self.program.slot_types.len();
        self.exec.ensure_slots(n);
        n - 1
    }

    /// Declares a program input bound to `value` for this run.
    pub fn input(&mut self, value: &Tensor) -> Result<TVal> {
        let ty = TensorType::new(value.dtype(), value.shape.clone());
        let slot = self.new_slot(ty.clone());
        self.program.inputs.push(slot);
        self.exec.slots[slot] = Some(self.exec.device.upload(value)?);
        Ok(TVal {
            ty,
            src: Src::Slot(slot),
        })
    }

    fn fold(
        &mut self,
        prim: &Prim,
        inputs: &[&TVal],
        out_types: &[TensorType],
    ) -> Result<Vec<TVal>> {
        let host = self.exec.host;
        let args: Vec<DeviceTensor> = inputs
            .iter()
            .map(|v| host.upload(v.as_const().expect("fold takes constants")))
            .collect::<Result<_>>()?;
        let refs: Vec<&DeviceTensor> = args.iter().collect();
        let outs = host.execute(prim, &refs, out_types)?;
        outs.iter()
            .map(|o| Ok(TVal::constant(host.download(o)?)))
            .collect()
    }

    /// Emits one primitive. Returns its outputs (constants when all inputs were constant).
    pub fn emit(&mut self, prim: Prim, inputs: &[&TVal]) -> Result<Vec<TVal>> {
        let in_types: Vec<TensorType> = inputs.iter().map(|v| v.ty.clone()).collect();
        let out_types = prim.infer(&in_types)?;
        // A large broadcast of a constant (a bias expanded to an activation's shape) is not
        // folded: it would store a big constant, where a kernel reads the small one with
        // stride 0. Small ones (shape arithmetic) still fold.
        let expands = matches!(prim, Prim::View { .. })
            && out_types
                .first()
                .is_some_and(|t| t.numel() > 4096 && t.numel() > inputs[0].numel());
        if inputs.iter().all(|v| v.as_const().is_some()) && !expands {
            return self.fold(&prim, inputs, &out_types);
        }
        if let Prim::Host(op) = &prim {
            return self.emit_host(op.clone(), prim, inputs);
        }
        if !self.exec.device.supports(&prim, &in_types) {
            // The executor runs it on the host; report it like a host op (once per node).
            let note = format!("{} ({} on the host)", self.origin, prim.name());
            if self.program.host_ops.last() != Some(&note) {
                self.program.host_ops.push(note);
            }
        }
        if self.program.instrs.len() >= MAX_INSTRUCTIONS {
            return Err(Error::invalid(format!(
                "the traced program exceeds {MAX_INSTRUCTIONS} instructions (a runaway loop?)"
            )));
        }
        let outputs: Vec<usize> = out_types.iter().map(|t| self.new_slot(t.clone())).collect();
        let vals = outputs
            .iter()
            .zip(&out_types)
            .map(|(&s, t)| TVal {
                ty: t.clone(),
                src: Src::Slot(s),
            })
            .collect();
        self.program.instrs.push(Instr {
            prim,
            inputs: inputs.iter().map(|v| v.src.clone()).collect(),
            outputs,
            out_types,
            origin: self.origin.clone(),
        });
        Ok(vals)
    }

    /// Host ops run at once (their output types may depend on data).
    fn emit_host(&mut self, op: HostOp, prim: Prim, inputs: &[&TVal]) -> Result<Vec<TVal>> {
        self.flush()?;
        let data_dependent = !matches!(op, HostOp::TopK { .. });
        if data_dependent {
            self.program.reusable = false;
        }
        let mut instr = Instr {
            prim,
            inputs: inputs.iter().map(|v| v.src.clone()).collect(),
            outputs: vec![],
            out_types: vec![],
            origin: self.origin.clone(),
        };
        // Output slots are allocated after the run, when their types are known; run into
        // scratch slots first.
        let scratch: Vec<usize> = (0..4)
            .map(|_| self.new_slot(TensorType::new(kuaxin_core::DType::F32, vec![])))
            .collect();
        instr.outputs = scratch.clone();
        let n_out = match op {
            HostOp::NonZero | HostOp::NonMaxSuppression { .. } => 1,
            HostOp::TopK { .. } => 2,
            HostOp::Unique { .. } => 4,
        };
        instr.outputs.truncate(n_out);
        let types = self.exec.run_instr(&instr)?;
        for (slot, t) in instr.outputs.iter().zip(&types) {
            self.program.slot_types[*slot] = t.clone();
        }
        instr.out_types = types.clone();
        self.program
            .host_ops
            .push(format!("{} ({})", self.origin, instr.prim.name()));
        let vals = instr
            .outputs
            .iter()
            .zip(types)
            .map(|(&s, ty)| TVal {
                ty,
                src: Src::Slot(s),
            })
            .collect();
        self.program.instrs.push(instr);
        self.executed = self.program.instrs.len();
        Ok(vals)
    }

    /// Runs every recorded instruction not yet run (keeping all values: later ones may use them).
    pub fn flush(&mut self) -> Result<()> {
        let start = self.executed;
        let end = self.program.instrs.len();
        if start == end {
            return Ok(());
        }
        let keep: Vec<usize> = (0..self.program.slot_types.len()).collect();
        let instrs: Vec<Instr> = self.program.instrs[start..end].to_vec();
        self.exec.run_all(&instrs, &keep)?;
        self.executed = end;
        self.flushes += 1;
        Ok(())
    }

    /// The data of a value, running the device work it needs. Reading data that depends on
    /// the inputs makes the program single-use (the next run traces again).
    pub fn materialize(&mut self, v: &TVal) -> Result<Arc<Tensor>> {
        match &v.src {
            Src::Const(t) => Ok(t.clone()),
            Src::Slot(s) => {
                self.flush()?;
                self.program.reusable = false;
                let d = self.exec.slots[*s]
                    .clone()
                    .ok_or_else(|| Error::backend(format!("slot {s} not computed")))?;
                Ok(Arc::new(self.exec.device.download(&d)?))
            }
        }
    }

    fn spec(v: &Value) -> OutputSpec {
        match v {
            Value::Tensor(t) => OutputSpec::Tensor(t.src.clone()),
            Value::Sequence(items) => OutputSpec::Sequence(items.iter().map(Self::spec).collect()),
            Value::Optional(o) => OutputSpec::Optional(o.as_ref().map(|v| Box::new(Self::spec(v)))),
        }
    }

    /// Runs what remains and returns the program together with this run's outputs.
    /// Also returns the fusion counts (kernels made, instructions they replaced).
    pub fn finish(
        mut self,
        outputs: Vec<(String, Value)>,
    ) -> Result<(Program, Vec<(String, HostValue)>, usize, usize)> {
        self.program.outputs = outputs
            .iter()
            .map(|(n, v)| (n.clone(), Self::spec(v)))
            .collect();
        let start = self.executed;
        let keep = self.program.output_slots();
        if self.fuse {
            let device = self.exec.device;
            let live: std::collections::HashSet<usize> = keep.iter().copied().collect();
            let segment = self.program.instrs.split_off(start);
            let segment = crate::blocked::block_convolutions(
                segment,
                &mut self.program.slot_types,
                &live,
                &|p| device.supports(p, &[]),
            );
            self.program.instrs.extend(segment);
            self.exec.ensure_slots(self.program.slot_types.len());
            let (fused, report) = crate::fuse::fuse(
                &self.program.instrs[start..],
                &self.program.slot_types,
                &live,
                &|p| device.supports(p, &[]),
            );
            self.program.instrs.truncate(start);
            self.program.instrs.extend(fused);
            self.fused_kernels = report.kernels;
            self.fused_instrs = report.fused_instrs;
        }
        let instrs: Vec<Instr> = self.program.instrs[start..].to_vec();
        self.exec.run_all(&instrs, &keep)?;
        self.exec.device.synchronize()?;
        let results = self.exec.fetch_outputs(&self.program.outputs)?;
        Ok((self.program, results, self.fused_kernels, self.fused_instrs))
    }
}
