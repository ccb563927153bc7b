//! The compile plan of a model for given inputs: what fusion made of it and the memory plan.
use kuaxin_compile::{compile_and_run, Program};
use kuaxin_core::graph::Model;
use kuaxin_core::prim::Prim;
use kuaxin_core::{Backend, HostValue, Result};

pub struct Plan {
    pub program: Program,
    /// Primitive instructions before fusion.
    pub unfused_instrs: usize,
    /// Kernels made and the instructions they replaced.
    pub kernels: usize,
    pub fused_instrs: usize,
    pub peak_bytes: u64,
}

/// Traces `model` for `inputs` on `device` (running it once) and returns the plan.
pub fn plan(
    model: &Model,
    device: &dyn Backend,
    inputs: &[(String, HostValue)],
    fuse: bool,
) -> Result<Plan> {
    let host = kuaxin_cpu::CpuBackend::new(Some(1))?;
    let mut m = model.clone();
    let dead = m.graph.dead_code();
    m.graph.apply(dead);
    let (c, _) = compile_and_run(&m, device, &host, inputs, fuse)?;
    let peak_bytes = c.program.planned_peak_bytes();
    Ok(Plan {
        unfused_instrs: c.unfused_instrs,
        kernels: c.fused_kernels,
        fused_instrs: c.fused_instrs,
        peak_bytes,
        program: c.program,
    })
}

impl Plan {
    /// One line per instruction: kernels with the graph ops they hold, other primitives with
    /// their op.
    pub fn describe(&self) -> Vec<String> {
        self.program
            .instrs
            .iter()
            .map(|i| match &i.prim {
                Prim::Fused(k) => format!(
                    "{:<28} {:<18} {}",
                    k.name,
                    format!("{}", k.out),
                    k.origins.join(" + ")
                ),
                p => format!(
                    "{:<28} {:<18} {}",
                    p.name(),
                    i.out_types
                        .first()
                        .map(|t| t.to_string())
                        .unwrap_or_default(),
                    i.origin
                ),
            })
            .collect()
    }

    /// The code of every kernel the program runs: each fused kernel, and each product's
    /// epilogue under a line naming its product (the kernel's argument 0).
    pub fn kernel_code(&self) -> String {
        let mut out = String::new();
        for i in &self.program.instrs {
            let Some(k) = i.prim.kernel() else { continue };
            if i.prim.epilogue().is_some() {
                out += &format!("epilogue of {} (argument 0: the product)\n", i.origin);
            }
            out += &k.to_string();
        }
        out
    }
}
