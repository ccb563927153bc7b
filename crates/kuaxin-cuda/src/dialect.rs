//! What differs between the CUDA-like languages: one table per dialect. The renderer writes
//! C-style kernel text once and asks the table for every spelling that is not shared, so a
//! HIP, MUSA or MACA back end is a new table, not a copy of the renderer.

/// The spellings of one CUDA-like dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// Short name, used in messages (`cuda`, `hip`).
    pub name: &'static str,
    /// Lines at the top of every kernel source (includes, pragmas).
    pub header: &'static str,
    /// Qualifiers of a kernel entry point, before `void`.
    pub kernel_qualifier: &'static str,
    /// Qualifiers of a device helper function.
    pub device_fn: &'static str,
    /// Threads that execute in lock step (the width of a shuffle reduction).
    pub warp_size: u32,
    /// `{v}` shifted down by `{d}` lanes within a warp.
    pub shfl_down: &'static str,
    /// Block-wide barrier.
    pub barrier: &'static str,
    /// Storage type of f16 and bf16 elements, and the functions that convert them to and from
    /// `float` (round to nearest even): definitions placed in the prelude when used.
    pub half: HalfTypes,
    /// Thread, block and grid indices along x.
    pub thread_idx: &'static str,
    pub block_idx: &'static str,
    pub block_dim: &'static str,
    pub grid_dim: &'static str,
    /// Bit casts between 32-bit float and int, and between double and 64-bit int.
    pub uint_as_float: &'static str,
    pub double_as_longlong: &'static str,
    pub longlong_as_double: &'static str,
}

/// Half-precision storage and conversions of one dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HalfTypes {
    pub f16: &'static str,
    pub bf16: &'static str,
    /// Defines `float kx_h2f(f16)`, `f16 kx_f2h(float)`, `f16 kx_d2h(double)`.
    pub f16_conversions: &'static str,
    /// Defines `float kx_b2f(bf16)`, `bf16 kx_f2b(float)`.
    pub bf16_conversions: &'static str,
}

/// bf16 is the top half of an f32 on every dialect: integer rounding, no header needed.
pub const BF16_BITS: &str = r#"__device__ __forceinline__ float kx_b2f(unsigned short h) { return __uint_as_float(((unsigned int)h) << 16); }
__device__ __forceinline__ unsigned short kx_f2b(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}
"#;

/// NVIDIA CUDA C++ compiled by NVRTC. No headers: NVRTC ships without the toolkit's include
/// files, so f16 conversions are one PTX instruction each.
pub const CUDA: Dialect = Dialect {
    name: "cuda",
    header: "",
    kernel_qualifier: "extern \"C\" __global__",
    device_fn: "__device__ __forceinline__",
    warp_size: 32,
    shfl_down: "__shfl_down_sync(0xffffffffu, {v}, {d})",
    barrier: "__syncthreads()",
    half: HalfTypes {
        f16: "unsigned short",
        bf16: "unsigned short",
        f16_conversions: r#"__device__ __forceinline__ float kx_h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short kx_f2h(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ unsigned short kx_d2h(double f) { unsigned short h; asm("cvt.rn.f16.f64 %0, %1;" : "=h"(h) : "d"(f)); return h; }
"#,
        bf16_conversions: BF16_BITS,
    },
    thread_idx: "threadIdx.x",
    block_idx: "blockIdx.x",
    block_dim: "blockDim.x",
    grid_dim: "gridDim.x",
    uint_as_float: "__uint_as_float",
    double_as_longlong: "__double_as_longlong",
    longlong_as_double: "__longlong_as_double",
};

/// AMD HIP (and Hygon DCU) through hipRTC: 64-wide wavefronts, no shuffle mask, f16 through
/// the `hip_fp16.h` conversions. Not wired to a runtime yet; kept so the renderer stays
/// dialect-driven (the tests render a kernel with it).
pub const HIP: Dialect = Dialect {
    name: "hip",
    header: "#include <hip/hip_runtime.h>\n#include <hip/hip_fp16.h>\n",
    kernel_qualifier: "extern \"C\" __global__",
    device_fn: "__device__ __forceinline__",
    warp_size: 64,
    shfl_down: "__shfl_down({v}, {d})",
    barrier: "__syncthreads()",
    half: HalfTypes {
        f16: "unsigned short",
        bf16: "unsigned short",
        f16_conversions: r#"__device__ __forceinline__ float kx_h2f(unsigned short h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ unsigned short kx_f2h(float f) { return __half_as_ushort(__float2half_rn(f)); }
__device__ __forceinline__ unsigned short kx_d2h(double f) { return __half_as_ushort(__float2half_rn((float)f)); }
"#,
        bf16_conversions: BF16_BITS,
    },
    thread_idx: "threadIdx.x",
    block_idx: "blockIdx.x",
    block_dim: "blockDim.x",
    grid_dim: "gridDim.x",
    uint_as_float: "__uint_as_float",
    double_as_longlong: "__double_as_longlong",
    longlong_as_double: "__longlong_as_double",
};

impl Dialect {
    /// The shuffle expression for value `v` and lane distance `d`.
    pub fn shuffle_down(&self, v: &str, d: &str) -> String {
        self.shfl_down.replace("{v}", v).replace("{d}", d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_is_spelled_per_dialect() {
        assert_eq!(
            CUDA.shuffle_down("acc", "4"),
            "__shfl_down_sync(0xffffffffu, acc, 4)"
        );
        assert_eq!(HIP.shuffle_down("acc", "4"), "__shfl_down(acc, 4)");
    }

    #[test]
    fn dialects_differ_where_the_chips_differ() {
        assert_eq!(CUDA.warp_size, 32);
        assert_eq!(HIP.warp_size, 64);
        assert!(CUDA.header.is_empty(), "NVRTC has no toolkit headers");
        assert!(HIP.header.contains("hip_runtime.h"));
        for d in [CUDA, HIP] {
            assert!(d.half.f16_conversions.contains("kx_h2f"));
            assert!(d.half.f16_conversions.contains("kx_f2h"));
            assert!(d.half.f16_conversions.contains("kx_d2h"));
            assert!(d.half.bf16_conversions.contains("kx_f2b"));
        }
    }
}
