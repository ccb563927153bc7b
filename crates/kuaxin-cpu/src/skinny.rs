//! Matrix products with few rows (`M <= SKINNY_M`): LLM decoding, where each step multiplies a
//! token's activations by every weight matrix once. That is memory-bound, so the weights are
//! streamed exactly once, in their stored type (f32, f16 or bf16, widened to f32 in registers),
//! with the output columns split across threads. A general GEMM would pack (copy) the weights,
//! and bf16 would first be converted whole to f32: two to three times the traffic.
use half::{bf16, f16};
use kuaxin_core::Data;
use rayon::prelude::*;

/// Row counts up to this take the streaming path.
pub const SKINNY_M: usize = 4;

/// Bytes of each weight row a parallel task reads: a few pages, a contiguous run the hardware
/// prefetcher follows (short runs leave each one's first misses exposed).
const TASK_BYTES: usize = 16384;

/// Weight rows per task; tasks over the same columns add their partial sums in order, so the
/// result does not depend on the thread count.
const TASK_ROWS: usize = 256;

/// A float type widened to f32.
pub trait Widen: Copy + Send + Sync {
    fn widen(self) -> f32;
    fn narrow(v: f32) -> Self;
}

impl Widen for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
    fn narrow(v: f32) -> Self {
        v
    }
}

impl Widen for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    fn narrow(v: f32) -> Self {
        bf16::from_f32(v)
    }
}

impl Widen for f16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
    fn narrow(v: f32) -> Self {
        f16::from_f32(v)
    }
}

/// One task's share of `c[m, n] = a[m, k] @ b[k, n]`: weight rows `rows.0..rows.1` of the
/// columns from `n0` on (as many as its output holds).
#[derive(Clone, Copy)]
struct Task<'a, B> {
    a: &'a [f32],
    b: &'a [B],
    m: usize,
    k: usize,
    n: usize,
    rows: (usize, usize),
    n0: usize,
}

/// Columns `n0..n0 + out.len() / m` of `c[m, ..] = a[m, k] @ b[k, n]`: eight rows of `b` at a
/// time (two independent sums of four), each a contiguous run the prefetcher follows, added into accumulators that stay in L1.
#[inline(always)]
fn columns<B: Widen>(t: &Task<B>, out: &mut [f32]) {
    let Task {
        a,
        b,
        m,
        k,
        n,
        rows,
        n0,
    } = *t;
    let w = out.len() / m;
    out.fill(0.0);
    let row = |p: usize| &b[p * n + n0..p * n + n0 + w];
    let (mut p, end) = rows;
    while p + 8 <= end {
        let r: [&[B]; 8] = std::array::from_fn(|d| &row(p + d)[..w]);
        for i in 0..m {
            let x: [f32; 8] = std::array::from_fn(|d| a[i * k + p + d]);
            let o = &mut out[i * w..(i + 1) * w];
            for j in 0..w {
                let lo = x[0] * r[0][j].widen()
                    + x[1] * r[1][j].widen()
                    + x[2] * r[2][j].widen()
                    + x[3] * r[3][j].widen();
                let hi = x[4] * r[4][j].widen()
                    + x[5] * r[5][j].widen()
                    + x[6] * r[6][j].widen()
                    + x[7] * r[7][j].widen();
                o[j] += lo + hi;
            }
        }
        p += 8;
    }
    while p < end {
        let r = row(p);
        for i in 0..m {
            let x = a[i * k + p];
            for (o, &y) in out[i * w..(i + 1) * w].iter_mut().zip(r) {
                *o += x * y.widen();
            }
        }
        p += 1;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn columns_avx2<B: Widen>(t: &Task<B>, out: &mut [f32]) {
    columns(t, out)
}

fn columns_dispatch<B: Widen>(t: &Task<B>, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA, the features `columns_avx2` is compiled for.
        return unsafe { columns_avx2(t, out) };
    }
    columns(t, out)
}

/// `c[m, n] = a[m, k] @ b[k, n]` for one matrix, `m <= SKINNY_M`, accumulated in f32: tasks
/// of `TASK_ROWS` rows by `TASK_BYTES` of columns, whose partial sums are added in order.
fn product<A: Widen, B: Widen>(a: &[A], b: &[B], m: usize, k: usize, n: usize) -> Vec<f32> {
    let a: Vec<f32> = a.iter().map(|x| x.widen()).collect();
    let width = TASK_BYTES / std::mem::size_of::<B>();
    let (col_blocks, row_blocks) = (n.div_ceil(width), k.div_ceil(TASK_ROWS).max(1));
    let partials: Vec<Vec<f32>> = (0..col_blocks * row_blocks)
        .into_par_iter()
        .map(|t| {
            let (cb, rb) = (t / row_blocks, t % row_blocks);
            let n0 = cb * width;
            let w = width.min(n - n0);
            let rows = (rb * TASK_ROWS, ((rb + 1) * TASK_ROWS).min(k));
            let mut out = vec![0f32; m * w];
            let task = Task {
                a: &a,
                b,
                m,
                k,
                n,
                rows,
                n0,
            };
            columns_dispatch(&task, &mut out);
            out
        })
        .collect();
    let mut c = vec![0f32; m * n];
    for (t, out) in partials.iter().enumerate() {
        let n0 = (t / row_blocks) * width;
        let w = out.len() / m;
        for i in 0..m {
            for (o, &x) in c[i * n + n0..i * n + n0 + w]
                .iter_mut()
                .zip(&out[i * w..(i + 1) * w])
            {
                *o += x;
            }
        }
    }
    c
}

fn batched<A: Widen, B: Widen, C: Widen>(
    a: &[A],
    b: &[B],
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
) -> Vec<C> {
    let mut out = Vec::with_capacity(batch * m * n);
    for i in 0..batch {
        let c = product(
            &a[i * m * k..(i + 1) * m * k],
            &b[i * k * n..(i + 1) * k * n],
            m,
            k,
            n,
        );
        out.extend(c.into_iter().map(C::narrow));
    }
    out
}

/// The streaming product for float operands of one type, or None when it does not apply.
pub fn matmul(a: &Data, b: &Data, batch: usize, m: usize, k: usize, n: usize) -> Option<Data> {
    if m == 0 || m > SKINNY_M || n == 0 {
        return None;
    }
    Some(match (a, b) {
        (Data::F32(x), Data::F32(y)) => Data::F32(batched::<f32, f32, f32>(x, y, batch, m, k, n)),
        (Data::BF16(x), Data::BF16(y)) => {
            Data::BF16(batched::<bf16, bf16, bf16>(x, y, batch, m, k, n))
        }
        (Data::F16(x), Data::F16(y)) => Data::F16(batched::<f16, f16, f16>(x, y, batch, m, k, n)),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_definition_at_every_width() {
        for (m, k, n) in [
            (1, 1, 1),
            (1, 7, 300),
            (3, 33, 1513),
            (4, 5, 2048),
            (2, 64, 1),
            (1, 3, 1090),
            (2, 600, 5000),
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 5) % 13) as f32 - 6.0).collect();
            let c = product(&a, &b, m, k, n);
            for i in 0..m {
                for j in 0..n {
                    // Small integers: exact with or without fused multiply-add.
                    let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                    assert_eq!(c[i * n + j], want, "({i}, {j}) of {m}x{k}x{n}");
                }
            }
        }
    }

    #[test]
    fn bf16_weights_widen_exactly() {
        let a = [1.5f32, -2.0];
        let b: Vec<bf16> = [0.25f32, 3.0, -1.0, 0.5]
            .iter()
            .map(|&x| bf16::from_f32(x))
            .collect();
        let c = product(&a, &b, 1, 2, 2);
        assert_eq!(c, vec![1.5 * 0.25 + 2.0, 1.5 * 3.0 - 1.0]);
    }
}
