//! Row-major matrix products through the `gemm` crate (f32, f64, f16).
use crate::scalar::Scalar;
use half::f16;
use rayon::prelude::*;

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
    if !(parallel && threads > 1 && m.saturating_mul(n).saturating_mul(k) >= PAR_FLOPS) {
        // SAFETY: the asserts above bound every access (see `product`).
        unsafe { product(m, n, k, c.as_mut_ptr(), a.as_ptr(), n, b.as_ptr(), n) };
        return;
    }
    // One panel per thread, each a serial product: gemm's own threading scales poorly on
    // the medium sizes of transformer layers (128x384x384: 1.2x on 2 threads; panels: 1.9x).
    // Split the longer output side so that each thread repacks the smaller operand share.
    if m >= n {
        let rows = m.div_ceil(threads);
        c[..m * n]
            .par_chunks_mut(rows * n)
            .enumerate()
            .for_each(|(p, cp)| {
                let r = cp.len() / n;
                // SAFETY: cp is rows p*rows .. p*rows + r of c; a holds those rows of lhs.
                unsafe {
                    product(
                        r,
                        n,
                        k,
                        cp.as_mut_ptr(),
                        a[p * rows * k..].as_ptr(),
                        n,
                        b.as_ptr(),
                        n,
                    )
                };
            });
    } else {
        let cols = n.div_ceil(threads).next_multiple_of(16);
        let parts = n.div_ceil(cols);
        let dst = SendPtr(c.as_mut_ptr());
        (0..parts).into_par_iter().for_each(|p| {
            let (c0, w) = (p * cols, cols.min(n - p * cols));
            let dst = &dst;
            // SAFETY: part p writes only columns c0 .. c0 + w of c (row stride n), disjoint
            // from every other part; it reads the same columns of b.
            unsafe { product(m, w, k, dst.0.add(c0), a.as_ptr(), n, b.as_ptr().add(c0), n) };
        });
    }
}

/// A raw pointer that parallel parts share, each writing its own disjoint region.
struct SendPtr<T>(*mut T);
// SAFETY: only used for disjoint writes (see `gemm_rm`).
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// `dst[m x n] = lhs[m x k] * rhs[k x n]` on the calling thread, with row strides `dst_rs` and `rhs_rs`
/// (lhs rows are contiguous, k apart).
///
/// # Safety
/// Every row `i < m` of dst (n elements from `dst + i*dst_rs`), of lhs (k from `lhs + i*k`)
/// and every row `j < k` of rhs (n from `rhs + j*rhs_rs`) must be valid; dst must not alias
/// the others.
#[allow(clippy::too_many_arguments)]
unsafe fn product<T: GemmEl>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    lhs: *const T,
    dst_rs: usize,
    rhs: *const T,
    rhs_rs: usize,
) {
    // SAFETY: the caller's contract; T is f32, f64 or f16 (the types gemm supports;
    // half::f16 is gemm::f16).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            false,
            lhs,
            1,
            k as isize,
            rhs,
            1,
            rhs_rs as isize,
            T::ZERO,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f64 product of f32 operands, for comparison.
    fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for p in 0..k {
                let x = a[i * k + p] as f64;
                for j in 0..n {
                    c[i * n + j] += x * b[p * n + j] as f64;
                }
            }
        }
        c
    }

    #[test]
    fn panels_on_two_threads_match_the_reference() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("a pool of two threads");
        // Row panels (m >= n), column panels (m < n, widths not a multiple of 16), and one
        // product too small to split.
        for (m, n, k) in [(300, 70, 50), (70, 301, 50), (129, 131, 77), (8, 9, 10)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
                .collect();
            let mut c = vec![f32::NAN; m * n];
            pool.install(|| gemm_rm(m, n, k, &a, &b, &mut c, true));
            let want = reference(m, n, k, &a, &b);
            for (i, (&got, &w)) in c.iter().zip(&want).enumerate() {
                // Products of these operands are exact in f32; only the sums round.
                assert!(
                    (got as f64 - w).abs() <= 1e-6 * k as f64 * (1.0 + w.abs()),
                    "{m}x{n}x{k}: element {i}: {got} vs {w}"
                );
            }
        }
    }
}
