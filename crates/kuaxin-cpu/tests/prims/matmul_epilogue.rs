//! `Prim::MatMulEpilogue`: a product and the elementwise kernel after it in one primitive.
//! Against the unfused pair (the product, then the kernel over its stored output), bit for
//! bit: a bias per column and a residual the tile applies in registers, and an epilogue it
//! cannot (GELU's erf) applied to the stored product; a weight uploaded as a constant (packed)
//! and one that is not; batches; one and two threads.
use crate::common::Rng;
use kuaxin_core::kernel::{Expr, Kernel, Load, Op};
use kuaxin_core::prim::{BinaryOp, Prim, TensorType, UnaryOp, ViewMap};
use kuaxin_core::{Backend, DType, Data, Tensor};
use std::sync::Arc;

fn f32_tensor(shape: &[usize], rng: &mut Rng) -> Tensor {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
    Tensor::new(shape.to_vec(), Data::F32(v)).unwrap()
}

fn load(arg: usize, strides: Vec<isize>) -> Load {
    Load {
        arg,
        dtype: DType::F32,
        strides,
        offset: 0,
    }
}

fn op(expr: Expr) -> Op {
    Op {
        expr,
        dtype: DType::F32,
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    match &t.data {
        Data::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        _ => panic!("f32 expected"),
    }
}

#[test]
fn epilogues_equal_the_product_then_the_kernel_bit_for_bit() {
    let mut rng = Rng(7);
    // (batch, m, k, n): rows past one block, part panels, a depth of two blocks.
    for (batch, m, k, n) in [(1, 130, 300, 37), (2, 9, 16, 48), (1, 6, 5, 16)] {
        let a = f32_tensor(&[batch, m, k], &mut rng);
        let w = Arc::new(f32_tensor(&[k, n], &mut rng));
        let bias = f32_tensor(&[n], &mut rng);
        let residual = f32_tensor(&[batch, m, n], &mut rng);
        let half = Tensor::new(vec![], Data::F32(vec![0.5])).unwrap();
        // The kernel's domain reshapes the product [batch, m, n] to [batch * m, 1, n].
        let domain = vec![batch * m, 1, n];
        let identity = vec![n as isize, 0, 1];
        let column = vec![0, 0, 1];
        // (name, body, loads, the arguments after the product)
        type Case<'t> = (&'static str, Vec<Expr>, Vec<Load>, Vec<&'t Tensor>);
        let kernels: Vec<Case> = vec![
            (
                "bias + x",
                vec![
                    Expr::Load(0),
                    Expr::Load(1),
                    Expr::Binary(BinaryOp::Add, 1, 0),
                ],
                vec![load(0, identity.clone()), load(1, column.clone())],
                vec![&bias],
            ),
            (
                "(x + bias) + residual",
                vec![
                    Expr::Load(0),
                    Expr::Load(1),
                    Expr::Binary(BinaryOp::Add, 0, 1),
                    Expr::Load(2),
                    Expr::Binary(BinaryOp::Add, 2, 3),
                ],
                vec![
                    load(0, identity.clone()),
                    load(1, column.clone()),
                    load(2, identity.clone()),
                ],
                vec![&bias, &residual],
            ),
            (
                "erf(x + bias) * 0.5",
                vec![
                    Expr::Load(0),
                    Expr::Load(1),
                    Expr::Binary(BinaryOp::Add, 0, 1),
                    Expr::Unary(UnaryOp::Erf, 2),
                    Expr::Load(2),
                    Expr::Binary(BinaryOp::Mul, 3, 4),
                ],
                vec![
                    load(0, identity.clone()),
                    load(1, column.clone()),
                    load(2, vec![0, 0, 0]),
                ],
                vec![&bias, &half],
            ),
        ];
        for (what, body, loads, extra) in kernels {
            let out = TensorType::new(DType::F32, domain.clone());
            let kernel = Arc::new(Kernel {
                name: "epilogue".into(),
                domain: domain.clone(),
                loads,
                body: body.into_iter().map(op).collect(),
                reduce: None,
                epilogue: vec![],
                out: out.clone(),
                origins: vec![],
            });
            // The weight seen as one matrix for every batch (a view of stride 0 over batches).
            let shared_b = Some(ViewMap {
                shape: vec![batch, k, n],
                strides: vec![0, n as isize, 1],
                offset: 0,
            });
            let fused = Prim::MatMulEpilogue {
                a: None,
                b: shared_b.clone(),
                epilogue: kernel.clone(),
            };
            let unfused = Prim::MatMulOfViews {
                a: None,
                b: shared_b.clone(),
            };
            for (threads, shared) in [(1, true), (2, true), (1, false)] {
                let cpu = kuaxin_cpu::CpuBackend::new(Some(threads)).unwrap();
                let ad = cpu.upload(&a).unwrap();
                // A constant weight is packed for the tile; an uploaded one is not.
                let wd = if shared {
                    cpu.upload_shared(&w).unwrap()
                } else {
                    cpu.upload(&w).unwrap()
                };
                let ed: Vec<_> = extra.iter().map(|t| cpu.upload(t).unwrap()).collect();
                let mut args = vec![&ad, &wd];
                args.extend(ed.iter());
                // Twice: the first run packs the weight, the second uses the packed copy.
                for _ in 0..2 {
                    let got = cpu
                        .execute(&fused, &args, std::slice::from_ref(&out))
                        .unwrap();
                    let got = cpu.download(&got[0]).unwrap();
                    let product = TensorType::new(DType::F32, vec![batch, m, n]);
                    let y = cpu.execute(&unfused, &[&ad, &wd], &[product]).unwrap();
                    let mut kargs = vec![&y[0]];
                    kargs.extend(ed.iter());
                    let want = cpu
                        .execute(
                            &Prim::Fused(kernel.clone()),
                            &kargs,
                            std::slice::from_ref(&out),
                        )
                        .unwrap();
                    let want = cpu.download(&want[0]).unwrap();
                    let (g, wnt) = (bits(&got), bits(&want));
                    assert!(
                        g == wnt,
                        "{what}, {batch} x {m} x {k} x {n}, {threads} threads, packed {shared}: first difference at {:?}",
                        g.iter().zip(&wnt).position(|(x, y)| x != y)
                    );
                }
            }
        }
    }
}

#[test]
fn an_epilogue_that_does_not_fit_the_product_is_an_error() {
    let mut rng = Rng(8);
    let a = f32_tensor(&[4, 8], &mut rng);
    let w = f32_tensor(&[8, 16], &mut rng);
    // 4 x 16 = 64 products, but a kernel over 60 positions; then one that reads the product
    // transposed rather than in its own order.
    for (domain, strides) in [(vec![60], vec![1]), (vec![16, 4], vec![1, 16])] {
        let kernel = Kernel {
            name: "misfit".into(),
            domain: domain.clone(),
            loads: vec![load(0, strides)],
            body: vec![op(Expr::Load(0))],
            reduce: None,
            epilogue: vec![],
            out: TensorType::new(DType::F32, domain.clone()),
            origins: vec![],
        };
        let prim = Prim::MatMulEpilogue {
            a: None,
            b: None,
            epilogue: Arc::new(kernel),
        };
        let e = kuaxin_cpu::eval_infer(&prim, &[&a, &w]).unwrap_err();
        assert!(
            e.to_string().contains("does not fit the product"),
            "{domain:?}: {e}"
        );
    }
}
