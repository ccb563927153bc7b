//! The row kernels ([`crate::rows`]) run on the host in the emulation dialect (see
//! emulate_tests.rs) against the CPU back end: rows shorter than, as long as and longer than
//! a warp and a block, an attention mask broadcast over heads and queries with fully masked
//! rows, NaN and infinities, and LayerNorm with a scale and a bias.
//!
//! Bounds, in units of u = 2^-24 (f32's unit roundoff), from the op class: a sum of k f32
//! terms along a chain of at most `depth` additions is within `depth * u * sum(|terms|)` of
//! the exact sum (first order). The GPU's chains are a thread's `ceil(n / T)` elements then
//! `log2 T` levels of shuffles and partials (T threads); the CPU's softmax sums in eight f32
//! lanes four vectors wide (`ceil(n / 32)` per lane, then at most 16 more: combining vectors
//! and lanes, and a tail of at most 7), its LayerNorm in f64 (depth 0). Each exponential is
//! within 2 ulps on each side; a division or reciprocal adds 1.
use crate::emulate_tests::{cpu, emulate, tensor};
use kuaxin_core::prim::{Prim, ViewMap};
use kuaxin_core::{DType, Tensor};

const U: f64 = 1.0 / (1u64 << 24) as f64;
/// Row lengths: one element, a warp and either side of it, a hidden size, a long hidden
/// size, and a row longer than a block by a ragged tail.
const LENGTHS: [usize; 7] = [1, 31, 32, 33, 384, 1536, 4099];

/// The GPU's longest addition chain for a row of n: see [`crate::rows`] for the block size.
fn gpu_depth(n: usize) -> f64 {
    let t = n.next_power_of_two().clamp(32, 256);
    (n.div_ceil(t) + t.trailing_zeros() as usize) as f64
}

/// A softmax output's relative bound: both sums' chains, the exponentials (2 ulps on each
/// side, and as much again carried into each sum), the division and the CPU's reciprocal.
fn softmax_tol(n: usize) -> f64 {
    (gpu_depth(n) + (n.div_ceil(32) + 16) as f64 + 8.0 + 2.0) * U
}

/// Each output element's bound, from the inputs and the CPU's output.
type Bounds<'a> = dyn Fn(&[Tensor], &[f64]) -> Vec<f64> + 'a;

/// Runs the cases as kernels and on the CPU; each element within its bound (absolute, from
/// `bound(inputs, cpu's output)`), NaN matching NaN. Returns the kernels' outputs.
fn check(cases: &[(Prim, Vec<Tensor>)], bound: &Bounds) -> Vec<Tensor> {
    let got = emulate(cases);
    let mut bad = vec![];
    for ((prim, inputs), g) in cases.iter().zip(&got) {
        let want = cpu(prim, inputs);
        assert_eq!((&g.shape, g.dtype()), (&want.shape, want.dtype()));
        let (g, w) = (g.to_f64_vec(), want.to_f64_vec());
        let b = bound(inputs, &w);
        let d: Vec<String> = g
            .iter()
            .zip(&w)
            .zip(&b)
            .enumerate()
            .filter(|(_, ((x, y), b))| {
                !((x.is_nan() && y.is_nan()) || x == y || (*x - *y).abs() <= **b)
            })
            .take(5)
            .map(|(i, ((x, y), b))| format!("[{i}] kernel {x:e}, cpu {y:e}, bound {b:e}"))
            .collect();
        if !d.is_empty() {
            bad.push(format!(
                "{prim:?} on {:?}:\n  {}",
                inputs[0].shape,
                d.join("\n  ")
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    got
}

fn f32s(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

/// [`softmax_tol`] relative to each expected output.
fn softmax_bounds(ins: &[Tensor], want: &[f64]) -> Vec<f64> {
    let tol = softmax_tol(ins[0].shape.last().copied().unwrap_or(0));
    want.iter().map(|w| tol * w.abs()).collect()
}

#[test]
fn softmax_rows_match_the_cpu_for_every_row_length() {
    let mut cases: Vec<(Prim, Vec<Tensor>)> = LENGTHS
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            (
                Prim::SoftmaxRows,
                vec![tensor(DType::F32, vec![3, n], 40 + i as u64)],
            )
        })
        .collect();
    // NaN, +inf and -inf in some rows, a row of -inf only, and a row of zero length.
    let (ni, inf) = (f32::NAN, f32::INFINITY);
    let mut v = tensor(DType::F32, vec![5, 40], 50).to_f64_vec();
    v[3] = ni as f64;
    v[45] = inf as f64;
    v[80..100].fill(-inf as f64);
    v[120..160].fill(-inf as f64);
    let v = v.into_iter().map(|x| x as f32).collect();
    cases.push((Prim::SoftmaxRows, vec![f32s(&[5, 40], v)]));
    cases.push((Prim::SoftmaxRows, vec![f32s(&[2, 3, 0], vec![])]));
    check(&cases, &softmax_bounds);
}

/// Attention: scores [batch, heads, seq, seq], a mask of [batch, 1, 1, seq] broadcast over
/// heads and queries. Batch 1's keys are all masked (every row of it all -inf); batch 0's
/// last keys are padding.
#[test]
fn masked_softmax_rows_read_a_broadcast_mask() {
    let (b, h, s) = (2, 3, 40);
    let x = tensor(DType::F32, vec![b, h, s, s], 60);
    let mut mask = vec![0f32; b * s];
    for (j, m) in mask.iter_mut().enumerate() {
        if j >= s || j >= 33 {
            *m = f32::NEG_INFINITY;
        } else if j % 5 == 0 {
            *m = -10000.0;
        }
    }
    let view = ViewMap {
        shape: vec![b, h, s, s],
        strides: vec![s as isize, 0, 0, 1],
        offset: 0,
    };
    // The same mask stored [seq, batch], read with a key stride of 2: the gathered path.
    let mut transposed = vec![0f32; b * s];
    for bi in 0..b {
        for j in 0..s {
            transposed[j * b + bi] = mask[bi * s + j];
        }
    }
    let gathered = ViewMap {
        shape: vec![b, h, s, s],
        strides: vec![1, 0, 0, b as isize],
        offset: 0,
    };
    let cases = vec![
        (
            Prim::MaskedSoftmaxRows {
                scale: 8.0,
                divide: true,
                mask: view,
            },
            vec![x.clone(), f32s(&[b, 1, 1, s], mask)],
        ),
        (
            Prim::MaskedSoftmaxRows {
                scale: 0.3,
                divide: false,
                mask: gathered,
            },
            vec![x, f32s(&[s, b], transposed)],
        ),
    ];
    let got = check(&cases, &softmax_bounds);
    // The fully masked rows are NaN, as the primitives make them (exp(-inf - -inf)).
    let v = got[0].to_f64_vec();
    assert!(v[h * s * s..].iter().all(|x| x.is_nan()));
    assert!(v[..h * s * s].iter().all(|x| x.is_finite()));
}

/// LayerNorm's outputs: absolute bounds from the magnitudes that enter each
/// step: the mean's error is within `depth * u * M` (M the mean of |x|), carried through
/// `d * r * scale`; `r`'s relative error is within `depth * u` times a small factor
/// (`M^2 / var`, below 1 for these inputs); the last two roundings and the bias add ulps of
/// the output. A row of one is exact on both sides: its `d` is 0, its output the bias.
fn layer_norm_bounds(ins: &[Tensor], eps: f64) -> Vec<f64> {
    let n = ins[0].shape.last().copied().unwrap_or(0);
    let (x, s, bias) = (
        ins[0].to_f64_vec(),
        ins[1].to_f64_vec(),
        ins[2].to_f64_vec(),
    );
    let c = (gpu_depth(n) + 8.0) * U;
    x.chunks(n.max(1))
        .flat_map(|row| {
            let mean = row.iter().sum::<f64>() / n as f64;
            let m_abs = row.iter().map(|v| v.abs()).sum::<f64>() / n as f64;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n as f64;
            let r = 1.0 / (var + eps).sqrt();
            row.iter()
                .enumerate()
                .map(|(j, v)| {
                    let d = (v - mean).abs();
                    c * (r * s[j].abs() * (2.0 * d + 2.0 * m_abs) + bias[j].abs())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn layer_norm_rows_match_the_cpu_with_scale_and_bias() {
    let eps = 1e-5f32;
    let mut cases: Vec<(Prim, Vec<Tensor>)> = LENGTHS
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let seed = 70 + 3 * i as u64;
            (
                Prim::LayerNormRows { eps },
                vec![
                    tensor(DType::F32, vec![3, n], seed),
                    tensor(DType::F32, vec![n], seed + 1),
                    tensor(DType::F32, vec![n], seed + 2),
                ],
            )
        })
        .collect();
    // A scale stored [1, n] (any shape of one row), over a 3-d x.
    cases.push((
        Prim::LayerNormRows { eps },
        vec![
            tensor(DType::F32, vec![2, 2, 384], 90),
            tensor(DType::F32, vec![1, 384], 91),
            tensor(DType::F32, vec![384], 92),
        ],
    ));
    check(&cases, &|ins, _| layer_norm_bounds(ins, eps as f64));
}
