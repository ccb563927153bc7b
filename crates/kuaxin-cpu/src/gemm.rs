//! Row-major matrix products through the `gemm` crate (f32, f64, f16).
use crate::scalar::Scalar;
use half::f16;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Element types `gemm::gemm` multiplies.
pub trait GemmEl: Scalar {
    /// The slice as f32 when this type is f32 (products that have their own f32 kernels).
    fn as_f32(_x: &[Self]) -> Option<&[f32]> {
        None
    }
    fn as_f32_mut(_x: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    fn as_f32_uninit(_x: &mut [MaybeUninit<Self>]) -> Option<&mut [MaybeUninit<f32>]> {
        None
    }
}
impl GemmEl for f32 {
    fn as_f32(x: &[f32]) -> Option<&[f32]> {
        Some(x)
    }
    fn as_f32_mut(x: &mut [f32]) -> Option<&mut [f32]> {
        Some(x)
    }
    fn as_f32_uninit(x: &mut [MaybeUninit<f32>]) -> Option<&mut [MaybeUninit<f32>]> {
        Some(x)
    }
}
impl GemmEl for f64 {}
impl GemmEl for f16 {}

/// Below this many multiply-adds a product runs on one thread.
pub const PAR_FLOPS: usize = 64 * 64 * 64;

/// Where a matrix lies in a slice: element (i, j) at `offset + i * rs + j * cs` (a transposed
/// or strided view of a tensor is a `Mat` over the tensor's own storage).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Mat {
    pub offset: usize,
    pub rs: isize,
    pub cs: isize,
}

impl Mat {
    /// A contiguous row-major matrix of `cols` columns.
    pub fn row_major(cols: usize) -> Mat {
        Mat {
            offset: 0,
            rs: cols as isize,
            cs: 1,
        }
    }

    /// Whether every element of a `rows x cols` window lies inside a slice of `len`.
    pub fn fits(&self, rows: usize, cols: usize, len: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        let (o, r, c) = (
            self.offset as i128,
            (rows as i128 - 1) * self.rs as i128,
            (cols as i128 - 1) * self.cs as i128,
        );
        o + r.min(0) + c.min(0) >= 0 && o + r.max(0) + c.max(0) < len as i128
    }
}

/// `c[m x n] = a[m x k] * b[k x n]`, all row-major and contiguous. `parallel` lets gemm use
/// the current rayon pool (it still stays serial when the product is small).
pub fn gemm_rm<T: GemmEl>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    b: &[T],
    c: &mut [MaybeUninit<T>],
    parallel: bool,
) {
    gemm_mats(
        m,
        n,
        k,
        (a, Mat::row_major(k)),
        (b, Mat::row_major(n)),
        c,
        parallel,
    )
}

/// `c[m x n] = A[m x k] * B[k x n]` for operands anywhere in their slices (`c` row-major and
/// contiguous). Every element of `c[..m * n]` is written (gemm does not read it), so `c` may
/// start uninitialised.
pub fn gemm_mats<T: GemmEl>(
    m: usize,
    n: usize,
    k: usize,
    (a, am): (&[T], Mat),
    (b, bm): (&[T], Mat),
    c: &mut [MaybeUninit<T>],
    parallel: bool,
) {
    assert!(
        am.fits(m, k, a.len()) && bm.fits(k, n, b.len()) && c.len() >= m * n,
        "gemm: an operand lies outside its buffer"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].fill(MaybeUninit::new(T::ZERO));
        return;
    }
    // SAFETY: `fits` bounds every element of both operands, so these offsets stay inside
    // their slices (each pointer below points at an element of its operand window).
    let at = |x: &[T], mat: Mat, i: usize, j: usize| unsafe {
        x.as_ptr()
            .offset(mat.offset as isize + i as isize * mat.rs + j as isize * mat.cs)
    };
    let threads = rayon::current_num_threads();
    if !(parallel && threads > 1 && m.saturating_mul(n).saturating_mul(k) >= PAR_FLOPS) {
        // SAFETY: the operand windows are in bounds (asserted above) and c holds m x n.
        unsafe {
            product(
                m,
                n,
                k,
                c.as_mut_ptr().cast(),
                n,
                (at(a, am, 0, 0), am),
                (at(b, bm, 0, 0), bm),
            )
        };
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
                // SAFETY: cp is rows p*rows .. p*rows + r of c; those rows of A are in bounds.
                unsafe {
                    product(
                        r,
                        n,
                        k,
                        cp.as_mut_ptr().cast(),
                        n,
                        (at(a, am, p * rows, 0), am),
                        (at(b, bm, 0, 0), bm),
                    )
                };
            });
    } else {
        let cols = n.div_ceil(threads).next_multiple_of(16);
        let parts = n.div_ceil(cols);
        let dst = SendPtr(c.as_mut_ptr().cast::<T>());
        (0..parts).into_par_iter().for_each(|p| {
            let (c0, w) = (p * cols, cols.min(n - p * cols));
            let dst = &dst;
            // SAFETY: part p writes only columns c0 .. c0 + w of c (row stride n), disjoint
            // from every other part; it reads the same columns of B, which are in bounds.
            unsafe {
                product(
                    m,
                    w,
                    k,
                    dst.0.add(c0),
                    n,
                    (at(a, am, 0, 0), am),
                    (at(b, bm, 0, c0), bm),
                )
            };
        });
    }
}

/// A raw pointer that parallel parts share, each writing its own disjoint region.
pub struct SendPtr<T>(pub *mut T);
// SAFETY: only used for disjoint writes (see `gemm_mats`).
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

/// `dst[m x n] = lhs[m x k] * rhs[k x n]` on the calling thread; dst rows are `dst_rs` apart,
/// each operand is its first element and its row and column strides.
///
/// # Safety
/// Every element (i, j) of each operand window and every row `i < m` of dst (n elements from
/// `dst + i*dst_rs`) must be valid; dst must not alias the operands.
unsafe fn product<T: GemmEl>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: usize,
    (lhs, lm): (*const T, Mat),
    (rhs, rm): (*const T, Mat),
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
            lm.cs,
            lm.rs,
            rhs,
            rm.cs,
            rm.rs,
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
pub(crate) mod tests {
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

    /// Operands whose products are exact in f32 (only the sums round).
    pub fn operands(m: usize, n: usize, k: usize) -> (Vec<f32>, Vec<f32>) {
        let a = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
            .collect();
        let b = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
            .collect();
        (a, b)
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
            let (a, b) = operands(m, n, k);
            let mut c = crate::par::preset(f32::NAN, m * n);
            pool.install(|| gemm_rm(m, n, k, &a, &b, &mut c, true));
            let c = crate::par::values_of(&c);
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
