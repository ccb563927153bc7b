//! Compiling kernel text to PTX with NVRTC (loaded at run time, like the driver).
use cudarc::nvrtc::{compile_ptx_with_opts, CompileError, CompileOptions, Ptx};
use kuaxin_core::{Error, Result};

/// Whether libnvrtc can be loaded on this machine.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library under its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// The NVRTC version as (major, minor), when the library is present.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_present() {
        return None;
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-pointers to live integers.
    let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
    (r == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
}

/// Compiles `src` for `arch` (`compute_90`). Errors carry NVRTC's log and the source.
pub fn compile(src: &str, arch: &'static str) -> Result<Ptx> {
    if !nvrtc_present() {
        return Err(Error::unsupported(
            "cuda: NVRTC (libnvrtc.so) not found: install the CUDA toolkit, or `pip install \"nvidia-cuda-nvrtc==13.0.*\"` and put its nvidia/cu13/lib folder on LD_LIBRARY_PATH",
        ));
    }
    if src.contains('\0') {
        return Err(Error::backend("cuda: kernel source contains a NUL byte"));
    }
    let opts = CompileOptions {
        arch: Some(arch),
        options: vec!["--std=c++17".into()],
        ..Default::default()
    };
    compile_ptx_with_opts(src, opts).map_err(|e| {
        let why = match e {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => format!("{other:?}"),
        };
        let first = why.lines().find(|l| l.contains("error")).unwrap_or("").trim().to_string();
        Error::backend(format!(
            "cuda: NVRTC cannot compile a generated kernel for {arch}: {first}\n{why}\n--- source ---\n{src}"
        ))
    })
}
