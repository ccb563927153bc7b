//! A loaded model bound to a device, with compiled programs cached per input types.
use kuaxin_compile::program::ConstCache;
use kuaxin_compile::{compile_and_run, Program};
use kuaxin_core::graph::Model;
use kuaxin_core::prim::TensorType;
use kuaxin_core::{Backend, HostValue, Result};
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
    cache: Mutex<HashMap<Vec<TensorType>, Arc<Program>>>,
    /// Device copies of each cached program's constants (weights upload once).
    consts: Mutex<HashMap<Vec<TensorType>, ConstCache>>,
    last: Mutex<RunStats>,
}

fn input_key(inputs: &[(String, HostValue)]) -> Option<Vec<TensorType>> {
    inputs
        .iter()
        .map(|(_, v)| {
            v.as_tensor()
                .map(|t| TensorType::new(t.dtype(), t.shape.clone()))
        })
        .collect()
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
        let ordered: Vec<(String, HostValue)> = self.ordered(inputs).into_iter().cloned().collect();
        let key = input_key(&ordered)?;
        self.cache.lock().ok()?.get(&key).cloned()
    }

    pub fn last_stats(&self) -> RunStats {
        self.last.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Orders the given inputs like the model's graph inputs, so cached programs bind right.
    fn ordered<'v>(&self, inputs: &'v [(String, HostValue)]) -> Vec<&'v (String, HostValue)> {
        let mut v: Vec<&(String, HostValue)> = inputs.iter().collect();
        let pos = |n: &str| {
            self.model
                .graph
                .inputs
                .iter()
                .position(|vi| vi.name == n)
                .unwrap_or(usize::MAX)
        };
        v.sort_by_key(|(n, _)| pos(n));
        v
    }

    /// Runs the model. The first run for given input types traces and compiles; later runs
    /// replay the program when it does not depend on input data.
    pub fn run(&self, inputs: &[(String, HostValue)]) -> Result<Vec<(String, HostValue)>> {
        let ordered: Vec<(String, HostValue)> = self.ordered(inputs).into_iter().cloned().collect();
        let key = input_key(&ordered);
        if let Some(k) = &key {
            let cached = self.cache.lock().ok().and_then(|c| c.get(k).cloned());
            if let Some(p) = cached {
                let tensors: Vec<kuaxin_core::Tensor> = ordered
                    .iter()
                    .filter_map(|(_, v)| v.as_tensor().cloned())
                    .collect();
                let mut consts = self
                    .consts
                    .lock()
                    .ok()
                    .and_then(|mut c| c.remove(k))
                    .unwrap_or_default();
                let out = p.run(&*self.device, &*self.host, &tensors, &mut consts);
                if let Ok(mut c) = self.consts.lock() {
                    c.insert(k.clone(), consts);
                }
                let out = out?;
                if let Ok(mut s) = self.last.lock() {
                    *s = RunStats {
                        compiled: false,
                        instructions: p.instrs.len(),
                        host_ops: p.host_ops.clone(),
                        reusable: true,
                        planned_peak_bytes: Some(p.planned_peak_bytes()),
                        kernels: count_kernels(&p),
                    };
                }
                return Ok(out);
            }
        }
        let (compiled, out) = compile_and_run(
            &self.model,
            &*self.device,
            &*self.host,
            &ordered,
            self.opts.fuse,
        )?;
        let p = compiled.program;
        if let Ok(mut s) = self.last.lock() {
            *s = RunStats {
                compiled: true,
                instructions: p.instrs.len(),
                host_ops: p.host_ops.clone(),
                reusable: p.reusable,
                planned_peak_bytes: Some(p.planned_peak_bytes()),
                kernels: count_kernels(&p),
            };
        }
        // Only programs whose inputs are all plain tensors bound in graph order are replayable.
        if let (true, Some(k)) = (p.reusable && p.inputs.len() == ordered.len(), key) {
            if let Ok(mut c) = self.cache.lock() {
                c.insert(k, Arc::new(p));
            }
        }
        Ok(out)
    }
}
