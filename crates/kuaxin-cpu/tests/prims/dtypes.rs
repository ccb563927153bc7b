//! Every dtype through every primitive: each call either works or says Unsupported (never
//! panics), and the dtype-agnostic ops (movement, indexing, reductions) give the same values
//! for every dtype.
use crate::common::*;
use kuaxin_core::prim::{BinaryOp, Prim, ReduceOp, ScatterReduction, UnaryOp};
use kuaxin_core::{DType, Data, Tensor};

const UNARY: [UnaryOp; 29] = {
    use UnaryOp::*;
    [
        Neg, Abs, Sqrt, Exp, Log, Sin, Cos, Tan, Asin, Acos, Atan, Sinh, Cosh, Tanh, Asinh, Acosh,
        Atanh, Erf, Floor, Ceil, Round, Sign, Reciprocal, Sigmoid, Not, BitNot, IsNan, IsPosInf,
        IsNegInf,
    ]
};
const BINARY: [BinaryOp; 22] = {
    use BinaryOp::*;
    [
        Add, Sub, Mul, Div, Pow, Max, Min, Mod, FMod, Eq, Lt, Le, Gt, Ge, And, Or, Xor, BitAnd,
        BitOr, BitXor, Shl, Shr,
    ]
};

/// [[0, 1, 2], [3, 4, 5]] (or, for bool, [[f, t, t], [t, t, t]]) in `dtype`.
fn sample(dtype: DType) -> Tensor {
    Tensor::new(
        vec![2, 3],
        Data::from_f64_iter(dtype, (0..6).map(|v| v as f64)),
    )
    .unwrap()
}

fn ok_or_unsupported(prim: &Prim, ins: &[&Tensor]) -> Option<Vec<Tensor>> {
    match kuaxin_cpu::eval_infer(prim, ins) {
        Ok(out) => Some(out),
        Err(e) if e.is_unsupported() => None,
        Err(e) => panic!("{prim:?} on {}: {e}", ins[0].type_string()),
    }
}

#[test]
fn elementwise_ops_on_every_dtype() {
    for dtype in DType::ALL {
        let x = sample(dtype);
        for op in UNARY {
            if let Some(out) = ok_or_unsupported(&Prim::Unary(op), &[&x]) {
                assert_eq!(out[0].shape, vec![2, 3]);
            }
        }
        for op in BINARY {
            if let Some(out) = ok_or_unsupported(&Prim::Binary(op), &[&x, &x]) {
                assert_eq!(
                    out[0].dtype(),
                    if op.output_is_bool() {
                        DType::Bool
                    } else {
                        dtype
                    }
                );
            }
        }
        // Arithmetic that every numeric dtype has.
        if dtype != DType::Bool {
            for op in [
                BinaryOp::Add,
                BinaryOp::Sub,
                BinaryOp::Mul,
                BinaryOp::Div,
                BinaryOp::Max,
                BinaryOp::Mod,
                BinaryOp::Pow,
            ] {
                assert!(
                    ok_or_unsupported(&Prim::Binary(op), &[&x, &x]).is_some(),
                    "{op:?} on {dtype}"
                );
            }
        }
        for to in DType::ALL {
            let y = run1(Prim::Cast(to), &[&x]);
            let back = y.to_f64_vec();
            let want: Vec<f64> = if to == DType::Bool || dtype == DType::Bool {
                vec![0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
            } else {
                (0..6).map(|v| v as f64).collect()
            };
            assert_eq!(back, want, "{dtype} -> {to}");
        }
        let c = t(&[2, 3], vec![true, false, true, false, true, false]);
        let z = Tensor::zeros(dtype, vec![2, 3]);
        let y = run1(Prim::Where, &[&c, &x, &z]);
        assert_eq!(y.dtype(), dtype);
    }
}

#[test]
fn data_movement_on_every_dtype() {
    for dtype in DType::ALL {
        let x = sample(dtype);
        let xv = x.to_f64_vec();
        let pick = |idx: &[usize]| -> Vec<f64> { idx.iter().map(|&i| xv[i]).collect() };
        let check = |prim: Prim, ins: &[&Tensor], want: Vec<f64>| {
            let y = run1(prim.clone(), ins);
            assert_eq!(y.dtype(), dtype, "{prim:?}");
            assert_eq!(y.to_f64_vec(), want, "{prim:?} on {dtype}");
        };
        check(
            Prim::View {
                shape: vec![3, 2],
                strides: vec![1, 3],
                offset: 0,
            },
            &[&x],
            pick(&[0, 3, 1, 4, 2, 5]),
        );
        let zero = Tensor::new(vec![], Data::zeros(dtype, 1)).unwrap();
        check(
            Prim::PadConstant {
                pads: vec![(0, 0), (1, 0)],
            },
            &[&x, &zero],
            {
                let mut v = vec![0.0];
                v.extend(pick(&[0, 1, 2]));
                v.push(0.0);
                v.extend(pick(&[3, 4, 5]));
                v
            },
        );
        check(
            Prim::Concat { axis: 0 },
            &[&x, &x],
            pick(&[0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]),
        );
        check(
            Prim::Gather { axis: 1 },
            &[&x, &v1(vec![2i64, 0])],
            pick(&[2, 0, 5, 3]),
        );
        check(
            Prim::GatherElements { axis: 0 },
            &[&x, &t(&[1, 3], vec![1i32, 0, 1])],
            pick(&[3, 1, 5]),
        );
        check(
            Prim::GatherNd { batch_dims: 0 },
            &[&x, &t(&[1, 2], vec![1i64, 2])],
            pick(&[5]),
        );
        check(
            Prim::ScatterElements {
                axis: 1,
                reduction: ScatterReduction::None,
            },
            &[
                &x,
                &t(&[2, 1], vec![0i64, 0]),
                &Tensor::zeros(dtype, vec![2, 1]),
            ],
            vec![0.0, xv[1], xv[2], 0.0, xv[4], xv[5]],
        );
        check(
            Prim::ScatterNd {
                reduction: ScatterReduction::None,
            },
            &[
                &x,
                &t(&[1, 1], vec![0i64]),
                &Tensor::zeros(dtype, vec![1, 3]),
            ],
            vec![0.0, 0.0, 0.0, xv[3], xv[4], xv[5]],
        );
        check(
            Prim::Reduce {
                op: ReduceOp::Max,
                axes: vec![1],
            },
            &[&x],
            pick(&[2, 5]),
        );
        check(
            Prim::Reduce {
                op: ReduceOp::Min,
                axes: vec![0],
            },
            &[&x],
            pick(&[0, 1, 2]),
        );
        let am = run1(
            Prim::ArgReduce {
                max: true,
                axis: 1,
                select_last: false,
            },
            &[&x],
        );
        assert_eq!(
            i64s(&am),
            if dtype == DType::Bool {
                vec![1, 0]
            } else {
                vec![2, 2]
            }
        );
        let cs = run1(
            Prim::Cumulative {
                prod: false,
                axis: 1,
                exclusive: false,
                reverse: false,
            },
            &[&x],
        );
        assert_eq!(cs.dtype(), dtype);
        if dtype != DType::Bool {
            assert_eq!(
                cs.to_f64_vec(),
                vec![0.0, 1.0, 3.0, 3.0, 7.0, 12.0],
                "{dtype}"
            );
        }
        for host in [
            kuaxin_core::prim::HostOp::NonZero,
            kuaxin_core::prim::HostOp::Unique {
                axis: None,
                sorted: true,
            },
        ] {
            run(Prim::Host(host), &[&x]);
        }
        let tk = run(
            Prim::Host(kuaxin_core::prim::HostOp::TopK {
                k: 1,
                axis: 1,
                largest: true,
                sorted: true,
            }),
            &[&x],
        );
        assert_eq!(tk[0].to_f64_vec(), pick(&[2, 5]));
        ok_or_unsupported(&Prim::MatMul, &[&x, &Tensor::zeros(dtype, vec![3, 2])]);
    }
}
