//! Matmul (batched, row-major) through cuBLAS on the back end's stream: f32 (TF32 tensor cores
//! only when `KUAXIN_CUDA_TF32=1`), f16 and bf16 (f32 accumulation), f64.
use cudarc::cublas::{result, sys};
use cudarc::driver::CudaStream;
use kuaxin_core::prim::TensorType;
use kuaxin_core::{DType, Error, Result};
use std::ffi::c_void;

pub struct Blas {
    handle: sys::cublasHandle_t,
    tf32: bool,
}

// SAFETY: the handle is used under the back end's lock-free but stream-ordered calls; cuBLAS
// handles may be used from any thread as long as calls do not overlap, which `Mutex` ensures.
unsafe impl Send for Blas {}

/// Whether cuBLAS runs matmuls of `d`.
pub fn blas_dtype(d: DType) -> bool {
    matches!(d, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
}

/// Whether `KUAXIN_CUDA_TF32=1` asks for TF32 tensor cores in f32 matmuls.
pub fn tf32_requested() -> bool {
    std::env::var("KUAXIN_CUDA_TF32").is_ok_and(|v| v == "1")
}

impl Blas {
    /// A handle on `stream`; None when libcublas is not on this machine.
    pub fn new(stream: &CudaStream) -> Result<Option<Blas>> {
        // SAFETY: only tries to dlopen the library.
        if !unsafe { sys::is_culib_present() } {
            return Ok(None);
        }
        let handle = result::create_handle()
            .map_err(|e| Error::backend(format!("cuBLAS: cublasCreate: {e:?}")))?;
        // SAFETY: a live handle and the back end's live stream.
        unsafe { result::set_stream(handle, stream.cu_stream() as sys::cudaStream_t) }
            .map_err(|e| Error::backend(format!("cuBLAS: set stream: {e:?}")))?;
        Ok(Some(Blas {
            handle,
            tf32: tf32_requested(),
        }))
    }

    /// `batch` products `C[m, n] = A[m, k] · B[k, n]` of row-major matrices of `dtype`, the
    /// i-th at element offsets `i·stride_{a,b,c}` from `a`, `b`, `c`. `what` names the call in
    /// errors.
    ///
    /// # Safety
    /// The pointers must hold those matrices, alive until the stream has run the call.
    pub unsafe fn gemm(
        &self,
        dtype: DType,
        a: u64,
        b: u64,
        c: u64,
        g: &Gemm,
        what: &str,
    ) -> Result<()> {
        let fits = |v: usize| {
            i32::try_from(v).map_err(|_| {
                Error::unsupported(format!("cuBLAS: {what} has a dimension beyond 2^31"))
            })
        };
        let (mi, ki, ni, bi) = (fits(g.m)?, fits(g.k)?, fits(g.n)?, fits(g.batch)?);
        use sys::cublasComputeType_t as C;
        use sys::cudaDataType as T;
        let (dt, compute) = match dtype {
            DType::F32 if self.tf32 => (T::CUDA_R_32F, C::CUBLAS_COMPUTE_32F_FAST_TF32),
            DType::F32 => (T::CUDA_R_32F, C::CUBLAS_COMPUTE_32F),
            DType::F16 => (T::CUDA_R_16F, C::CUBLAS_COMPUTE_32F),
            DType::BF16 => (T::CUDA_R_16BF, C::CUBLAS_COMPUTE_32F),
            DType::F64 => (T::CUDA_R_64F, C::CUBLAS_COMPUTE_64F),
            d => return Err(Error::unsupported(format!("cuBLAS: no {d} matmul"))),
        };
        let (one32, zero32, one64, zero64) = (1f32, 0f32, 1f64, 0f64);
        let (alpha, beta): (*const c_void, *const c_void) = if dtype == DType::F64 {
            (&one64 as *const f64 as _, &zero64 as *const f64 as _)
        } else {
            (&one32 as *const f32 as _, &zero32 as *const f32 as _)
        };
        // Row-major C = A·B is column-major Cᵀ = Bᵀ·Aᵀ: swap the operands, no transposes.
        result::gemm_strided_batched_ex(
            self.handle,
            sys::cublasOperation_t::CUBLAS_OP_N,
            sys::cublasOperation_t::CUBLAS_OP_N,
            ni,
            mi,
            ki,
            alpha,
            b as *const c_void,
            dt,
            ni,
            g.stride_b as i64,
            a as *const c_void,
            dt,
            ki,
            g.stride_a as i64,
            beta,
            c as *mut c_void,
            dt,
            ni,
            g.stride_c as i64,
            bi,
            compute,
            sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
        .map_err(|e| Error::backend(format!("cuBLAS: {what}: {e:?}")))
    }
}

/// The shape of a strided batched product of row-major matrices (sizes in elements).
#[derive(Debug, Clone, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub batch: usize,
    pub stride_a: usize,
    pub stride_b: usize,
    pub stride_c: usize,
}

impl Gemm {
    /// `[.., M, K] x [.., K, N]` with equal batch dims.
    pub fn matmul(a: &TensorType, b: &TensorType) -> Gemm {
        let r = a.shape.len();
        let (m, k, n) = (a.shape[r - 2], a.shape[r - 1], b.shape[r - 1]);
        Gemm {
            m,
            k,
            n,
            batch: a.shape[..r - 2].iter().product(),
            stride_a: m * k,
            stride_b: k * n,
            stride_c: m * n,
        }
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: the handle is live and dropped once.
        let _ = unsafe { result::destroy_handle(self.handle) };
    }
}
