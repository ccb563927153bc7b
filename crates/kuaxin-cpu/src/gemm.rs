//! Row-major matrix products through the `gemm` crate (f32, f64, f16).
use crate::scalar::Scalar;
use half::f16;

/// Element types `gemm::gemm` multiplies.
pub trait GemmEl: Scalar {}
impl GemmEl for f32 {}
impl GemmEl for f64 {}
impl GemmEl for f16 {}

/// Below this many multiply-adds a product runs on one thread.
pub const PAR_FLOPS: usize = 64 * 64 * 64;

/// `c[m x n] = a[m x k] * b[k x n]`, all row-major and contiguous. `parallel` lets gemm use
/// the current rayon pool (it still stays serial when the product is small).
pub fn gemm_rm<T: GemmEl>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    b: &[T],
    c: &mut [T],
    parallel: bool,
) {
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm_rm: buffers too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].fill(T::ZERO);
        return;
    }
    let threads = rayon::current_num_threads();
    let par = if parallel && threads > 1 && m.saturating_mul(n).saturating_mul(k) >= PAR_FLOPS {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every access in bounds: dst is m x n with row stride n,
    // lhs m x k with row stride k, rhs k x n with row stride n; T is f32, f64 or f16 (the
    // types gemm supports; half::f16 is gemm::f16).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            T::ZERO,
            T::ONE,
            false,
            false,
            false,
            par,
        );
    }
}
