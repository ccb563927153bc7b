//! `KUAXIN_CUDA_TIMING=1`: GPU time of every launch, measured with events around it, and the
//! bandwidth it reached (bytes of its inputs and output over that time), printed per kind of
//! launch when the back end is dropped. Each launch then waits for the one before: a
//! measuring mode, not a fast one. scripts/gpu-check.sh reads the fused-kernel bandwidth here.
use cudarc::driver::{sys, CudaContext, CudaStream};
use kuaxin_core::{Error, Result};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Timing {
    /// kind -> (launches, milliseconds, bytes moved)
    stats: Mutex<BTreeMap<String, (usize, f64, u128)>>,
}

impl Timing {
    pub fn from_env() -> Option<Timing> {
        std::env::var("KUAXIN_CUDA_TIMING")
            .is_ok_and(|v| v == "1")
            .then(Timing::default)
    }

    /// Runs `launch` between two events and books its time under `kind`.
    pub fn time(
        &self,
        ctx: &Arc<CudaContext>,
        stream: &CudaStream,
        kind: &str,
        bytes: u128,
        launch: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let err = |e| Error::backend(format!("cuda timing: {e:?}"));
        let flags = Some(sys::CUevent_flags::CU_EVENT_DEFAULT);
        let (t0, t1) = (
            ctx.new_event(flags).map_err(err)?,
            ctx.new_event(flags).map_err(err)?,
        );
        t0.record(stream).map_err(err)?;
        launch()?;
        t1.record(stream).map_err(err)?;
        let ms = t0.elapsed_ms(&t1).map_err(err)? as f64;
        if let Ok(mut s) = self.stats.lock() {
            let e = s.entry(kind.to_string()).or_default();
            e.0 += 1;
            e.1 += ms;
            e.2 += bytes;
        }
        Ok(())
    }

    /// One line per kind: launches, total ms, GB/s.
    pub fn report(&self, device: &str) -> String {
        let mut out = String::new();
        if let Ok(s) = self.stats.lock() {
            for (kind, (n, ms, bytes)) in s.iter() {
                let gbs = if *ms > 0.0 {
                    *bytes as f64 / (*ms * 1e-3) / 1e9
                } else {
                    0.0
                };
                out += &format!("cuda-timing {device} {kind:<24} {n:>6} launches {ms:>10.3} ms {gbs:>9.1} GB/s\n");
            }
        }
        out
    }
}
