//! Device names (`cpu`, `cuda:0`, `wgpu:1`) to back ends.
use kuaxin_core::{Backend, Error, Result};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub name: String,
    pub kind: String,
    pub description: String,
}

/// Opens a device by name. Back ends not compiled into this build give a clear error.
pub fn open_device(name: &str, threads: Option<usize>) -> Result<Arc<dyn Backend>> {
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => (k, Some(i)),
        None => (name, None),
    };
    match kind {
        "cpu" => {
            if index.is_some_and(|i| i != "0") {
                return Err(Error::invalid(format!(
                    "device '{name}': there is one cpu device, cpu:0"
                )));
            }
            Ok(Arc::new(kuaxin_cpu::CpuBackend::new(threads)?))
        }
        #[cfg(feature = "wgpu")]
        "wgpu" => {
            let i = match index {
                None => 0,
                Some(i) => i.parse().map_err(|_| {
                    Error::invalid(format!("device '{name}': expected wgpu or wgpu:N"))
                })?,
            };
            Ok(Arc::new(kuaxin_wgpu::WgpuBackend::new(i)?))
        }
        #[cfg(feature = "cuda")]
        "cuda" => {
            let i = match index {
                None => 0,
                Some(i) => i.parse().map_err(|_| {
                    Error::invalid(format!("device '{name}': expected cuda or cuda:N"))
                })?,
            };
            Ok(Arc::new(kuaxin_cuda::CudaBackend::new(i)?))
        }
        // Runs on the CPU, compiling every kernel the CUDA back end would launch (no GPU needed).
        #[cfg(feature = "cuda")]
        "cuda-codegen" => Ok(Arc::new(kuaxin_cuda::CodegenCheck::new(Arc::new(
            kuaxin_cpu::CpuBackend::new(threads)?,
        ))?)),
        #[allow(unreachable_patterns)]
        "cuda" | "cuda-codegen" | "wgpu" => Err(Error::unsupported(format!(
            "device '{name}': the {kind} back end is not built into this kuaxin (available: cpu)"
        ))),
        _ => Err(Error::invalid(format!(
            "unknown device '{name}' (available: cpu)"
        ))),
    }
}

pub fn list_devices() -> Vec<DeviceInfo> {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    #[allow(unused_mut)]
    let mut v = vec![DeviceInfo {
        name: "cpu".into(),
        kind: "cpu".into(),
        description: format!(
            "{} ({} threads)",
            cpu_model_name().unwrap_or_else(|| std::env::consts::ARCH.into()),
            cores
        ),
    }];
    #[cfg(feature = "wgpu")]
    v.extend(kuaxin_wgpu::list().into_iter().map(|a| DeviceInfo {
        name: a.name,
        kind: "wgpu".into(),
        description: a.description,
    }));
    #[cfg(feature = "cuda")]
    v.extend(kuaxin_cuda::list().into_iter().map(|g| DeviceInfo {
        name: g.name,
        kind: "cuda".into(),
        description: g.description,
    }));
    v
}

/// Lines about back ends built into this kuaxin that found no device (for `kuaxin devices`).
pub fn device_notes() -> Vec<String> {
    #[allow(unused_mut)]
    let mut notes = Vec::new();
    #[cfg(feature = "cuda")]
    if !kuaxin_cuda::driver_present() {
        notes.push("cuda: no CUDA driver (libcuda.so) found on this machine; `--device cuda-codegen` runs on the CPU and compiles every CUDA kernel with NVRTC".to_string());
    } else if kuaxin_cuda::list().is_empty() {
        notes.push("cuda: the CUDA driver is installed but reports no usable GPU".to_string());
    }
    notes
}

fn cpu_model_name() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
}
