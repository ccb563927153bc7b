//! Finding the CUDA driver and its devices. cudarc loads libcuda at run time and panics when
//! it is missing, so every entry point checks for the library first and turns its absence into
//! an error (or, for listing, into no devices).
use cudarc::driver::{result, sys};
use kuaxin_core::{Error, Result};

/// One GPU, for `kuaxin devices`.
#[derive(Debug, Clone)]
pub struct GpuSummary {
    pub name: String,
    pub description: String,
}

/// Whether the driver library (libcuda.so) can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library under its usual names.
    unsafe { sys::is_culib_present() }
}

/// The error for a machine without the driver library.
pub fn no_driver(device: &str) -> Error {
    Error::unsupported(format!(
        "device '{device}': no CUDA driver (libcuda.so) found on this machine; install the NVIDIA driver, or use --device cpu"
    ))
}

fn driver_err(what: &str, e: result::DriverError) -> Error {
    Error::backend(format!("cuda: {what}: {e:?}"))
}

/// Initialises the driver and counts the GPUs; errors name what is missing.
pub fn device_count(device: &str) -> Result<usize> {
    if !driver_present() {
        return Err(no_driver(device));
    }
    result::init()
        .map_err(|e| driver_err("cuInit failed (is the GPU visible to this process?)", e))?;
    let n = result::device::get_count().map_err(|e| driver_err("counting devices", e))?;
    Ok(n.max(0) as usize)
}

/// The GPUs this machine offers, as `cuda:N`; empty without a driver or a GPU.
pub fn list() -> Vec<GpuSummary> {
    let Ok(n) = device_count("cuda") else {
        return vec![];
    };
    (0..n).filter_map(|i| describe(i).ok()).collect()
}

fn describe(i: usize) -> Result<GpuSummary> {
    let dev = result::device::get(i as i32).map_err(|e| driver_err("cuDeviceGet", e))?;
    let name = result::device::get_name(dev).map_err(|e| driver_err("cuDeviceGetName", e))?;
    let attr = |a| unsafe { result::device::get_attribute(dev, a) }.unwrap_or(0);
    use sys::CUdevice_attribute as A;
    let (major, minor) = (
        attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
        attr(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
    );
    // SAFETY: `dev` came from cuDeviceGet.
    let mem = unsafe { result::device::total_mem(dev) }.unwrap_or(0);
    Ok(GpuSummary {
        name: format!("cuda:{i}"),
        description: format!(
            "{name} ({} MiB, compute capability {major}.{minor}, {} SMs)",
            mem >> 20,
            attr(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        ),
    })
}

/// `compute_XY` for NVRTC from a device's compute capability.
pub fn arch_of(major: i32, minor: i32) -> Option<&'static str> {
    Some(match (major, minor) {
        (7, 0) => "compute_70",
        (7, 5) => "compute_75",
        (8, 0) => "compute_80",
        (8, 6) => "compute_86",
        (8, 7) => "compute_87",
        (8, 9) => "compute_89",
        (9, 0) => "compute_90",
        (10, 0) => "compute_100",
        (10, 3) => "compute_103",
        (11, 0) => "compute_110",
        (12, 0) => "compute_120",
        (12, 1) => "compute_121",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_without_the_driver_gets_an_error_not_a_panic() {
        if driver_present() {
            return; // a GPU machine: the other tests cover it
        }
        let e = device_count("cuda:0").unwrap_err();
        assert!(e.is_unsupported());
        assert!(e.to_string().contains("no CUDA driver (libcuda.so)"), "{e}");
        assert!(list().is_empty());
    }

    #[test]
    fn architectures_follow_compute_capability() {
        assert_eq!(arch_of(9, 0), Some("compute_90"));
        assert_eq!(arch_of(1, 0), None);
    }
}
