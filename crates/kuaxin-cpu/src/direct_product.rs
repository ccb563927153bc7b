//! Products on the register tile of [`crate::tile_direct`], whose A is read where it lies,
//! element (r, s) at `x + origins[r] + steps[s]`, and whose B is a constant packed once in
//! panels of sixteen columns: a convolution's input windows ([`crate::conv_direct`]) and, on
//! CPUs with AVX2 but no AVX-512, a MatMul by a constant weight ([`matmul`]), whose A rows are
//! then read in place and whose C comes out by rows.
use crate::gemm::{Mat, SendPtr};
use crate::panels::{Columns, PackedB};
use crate::tile_direct::{self, ColumnFinish, DirectTile, Kernel, MR, NR};
use std::mem::MaybeUninit;

/// Most steps of depth per block of a panel of sixteen: a block of one weight panel is then at
/// most 32 KiB (L1); wider panels go in proportionally fewer steps.
/// The depth goes in even blocks ([`depth_block`]): blocks of 256 steps, as before, left
/// MiniLM-L3's depth of 384 as 256 + 128, whose second block costs a pass over C for half
/// the work; one block of 384 made its products 5-6% faster on a Zen 3 core, the 1024^3
/// MatMul 2% (two blocks of 512), ResNet-50 and SqueezeNet's convolutions the same
/// (BENCHMARKS.md).
pub const KC: usize = 512;
/// Rows of A per block of rows (132: 256 KiB of A at the deepest block, half a Zen 3 L2).
const MC: usize = 22 * MR;

/// Steps per block for a depth of `k`: the fewest blocks of at most `kc`, evenly sized.
fn depth_block(k: usize, kc: usize) -> usize {
    k.div_ceil(k.div_ceil(kc).max(1)).max(1)
}

/// `C[r, w j + l] = sum_s X[origins[r] + steps[s]] * B[s, w j + l]` for every row r of
/// `origins` and every panel j in `panels` of `b` (dims `(steps.len(), n)`, panels of w =
/// `kernel.nr` columns), C's row r at `c + r * ldc`. The depth goes in even blocks of at most
/// [`KC`]: one block of a panel (at most 32 KiB at w = 16, in L1) passes over a block of
/// rows, `kernel.mr` at a time; later blocks continue from C. `finish`, on the last block,
/// adds a bias per column (`n` values) and a residual laid out as C, then applies a ReLU.
///
/// # Safety
/// `kernel` is [`tile_direct::kernel`]`(b.width())`; `x + origins[r] + steps[s]` is valid to
/// read for every r and s; the first `n` columns of C's rows are valid to write, and of them
/// nothing else touches the panels' columns meanwhile; a finish's bias holds `n` values and
/// its residual C's rows.
pub unsafe fn product(
    kernel: Kernel,
    x: *const f32,
    (origins, steps): (&[usize], &[usize]),
    b: &PackedB,
    (c, ldc): (*mut f32, usize),
    panels: std::ops::Range<usize>,
    finish: Option<&Columns>,
) {
    let (depth, n) = b.dims();
    let (mr, nr) = (kernel.mr, kernel.nr);
    let (rows, k) = (origins.len(), steps.len().min(depth));
    // A depth block of a block of A's rows stays in L2 while the panels pass over it.
    // At most 32 KiB of a panel per block whatever its width (ResNet-50 on an Ice Lake core
    // the same at 256 or 512 steps of the AVX-512 tile's 32 channels).
    let block = depth_block(k, KC * NR / nr);
    let mc = (MC / mr).max(1) * mr;
    for k0 in (0..k).step_by(block) {
        let kb = block.min(k - k0);
        for i0 in (0..rows).step_by(mc) {
            for j in panels.clone() {
                let panel = b.panel(j)[k0 * nr..].as_ptr();
                for i in (i0..rows.min(i0 + mc)).step_by(mr) {
                    if k0 > 0 && i + mr < rows {
                        crate::tile_avx2::prefetch_rows(
                            c.wrapping_add((i + mr) * ldc + j * nr),
                            mr,
                            ldc,
                            nr,
                        );
                    }
                    let last = k0 + kb == k;
                    let finish = finish.filter(|_| last).map(|f| ColumnFinish {
                        bias: f.bias.map_or(std::ptr::null(), |v| v[j * nr..].as_ptr()),
                        residual: f.residual.map_or(std::ptr::null(), |v| {
                            v.as_ptr().wrapping_add(i * ldc + j * nr)
                        }),
                        relu: f.relu,
                    });
                    let t = DirectTile {
                        x,
                        origins: origins[i..].as_ptr(),
                        steps: steps[k0..].as_ptr(),
                        b: panel,
                        c: c.wrapping_add(i * ldc + j * nr),
                        ldc,
                        cols: nr.min(n - j * nr),
                        accumulate: k0 > 0,
                        finish,
                    };
                    // SAFETY: the caller's contract; panel j from step k0 holds `kb` rows of
                    // `nr`, and `origins` from row i holds the tile's rows.
                    unsafe { (kernel.run)(mr.min(rows - i), kb, &t) };
                }
            }
        }
    }
}

/// `c = A * B` for A's `m` rows (element (i, p) of `a` at `am`'s offsets) and B packed in
/// panels of sixteen columns (dims `(k, n)`), C row-major `m x n`; threads share out the
/// panels when `parallel`. `None` when A's strides are negative or it lies outside `a`, or
/// the CPU lacks AVX2 and FMA (the caller then takes another path).
///
/// `finish`, when given, is applied to the sums in the tile's registers: a bias per column
/// (`n` values), then a residual of C's shape, then a ReLU; `None` also when its parts are too
/// short or the depth is 0 (no tile runs).
pub fn matmul(
    m: usize,
    (a, am): (&[f32], Mat),
    b: &PackedB,
    c: &mut [MaybeUninit<f32>],
    parallel: bool,
    finish: Option<Columns>,
) -> Option<()> {
    let (k, n) = b.dims();
    let finish_fits = finish.is_none_or(|f| {
        k > 0 && f.bias.is_none_or(|v| v.len() >= n) && f.residual.is_none_or(|v| v.len() >= m * n)
    });
    if b.width() != NR
        || !finish_fits
        || c.len() < m * n
        || am.rs < 0
        || am.cs < 0
        || !am.fits(m, k, a.len())
    {
        return None;
    }
    let kernel = tile_direct::kernel(NR)?;
    if m == 0 || n == 0 {
        return Some(());
    }
    if k == 0 {
        c[..m * n].fill(MaybeUninit::new(0.0));
        return Some(());
    }
    let origins: Vec<usize> = (0..m).map(|i| am.offset + i * am.rs as usize).collect();
    let steps: Vec<usize> = (0..k).map(|p| p * am.cs as usize).collect();
    let panels = n.div_ceil(NR);
    let threads = if parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let cp = &SendPtr(c.as_mut_ptr().cast::<f32>());
    let part = |js: std::ops::Range<usize>| {
        // SAFETY: `fits` bounds every element of A; C holds m x n; each part writes its own
        // panels' columns.
        unsafe {
            product(
                kernel,
                a.as_ptr(),
                (&origins, &steps),
                b,
                (cp.0, n),
                js,
                finish.as_ref(),
            )
        }
    };
    crate::par::for_ranges(panels, threads, part);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv_cases::{two_threads, values, within_rounding};

    fn packed(b: &[f32], k: usize, n: usize) -> PackedB {
        PackedB::with_width(b, Mat::row_major(n), k, n, NR).expect("packs")
    }

    /// Rows past one block of rows ([`MC`]) and not a multiple of six, columns not a multiple
    /// of sixteen, a depth past one block of [`KC`] (two of 300); A row-major, and A read
    /// transposed (column steps of `m`).
    #[test]
    fn products_agree_with_a_reference_within_the_rounding_of_their_depth() {
        if !crate::tile_avx2::supported() {
            eprintln!("skipped: this CPU has no AVX2 and FMA (the tile needs them)");
            return;
        }
        let pool = two_threads();
        for (m, k, n) in [(140, 600, 37), (5, 16, 16), (13, 7, 50)] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let wt = packed(&b, k, n);
            for (name, am) in [
                ("row-major", Mat::row_major(k)),
                (
                    "transposed",
                    Mat {
                        offset: 0,
                        rs: 1,
                        cs: m as isize,
                    },
                ),
            ] {
                let at = |i: usize, p: usize| a[i * am.rs as usize + p * am.cs as usize];
                let mut c = crate::par::preset(f32::NAN, m * n);
                matmul(m, (&a, am), &wt, &mut c, false, None).expect("runs");
                let c = crate::par::values_of(&c);
                for i in 0..m {
                    for j in 0..n {
                        let terms = (0..k).map(|p| at(i, p) as f64 * b[p * n + j] as f64);
                        within_rounding(c[i * n + j], terms, || {
                            format!("{m} x {k} x {n}, A {name}: ({i}, {j})")
                        });
                    }
                }
                let mut shared = crate::par::preset(f32::NAN, m * n);
                pool.install(|| matmul(m, (&a, am), &wt, &mut shared, true, None))
                    .expect("runs");
                let shared = crate::par::values_of(&shared);
                let same = shared
                    .iter()
                    .zip(&c)
                    .all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(
                    same,
                    "{m} x {k} x {n}, A {name}: two threads changed the result"
                );
            }
        }
    }

    /// The finish in the tile's registers is the unfused epilogue bit for bit
    /// ([`crate::tile::finish_one`]: `(sum + bias[j]) + residual`, then the ReLU keeping NaN
    /// and -0.0), for each of its forms,
    /// over part panels, a depth of two blocks, and two threads.
    #[test]
    fn the_finish_in_registers_is_the_unfused_epilogue_bit_for_bit() {
        if !crate::tile_avx2::supported() {
            eprintln!("skipped: this CPU has no AVX2 and FMA (the tile needs them)");
            return;
        }
        let pool = two_threads();
        for (m, k, n) in [(140, 600, 37), (7, 16, 16), (13, 5, 50)] {
            let a = values(m * k, 3);
            let wt = packed(&values(k * n, 4), k, n);
            let bias = values(n, 5);
            let mut residual = values(m * n, 6);
            residual[0] = f32::NAN;
            residual[1] = -0.0;
            let mut plain = crate::par::preset(f32::NAN, m * n);
            matmul(m, (&a, Mat::row_major(k)), &wt, &mut plain, false, None).expect("runs");
            let plain = crate::par::values_of(&plain);
            for (bias_on, res_on, relu) in [
                (true, false, false),
                (true, true, false),
                (true, true, true),
                (true, false, true),
                (false, false, true),
            ] {
                let f = Columns {
                    bias: bias_on.then_some(&bias[..]),
                    residual: res_on.then_some(&residual[..]),
                    relu,
                };
                let want: Vec<u32> = (0..m * n)
                    .map(|e| {
                        let b = bias_on.then(|| bias[e % n]);
                        let r = res_on.then(|| residual[e]);
                        crate::tile::finish_one(plain[e], b, r, relu).to_bits()
                    })
                    .collect();
                for threads in [1, 2] {
                    let mut c = crate::par::preset(f32::NAN, m * n);
                    let run = || {
                        matmul(
                            m,
                            (&a, Mat::row_major(k)),
                            &wt,
                            &mut c,
                            threads > 1,
                            Some(f),
                        )
                    };
                    pool.install(run).expect("runs");
                    let got: Vec<u32> = crate::par::values_of(&c)
                        .iter()
                        .map(|v| v.to_bits())
                        .collect();
                    assert!(
                        got == want,
                        "{m} x {k} x {n}, bias {bias_on}, residual {res_on}, relu {relu}, {threads} threads: first difference at {:?}",
                        got.iter().zip(&want).position(|(g, w)| g != w)
                    );
                }
            }
            // A bias or residual too short, and a depth of 0, are left to the caller.
            let short = Columns {
                bias: Some(&bias[..n - 1]),
                residual: None,
                relu: false,
            };
            let mut c = crate::par::preset(0f32, m * n);
            assert!(matmul(m, (&a, Mat::row_major(k)), &wt, &mut c, false, Some(short)).is_none());
            let short = Columns {
                bias: None,
                residual: Some(&residual[..m * n - 1]),
                relu: false,
            };
            assert!(matmul(m, (&a, Mat::row_major(k)), &wt, &mut c, false, Some(short)).is_none());
        }
    }

    #[test]
    fn an_operand_it_cannot_read_in_place_is_left_to_another_path() {
        let (m, k, n) = (4, 8, 16);
        let (a, wt) = (values(m * k, 1), packed(&values(k * n, 2), k, n));
        let mut c = crate::par::preset(0f32, m * n);
        let backwards = Mat {
            offset: k - 1,
            rs: k as isize,
            cs: -1,
        };
        assert!(matmul(m, (&a, backwards), &wt, &mut c, false, None).is_none());
        assert!(matmul(
            m,
            (&a[..m * k - 1], Mat::row_major(k)),
            &wt,
            &mut c,
            false,
            None
        )
        .is_none());
        assert!(matmul(
            m,
            (&a, Mat::row_major(k)),
            &wt,
            &mut c[..m * n - 1],
            false,
            None
        )
        .is_none());
    }
}
