use crate::common::*;
use half::{bf16, f16};
use kuaxin_core::prim::Prim;
use kuaxin_core::{DType, Data, Tensor};

struct Case {
    x: Vec<usize>,
    w: Vec<usize>,
    strides: Vec<usize>,
    dilations: Vec<usize>,
    groups: usize,
}

fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut out = vec![0; shape.len()];
    for d in (0..shape.len()).rev() {
        out[d] = i % shape[d];
        i /= shape[d];
    }
    out
}

fn flat(idx: &[usize], shape: &[usize]) -> usize {
    idx.iter().zip(shape).fold(0, |acc, (&i, &n)| acc * n + i)
}

/// Direct N-d convolution in f64, straight from the definition.
fn reference(c: &Case, x: &[f64], w: &[f64]) -> (Vec<usize>, Vec<f64>) {
    let sp = c.x.len() - 2;
    let (n, m, cg) = (c.x[0], c.w[0], c.w[1]);
    let mg = m / c.groups;
    let out_sp: Vec<usize> = (0..sp)
        .map(|d| (c.x[2 + d] - ((c.w[2 + d] - 1) * c.dilations[d] + 1)) / c.strides[d] + 1)
        .collect();
    let mut oshape = vec![n, m];
    oshape.extend(&out_sp);
    let total: usize = oshape.iter().product();
    let kn: usize = c.w[2..].iter().product();
    let mut y = vec![0.0; total];
    for (oi, yv) in y.iter_mut().enumerate() {
        let o = unravel(oi, &oshape);
        let (b, oc) = (o[0], o[1]);
        let g = oc / mg;
        let mut s = 0.0;
        for ci in 0..cg {
            for ki in 0..kn {
                let k = unravel(ki, &c.w[2..]);
                let mut xi = vec![b, g * cg + ci];
                xi.extend((0..sp).map(|d| o[2 + d] * c.strides[d] + k[d] * c.dilations[d]));
                let mut wi = vec![oc, ci];
                wi.extend(&k);
                s += x[flat(&xi, &c.x)] * w[flat(&wi, &c.w)];
            }
        }
        *yv = s;
    }
    (oshape, y)
}

fn prim(c: &Case) -> Prim {
    Prim::Conv {
        strides: c.strides.clone(),
        dilations: c.dilations.clone(),
        groups: c.groups,
    }
}

fn check(c: Case, rng: &mut Rng, dtype: DType) {
    let nx: usize = c.x.iter().product();
    let nw: usize = c.w.iter().product();
    let (x, w) = (rng.vec(nx), rng.vec(nw));
    let (x, w): (Vec<f64>, Vec<f64>) = match dtype {
        DType::F32 => (
            x.iter().map(|&v| v as f32 as f64).collect(),
            w.iter().map(|&v| v as f32 as f64).collect(),
        ),
        DType::F16 => (
            x.iter().map(|&v| f16::from_f64(v).to_f64()).collect(),
            w.iter().map(|&v| f16::from_f64(v).to_f64()).collect(),
        ),
        DType::BF16 => (
            x.iter().map(|&v| bf16::from_f64(v).to_f64()).collect(),
            w.iter().map(|&v| bf16::from_f64(v).to_f64()).collect(),
        ),
        _ => (x, w),
    };
    let (oshape, want) = reference(&c, &x, &w);
    let xt = Tensor::new(c.x.clone(), Data::from_f64_iter(dtype, x.iter().copied())).unwrap();
    let wt = Tensor::new(c.w.clone(), Data::from_f64_iter(dtype, w.iter().copied())).unwrap();
    let y = run1(prim(&c), &[&xt, &wt]);
    assert_eq!(y.shape, oshape);
    assert_eq!(y.dtype(), dtype);
    let k = (c.w[1] * c.w[2..].iter().product::<usize>()) as f64;
    let (rtol, atol) = match dtype {
        DType::F64 => (1e-12, 1e-12),
        DType::F32 => (1e-4, 1e-5 * k.sqrt()),
        _ => (2e-2, 2e-2 * k.sqrt()),
    };
    assert_close(&y.to_f64_vec(), &want, rtol, atol);
}

fn case(x: &[usize], w: &[usize], strides: &[usize], dilations: &[usize], groups: usize) -> Case {
    Case {
        x: x.to_vec(),
        w: w.to_vec(),
        strides: strides.to_vec(),
        dilations: dilations.to_vec(),
        groups,
    }
}

#[test]
fn conv_small_hand_example() {
    // x = [[1, 2, 3], [4, 5, 6], [7, 8, 9]], w = [[1, 0], [0, -1]]: y[i, j] = x[i, j] - x[i+1, j+1].
    let x = t(&[1, 1, 3, 3], (1..=9).map(|v| v as f32).collect());
    let w = t(&[1, 1, 2, 2], vec![1.0f32, 0.0, 0.0, -1.0]);
    let y = run1(
        Prim::Conv {
            strides: vec![1, 1],
            dilations: vec![1, 1],
            groups: 1,
        },
        &[&x, &w],
    );
    assert_eq!(
        (y.shape.clone(), f32s(&y)),
        (vec![1, 1, 2, 2], vec![-4.0; 4])
    );
    // Stride 2 picks y[0, 0] only; dilation 2 with a 2x2 kernel: x[0,0] - x[2,2] = -8.
    let y = run1(
        Prim::Conv {
            strides: vec![1, 1],
            dilations: vec![2, 2],
            groups: 1,
        },
        &[&x, &w],
    );
    assert_eq!((y.shape.clone(), f32s(&y)), (vec![1, 1, 1, 1], vec![-8.0]));
}

#[test]
fn conv_2d_f32_against_naive() {
    let mut rng = Rng(7);
    let cpu = kuaxin_cpu::CpuBackend::new(Some(2)).unwrap();
    cpu.install(|| {
        check(
            case(&[1, 3, 8, 8], &[4, 3, 3, 3], &[1, 1], &[1, 1], 1),
            &mut rng,
            DType::F32,
        );
        check(
            case(&[2, 4, 9, 7], &[6, 2, 3, 2], &[2, 1], &[1, 2], 2),
            &mut rng,
            DType::F32,
        );
        check(
            case(&[3, 6, 10, 10], &[6, 1, 3, 3], &[1, 2], &[2, 1], 6),
            &mut rng,
            DType::F32,
        );
        check(
            case(&[2, 8, 5, 5], &[16, 8, 1, 1], &[1, 1], &[1, 1], 1),
            &mut rng,
            DType::F32,
        );
        check(
            case(&[2, 8, 5, 5], &[4, 8, 1, 1], &[2, 2], &[1, 1], 1),
            &mut rng,
            DType::F32,
        );
        // Big enough for the threaded gemm path.
        check(
            case(&[1, 32, 30, 30], &[64, 32, 3, 3], &[1, 1], &[1, 1], 1),
            &mut rng,
            DType::F32,
        );
        check(
            case(&[4, 16, 12, 12], &[32, 4, 3, 3], &[1, 1], &[1, 1], 4),
            &mut rng,
            DType::F32,
        );
        check(
            case(&[2, 3, 23, 23], &[8, 3, 7, 7], &[2, 2], &[1, 1], 1),
            &mut rng,
            DType::F32,
        );
    });
}

#[test]
fn conv_1d_and_3d() {
    let mut rng = Rng(8);
    check(
        case(&[2, 4, 17], &[6, 2, 3], &[2], &[2], 2),
        &mut rng,
        DType::F32,
    );
    check(
        case(&[1, 1, 5], &[1, 1, 5], &[1], &[1], 1),
        &mut rng,
        DType::F32,
    );
    check(
        case(
            &[2, 2, 5, 6, 7],
            &[4, 2, 2, 3, 2],
            &[1, 2, 1],
            &[2, 1, 1],
            1,
        ),
        &mut rng,
        DType::F32,
    );
    check(
        case(
            &[1, 4, 4, 4, 4],
            &[2, 2, 1, 1, 1],
            &[1, 1, 1],
            &[1, 1, 1],
            2,
        ),
        &mut rng,
        DType::F64,
    );
}

#[test]
fn conv_other_float_types() {
    let mut rng = Rng(9);
    check(
        case(&[2, 4, 7, 6], &[4, 2, 3, 3], &[1, 2], &[1, 1], 2),
        &mut rng,
        DType::F64,
    );
    check(
        case(&[2, 4, 7, 6], &[4, 2, 3, 3], &[1, 2], &[1, 1], 2),
        &mut rng,
        DType::F16,
    );
    check(
        case(&[2, 4, 7, 6], &[4, 2, 3, 3], &[1, 2], &[1, 1], 2),
        &mut rng,
        DType::BF16,
    );
}

#[test]
fn conv_errors() {
    let x = t(&[1, 1, 3], vec![0f32; 3]);
    // Empty kernel dim: an error, not a panic.
    err(
        Prim::Conv {
            strides: vec![1],
            dilations: vec![1],
            groups: 1,
        },
        &[&x, &t(&[1, 1, 0], Vec::<f32>::new())],
    );
    // Kernel larger than the input.
    err(
        Prim::Conv {
            strides: vec![1],
            dilations: vec![1],
            groups: 1,
        },
        &[&x, &t(&[1, 1, 4], vec![0f32; 4])],
    );
    // Integer convolution is not supported.
    let e = err(
        Prim::Conv {
            strides: vec![1],
            dilations: vec![1],
            groups: 1,
        },
        &[&t(&[1, 1, 3], vec![0i32; 3]), &t(&[1, 1, 1], vec![0i32])],
    );
    assert!(e.is_unsupported());
}

/// A constant weight (uploaded with `upload_shared`, as the executor uploads weights) of at
/// least 32 output channels and depth 16 runs on the panel tiles with the output computed
/// transposed: channels not a multiple of 32, a strided 3x3 kernel, a 1x1 kernel, two images,
/// outputs of several position blocks (columns made a block at a time, blocks shared out over
/// the threads), on one and two threads, first run (packing) and second (packed), all against
/// the f64 definition.
#[test]
fn constant_weights_run_transposed_on_the_tiles() {
    let mut rng = Rng(31);
    for c in [
        case(&[2, 16, 9, 11], &[40, 16, 3, 3], &[2, 1], &[1, 1], 1),
        case(&[1, 130, 5, 7], &[33, 130, 1, 1], &[1, 1], &[1, 1], 1),
        case(&[1, 16, 40, 40], &[36, 16, 3, 3], &[1, 1], &[1, 1], 1),
        case(&[1, 130, 40, 40], &[33, 130, 1, 1], &[1, 1], &[1, 1], 1),
        // The shallowest on the tiles: depth 16 (1x1) and 27 (a 3-channel stem, stride 2).
        case(&[2, 16, 7, 9], &[64, 16, 1, 1], &[1, 1], &[1, 1], 1),
        case(&[1, 3, 31, 29], &[40, 3, 3, 3], &[2, 2], &[1, 1], 1),
    ] {
        let x = f32_exact(&mut rng, c.x.iter().product());
        let w = f32_exact(&mut rng, c.w.iter().product());
        let (oshape, want) = reference(&c, &x, &w);
        run_on_tiles(&c, &prim(&c), (&x, &w, &[]), &oshape, &want);
    }
}

/// Random values exact in f32, as f64.
fn f32_exact(rng: &mut Rng, n: usize) -> Vec<f64> {
    rng.vec(n).iter().map(|&v| v as f32 as f64).collect()
}

fn f32_tensor(shape: &[usize], v: &[f64]) -> Tensor {
    Tensor::new(
        shape.to_vec(),
        Data::from_f64_iter(DType::F32, v.iter().copied()),
    )
    .unwrap()
}

/// Runs `prim` on case `c`'s input `x`, its weight `w` uploaded as a constant
/// (`upload_shared`, as the executor uploads weights) and `extra` inputs, on one and two
/// threads, twice each (packing the weight, then packed), against `want` of shape `oshape`.
fn run_on_tiles(
    c: &Case,
    prim: &Prim,
    (x, w, extra): (&[f64], &[f64], &[Tensor]),
    oshape: &[usize],
    want: &[f64],
) {
    use kuaxin_core::Backend;
    use std::sync::Arc;
    let out = [kuaxin_core::prim::TensorType::new(
        DType::F32,
        oshape.to_vec(),
    )];
    let k = (c.w[1] * c.w[2..].iter().product::<usize>()) as f64;
    let wt = Arc::new(f32_tensor(&c.w, w));
    for threads in [1, 2] {
        let cpu = kuaxin_cpu::CpuBackend::new(Some(threads)).unwrap();
        let mut args = vec![cpu.upload(&f32_tensor(&c.x, x)).unwrap()];
        args.push(cpu.upload_shared(&wt).unwrap());
        for t in extra {
            args.push(cpu.upload(t).unwrap());
        }
        let args: Vec<_> = args.iter().collect();
        for _run in 0..2 {
            let y = cpu.execute(prim, &args, &out).unwrap();
            let y = cpu.download(&y[0]).unwrap();
            assert_eq!(y.shape, oshape);
            assert_close(&y.to_f64_vec(), want, 1e-4, 1e-5 * k.sqrt());
        }
    }
}

/// An f32 load of kernel argument `arg` with `strides` over the domain.
fn load(arg: usize, strides: Vec<isize>) -> kuaxin_core::kernel::Load {
    kuaxin_core::kernel::Load {
        arg,
        dtype: DType::F32,
        strides,
        offset: 0,
    }
}

/// An f32 value of a kernel body.
fn op(expr: kuaxin_core::kernel::Expr) -> kuaxin_core::kernel::Op {
    kuaxin_core::kernel::Op {
        expr,
        dtype: DType::F32,
    }
}

/// A convolution epilogue (per-channel bias, a residual, ReLU) after a constant-weight
/// convolution on the tiles, whose output was made in several blocks of positions or in one
/// (two images): on one and two threads, against the f64 convolution with the epilogue
/// applied after it.
#[test]
fn conv_epilogues_follow_tiled_convolutions() {
    use kuaxin_core::kernel::{Expr, Kernel};
    use kuaxin_core::prim::{BinaryOp, TensorType};
    use std::sync::Arc;
    let mut rng = Rng(77);
    for c in [
        case(&[1, 16, 40, 40], &[36, 16, 3, 3], &[1, 1], &[1, 1], 1),
        case(&[1, 130, 40, 40], &[33, 130, 1, 1], &[1, 1], &[1, 1], 1),
        case(&[2, 16, 9, 11], &[40, 16, 3, 3], &[2, 1], &[1, 1], 1),
    ] {
        let x = f32_exact(&mut rng, c.x.iter().product());
        let w = f32_exact(&mut rng, c.w.iter().product());
        let (oshape, conv) = reference(&c, &x, &w);
        let (m, plane) = (oshape[1], oshape[2..].iter().product::<usize>());
        let bias = f32_exact(&mut rng, m);
        let residual = f32_exact(&mut rng, conv.len());
        let want: Vec<f64> = conv
            .iter()
            .enumerate()
            .map(|(i, &v)| (v + bias[i / plane % m] + residual[i]).max(0.0))
            .collect();
        let contiguous = kuaxin_core::tensor::contiguous_strides(&oshape);
        let mut per_channel = vec![0isize; oshape.len()];
        per_channel[1] = 1;
        let epilogue = Kernel {
            name: "bias_residual_relu".into(),
            domain: oshape.clone(),
            loads: vec![
                load(0, contiguous.clone()),
                load(1, per_channel),
                load(2, contiguous),
            ],
            body: vec![
                op(Expr::Load(0)),
                op(Expr::Load(1)),
                op(Expr::Binary(BinaryOp::Add, 0, 1)),
                op(Expr::Load(2)),
                op(Expr::Binary(BinaryOp::Add, 2, 3)),
                op(Expr::Const(0.0)),
                op(Expr::Binary(BinaryOp::Max, 4, 5)),
            ],
            reduce: None,
            epilogue: vec![],
            out: TensorType::new(DType::F32, oshape.clone()),
            origins: vec![],
        };
        let prim = Prim::ConvEpilogue {
            strides: c.strides.clone(),
            dilations: c.dilations.clone(),
            groups: c.groups,
            epilogue: Arc::new(epilogue),
        };
        let extra = [f32_tensor(&[m], &bias), f32_tensor(&oshape, &residual)];
        run_on_tiles(&c, &prim, (&x, &w, &extra), &oshape, &want);
    }
}

/// A bias per channel, a residual and a ReLU that the tiles apply to their sums in registers
/// give the same bits as the unfused convolution followed by the same kernel: with the zero as
/// an IR constant or a broadcast scalar tensor (ResNet's form), bias alone, ReLU alone, bias
/// and residual then ReLU (two images: the residual follows the image); channels
/// that fill a partial panel, a depth beyond one block of k, several blocks of positions, and
/// biases of -0.0 and below zero. On one and two threads.
#[test]
fn bias_and_relu_on_the_tiles_equal_the_epilogue_pass_bit_for_bit() {
    use kuaxin_core::kernel::{Expr, Kernel, Load, Op};
    use kuaxin_core::prim::{BinaryOp, TensorType};
    use kuaxin_core::Backend;
    use std::sync::Arc;
    let mut rng = Rng(91);
    for c in [
        case(&[1, 16, 20, 20], &[40, 16, 3, 3], &[1, 1], &[1, 1], 1),
        case(&[1, 2100, 6, 6], &[36, 2100, 1, 1], &[1, 1], &[1, 1], 1),
        case(&[2, 130, 9, 11], &[33, 130, 1, 1], &[2, 1], &[1, 1], 1),
        case(&[2, 16, 12, 12], &[64, 16, 3, 3], &[1, 1], &[1, 1], 1),
        case(&[2, 16, 7, 9], &[64, 16, 1, 1], &[1, 1], &[1, 1], 1),
        case(&[1, 3, 31, 29], &[40, 3, 3, 3], &[2, 2], &[1, 1], 1),
        // Two groups of two images (gemm, which finishes each group's block in a loop).
        case(&[2, 8, 7, 7], &[6, 4, 3, 3], &[1, 1], &[1, 1], 2),
    ] {
        // Uniform in [-1, 1): about half the sums are negative.
        let x = rng.vec(c.x.iter().product());
        let w = rng.vec(c.w.iter().product());
        let mut oshape = vec![c.x[0], c.w[0]];
        oshape
            .extend((0..c.x.len() - 2).map(|d| {
                (c.x[2 + d] - ((c.w[2 + d] - 1) * c.dilations[d] + 1)) / c.strides[d] + 1
            }));
        let m = oshape[1];
        let mut bias = rng.vec(m);
        let residual = rng.vec(oshape.iter().product());
        bias[0] = -0.0;
        let contiguous = kuaxin_core::tensor::contiguous_strides(&oshape);
        let mut per_channel = vec![0isize; oshape.len()];
        per_channel[1] = 1;
        let scalar = vec![0isize; oshape.len()];
        // (body, loads): arg 1 is the bias, arg 2 a scalar 0.0 tensor.
        let kernels: Vec<(Vec<Op>, Vec<Load>)> = vec![
            (
                vec![
                    op(Expr::Load(0)),
                    op(Expr::Load(1)),
                    op(Expr::Binary(BinaryOp::Add, 0, 1)),
                    op(Expr::Load(2)),
                    op(Expr::Binary(BinaryOp::Max, 2, 3)),
                ],
                vec![
                    load(0, contiguous.clone()),
                    load(1, per_channel.clone()),
                    load(2, scalar.clone()),
                ],
            ),
            (
                vec![
                    op(Expr::Load(1)),
                    op(Expr::Load(0)),
                    op(Expr::Binary(BinaryOp::Add, 0, 1)),
                    op(Expr::Const(0.0)),
                    op(Expr::Binary(BinaryOp::Max, 2, 3)),
                ],
                vec![load(0, contiguous.clone()), load(1, per_channel.clone())],
            ),
            (
                vec![
                    op(Expr::Load(0)),
                    op(Expr::Load(1)),
                    op(Expr::Binary(BinaryOp::Add, 0, 1)),
                ],
                vec![load(0, contiguous.clone()), load(1, per_channel.clone())],
            ),
            (
                vec![
                    op(Expr::Load(0)),
                    op(Expr::Const(0.0)),
                    op(Expr::Binary(BinaryOp::Max, 0, 1)),
                ],
                vec![load(0, contiguous.clone())],
            ),
            // ResNet's skip connection: (x + bias) + residual, then the ReLU.
            (
                vec![
                    op(Expr::Load(0)),
                    op(Expr::Load(1)),
                    op(Expr::Binary(BinaryOp::Add, 0, 1)),
                    op(Expr::Load(3)),
                    op(Expr::Binary(BinaryOp::Add, 3, 2)),
                    op(Expr::Load(2)),
                    op(Expr::Binary(BinaryOp::Max, 4, 5)),
                ],
                vec![
                    load(0, contiguous.clone()),
                    load(1, per_channel.clone()),
                    load(2, scalar.clone()),
                    load(3, contiguous.clone()),
                ],
            ),
        ];
        let wt = Arc::new(f32_tensor(&c.w, &w));
        let out = [TensorType::new(DType::F32, oshape.clone())];
        for (body, loads) in kernels {
            let args_used = loads.iter().map(|l| l.arg).max().unwrap_or(0);
            let kernel = Arc::new(Kernel {
                name: "finish".into(),
                domain: oshape.clone(),
                loads,
                body,
                reduce: None,
                epilogue: vec![],
                out: TensorType::new(DType::F32, oshape.clone()),
                origins: vec![],
            });
            let extra = [
                f32_tensor(&[1, m, 1, 1], &bias),
                f32_tensor(&[], &[0.0]),
                f32_tensor(&oshape, &residual),
            ];
            for threads in [1, 2] {
                let cpu = kuaxin_cpu::CpuBackend::new(Some(threads)).unwrap();
                let xd = cpu.upload(&f32_tensor(&c.x, &x)).unwrap();
                let wd = cpu.upload_shared(&wt).unwrap();
                let extra: Vec<_> = extra[..args_used]
                    .iter()
                    .map(|t| cpu.upload(t).unwrap())
                    .collect();
                let fused = Prim::ConvEpilogue {
                    strides: c.strides.clone(),
                    dilations: c.dilations.clone(),
                    groups: c.groups,
                    epilogue: kernel.clone(),
                };
                let mut args = vec![&xd, &wd];
                args.extend(extra.iter());
                let got = cpu.execute(&fused, &args, &out).unwrap();
                let got = cpu.download(&got[0]).unwrap();
                // Unfused: the convolution, then the kernel over its stored output.
                let conv = Prim::Conv {
                    strides: c.strides.clone(),
                    dilations: c.dilations.clone(),
                    groups: c.groups,
                };
                let y = cpu.execute(&conv, &[&xd, &wd], &out).unwrap();
                let mut kargs = vec![&y[0]];
                kargs.extend(extra.iter());
                let want = cpu
                    .execute(&Prim::Fused(kernel.clone()), &kargs, &out)
                    .unwrap();
                let want = cpu.download(&want[0]).unwrap();
                let bits = |t: &Tensor| match &t.data {
                    Data::F32(v) => v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    _ => unreachable!(),
                };
                let (g, wnt) = (bits(&got), bits(&want));
                let first = g.iter().zip(&wnt).position(|(a, b)| a != b);
                assert!(
                    first.is_none(),
                    "{:?} x {:?}, {} ops, {threads} threads: element {first:?} differs",
                    c.x,
                    c.w,
                    kernel.body.len()
                );
            }
        }
    }
}
