use crate::common::*;
use half::{bf16, f16};
use kuaxin_core::prim::Prim;
use kuaxin_core::{Data, Tensor};

/// Naive batched product in f64.
fn reference(a: &[f64], b: &[f64], batch: usize, m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; batch * m * n];
    for bi in 0..batch {
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    s += a[(bi * m + i) * k + p] * b[(bi * k + p) * n + j];
                }
                c[(bi * m + i) * n + j] = s;
            }
        }
    }
    c
}

fn shapes(batch: &[usize], m: usize, k: usize, n: usize) -> (Vec<usize>, Vec<usize>) {
    let mut a = batch.to_vec();
    a.extend([m, k]);
    let mut b = batch.to_vec();
    b.extend([k, n]);
    (a, b)
}

fn check_f32(batch: &[usize], m: usize, k: usize, n: usize, rng: &mut Rng) {
    let nb: usize = batch.iter().product();
    let (sa, sb) = shapes(batch, m, k, n);
    let a = rng.vec(nb * m * k);
    let b = rng.vec(nb * k * n);
    // Inputs rounded to f32 first so the reference sees the same values.
    let af: Vec<f32> = a.iter().map(|&x| x as f32).collect();
    let bf: Vec<f32> = b.iter().map(|&x| x as f32).collect();
    let a64: Vec<f64> = af.iter().map(|&x| x as f64).collect();
    let b64: Vec<f64> = bf.iter().map(|&x| x as f64).collect();
    let want = reference(&a64, &b64, nb, m, k, n);
    let y = run1(Prim::MatMul, &[&t(&sa, af), &t(&sb, bf)]);
    let mut so = batch.to_vec();
    so.extend([m, n]);
    assert_eq!(y.shape, so);
    let got: Vec<f64> = f32s(&y).iter().map(|&x| x as f64).collect();
    // Sums of k products of magnitude <= 1: absolute error scales with sqrt(k) * eps.
    assert_close(&got, &want, 1e-4, 1e-5 * (k as f64).sqrt());
}

#[test]
fn matmul_f32_against_naive() {
    let mut rng = Rng(1);
    let cpu = kuaxin_cpu::CpuBackend::new(Some(2)).unwrap();
    cpu.install(|| {
        check_f32(&[], 1, 1, 1, &mut rng);
        check_f32(&[], 3, 5, 7, &mut rng);
        check_f32(&[2], 17, 33, 9, &mut rng);
        check_f32(&[2, 3], 4, 1, 6, &mut rng);
        check_f32(&[], 64, 128, 96, &mut rng);
        check_f32(&[3], 70, 70, 70, &mut rng);
        check_f32(&[], 1, 300, 1, &mut rng);
        check_f32(&[5], 0, 3, 2, &mut rng);
    });
}

#[test]
fn matmul_k_zero_gives_zeros() {
    let a = Tensor::zeros(kuaxin_core::DType::F32, vec![2, 0]);
    let b = Tensor::zeros(kuaxin_core::DType::F32, vec![0, 3]);
    let y = run1(Prim::MatMul, &[&a, &b]);
    assert_eq!((y.shape.clone(), f32s(&y)), (vec![2, 3], vec![0.0; 6]));
}

#[test]
fn matmul_f64_f16_bf16() {
    let mut rng = Rng(2);
    let (m, k, n) = (9, 20, 11);
    let a = rng.vec(2 * m * k);
    let b = rng.vec(2 * k * n);
    let want = reference(&a, &b, 2, m, k, n);
    let y = run1(
        Prim::MatMul,
        &[&t(&[2, m, k], a.clone()), &t(&[2, k, n], b.clone())],
    );
    assert_close(&f64s(&y), &want, 1e-12, 1e-13);

    let ah: Vec<f16> = a.iter().map(|&x| f16::from_f64(x)).collect();
    let bh: Vec<f16> = b.iter().map(|&x| f16::from_f64(x)).collect();
    let want = reference(
        &ah.iter().map(|x| x.to_f64()).collect::<Vec<_>>(),
        &bh.iter().map(|x| x.to_f64()).collect::<Vec<_>>(),
        2,
        m,
        k,
        n,
    );
    let y = run1(Prim::MatMul, &[&t(&[2, m, k], ah), &t(&[2, k, n], bh)]);
    let Data::F16(v) = &y.data else { panic!() };
    assert_close(
        &v.iter().map(|x| x.to_f64()).collect::<Vec<_>>(),
        &want,
        1e-2,
        1e-2,
    );

    let ab: Vec<bf16> = a.iter().map(|&x| bf16::from_f64(x)).collect();
    let bb: Vec<bf16> = b.iter().map(|&x| bf16::from_f64(x)).collect();
    let want = reference(
        &ab.iter().map(|x| x.to_f64()).collect::<Vec<_>>(),
        &bb.iter().map(|x| x.to_f64()).collect::<Vec<_>>(),
        2,
        m,
        k,
        n,
    );
    let y = run1(Prim::MatMul, &[&t(&[2, m, k], ab), &t(&[2, k, n], bb)]);
    let Data::BF16(v) = &y.data else { panic!() };
    assert_close(
        &v.iter().map(|x| x.to_f64()).collect::<Vec<_>>(),
        &want,
        1e-2,
        1e-2,
    );
}

#[test]
fn matmul_integers_wrap() {
    // [[1, 2], [3, 4]] x [[5, 6], [7, 8]] = [[19, 22], [43, 50]]
    let a = t(&[2, 2], vec![1i32, 2, 3, 4]);
    let b = t(&[2, 2], vec![5i32, 6, 7, 8]);
    assert_eq!(
        run1(Prim::MatMul, &[&a, &b]).data,
        Data::I32(vec![19, 22, 43, 50])
    );
    let a = t(&[1, 1], vec![65536i32]);
    assert_eq!(run1(Prim::MatMul, &[&a, &a]).data, Data::I32(vec![0]));
    let a = t(&[1, 2], vec![100i8, 100]);
    let b = t(&[2, 1], vec![2i8, 1]);
    // 200 + 100 = 300 wraps to 44.
    assert_eq!(run1(Prim::MatMul, &[&a, &b]).data, Data::I8(vec![44]));
    let a = t(&[2, 1, 2], vec![1u8, 2, 3, 4]);
    let b = t(&[2, 2, 1], vec![10u8, 20, 30, 40]);
    assert_eq!(run1(Prim::MatMul, &[&a, &b]).data, Data::U8(vec![50, 250]));
    // Large enough to run rows in parallel: i64, compared with the naive reference.
    let (m, k, n) = (64, 40, 50);
    let av: Vec<i64> = (0..m * k).map(|i| (i % 13) as i64 - 6).collect();
    let bv: Vec<i64> = (0..k * n).map(|i| (i % 7) as i64 - 3).collect();
    let want: Vec<i64> = reference(
        &av.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        &bv.iter().map(|&x| x as f64).collect::<Vec<_>>(),
        1,
        m,
        k,
        n,
    )
    .into_iter()
    .map(|x| x as i64)
    .collect();
    let cpu = kuaxin_cpu::CpuBackend::new(Some(2)).unwrap();
    let y = cpu.install(|| run1(Prim::MatMul, &[&t(&[m, k], av), &t(&[k, n], bv)]));
    assert_eq!(i64s(&y), want);
}

#[test]
fn matmul_shape_errors() {
    err(
        Prim::MatMul,
        &[&t(&[2, 3], vec![0f32; 6]), &t(&[2, 3], vec![0f32; 6])],
    );
    err(
        Prim::MatMul,
        &[&t(&[2, 2], vec![false; 4]), &t(&[2, 2], vec![false; 4])],
    );
}

fn view(shape: &[usize], strides: &[isize], offset: usize) -> kuaxin_core::prim::ViewMap {
    kuaxin_core::prim::ViewMap {
        shape: shape.to_vec(),
        strides: strides.to_vec(),
        offset,
    }
}

/// A product of views read in place equals the product of the views copied first: transposed
/// operands (attention's K^T), head splits with batch strides, a slice at an offset, a
/// broadcast (stride 0) and a reversed axis; on one thread and on two.
#[test]
fn matmul_of_views_equals_matmul_of_copied_views() {
    use kuaxin_core::prim::ViewMap;
    let mut rng = Rng(7);
    let base_a: Vec<f32> = rng.vec(4 * 6 * 8).iter().map(|&x| x as f32).collect();
    let base_b: Vec<f32> = rng.vec(4 * 6 * 8).iter().map(|&x| x as f32).collect();
    let (ta, tb) = (t(&[4, 6, 8], base_a), t(&[4, 6, 8], base_b));
    let cases: Vec<(Option<ViewMap>, Option<ViewMap>)> = vec![
        // [4, 6, 8] x ([4, 6, 8] transposed to [4, 8, 6]).
        (None, Some(view(&[4, 8, 6], &[48, 1, 8], 0))),
        // Both transposed: [4, 8, 6] x [4, 6, 8].
        (
            Some(view(&[4, 8, 6], &[48, 1, 8], 0)),
            Some(view(&[4, 6, 8], &[48, 8, 1], 0)),
        ),
        // Heads: [2, 6, 4] (every other column block) x a slice at an offset.
        (
            Some(view(&[2, 6, 4], &[4, 8, 1], 0)),
            Some(view(&[2, 4, 5], &[48, 8, 1], 3)),
        ),
        // A broadcast batch and a reversed row order.
        (
            Some(view(&[3, 6, 8], &[0, 8, 1], 48)),
            Some(view(&[3, 8, 2], &[0, -1, 8], 7)),
        ),
    ];
    for threads in [1, 2] {
        let cpu = kuaxin_cpu::CpuBackend::new(Some(threads)).unwrap();
        for (a, b) in &cases {
            let seen = |x: &Tensor, v: &Option<ViewMap>| match v {
                Some(v) => run1(v.prim(), &[x]),
                None => x.clone(),
            };
            let (va, vb) = (seen(&ta, a), seen(&tb, b));
            let want = cpu.install(|| run1(Prim::MatMul, &[&va, &vb]));
            let got = cpu.install(|| {
                run1(
                    Prim::MatMulOfViews {
                        a: a.clone(),
                        b: b.clone(),
                    },
                    &[&ta, &tb],
                )
            });
            assert_eq!(got.shape, want.shape, "{a:?} x {b:?}");
            assert_close(&got.to_f64_vec(), &want.to_f64_vec(), 1e-5, 1e-6);
        }
    }
}

#[test]
fn matmul_of_views_outside_the_input_is_an_error() {
    let a = t(&[2, 3], vec![0f32; 6]);
    let b = t(&[3, 2], vec![0f32; 6]);
    // Rows 3 apart over 3 rows reach element 8 of a 6-element input.
    let e = err(
        Prim::MatMulOfViews {
            a: Some(view(&[3, 3], &[3, 1], 0)),
            b: None,
        },
        &[&a, &b],
    );
    assert!(e.to_string().contains("View"), "{e}");
}

/// Products large enough to split into row or column panels across threads, with transposed
/// operands: each panel's operand pointers move along the strides.
#[test]
fn matmul_of_views_in_panels_equals_the_copied_product() {
    let mut rng = Rng(11);
    let cpu = kuaxin_cpu::CpuBackend::new(Some(2)).unwrap();
    for (m, k, n) in [(96, 80, 70), (70, 80, 96)] {
        let a: Vec<f32> = rng.vec(m * k).iter().map(|&x| x as f32).collect();
        let b: Vec<f32> = rng.vec(k * n).iter().map(|&x| x as f32).collect();
        // Both stored transposed: a as [k, m], b as [n, k].
        let (ta, tb) = (t(&[k, m], a), t(&[n, k], b));
        let (va, vb) = (
            view(&[m, k], &[1, m as isize], 0),
            view(&[k, n], &[1, k as isize], 0),
        );
        let want = cpu.install(|| {
            run1(
                Prim::MatMul,
                &[&run1(va.prim(), &[&ta]), &run1(vb.prim(), &[&tb])],
            )
        });
        let got = cpu.install(|| {
            run1(
                Prim::MatMulOfViews {
                    a: Some(va.clone()),
                    b: Some(vb.clone()),
                },
                &[&ta, &tb],
            )
        });
        assert_close(&got.to_f64_vec(), &want.to_f64_vec(), 1e-5, 1e-5);
    }
}

/// A constant B (uploaded with `upload_shared`, as the executor uploads weights) is packed by
/// the back end on first use and read from its panels after: both runs, plain and through a
/// broadcast transposed view (a Hugging Face `[n, k]` weight), match the f64 product.
#[test]
fn constant_weights_multiply_the_same_packed_or_not() {
    use kuaxin_core::Backend;
    use std::sync::Arc;
    let mut rng = Rng(23);
    let (m, k, n) = (37, 70, 45);
    let a: Vec<f32> = rng.vec(2 * m * k).iter().map(|&x| x as f32).collect();
    let w: Vec<f32> = rng.vec(k * n).iter().map(|&x| x as f32).collect();
    let a64: Vec<f64> = a.iter().map(|&x| x as f64).collect();
    let w64: Vec<f64> = w.iter().map(|&x| x as f64).collect();
    // Both batches times the same [k, n] matrix.
    let want: Vec<f64> = (0..2)
        .flat_map(|i| reference(&a64[i * m * k..(i + 1) * m * k], &w64, 1, m, k, n))
        .collect();
    let wt: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
    for threads in [1, 2] {
        let cpu = kuaxin_cpu::CpuBackend::new(Some(threads)).unwrap();
        let ta = cpu.upload(&t(&[2, m, k], a.clone())).unwrap();
        let cases = [
            (
                Arc::new(t(&[1, k, n], w.clone())),
                Prim::MatMulOfViews {
                    a: None,
                    b: Some(view(&[2, k, n], &[0, n as isize, 1], 0)),
                },
            ),
            (
                Arc::new(t(&[n, k], wt.clone())),
                Prim::MatMulOfViews {
                    a: None,
                    b: Some(view(&[2, k, n], &[0, 1, k as isize], 0)),
                },
            ),
        ];
        for (weight, prim) in &cases {
            let tw = cpu.upload_shared(weight).unwrap();
            let out = [kuaxin_core::prim::TensorType::new(
                kuaxin_core::DType::F32,
                vec![2, m, n],
            )];
            for run in 0..2 {
                let got = cpu.execute(prim, &[&ta, &tw], &out).unwrap();
                let got = cpu.download(&got[0]).unwrap();
                eprintln!("{threads} threads, {prim:?}, run {run}");
                assert_close(&got.to_f64_vec(), &want, 1e-5, 1e-5);
            }
        }
    }
}
