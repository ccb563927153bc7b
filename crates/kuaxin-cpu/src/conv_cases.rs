//! Test convolutions shared by the tests of the tile paths ([`crate::conv_rows`],
//! [`crate::conv_direct`]): seeded data, geometries that reach their edge cases, and the two
//! checks every path must pass, given a function that runs the path on one image.
use crate::gemm::Mat;
use crate::im2col::{im2col, Geom};
use crate::panels::{Columns, PackedB};
use crate::tile::finish_one;

/// Seeded values in [-1, 1).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// A pool of two threads, to check that splitting the work changes no bit.
pub fn two_threads() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("a pool")
}

/// Asserts that `got` is within the rounding bound of a chain of f32 multiply-adds over
/// `terms` (the products, in f64): at most one rounding of half an ulp of the running sum per
/// term, bounded by the sum of magnitudes. `what` names the element.
pub fn within_rounding(
    got: f32,
    terms: impl ExactSizeIterator<Item = f64>,
    what: impl Fn() -> String,
) {
    let count = terms.len();
    let (sum, mag) = terms.fold((0f64, 0f64), |(s, m), t| (s + t, m + t.abs()));
    let bound = count as f64 * f32::EPSILON as f64 * mag;
    let v = got as f64;
    assert!(
        (v - sum).abs() <= bound,
        "{}: {v} vs {sum} (bound {bound})",
        what()
    );
}

/// Input dims, weight dims, strides, dilations.
pub type Case = (Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>);

/// The geometry of a convolution of `x` by `w` (no padding: the input is the padded one).
pub fn geom(x: &[usize], w: &[usize], strides: &[usize], dilations: &[usize]) -> Geom {
    let mut out = vec![x[0], w[0]];
    for d in 2..x.len() {
        out.push((x[d] - dilations[d - 2] * (w[d] - 1) - 1) / strides[d - 2] + 1);
    }
    Geom::new(x, w, &out, strides, dilations, 1)
}

/// The weight `[M, C K]` as its transpose packed in panels of `width` channels.
pub fn packed(w: &[f32], g: &Geom, width: usize) -> PackedB {
    let rows = g.rows();
    let mat = Mat {
        offset: 0,
        rs: 1,
        cs: rows as isize,
    };
    PackedB::with_width(w, mat, rows, g.m, width).expect("packs")
}

/// Runs a path on one image: `(x, packed weight, geometry, finish, parallel) -> output`.
pub type Conv<'a> = &'a (dyn Fn(&[f32], &PackedB, &Geom, Option<Columns>, bool) -> Vec<f32> + Sync);

/// Every output element within the rounding bound of its depth of an f64 reference.
pub fn agrees_with_a_reference(cases: &[Case], width: usize, conv: Conv) {
    for (i, (xs, ws, st, dil)) in cases.iter().enumerate() {
        let g = geom(xs, ws, st, dil);
        let (rows, p) = (g.rows(), g.p);
        let x = values(xs.iter().product(), 1 + i as u64);
        let w = values(ws.iter().product(), 100 + i as u64);
        let got = conv(&x, &packed(&w, &g, width), &g, None, false);
        let mut cols = vec![0f32; rows * p];
        im2col(&x, &mut cols, &g, 0..p, false);
        for m in 0..g.m {
            for q in 0..p {
                let terms = (0..rows).map(|r| w[m * rows + r] as f64 * cols[r * p + q] as f64);
                within_rounding(got[m * p + q], terms, || {
                    format!("case {i}: channel {m}, position {q}")
                });
            }
        }
    }
}

/// The fused finish (bias, residual, ReLU in three combinations) equal bit for bit to
/// [`finish_one`] on the path's unfinished sums, and two threads equal to one.
pub fn finishes_as_unfused_and_threads_change_nothing(cases: &[Case], width: usize, conv: Conv) {
    let pool = two_threads();
    for (i, (xs, ws, st, dil)) in cases.iter().enumerate() {
        let g = geom(xs, ws, st, dil);
        let x = values(xs.iter().product(), 1 + i as u64);
        let wt = packed(&values(ws.iter().product(), 100 + i as u64), &g, width);
        let bias = values(g.m, 200 + i as u64);
        let residual = values(g.m * g.p, 300 + i as u64);
        let plain = conv(&x, &wt, &g, None, false);
        for (with_bias, with_residual, relu) in [
            (true, false, true),
            (false, true, false),
            (true, true, true),
        ] {
            let columns = Columns {
                bias: with_bias.then_some(&bias[..]),
                residual: with_residual.then_some(&residual[..]),
                relu,
            };
            let fused = conv(&x, &wt, &g, Some(columns), false);
            for (at, (&f, &v)) in fused.iter().zip(&plain).enumerate() {
                let want = finish_one(
                    v,
                    with_bias.then(|| bias[at / g.p]),
                    with_residual.then(|| residual[at]),
                    relu,
                );
                assert_eq!(f.to_bits(), want.to_bits(), "case {i}: element {at}");
            }
            let shared = pool.install(|| conv(&x, &wt, &g, Some(columns), true));
            let same = shared
                .iter()
                .zip(&fused)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "case {i}: two threads changed the result");
        }
    }
}
