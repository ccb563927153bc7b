//! A loaded model bound to a device, with compiled programs cached per input types.
use kuaxin_compile::program::ConstCache;
use kuaxin_compile::{compile_and_run, Program};
use kuaxin_core::graph::Model;
use kuaxin_core::prim::TensorType;
use kuaxin_core::{Backend, DeviceTensor, HostValue, Result, Tensor};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Host threads for the CPU parts (host ops, constant folding).
    pub host_threads: Option<usize>,
    /// Fuse primitives into kernels where the device runs them (on by default).
    pub fuse: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            host_threads: None,
            fuse: true,
        }
    }
}

/// What the last run did.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Whether this run traced (compiled) the model rather than replaying a cached program.
    pub compiled: bool,
    /// Primitive instructions in the program.
    pub instructions: usize,
    /// Nodes that ran on the host.
    pub host_ops: Vec<String>,
    /// Whether the program can be replayed for the same input types.
    pub reusable: bool,
    /// The memory plan's peak of intermediates.
    pub planned_peak_bytes: Option<u64>,
    /// Fused kernels in the program.
    pub kernels: usize,
}

pub struct Session {
    model: Model,
    device: Arc<dyn Backend>,
    host: Arc<dyn Backend>,
    opts: SessionOptions,
    cache: Mutex<HashMap<InputKey, Arc<Program>>>,
    /// Device copies of each cached program's constants (weights upload once).
    consts: Mutex<HashMap<InputKey, ConstCache>>,
    last: Mutex<RunStats>,
}

/// What a compiled program is cached under: its inputs' names (a replay binds by position, so
/// a name the model lacks must miss the cache and meet the compiler's check) and types.
type InputKey = Vec<(String, TensorType)>;

fn input_key(inputs: &[&(String, HostValue)]) -> Option<InputKey> {
    inputs
        .iter()
        .map(|(n, v)| v.as_tensor().map(|t| key_entry(n, t)))
        .collect()
}

/// An input's part of an [`InputKey`].
fn key_entry(name: &str, t: &Tensor) -> (String, TensorType) {
    (
        name.to_string(),
        TensorType::new(t.dtype(), t.shape.clone()),
    )
}

fn count_kernels(p: &Program) -> usize {
    p.instrs
        .iter()
        .filter(|i| matches!(i.prim, kuaxin_core::prim::Prim::Fused(_)))
        .count()
}

impl Session {
    pub fn new(model: Model, device: Arc<dyn Backend>) -> Result<Session> {
        Session::with_options(model, device, SessionOptions::default())
    }

    pub fn with_options(
        mut model: Model,
        device: Arc<dyn Backend>,
        opts: SessionOptions,
    ) -> Result<Session> {
        // Nodes that no output depends on are never traced.
        let dead = model.graph.dead_code();
        model.graph.apply(dead);
        let host: Arc<dyn Backend> = Arc::new(kuaxin_cpu::CpuBackend::new(opts.host_threads)?);
        Ok(Session {
            model,
            device,
            host,
            opts,
            cache: Mutex::new(HashMap::new()),
            consts: Mutex::new(HashMap::new()),
            last: Mutex::new(RunStats::default()),
        })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn device(&self) -> &Arc<dyn Backend> {
        &self.device
    }

    pub fn options(&self) -> &SessionOptions {
        &self.opts
    }

    /// The cached program for these inputs' types, if one was compiled (for reports).
    pub fn program_for(&self, inputs: &[(String, HostValue)]) -> Option<Arc<Program>> {
        let key = input_key(&self.ordered(inputs))?;
        self.cache.lock().ok()?.get(&key).cloned()
    }

    pub fn last_stats(&self) -> RunStats {
        self.last.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Orders the given inputs like the model's graph inputs, so cached programs bind right.
    fn ordered<'v, V>(&self, inputs: &'v [(String, V)]) -> Vec<&'v (String, V)> {
        let mut v: Vec<&(String, V)> = inputs.iter().collect();
        v.sort_by_key(|(n, _)| self.input_position(n));
        v
    }

    fn input_position(&self, name: &str) -> usize {
        self.model
            .graph
            .inputs
            .iter()
            .position(|vi| vi.name == name)
            .unwrap_or(usize::MAX)
    }

    /// Runs the model. The first run for given input types traces and compiles; later runs
    /// replay the program when it does not depend on input data.
    pub fn run(&self, inputs: &[(String, HostValue)]) -> Result<Vec<(String, HostValue)>> {
        let ordered = self.ordered(inputs);
        let key = input_key(&ordered);
        if let Some(p) = key.as_ref().and_then(|k| self.cached(k)) {
            // The one copy of the inputs a borrowed call needs (the CPU back end keeps it).
            let tensors: Vec<Tensor> = ordered
                .iter()
                .filter_map(|(_, v)| v.as_tensor().cloned())
                .collect();
            let k = key.unwrap_or_default();
            return self.with_consts(&k, &p, |consts| {
                p.run(&*self.device, &*self.host, tensors, consts)
            });
        }
        let ordered: Vec<(String, HostValue)> = ordered.into_iter().cloned().collect();
        self.compile(&ordered, key)
    }

    /// Runs the model on input tensors the caller keeps, for runs repeated on the same inputs
    /// (a benchmark, a server's fixed batch): once compiled, a back end that shares host
    /// memory reads them where they lie, where [`Session::run`] copies each input once a run
    /// (a 1024 x 1024 input is 4 MiB). The first run for given input types compiles as
    /// [`Session::run`] does.
    pub fn run_shared(&self, inputs: &[(String, Arc<Tensor>)]) -> Result<Vec<(String, HostValue)>> {
        let ordered = self.ordered(inputs);
        let key: InputKey = ordered.iter().map(|(n, t)| key_entry(n, t)).collect();
        if let Some(p) = self.cached(&key) {
            let tensors: Vec<Arc<Tensor>> = ordered.iter().map(|(_, t)| t.clone()).collect();
            return self.with_consts(&key, &p, |consts| {
                p.run_shared(&*self.device, &*self.host, &tensors, consts)
            });
        }
        let host_inputs: Vec<(String, HostValue)> = ordered
            .iter()
            .map(|(n, t)| (n.clone(), HostValue::Tensor(t.as_ref().clone())))
            .collect();
        self.compile(&host_inputs, Some(key))
    }

    /// Runs the model on tensors that already live on the device, leaving the outputs there:
    /// what a KV cache fed back step after step needs. The first run for given input types
    /// compiles through the host path (inputs are downloaded once); later runs replay.
    pub fn run_device(
        &self,
        inputs: &[(String, DeviceTensor)],
    ) -> Result<Vec<(String, DeviceTensor)>> {
        let ordered = self.ordered(inputs);
        let key: InputKey = ordered
            .iter()
            .map(|(n, t)| (n.clone(), t.ty.clone()))
            .collect();
        if let Some(p) = self.cached(&key) {
            let tensors: Vec<DeviceTensor> = ordered.iter().map(|(_, t)| t.clone()).collect();
            return self.with_consts(&key, &p, |consts| {
                p.run_device(&*self.device, &*self.host, tensors, consts)
            });
        }
        let host_inputs = ordered
            .iter()
            .map(|(n, t)| Ok((n.clone(), HostValue::Tensor(self.device.download(t)?))))
            .collect::<Result<Vec<_>>>()?;
        let outs = self.compile(&host_inputs, Some(key))?;
        outs.into_iter()
            .map(|(n, v)| match v.as_tensor() {
                Some(t) => Ok((n, self.device.upload(t)?)),
                None => Err(kuaxin_core::Error::unsupported(format!(
                    "output '{n}' is not a tensor; use Session::run"
                ))),
            })
            .collect()
    }

    fn cached(&self, key: &[(String, TensorType)]) -> Option<Arc<Program>> {
        self.cache.lock().ok().and_then(|c| c.get(key).cloned())
    }

    /// Runs a cached program with its device constants and records the stats.
    fn with_consts<T>(
        &self,
        key: &[(String, TensorType)],
        p: &Program,
        run: impl FnOnce(&mut ConstCache) -> Result<T>,
    ) -> Result<T> {
        let mut consts = self
            .consts
            .lock()
            .ok()
            .and_then(|mut c| c.remove(key))
            .unwrap_or_default();
        let out = run(&mut consts);
        if let Ok(mut c) = self.consts.lock() {
            c.insert(key.to_vec(), consts);
        }
        self.record(p, false, true);
        out
    }

    fn record(&self, p: &Program, compiled: bool, reusable: bool) {
        if let Ok(mut s) = self.last.lock() {
            *s = RunStats {
                compiled,
                instructions: p.instrs.len(),
                host_ops: p.host_ops.clone(),
                reusable,
                planned_peak_bytes: Some(p.planned_peak_bytes()),
                kernels: count_kernels(p),
            };
        }
    }

    /// Traces, compiles and runs; keeps the program when it can be replayed.
    fn compile(
        &self,
        ordered: &[(String, HostValue)],
        key: Option<InputKey>,
    ) -> Result<Vec<(String, HostValue)>> {
        let (compiled, out) = compile_and_run(
            &self.model,
            &*self.device,
            &*self.host,
            ordered,
            self.opts.fuse,
        )?;
        let p = compiled.program;
        self.record(&p, true, p.reusable);
        // Only programs whose inputs are all plain tensors bound in graph order are replayable.
        if let (true, Some(k)) = (p.reusable && p.inputs.len() == ordered.len(), key) {
            if let Ok(mut c) = self.cache.lock() {
                c.insert(k, Arc::new(p));
            }
        }
        Ok(out)
    }
}
