//! The `cuda-codegen` device: proves the CUDA generator on a machine without a GPU. It runs
//! every primitive on another back end (the CPU), but first makes the plan the CUDA back end
//! would make (same `supports`, same kernels, cuBLAS assumed present) and compiles each
//! distinct kernel source with NVRTC to PTX for `compute_90` (or `KUAXIN_CUDA_ARCH`). A kernel
//! that does not compile fails the primitive. When dropped it prints how many it compiled.
use crate::dialect::CUDA;
use crate::nvrtc::{compile, nvrtc_present, nvrtc_version};
use crate::plan::{claims, plan, Plan};
use kuaxin_core::prim::{Prim, TensorType};
use kuaxin_core::{Backend, DeviceTensor, Error, Result, Tensor};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub struct CodegenCheck {
    inner: Arc<dyn Backend>,
    arch: &'static str,
    compiled: Mutex<HashSet<String>>,
    launches: AtomicUsize,
    blas_calls: AtomicUsize,
}

/// The architecture the check compiles for.
fn arch() -> &'static str {
    match std::env::var("KUAXIN_CUDA_ARCH").as_deref() {
        Ok("compute_80") => "compute_80",
        Ok("compute_89") => "compute_89",
        Ok("compute_100") => "compute_100",
        _ => "compute_90",
    }
}

impl CodegenCheck {
    /// Wraps `inner`; fails when NVRTC cannot be loaded.
    pub fn new(inner: Arc<dyn Backend>) -> Result<CodegenCheck> {
        if !nvrtc_present() {
            return Err(Error::unsupported(
                "device 'cuda-codegen': NVRTC (libnvrtc.so.13) not found; `pip install \"nvidia-cuda-nvrtc==13.0.*\"` and put its nvidia/cu13/lib folder on LD_LIBRARY_PATH",
            ));
        }
        Ok(CodegenCheck {
            inner,
            arch: arch(),
            compiled: Mutex::new(HashSet::new()),
            launches: AtomicUsize::new(0),
            blas_calls: AtomicUsize::new(0),
        })
    }

    /// One line: kernels compiled, launches planned, cuBLAS calls.
    pub fn summary(&self) -> String {
        let n = self.compiled.lock().map(|c| c.len()).unwrap_or(0);
        let v = nvrtc_version().map_or("?".into(), |(a, b)| format!("{a}.{b}"));
        format!(
            "cuda-codegen: {n} distinct kernels compiled to PTX for {} by NVRTC {v} ({} kernel launches, {} cuBLAS calls planned)",
            self.arch,
            self.launches.load(Ordering::Relaxed),
            self.blas_calls.load(Ordering::Relaxed)
        )
    }

    fn check(&self, src: &str) -> Result<()> {
        self.launches.fetch_add(1, Ordering::Relaxed);
        if self
            .compiled
            .lock()
            .map(|c| c.contains(src))
            .unwrap_or(false)
        {
            return Ok(());
        }
        compile(src, self.arch)?;
        if let Ok(mut c) = self.compiled.lock() {
            c.insert(src.to_string());
        }
        Ok(())
    }
}

impl Drop for CodegenCheck {
    fn drop(&mut self) {
        if self.launches.load(Ordering::Relaxed) + self.blas_calls.load(Ordering::Relaxed) > 0 {
            eprintln!("{}", self.summary());
        }
    }
}

impl Backend for CodegenCheck {
    fn name(&self) -> String {
        "cuda-codegen".into()
    }
    fn upload(&self, t: &Tensor) -> Result<DeviceTensor> {
        self.inner.upload(t)
    }
    fn upload_shared(&self, t: &Arc<Tensor>) -> Result<DeviceTensor> {
        self.inner.upload_shared(t)
    }
    fn download(&self, t: &DeviceTensor) -> Result<Tensor> {
        self.inner.download(t)
    }
    fn execute(
        &self,
        prim: &Prim,
        inputs: &[&DeviceTensor],
        outputs: &[TensorType],
    ) -> Result<Vec<DeviceTensor>> {
        let in_types: Vec<TensorType> = inputs.iter().map(|t| t.ty.clone()).collect();
        if let [out] = outputs {
            match plan(prim, &in_types, out, true, &CUDA) {
                Ok(Plan::Kernel(l)) => self.check(&l.src)?,
                Ok(Plan::Gemm(g)) => {
                    if let Some((l, _)) = &g.prep {
                        self.check(&l.src)?;
                    }
                    self.blas_calls.fetch_add(g.calls, Ordering::Relaxed);
                }
                Ok(Plan::Empty) | Err(_) => {}
            }
        }
        self.inner.execute(prim, inputs, outputs)
    }
    fn scope(&self, f: &mut (dyn FnMut() -> Result<()> + Send)) -> Result<()> {
        self.inner.scope(f)
    }
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }
    fn supports(&self, prim: &Prim, inputs: &[TensorType]) -> bool {
        claims(prim, inputs, true, &CUDA) && self.inner.supports(prim, inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuaxin_core::prim::UnaryOp;
    use kuaxin_core::DType;

    /// Where NVRTC is loadable (CI puts PyPI's on the library path), a primitive is compiled
    /// and then computed by the wrapped back end; elsewhere the device refuses clearly.
    #[test]
    fn the_check_compiles_each_kernel_once_or_refuses_clearly() {
        let cpu: Arc<dyn Backend> = Arc::new(kuaxin_cpu::CpuBackend::new(Some(1)).unwrap());
        let check = match CodegenCheck::new(cpu) {
            Ok(c) => c,
            Err(e) => {
                assert!(!nvrtc_present());
                assert!(
                    e.is_unsupported() && e.to_string().contains("nvidia-cuda-nvrtc"),
                    "{e}"
                );
                return;
            }
        };
        let x = check
            .upload(&Tensor::from_vec(vec![3], vec![1.0f32, 4.0, 9.0]).unwrap())
            .unwrap();
        let prim = Prim::Unary(UnaryOp::Sqrt);
        assert!(check.supports(&prim, &[x.ty.clone()]));
        for _ in 0..2 {
            let y = check.execute(&prim, &[&x], &[x.ty.clone()]).unwrap();
            assert_eq!(
                check.download(&y[0]).unwrap().to_f64_vec(),
                vec![1.0, 2.0, 3.0]
            );
        }
        assert!(
            check
                .summary()
                .starts_with("cuda-codegen: 1 distinct kernels compiled"),
            "{}",
            check.summary()
        );
        // What CUDA leaves on the host, the check leaves there too.
        let t = TensorType::new(DType::F32, vec![3]);
        let i = TensorType::new(DType::I64, vec![3]);
        let scatter = Prim::ScatterElements {
            axis: 0,
            reduction: kuaxin_core::prim::ScatterReduction::None,
        };
        assert!(!check.supports(&scatter, &[t.clone(), i, t]));
    }

    #[test]
    fn a_kernel_nvrtc_rejects_is_an_error_with_its_log() {
        if !nvrtc_present() {
            assert!(compile("x", "compute_90").unwrap_err().is_unsupported());
            return;
        }
        let e = compile(
            "extern \"C\" __global__ void kx() { undeclared = 1; }",
            "compute_90",
        )
        .unwrap_err();
        let first = e.to_string().lines().next().unwrap_or("").to_string();
        assert!(
            first.contains("NVRTC cannot compile") && first.contains("undeclared"),
            "{first}"
        );
    }
}
