//! The back-end contract on one NVIDIA GPU: tensors in device memory from the caching
//! allocator, every launch and copy in order on one stream, kernels compiled once per source
//! text by NVRTC for the GPU's architecture, matmul through cuBLAS.
use crate::alloc::{Block, Pool};
use crate::blas::Blas;
use crate::bytes::{from_bytes, to_bytes};
use crate::dialect::CUDA;
use crate::driver::{arch_of, device_count};
use crate::nvrtc::{compile, nvrtc_present};
use crate::plan::{claims_untyped, plan, GemmPlan, Operand, Plan};
use crate::plan_cache::{Cached, PlanCache};
use crate::text::{Launch, ENTRY};
use crate::timing::Timing;
use cudarc::driver::{result, CudaContext, CudaFunction, CudaStream};
use kuaxin_core::prim::{Prim, TensorType};
use kuaxin_core::{Backend, DeviceTensor, Error, Result, Tensor};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, OnceLock};

/// Fields drop in order: the cuBLAS handle and the kernels before the stream and context they
/// use (the pool lives on while tensors hold blocks of it).
pub struct CudaBackend {
    blas: Option<Mutex<Blas>>,
    plans: PlanCache,
    kernels: Mutex<HashMap<String, CudaFunction>>,
    timing: Option<Timing>,
    pool: Arc<Pool>,
    stream: Arc<CudaStream>,
    ctx: Arc<CudaContext>,
    name: String,
    arch: &'static str,
}

fn drv(what: &str, e: result::DriverError) -> Error {
    Error::backend(format!("{what}: {e:?}"))
}

impl CudaBackend {
    /// Opens GPU `index` (as listed by [`crate::list`]).
    pub fn new(index: usize) -> Result<CudaBackend> {
        let name = format!("cuda:{index}");
        let n = device_count(&name)?;
        if n == 0 {
            return Err(Error::unsupported(format!(
                "device '{name}': the CUDA driver is installed but sees no GPU"
            )));
        }
        if index >= n {
            return Err(Error::invalid(format!(
                "device '{name}': there are {n} CUDA devices (cuda:0..cuda:{})",
                n - 1
            )));
        }
        if !nvrtc_present() {
            return Err(Error::unsupported(format!(
                "device '{name}': NVRTC (libnvrtc.so) not found; the CUDA back end compiles its kernels with it (put the CUDA toolkit's lib64 on LD_LIBRARY_PATH)"
            )));
        }
        let ctx =
            CudaContext::new(index).map_err(|e| drv(&format!("{name}: creating a context"), e))?;
        let (major, minor) = ctx.compute_capability().map_err(|e| drv(&name, e))?;
        let arch = arch_of(major, minor).ok_or_else(|| {
            Error::unsupported(format!(
                "{name}: compute capability {major}.{minor} is not known to this kuaxin"
            ))
        })?;
        let stream = ctx
            .new_stream()
            .map_err(|e| drv(&format!("{name}: creating a stream"), e))?;
        let blas = Blas::new(&stream)?.map(Mutex::new);
        Ok(CudaBackend {
            pool: Pool::new(ctx.clone(), stream.clone()),
            name,
            ctx,
            stream,
            blas,
            arch,
            kernels: Mutex::new(HashMap::new()),
            plans: PlanCache::default(),
            timing: Timing::from_env(),
        })
    }

    fn bind(&self) -> Result<()> {
        self.ctx.bind_to_thread().map_err(|e| drv(&self.name, e))
    }

    fn function(&self, launch: &Launch) -> Result<CudaFunction> {
        if let Some(f) = self
            .kernels
            .lock()
            .ok()
            .and_then(|k| k.get(&launch.src).cloned())
        {
            return Ok(f);
        }
        let ptx = compile(&launch.src, self.arch)?;
        let module = self
            .ctx
            .load_module(ptx)
            .map_err(|e| drv(&format!("{}: loading a kernel", self.name), e))?;
        let f = module
            .load_function(ENTRY)
            .map_err(|e| drv(&self.name, e))?;
        if let Ok(mut k) = self.kernels.lock() {
            k.insert(launch.src.clone(), f.clone());
        }
        Ok(f)
    }

    fn block<'a>(&self, t: &'a DeviceTensor) -> Result<&'a Block> {
        t.storage.downcast_ref::<Block>().ok_or_else(|| {
            Error::backend(format!(
                "{}: tensor {} belongs to another back end",
                self.name, t.ty
            ))
        })
    }

    /// Launches `l`; `compiled` keeps its function for the next launch of the same plan.
    fn launch(
        &self,
        l: &Launch,
        compiled: Option<&OnceLock<CudaFunction>>,
        out: u64,
        ins: &[u64],
    ) -> Result<()> {
        let f = match compiled.and_then(|c| c.get()) {
            Some(f) => f.clone(),
            None => {
                let f = self.function(l)?;
                if let Some(c) = compiled {
                    let _ = c.set(f.clone());
                }
                f
            }
        };
        let mut ptrs: Vec<u64> = Vec::with_capacity(ins.len() + 1);
        ptrs.push(out);
        ptrs.extend_from_slice(ins);
        let mut params: Vec<*mut c_void> = ptrs
            .iter_mut()
            .map(|p| p as *mut u64 as *mut c_void)
            .collect();
        // SAFETY: the kernel's parameters are one pointer per tensor, in this order; the
        // tensors stay alive until the stream has run it (blocks are reused only in stream order).
        unsafe {
            result::launch_kernel(
                f.cu_function(),
                (l.grid, 1, 1),
                (l.block, 1, 1),
                0,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| drv(&format!("{}: launching a kernel", self.name), e))
    }

    /// Enqueues the plan's work on the stream.
    fn run(
        &self,
        cached: &Cached,
        plan: &Plan,
        out_ty: &TensorType,
        out: u64,
        ptrs: &[u64],
    ) -> Result<()> {
        match plan {
            Plan::Empty => Ok(()),
            Plan::Kernel(l) => self.launch(l, Some(&cached.function), out, ptrs),
            Plan::Gemm(g) => self.gemm(g, out_ty, out, ptrs),
        }
    }

    fn gemm(&self, g: &GemmPlan, out_ty: &TensorType, out: u64, ptrs: &[u64]) -> Result<()> {
        if g.gemm.k == 0 {
            // A sum of nothing.
            let bytes = out_ty.numel() * out_ty.dtype.size();
            // SAFETY: the block holds `bytes` bytes.
            return unsafe { result::memset_d8_async(out, 0, bytes, self.stream.cu_stream()) }
                .map_err(|e| drv(&self.name, e));
        }
        // The scratch returns to the pool when dropped here; later work reusing it runs after
        // these products on the same stream.
        let scratch = match &g.prep {
            Some((l, ty)) => {
                let s = self.pool.alloc(ty, &self.name)?;
                self.launch(l, None, s.ptr, &ptrs[..1])?;
                Some(s)
            }
            None => None,
        };
        let at = |o: Operand| match o {
            Operand::Input(i) => ptrs[i],
            Operand::Scratch => scratch.as_ref().map_or(0, |s| s.ptr),
        };
        let blas = self
            .blas
            .as_ref()
            .and_then(|b| b.lock().ok())
            .ok_or_else(|| Error::backend("cuBLAS handle unavailable"))?;
        let size = g.dtype.size() as u64;
        let what = format!("products for {out_ty}");
        for i in 0..g.calls as u64 {
            let (b, c) = (
                at(g.b) + i * g.step_b as u64 * size,
                out + i * g.step_c as u64 * size,
            );
            // SAFETY: the plan's geometry lies within the operands and the output.
            unsafe { blas.gemm(g.dtype, at(g.a), b, c, &g.gemm, &what)? };
        }
        Ok(())
    }

    fn ty(&self, t: &DeviceTensor) -> TensorType {
        t.ty.clone()
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn upload(&self, t: &Tensor) -> Result<DeviceTensor> {
        self.bind()?;
        let ty = TensorType::new(t.dtype(), t.shape.clone());
        let block = self.pool.alloc(&ty, &self.name)?;
        let bytes = to_bytes(t);
        if !bytes.is_empty() {
            // SAFETY: the block holds at least `bytes.len()` bytes; pageable memory is staged
            // before the call returns.
            unsafe { result::memcpy_htod_async(block.ptr, &bytes, self.stream.cu_stream()) }
                .map_err(|e| drv(&format!("{}: copying {ty} in", self.name), e))?;
        }
        Ok(DeviceTensor {
            ty,
            storage: Arc::new(block),
        })
    }

    fn download(&self, t: &DeviceTensor) -> Result<Tensor> {
        self.bind()?;
        let mut bytes = vec![0u8; t.ty.numel() * t.ty.dtype.size()];
        if !bytes.is_empty() {
            let b = self.block(t)?;
            // SAFETY: the block holds the tensor; we wait for the copy before reading.
            unsafe { result::memcpy_dtoh_async(&mut bytes, b.ptr, self.stream.cu_stream()) }
                .map_err(|e| drv(&format!("{}: copying {} out", self.name, t.ty), e))?;
        }
        self.synchronize()?;
        from_bytes(&t.ty, &bytes)
    }

    fn execute(
        &self,
        prim: &Prim,
        inputs: &[&DeviceTensor],
        outputs: &[TensorType],
    ) -> Result<Vec<DeviceTensor>> {
        let [out_ty] = outputs else {
            return Err(Error::unsupported(format!(
                "{}: {} has {} outputs",
                self.name,
                prim.name(),
                outputs.len()
            )));
        };
        self.bind()?;
        let in_types: Vec<TensorType> = inputs.iter().map(|t| self.ty(t)).collect();
        let ptrs = inputs
            .iter()
            .map(|t| self.block(t).map(|b| b.ptr))
            .collect::<Result<Vec<_>>>()?;
        let cached = self.plans.get(prim, &in_types, || {
            plan(prim, &in_types, out_ty, self.blas.is_some(), &CUDA)
        });
        let plan = cached
            .plan
            .as_ref()
            .map_err(|why| Error::unsupported(format!("{}: {}: {why}", self.name, prim.name())))?;
        let out = self.pool.alloc(out_ty, &self.name)?;
        let run = || self.run(&cached, plan, out_ty, out.ptr, &ptrs);
        match &self.timing {
            None => run()?,
            Some(t) => {
                let bytes = in_types
                    .iter()
                    .chain([out_ty])
                    .map(|t| (t.numel() * t.dtype.size()) as u128)
                    .sum();
                t.time(&self.ctx, &self.stream, &kind(prim), bytes, run)?
            }
        }
        Ok(vec![DeviceTensor {
            ty: out_ty.clone(),
            storage: Arc::new(out),
        }])
    }

    fn synchronize(&self) -> Result<()> {
        self.bind()?;
        self.stream
            .synchronize()
            .map_err(|e| drv(&format!("{}: a kernel failed", self.name), e))
    }

    fn supports(&self, prim: &Prim, inputs: &[TensorType]) -> bool {
        if inputs.is_empty() {
            return claims_untyped(prim, &CUDA);
        }
        let Ok(outs) = prim.infer(inputs) else {
            return false;
        };
        let [out] = outs.as_slice() else {
            return false;
        };
        self.plans
            .get(prim, inputs, || {
                plan(prim, inputs, out, self.blas.is_some(), &CUDA)
            })
            .plan
            .is_ok()
    }
}

/// The GPU's name and architecture, for reports.
impl CudaBackend {
    pub fn arch(&self) -> &'static str {
        self.arch
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        if let Some(t) = &self.timing {
            let _ = self.synchronize();
            eprint!("{}", t.report(&self.name));
        }
    }
}

/// The kind of a launch, for timing reports.
fn kind(p: &Prim) -> String {
    match p {
        Prim::Fused(k) if k.reduce.is_some() => "Fused(reduce)".into(),
        Prim::Fused(_) => "Fused(elementwise)".into(),
        p => p.name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_gpu_without_a_driver_is_an_error_naming_the_device() {
        if crate::driver::driver_present() {
            // A GPU machine: opening a device that does not exist must still be an error.
            let e = CudaBackend::new(4096)
                .err()
                .expect("no machine has 4097 GPUs");
            assert!(e.to_string().contains("cuda:4096"), "{e}");
            return;
        }
        let e = CudaBackend::new(0).err().expect("no driver, no device");
        assert!(e.is_unsupported());
        assert!(
            e.to_string()
                .starts_with("device 'cuda:0': no CUDA driver (libcuda.so)"),
            "{e}"
        );
    }
}
