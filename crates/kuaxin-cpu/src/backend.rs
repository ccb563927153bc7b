//! [`CpuBackend`]: the [`Backend`] contract on host memory. A device tensor's storage is an
//! `Arc<Tensor>`; primitives run through [`eval`](crate::eval) inside the back end's own rayon
//! pool (so gemm and the parallel kernels use exactly its threads).
use crate::eval::{eval_owned, eval_with};
use crate::weights::Weights;
use kuaxin_core::prim::{Prim, TensorType};
use kuaxin_core::{Backend, DeviceTensor, Error, Result, Tensor};
use std::sync::Arc;

pub struct CpuBackend {
    pool: rayon::ThreadPool,
    /// Constants uploaded here, and their packed copies.
    weights: Weights,
}

impl CpuBackend {
    /// A back end with its own pool of `threads` threads (`None` or 0: one per core).
    pub fn new(threads: Option<usize>) -> Result<CpuBackend> {
        let n = match threads {
            Some(n) if n > 0 => n,
            _ => std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("kuaxin-cpu-{i}"))
            .build()
            .map_err(|e| Error::backend(format!("cpu: cannot start {n} threads: {e}")))?;
        Ok(CpuBackend {
            pool,
            weights: Weights::default(),
        })
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `f` inside this back end's thread pool.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }
}

impl std::fmt::Debug for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuBackend({} threads)", self.threads())
    }
}

/// A host tensor as a CPU device tensor (no copy).
pub fn wrap(t: Tensor) -> DeviceTensor {
    share(&Arc::new(t))
}

/// A device tensor holding `t` itself: host memory the caller keeps a handle on.
fn share(t: &Arc<Tensor>) -> DeviceTensor {
    DeviceTensor {
        ty: TensorType::new(t.dtype(), t.shape.clone()),
        storage: t.clone(),
    }
}

/// The host tensor inside a CPU device tensor; an error for another back end's tensor.
pub fn host_tensor(t: &DeviceTensor) -> Result<Arc<Tensor>> {
    t.storage
        .clone()
        .downcast::<Tensor>()
        .map_err(|_| Error::backend(format!("cpu: tensor {} belongs to another back end", t.ty)))
}

/// The host tensor inside a CPU device tensor, the device tensor's handle given up.
fn into_host(t: DeviceTensor) -> Result<Arc<Tensor>> {
    let ty = t.ty;
    t.storage
        .downcast::<Tensor>()
        .map_err(|_| Error::backend(format!("cpu: tensor {ty} belongs to another back end")))
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        "cpu".into()
    }

    fn upload(&self, t: &Tensor) -> Result<DeviceTensor> {
        Ok(wrap(t.clone()))
    }

    fn upload_shared(&self, t: &Arc<Tensor>) -> Result<DeviceTensor> {
        self.weights.register(t);
        Ok(share(t))
    }

    fn upload_input(&self, t: &Arc<Tensor>) -> Result<DeviceTensor> {
        Ok(share(t))
    }

    fn upload_owned(&self, t: Tensor) -> Result<DeviceTensor> {
        Ok(wrap(t))
    }

    fn download(&self, t: &DeviceTensor) -> Result<Tensor> {
        Ok(host_tensor(t)?.as_ref().clone())
    }

    fn download_owned(&self, t: DeviceTensor) -> Result<Tensor> {
        let held = host_tensor(&t)?;
        drop(t);
        Ok(Arc::try_unwrap(held).unwrap_or_else(|shared| shared.as_ref().clone()))
    }

    fn execute(
        &self,
        prim: &Prim,
        inputs: &[&DeviceTensor],
        outputs: &[TensorType],
    ) -> Result<Vec<DeviceTensor>> {
        let held = inputs
            .iter()
            .map(|t| host_tensor(t))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&Tensor> = held.iter().map(|t| t.as_ref()).collect();
        crate::warm::rearm();
        let out = self
            .pool
            .install(|| eval_with(prim, &refs, outputs, Some(&self.weights)))?;
        Ok(out.into_iter().map(wrap).collect())
    }

    fn execute_owned(
        &self,
        prim: &Prim,
        inputs: Vec<DeviceTensor>,
        outputs: &[TensorType],
    ) -> Result<Vec<DeviceTensor>> {
        // Each handle is dropped as it is unwrapped: an input the executor gave up is then
        // held here alone, and the kernel may take its buffer.
        let held = inputs
            .into_iter()
            .map(into_host)
            .collect::<Result<Vec<_>>>()?;
        crate::warm::rearm();
        let out = self
            .pool
            .install(|| eval_owned(prim, held, outputs, Some(&self.weights)))?;
        Ok(out.into_iter().map(wrap).collect())
    }

    fn scope(&self, f: &mut (dyn FnMut() -> Result<()> + Send)) -> Result<()> {
        self.pool.install(|| crate::warm::run_warm(f))
    }

    fn supports(&self, prim: &Prim, _inputs: &[TensorType]) -> bool {
        match prim {
            // Only an epilogue the tile may take in registers: run on the stored product, any
            // other measured no faster than a kernel of its own (BENCHMARKS.md).
            Prim::MatMulEpilogue { epilogue, .. } => crate::conv_finish::may_finish(epilogue),
            // The blocked layout where its tile has AVX-512; elsewhere it is only computed
            // when asked for (its portable tile is a reference, not a fast path).
            Prim::ConvBlocked { .. } => crate::panels::available(),
            _ => true,
        }
    }

    fn synchronize(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::Mat;
    use kuaxin_core::Data;

    fn matrix() -> Arc<Tensor> {
        let v: Vec<f32> = (0..64 * 64).map(|i| i as f32).collect();
        Arc::new(Tensor::new(vec![64, 64], Data::F32(v)).unwrap())
    }

    fn packs(b: &CpuBackend, t: &Tensor) -> bool {
        let Data::F32(src) = &t.data else {
            unreachable!("an f32 matrix")
        };
        let mat = Mat {
            offset: 0,
            rs: 64,
            cs: 1,
        };
        b.weights.packed_b(t, src, mat, (64, 64), 16).is_some()
    }

    #[test]
    fn an_input_is_read_in_place_and_not_taken_for_a_constant() {
        let b = CpuBackend::new(Some(1)).unwrap();
        let x = matrix();
        let up = b.upload_input(&x).unwrap();
        assert!(Arc::ptr_eq(&host_tensor(&up).unwrap(), &x), "no copy");
        assert_eq!(up.ty, TensorType::new(x.dtype(), vec![64, 64]));
        // Nothing is packed and kept for an input: it may be a new one next run.
        assert!(!packs(&b, &x));
        drop(up);
        assert_eq!(Arc::strong_count(&x), 1, "the back end keeps no handle");
        // A constant, uploaded shared, is.
        let w = matrix();
        let _kept = b.upload_shared(&w).unwrap();
        assert!(packs(&b, &w));
    }
}
