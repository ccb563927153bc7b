//! A traced program: primitive instructions over numbered slots, runnable again on the same
//! device for inputs of the same types.
use crate::value::Src;
use kuaxin_core::prim::{Prim, TensorType};
use kuaxin_core::{Backend, DeviceTensor, Error, HostValue, Result, Tensor};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct Instr {
    pub prim: Prim,
    pub inputs: Vec<Src>,
    pub outputs: Vec<usize>,
    /// Output types (for host ops, known only after a run).
    pub out_types: Vec<TensorType>,
    /// Which graph node this came from, for reports and errors.
    pub origin: Arc<str>,
}

/// What separates the nodes in the origin of an instruction made of several (a kernel that
/// absorbed its producer, a product with its epilogue, a row primitive with its prologue).
pub const ORIGINS_JOINED_BY: &str = " + ";

/// The origin of an instruction made of instructions with these origins.
pub fn joined_origin<'s>(parts: impl IntoIterator<Item = &'s str>) -> Arc<str> {
    parts
        .into_iter()
        .collect::<Vec<_>>()
        .join(ORIGINS_JOINED_BY)
        .into()
}

/// How many instruction inputs read each slot (and once more for each slot in `live_out`,
/// when given: a program output is a use the instructions do not show).
pub fn slot_uses<'a>(
    instrs: &[Instr],
    live_out: impl IntoIterator<Item = &'a usize>,
) -> HashMap<usize, usize> {
    let mut uses: HashMap<usize, usize> = HashMap::new();
    for ins in instrs {
        for s in &ins.inputs {
            if let Src::Slot(id) = s {
                *uses.entry(*id).or_default() += 1;
            }
        }
    }
    for s in live_out {
        *uses.entry(*s).or_default() += 1;
    }
    uses
}

/// The instruction (index) that writes each slot.
pub fn producers(instrs: &[Instr]) -> HashMap<usize, usize> {
    instrs
        .iter()
        .enumerate()
        .flat_map(|(i, ins)| ins.outputs.iter().map(move |&o| (o, i)))
        .collect()
}

/// `instrs` less those at the indices in `removed`, each at an index in `replaced` swapped
/// for its replacement: how the fusion passes apply what they matched.
pub fn rewrite(
    instrs: Vec<Instr>,
    removed: &HashSet<usize>,
    replaced: HashMap<usize, Instr>,
) -> Vec<Instr> {
    let replaced = replaced
        .into_iter()
        .map(|(i, ins)| (i, vec![ins]))
        .collect();
    rewrite_into(instrs, removed, replaced)
}

/// [`rewrite`] with each replaced instruction swapped for a sequence of them, in order.
pub fn rewrite_into(
    instrs: Vec<Instr>,
    removed: &HashSet<usize>,
    mut replaced: HashMap<usize, Vec<Instr>>,
) -> Vec<Instr> {
    instrs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !removed.contains(i))
        .flat_map(|(i, ins)| replaced.remove(&i).unwrap_or_else(|| vec![ins]))
        .collect()
}

/// The shape of a program output: tensors and the sequences/optionals that hold them.
#[derive(Debug, Clone)]
pub enum OutputSpec {
    Tensor(Src),
    Sequence(Vec<OutputSpec>),
    Optional(Option<Box<OutputSpec>>),
}

#[derive(Debug, Clone, Default)]
pub struct Program {
    pub instrs: Vec<Instr>,
    pub slot_types: Vec<TensorType>,
    /// Slots bound to the program inputs, in order.
    pub inputs: Vec<usize>,
    pub outputs: Vec<(String, OutputSpec)>,
    /// False when tracing read data-dependent values, so a new run must trace again.
    pub reusable: bool,
    /// Nodes that ran on the host, for reports.
    pub host_ops: Vec<String>,
}

/// Runs instructions on a device, keeping slots alive only until their last use.
pub struct Executor<'a> {
    pub device: &'a dyn Backend,
    pub host: &'a dyn Backend,
    pub slots: Vec<Option<DeviceTensor>>,
    /// Device copies of constants, by the address of their shared host tensor.
    pub consts: ConstCache,
}

/// Device copies of a program's constants, kept across runs so weights upload once.
pub type ConstCache = HashMap<usize, DeviceTensor>;

impl<'a> Executor<'a> {
    pub fn new(device: &'a dyn Backend, host: &'a dyn Backend, n_slots: usize) -> Self {
        Executor {
            device,
            host,
            slots: vec![None; n_slots],
            consts: HashMap::new(),
        }
    }

    pub fn ensure_slots(&mut self, n: usize) {
        if self.slots.len() < n {
            self.slots.resize(n, None);
        }
    }

    fn operand(&mut self, src: &Src) -> Result<DeviceTensor> {
        match src {
            Src::Slot(id) => self
                .slots
                .get(*id)
                .cloned()
                .flatten()
                .ok_or_else(|| Error::backend(format!("slot {id} used before it was computed"))),
            Src::Const(t) => {
                let key = Arc::as_ptr(t) as usize;
                if let Some(d) = self.consts.get(&key) {
                    return Ok(d.clone());
                }
                let d = self.device.upload_shared(t)?;
                self.consts.insert(key, d.clone());
                Ok(d)
            }
        }
    }

    /// Runs one instruction. Host ops, and primitives the device does not support (see
    /// `Backend::supports`; the tracer lists them with the host ops), download their inputs,
    /// run on the host back end and upload the results.
    pub fn run_instr(&mut self, ins: &Instr) -> Result<Vec<TensorType>> {
        self.run_instr_giving(ins, &[])
    }

    /// [`Executor::run_instr`], giving the device the slots in `last` (their last use,
    /// read once by `ins`): the executor drops its handle first, so a back end may reuse
    /// their storage for an output.
    fn run_instr_giving(&mut self, ins: &Instr, last: &[usize]) -> Result<Vec<TensorType>> {
        let once = |id: usize| {
            ins.inputs
                .iter()
                .filter(|s| matches!(s, Src::Slot(i) if *i == id))
                .count()
                == 1
        };
        let mut args: Vec<DeviceTensor> = Vec::with_capacity(ins.inputs.len());
        for s in &ins.inputs {
            match s {
                Src::Slot(id) if last.contains(id) && once(*id) => {
                    let t = self.slots.get_mut(*id).and_then(Option::take);
                    args.push(t.ok_or_else(|| {
                        Error::backend(format!("slot {id} used before it was computed"))
                    })?);
                }
                s => args.push(self.operand(s)?),
            }
        }
        let on_host = match &ins.prim {
            Prim::Host(_) => true,
            p => !self
                .device
                .supports(p, &args.iter().map(|a| a.ty.clone()).collect::<Vec<_>>()),
        };
        let outs = if on_host {
            let host_args: Vec<DeviceTensor> = args
                .iter()
                .map(|a| self.device.download(a).and_then(|t| self.host.upload(&t)))
                .collect::<Result<_>>()?;
            let refs: Vec<&DeviceTensor> = host_args.iter().collect();
            let out_types: &[TensorType] = if matches!(ins.prim, Prim::Host(_)) {
                &[]
            } else {
                &ins.out_types
            };
            let outs = self.host.execute(&ins.prim, &refs, out_types)?;
            outs.iter()
                .map(|o| self.host.download(o).and_then(|t| self.device.upload(&t)))
                .collect::<Result<Vec<_>>>()?
        } else {
            self.device.execute_owned(&ins.prim, args, &ins.out_types)?
        };
        if outs.len() != ins.outputs.len() {
            return Err(Error::backend(format!(
                "{} returned {} outputs, expected {}",
                ins.prim.name(),
                outs.len(),
                ins.outputs.len()
            )));
        }
        let types = outs.iter().map(|o| o.ty.clone()).collect();
        for (slot, t) in ins.outputs.iter().zip(outs) {
            self.slots[*slot] = Some(t);
        }
        Ok(types)
    }

    /// Runs `instrs`, freeing each slot after its last use unless it is in `keep`.
    pub fn run_all(&mut self, instrs: &[Instr], keep: &[usize]) -> Result<()> {
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        for (i, ins) in instrs.iter().enumerate() {
            for s in &ins.inputs {
                if let Src::Slot(id) = s {
                    last_use.insert(*id, i);
                }
            }
        }
        for k in keep {
            last_use.remove(k);
        }
        let mut frees: Vec<Vec<usize>> = vec![Vec::new(); instrs.len()];
        for (slot, i) in last_use {
            frees[i].push(slot);
        }
        let device = self.device;
        // KUAXIN_PROFILE=1 prints time per primitive kind after each run (to standard error);
        // KUAXIN_PROFILE=kernels lists every fused kernel (and convolution with an epilogue)
        // with its domain and origin, and matrix products by output type.
        let profile_var = std::env::var("KUAXIN_PROFILE").ok();
        let profile = profile_var.is_some();
        let per_kernel = profile_var.as_deref() == Some("kernels");
        let mut spent: HashMap<String, (usize, f64)> = HashMap::new();
        let r = device.scope(&mut || {
            for (i, ins) in instrs.iter().enumerate() {
                let t0 = profile.then(std::time::Instant::now);
                self.run_instr_giving(ins, &frees[i])
                    .map_err(|e| e.context(&*ins.origin))?;
                if let Some(t0) = t0 {
                    let key = match &ins.prim {
                        Prim::Fused(k) if per_kernel => {
                            format!("{} {:?} {}", k.name, k.domain, ins.origin)
                        }
                        Prim::MatMul if per_kernel => format!("MatMul -> {:?}", ins.out_types),
                        Prim::MatMulOfViews { .. } if per_kernel => {
                            format!("MatMulOfViews {}", ins.origin)
                        }
                        p if p.is_row_op() && per_kernel => format!(
                            "{} {:?} {}",
                            ins.prim.name(),
                            ins.out_types[0].shape,
                            ins.origin
                        ),
                        Prim::Conv { .. } | Prim::ConvBlocked { .. } | Prim::View { .. }
                            if per_kernel =>
                        {
                            let name = ins.prim.name();
                            format!("{name} -> {:?} {}", ins.out_types[0].shape, ins.origin)
                        }
                        Prim::ConvEpilogue { epilogue, .. }
                        | Prim::MatMulEpilogue { epilogue, .. }
                            if per_kernel =>
                        {
                            format!("{} {:?} {}", ins.prim.name(), epilogue.domain, ins.origin)
                        }
                        Prim::Fused(k) => format!(
                            "Fused({})",
                            if k.reduce.is_some() {
                                "reduce"
                            } else {
                                "elementwise"
                            }
                        ),
                        p => p.name(),
                    };
                    let e = spent.entry(key).or_default();
                    e.0 += 1;
                    e.1 += t0.elapsed().as_secs_f64() * 1e3;
                }
                for &s in &frees[i] {
                    self.slots[s] = None;
                }
            }
            Ok(())
        });
        if profile {
            let mut v: Vec<_> = spent.into_iter().collect();
            v.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
            for (k, (n, ms)) in v {
                eprintln!("profile {k:<24} {n:>5} x {ms:>9.3} ms");
            }
        }
        r
    }

    /// Downloads the program outputs. A slot's tensor is handed over (no copy on back ends that
    /// share host memory) at its last use among the outputs; earlier uses copy.
    pub fn fetch_outputs(
        &mut self,
        outputs: &[(String, OutputSpec)],
    ) -> Result<Vec<(String, HostValue)>> {
        let mut uses: HashMap<usize, usize> = HashMap::new();
        for (_, s) in outputs {
            let mut v = Vec::new();
            output_slots(s, &mut v);
            for slot in v {
                *uses.entry(slot).or_default() += 1;
            }
        }
        outputs
            .iter()
            .map(|(n, s)| Ok((n.clone(), self.fetch(s, &mut uses)?)))
            .collect()
    }

    fn fetch(&mut self, spec: &OutputSpec, uses: &mut HashMap<usize, usize>) -> Result<HostValue> {
        Ok(match spec {
            OutputSpec::Tensor(src) => {
                let last = match src {
                    Src::Slot(id) => uses.get_mut(id).is_some_and(|n| {
                        *n -= 1;
                        *n == 0
                    }),
                    Src::Const(_) => false,
                };
                let d = self.operand(src)?;
                HostValue::Tensor(match src {
                    Src::Slot(id) if last => {
                        self.slots[*id] = None;
                        self.device.download_owned(d)?
                    }
                    _ => self.device.download(&d)?,
                })
            }
            OutputSpec::Sequence(items) => HostValue::Sequence(
                items
                    .iter()
                    .map(|s| self.fetch(s, uses))
                    .collect::<Result<_>>()?,
            ),
            OutputSpec::Optional(o) => HostValue::Optional(match o {
                None => None,
                Some(s) => Some(Box::new(self.fetch(s, uses)?)),
            }),
        })
    }
}

fn output_slots(spec: &OutputSpec, into: &mut Vec<usize>) {
    match spec {
        OutputSpec::Tensor(Src::Slot(s)) => into.push(*s),
        OutputSpec::Tensor(_) => {}
        OutputSpec::Sequence(v) => v.iter().for_each(|s| output_slots(s, into)),
        OutputSpec::Optional(Some(s)) => output_slots(s, into),
        OutputSpec::Optional(None) => {}
    }
}

impl Program {
    /// Peak bytes of intermediate tensors alive at once when each is freed after its last use
    /// (program inputs and constants not counted): the memory plan's prediction.
    pub fn planned_peak_bytes(&self) -> u64 {
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        for (i, ins) in self.instrs.iter().enumerate() {
            for s in &ins.inputs {
                if let Src::Slot(id) = s {
                    last_use.insert(*id, i);
                }
            }
        }
        for s in self.output_slots() {
            last_use.insert(s, usize::MAX);
        }
        let bytes = |slot: usize| {
            self.slot_types
                .get(slot)
                .map(|t| (t.numel() * t.dtype.size()) as u64)
                .unwrap_or(0)
        };
        let (mut live, mut peak) = (0u64, 0u64);
        let mut frees: HashMap<usize, Vec<usize>> = HashMap::new();
        for (slot, i) in &last_use {
            frees.entry(*i).or_default().push(*slot);
        }
        for (i, ins) in self.instrs.iter().enumerate() {
            for &o in &ins.outputs {
                live += bytes(o);
            }
            peak = peak.max(live);
            for &s in frees.get(&i).map(|v| v.as_slice()).unwrap_or(&[]) {
                if !self.inputs.contains(&s) {
                    live = live.saturating_sub(bytes(s));
                }
            }
            // Outputs nobody reads die at once.
            for &o in &ins.outputs {
                if !last_use.contains_key(&o) {
                    live = live.saturating_sub(bytes(o));
                }
            }
        }
        peak
    }

    pub fn output_slots(&self) -> Vec<usize> {
        let mut v = Vec::new();
        for (_, s) in &self.outputs {
            output_slots(s, &mut v);
        }
        v
    }

    /// Runs the program on `device` with inputs of the types it was traced for.
    /// `consts` caches device copies of the program's constants between runs: pass the same
    /// map to every run of this program on this device.
    pub fn run(
        &self,
        device: &dyn Backend,
        host: &dyn Backend,
        inputs: Vec<Tensor>,
        consts: &mut ConstCache,
    ) -> Result<Vec<(String, HostValue)>> {
        self.check_arity(inputs.len())?;
        let uploaded = inputs
            .into_iter()
            .map(|t| device.upload_owned(t))
            .collect::<Result<Vec<_>>>()?;
        self.run_uploaded(device, host, uploaded, consts)
    }

    /// Like [`Program::run`] with inputs the caller keeps: a back end that shares host memory
    /// reads them in place ([`Backend::upload_input`]), so a run repeated on the same inputs
    /// copies none of them.
    pub fn run_shared(
        &self,
        device: &dyn Backend,
        host: &dyn Backend,
        inputs: &[Arc<Tensor>],
        consts: &mut ConstCache,
    ) -> Result<Vec<(String, HostValue)>> {
        self.check_arity(inputs.len())?;
        let uploaded = inputs
            .iter()
            .map(|t| device.upload_input(t))
            .collect::<Result<Vec<_>>>()?;
        self.run_uploaded(device, host, uploaded, consts)
    }

    /// [`Program::run`] and [`Program::run_shared`] once their inputs are on the device: the
    /// outputs fetched to the host.
    fn run_uploaded(
        &self,
        device: &dyn Backend,
        host: &dyn Backend,
        uploaded: Vec<DeviceTensor>,
        consts: &mut ConstCache,
    ) -> Result<Vec<(String, HostValue)>> {
        self.execute(device, host, uploaded, consts, |ex, outputs| {
            ex.fetch_outputs(outputs)
        })
    }

    /// Like [`Program::run`] with inputs and outputs that stay on the device (a KV cache fed
    /// back step after step). Every output must be a tensor.
    pub fn run_device(
        &self,
        device: &dyn Backend,
        host: &dyn Backend,
        inputs: Vec<DeviceTensor>,
        consts: &mut ConstCache,
    ) -> Result<Vec<(String, DeviceTensor)>> {
        self.check_arity(inputs.len())?;
        self.execute(device, host, inputs, consts, |ex, outputs| {
            outputs
                .iter()
                .map(|(n, s)| match s {
                    OutputSpec::Tensor(src) => Ok((n.clone(), ex.operand(src)?)),
                    _ => Err(Error::unsupported(format!(
                        "output '{n}' is not a tensor; run it with Program::run"
                    ))),
                })
                .collect()
        })
    }

    fn check_arity(&self, given: usize) -> Result<()> {
        if given != self.inputs.len() {
            return Err(Error::invalid(format!(
                "program takes {} inputs, got {given}",
                self.inputs.len()
            )));
        }
        Ok(())
    }

    fn execute<T>(
        &self,
        device: &dyn Backend,
        host: &dyn Backend,
        inputs: Vec<DeviceTensor>,
        consts: &mut ConstCache,
        collect: impl FnOnce(&mut Executor, &[(String, OutputSpec)]) -> Result<T>,
    ) -> Result<T> {
        let mut ex = Executor::new(device, host, self.slot_types.len());
        ex.consts = std::mem::take(consts);
        for (slot, t) in self.inputs.iter().zip(inputs) {
            let want = &self.slot_types[*slot];
            if t.ty != *want {
                *consts = std::mem::take(&mut ex.consts);
                return Err(Error::invalid(format!(
                    "input {} does not match the compiled type {want}",
                    t.ty
                )));
            }
            ex.slots[*slot] = Some(t);
        }
        let ran = ex
            .run_all(&self.instrs, &self.output_slots())
            .and_then(|_| device.synchronize());
        let out = ran.and_then(|_| collect(&mut ex, &self.outputs));
        *consts = std::mem::take(&mut ex.consts);
        out
    }
}
