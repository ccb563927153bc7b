use crate::common::*;
use half::{bf16, f16};
use kuaxin_core::prim::{BinaryOp as B, Prim, UnaryOp as U};
use kuaxin_core::{DType, Data, Tensor};

fn un(op: U, x: &Tensor) -> Tensor {
    run1(Prim::Unary(op), &[x])
}

fn bin(op: B, a: &Tensor, b: &Tensor) -> Tensor {
    run1(Prim::Binary(op), &[a, b])
}

#[test]
fn float_unary_basics() {
    let x = v1(vec![4.0f32, 1.0, 0.25]);
    assert_eq!(f32s(&un(U::Sqrt, &x)), vec![2.0, 1.0, 0.5]);
    assert_eq!(f32s(&un(U::Reciprocal, &x)), vec![0.25, 1.0, 4.0]);
    assert_eq!(f32s(&un(U::Neg, &x)), vec![-4.0, -1.0, -0.25]);
    let z = v1(vec![0.0f32]);
    assert_eq!(f32s(&un(U::Exp, &z)), vec![1.0]);
    assert_eq!(f32s(&un(U::Cos, &z)), vec![1.0]);
    assert_eq!(f32s(&un(U::Sin, &z)), vec![0.0]);
    assert_eq!(
        f32s(&un(U::Log, &v1(vec![1.0f32, 0.0]))),
        vec![0.0, f32::NEG_INFINITY]
    );
    let one = v1(vec![1.0f64]);
    assert_close(
        &f64s(&un(U::Atan, &one)),
        &[std::f64::consts::FRAC_PI_4],
        1e-15,
        0.0,
    );
    assert_close(
        &f64s(&un(U::Asin, &one)),
        &[std::f64::consts::FRAC_PI_2],
        1e-15,
        0.0,
    );
    assert_close(&f64s(&un(U::Acosh, &one)), &[0.0], 0.0, 0.0);
    assert_close(&f64s(&un(U::Tanh, &one)), &[0.7615941559557649], 1e-15, 0.0);
    assert_eq!(
        f32s(&un(U::Abs, &v1(vec![-3.5f32, 2.0, -0.0]))),
        vec![3.5, 2.0, 0.0]
    );
    assert_eq!(
        f32s(&un(U::Floor, &v1(vec![-1.5f32, 1.5]))),
        vec![-2.0, 1.0]
    );
    assert_eq!(f32s(&un(U::Ceil, &v1(vec![-1.5f32, 1.5]))), vec![-1.0, 2.0]);
}

#[test]
fn round_half_to_even() {
    let x = v1(vec![0.5f32, 1.5, 2.5, -0.5, -1.5, 2.4, 2.6, -2.5]);
    assert_eq!(
        f32s(&un(U::Round, &x)),
        vec![0.0, 2.0, 2.0, -0.0, -2.0, 2.0, 3.0, -2.0]
    );
    let h = v1(vec![f16::from_f32(2.5), f16::from_f32(3.5)]);
    assert_eq!(
        un(U::Round, &h).data,
        Data::F16(vec![f16::from_f32(2.0), f16::from_f32(4.0)])
    );
}

#[test]
fn sign_float_and_int() {
    assert_same_f32(
        &f32s(&un(U::Sign, &v1(vec![-2.0f32, 0.0, 3.0, f32::NAN]))),
        &[-1.0, 0.0, 1.0, f32::NAN],
    );
    assert_eq!(
        un(U::Sign, &v1(vec![-5i32, 0, 7])).data,
        Data::I32(vec![-1, 0, 1])
    );
    assert_eq!(un(U::Sign, &v1(vec![0u8, 9])).data, Data::U8(vec![0, 1]));
}

#[test]
fn sigmoid_is_stable() {
    let y = f32s(&un(
        U::Sigmoid,
        &v1(vec![0.0f32, 1.0, -1.0, 100.0, -100.0, -1000.0, 1000.0]),
    ));
    assert_close(
        &y.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        &[
            0.5,
            0.7310585786300049,
            0.2689414213699951,
            1.0,
            3.720075976020836e-44,
            0.0,
            1.0,
        ],
        1e-6,
        1e-45,
    );
    assert!(y.iter().all(|v| !v.is_nan()));
}

#[test]
fn erf_accuracy() {
    // Reference values: Python's math.erf (the C library's erf), at the f64 inputs and at
    // the inputs rounded to f32.
    let xs = [
        0.0, 1e-10, 0.1, -0.3, 0.5, 0.84375, 1.0, 1.25, 2.0, 2.857, 3.5, 5.0, 7.0, -7.0,
    ];
    let want64 = [
        0.0,
        1.1283791670955126e-10,
        0.1124629160182849,
        -0.3286267594591274,
        0.5204998778130465,
        0.7672256612323416,
        0.8427007929497149,
        0.9229001282564582,
        0.9953222650189527,
        0.9999466417399131,
        0.9999992569016276,
        0.9999999999984626,
        1.0,
        -1.0,
    ];
    let want32 = [
        0.0,
        1.1283791821609903e-10,
        0.11246291768297051,
        -0.32862677175271543,
        0.5204998778130465,
        0.7672256612323416,
        0.8427007929497149,
        0.9229001282564582,
        0.9953222650189527,
        0.9999466417761234,
        0.9999992569016276,
        0.9999999999984626,
        1.0,
        -1.0,
    ];
    assert_close(&f64s(&un(U::Erf, &v1(xs.to_vec()))), &want64, 3e-16, 0.0);
    let xf: Vec<f32> = xs.iter().map(|&x| x as f32).collect();
    let yf: Vec<f64> = f32s(&un(U::Erf, &v1(xf)))
        .into_iter()
        .map(|v| v as f64)
        .collect();
    // f32 erf is the vectorisable one (vmath.rs): within 6 ulp, i.e. 6 * 2^-23 relative.
    assert_close(&yf, &want32, 7.2e-7, 0.0);
    assert!(f32s(&un(U::Erf, &v1(vec![f32::NAN])))[0].is_nan());
    assert_eq!(
        f32s(&un(U::Erf, &v1(vec![f32::INFINITY, f32::NEG_INFINITY]))),
        vec![1.0, -1.0]
    );
}

#[test]
fn float_tests_give_bool() {
    let x = v1(vec![1.0f32, f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
    assert_eq!(bools(&un(U::IsNan, &x)), vec![false, true, false, false]);
    assert_eq!(bools(&un(U::IsPosInf, &x)), vec![false, false, true, false]);
    assert_eq!(bools(&un(U::IsNegInf, &x)), vec![false, false, false, true]);
    assert_eq!(bools(&un(U::IsNan, &v1(vec![3i32]))), vec![false]);
}

#[test]
fn half_math_rounds_through_f32() {
    let a = v1(vec![f16::from_f32(1.5), f16::from_f32(2.25)]);
    let b = v1(vec![f16::from_f32(0.25), f16::from_f32(1.0)]);
    assert_eq!(
        bin(B::Add, &a, &b).data,
        Data::F16(vec![f16::from_f32(1.75), f16::from_f32(3.25)])
    );
    // 1 + 2^-11 is a tie between 1 and 1 + 2^-10 in f16: rounds to even (1).
    let one = v1(vec![f16::ONE]);
    let tiny = v1(vec![f16::from_f32(2f32.powi(-11))]);
    assert_eq!(bin(B::Add, &one, &tiny).data, Data::F16(vec![f16::ONE]));
    let a = v1(vec![bf16::from_f32(3.0)]);
    let b = v1(vec![bf16::from_f32(2.0)]);
    assert_eq!(
        bin(B::Div, &a, &b).data,
        Data::BF16(vec![bf16::from_f32(1.5)])
    );
}

#[test]
fn integer_division_and_remainders() {
    let a = v1(vec![7i32, -7, 7, -7, 5, i32::MIN, 0]);
    let b = v1(vec![2i32, 2, -2, -2, 0, -1, 3]);
    assert_eq!(
        bin(B::Div, &a, &b).data,
        Data::I32(vec![3, -3, -3, 3, 0, i32::MIN, 0])
    );
    let a = v1(vec![-7i64, 7, -7, 7, 5]);
    let b = v1(vec![3i64, -3, -3, 3, 0]);
    assert_eq!(bin(B::Mod, &a, &b).data, Data::I64(vec![2, -2, -1, 1, 0]));
    assert_eq!(bin(B::FMod, &a, &b).data, Data::I64(vec![-1, 1, -1, 1, 0]));
    let a = v1(vec![7u8, 200]);
    let b = v1(vec![0u8, 7]);
    assert_eq!(bin(B::Div, &a, &b).data, Data::U8(vec![0, 28]));
    assert_eq!(bin(B::Mod, &a, &b).data, Data::U8(vec![0, 4]));
}

#[test]
fn float_remainders() {
    let a = v1(vec![-7.5f64, 7.5, -7.5, 7.5, 6.0, -6.0]);
    let b = v1(vec![2.0f64, -2.0, -2.0, 2.0, 3.0, 3.0]);
    let m = f64s(&bin(B::Mod, &a, &b));
    assert_eq!(m, vec![0.5, -0.5, -1.5, 1.5, 0.0, 0.0]);
    assert!(m[5].is_sign_positive(), "numpy: mod(-6, 3) = +0");
    assert_eq!(
        f64s(&bin(B::FMod, &a, &b)),
        vec![-1.5, 1.5, -1.5, 1.5, 0.0, -0.0]
    );
    assert!(f64s(&bin(B::Mod, &v1(vec![1.0f64]), &v1(vec![0.0f64])))[0].is_nan());
}

#[test]
fn integer_wrapping() {
    assert_eq!(
        bin(B::Add, &v1(vec![127i8, -128]), &v1(vec![1i8, -1])).data,
        Data::I8(vec![-128, 127])
    );
    assert_eq!(
        bin(B::Sub, &v1(vec![0u8]), &v1(vec![1u8])).data,
        Data::U8(vec![255])
    );
    assert_eq!(
        bin(B::Mul, &v1(vec![65536i32]), &v1(vec![65536i32])).data,
        Data::I32(vec![0])
    );
    assert_eq!(
        un(U::Abs, &v1(vec![-128i8, -5])).data,
        Data::I8(vec![-128, 5])
    );
    assert_eq!(
        un(U::Neg, &v1(vec![-128i8, 5])).data,
        Data::I8(vec![-128, -5])
    );
    assert_eq!(un(U::Neg, &v1(vec![1u32])).data, Data::U32(vec![u32::MAX]));
}

#[test]
fn integer_pow() {
    let a = v1(vec![2i64, 3, 2, -1, 1, -2, 0, -1]);
    let b = v1(vec![10i64, 0, -1, -3, -5, 3, 0, -4]);
    assert_eq!(
        bin(B::Pow, &a, &b).data,
        Data::I64(vec![1024, 1, 0, -1, 1, -8, 1, 1])
    );
    assert_eq!(
        bin(B::Pow, &v1(vec![2i8, 3]), &v1(vec![7i8, 5])).data,
        Data::I8(vec![-128, -13])
    );
    assert_eq!(
        bin(B::Pow, &v1(vec![3u8]), &v1(vec![5u8])).data,
        Data::U8(vec![243])
    );
    let p = f64s(&bin(
        B::Pow,
        &v1(vec![2.0f64, 9.0]),
        &v1(vec![0.5f64, -0.5]),
    ));
    assert_close(&p, &[std::f64::consts::SQRT_2, 1.0 / 3.0], 1e-15, 0.0);
}

#[test]
fn max_min_propagate_nan() {
    let a = v1(vec![1.0f32, f32::NAN, 3.0, -1.0]);
    let b = v1(vec![f32::NAN, 2.0, 1.0, 4.0]);
    assert_same_f32(&f32s(&bin(B::Max, &a, &b)), &[f32::NAN, f32::NAN, 3.0, 4.0]);
    assert_same_f32(
        &f32s(&bin(B::Min, &a, &b)),
        &[f32::NAN, f32::NAN, 1.0, -1.0],
    );
    assert_eq!(
        bin(B::Max, &v1(vec![-3i16, 9]), &v1(vec![2i16, 1])).data,
        Data::I16(vec![2, 9])
    );
    assert_eq!(
        bin(B::Min, &v1(vec![u64::MAX, 9]), &v1(vec![2u64, 10])).data,
        Data::U64(vec![2, 9])
    );
}

#[test]
fn comparisons_give_bool() {
    let a = v1(vec![1.0f32, f32::NAN, 3.0]);
    let b = v1(vec![2.0f32, 1.0, 3.0]);
    assert_eq!(bools(&bin(B::Lt, &a, &b)), vec![true, false, false]);
    assert_eq!(bools(&bin(B::Le, &a, &b)), vec![true, false, true]);
    assert_eq!(bools(&bin(B::Gt, &a, &b)), vec![false, false, false]);
    assert_eq!(bools(&bin(B::Ge, &a, &b)), vec![false, false, true]);
    assert_eq!(bools(&bin(B::Eq, &a, &b)), vec![false, false, true]);
    assert_eq!(
        bools(&bin(B::Eq, &v1(vec![f32::NAN]), &v1(vec![f32::NAN]))),
        vec![false]
    );
    assert_eq!(
        bools(&bin(B::Lt, &v1(vec![-1i8, 5]), &v1(vec![0i8, 5]))),
        vec![true, false]
    );
    assert_eq!(
        bools(&bin(B::Gt, &v1(vec![u64::MAX]), &v1(vec![1u64]))),
        vec![true]
    );
    assert_eq!(
        bools(&bin(
            B::Lt,
            &v1(vec![false, true, false]),
            &v1(vec![true, false, false])
        )),
        vec![true, false, false]
    );
}

#[test]
fn logic_and_bits() {
    let a = v1(vec![true, true, false, false]);
    let b = v1(vec![true, false, true, false]);
    assert_eq!(bools(&bin(B::And, &a, &b)), vec![true, false, false, false]);
    assert_eq!(bools(&bin(B::Or, &a, &b)), vec![true, true, true, false]);
    assert_eq!(bools(&bin(B::Xor, &a, &b)), vec![false, true, true, false]);
    assert_eq!(bools(&un(U::Not, &a)), vec![false, false, true, true]);
    let x = v1(vec![0b1100u8, 0xF0]);
    let y = v1(vec![0b1010u8, 0x0F]);
    assert_eq!(bin(B::BitAnd, &x, &y).data, Data::U8(vec![0b1000, 0]));
    assert_eq!(bin(B::BitOr, &x, &y).data, Data::U8(vec![0b1110, 0xFF]));
    assert_eq!(bin(B::BitXor, &x, &y).data, Data::U8(vec![0b0110, 0xFF]));
    assert_eq!(
        un(U::BitNot, &v1(vec![0u8, 0xF0])).data,
        Data::U8(vec![255, 0x0F])
    );
    assert_eq!(
        un(U::BitNot, &v1(vec![0i8, 5])).data,
        Data::I8(vec![-1, -6])
    );
}

#[test]
fn shifts_saturate_to_zero() {
    let x = v1(vec![1u8, 1, 200, 16, 255]);
    let s = v1(vec![7u8, 8, 9, 2, 0]);
    assert_eq!(bin(B::Shl, &x, &s).data, Data::U8(vec![128, 0, 0, 64, 255]));
    assert_eq!(bin(B::Shr, &x, &s).data, Data::U8(vec![0, 0, 0, 4, 255]));
    assert_eq!(
        bin(B::Shl, &v1(vec![1u64, 1]), &v1(vec![63u64, 64])).data,
        Data::U64(vec![1 << 63, 0])
    );
    assert_eq!(
        bin(B::Shr, &v1(vec![u32::MAX]), &v1(vec![u32::MAX])).data,
        Data::U32(vec![0])
    );
}

#[test]
fn where_selects() {
    let c = v1(vec![true, false, true]);
    let a = v1(vec![1i64, 2, 3]);
    let b = v1(vec![10i64, 20, 30]);
    assert_eq!(
        run1(Prim::Where, &[&c, &a, &b]).data,
        Data::I64(vec![1, 20, 3])
    );
}

fn cast(x: &Tensor, to: DType) -> Data {
    run1(Prim::Cast(to), &[x]).data
}

#[test]
fn cast_float_to_int_truncates_and_saturates() {
    let x = v1(vec![-1.7f32, 2.9, f32::NAN, 1e10, -1e10, f32::INFINITY]);
    assert_eq!(
        cast(&x, DType::I32),
        Data::I32(vec![-1, 2, 0, i32::MAX, i32::MIN, i32::MAX])
    );
    assert_eq!(cast(&x, DType::U8), Data::U8(vec![0, 2, 0, 255, 0, 255]));
    assert_eq!(
        cast(&x, DType::I64),
        Data::I64(vec![-1, 2, 0, 10_000_000_000, -10_000_000_000, i64::MAX])
    );
    let h = v1(vec![f16::from_f32(300.0), f16::from_f32(-2.5)]);
    assert_eq!(cast(&h, DType::I8), Data::I8(vec![127, -2]));
}

#[test]
fn cast_bool_and_ints() {
    let x = v1(vec![0.0f32, -0.0, 0.5, f32::NAN]);
    assert_eq!(
        cast(&x, DType::Bool),
        Data::Bool(vec![false, false, true, true])
    );
    assert_eq!(
        cast(&v1(vec![true, false]), DType::F32),
        Data::F32(vec![1.0, 0.0])
    );
    assert_eq!(
        cast(&v1(vec![true, false]), DType::I64),
        Data::I64(vec![1, 0])
    );
    assert_eq!(
        cast(&v1(vec![0i64, 7]), DType::Bool),
        Data::Bool(vec![false, true])
    );
    assert_eq!(
        cast(&v1(vec![300i32, -1]), DType::U8),
        Data::U8(vec![44, 255])
    );
    assert_eq!(
        cast(&v1(vec![-1i64]), DType::U64),
        Data::U64(vec![u64::MAX])
    );
    assert_eq!(cast(&v1(vec![u64::MAX]), DType::I64), Data::I64(vec![-1]));
    assert_eq!(cast(&v1(vec![65535u16]), DType::I16), Data::I16(vec![-1]));
}

#[test]
fn cast_64_bit_ints_to_float() {
    assert_eq!(
        cast(&v1(vec![u64::MAX]), DType::F32),
        Data::F32(vec![18446744073709551616.0])
    );
    assert_eq!(
        cast(&v1(vec![(1u64 << 63) + 1]), DType::F64),
        Data::F64(vec![9223372036854775808.0])
    );
    // 2^53 + 1 is a tie between 2^53 and 2^53 + 2: to even, 2^53.
    assert_eq!(
        cast(&v1(vec![(1i64 << 53) + 1]), DType::F64),
        Data::F64(vec![9007199254740992.0])
    );
    assert_eq!(
        cast(&v1(vec![i64::MIN]), DType::F32),
        Data::F32(vec![-9223372036854775808.0])
    );
    assert_eq!(
        cast(&v1(vec![u64::MAX]), DType::F16),
        Data::F16(vec![f16::INFINITY])
    );
    assert_eq!(
        cast(&v1(vec![2049i32]), DType::F16),
        Data::F16(vec![f16::from_f32(2048.0)])
    );
}

#[test]
fn cast_to_half_rounds_to_nearest_even() {
    let x = v1(vec![
        1.0 + 2f32.powi(-11),
        1.0 + 3.0 * 2f32.powi(-11),
        70000.0,
        65504.0,
    ]);
    let want: Vec<f16> = vec![
        f16::ONE,
        f16::from_f32(1.0 + 2f32.powi(-9)),
        f16::INFINITY,
        f16::MAX,
    ];
    assert_eq!(cast(&x, DType::F16), Data::F16(want));
    let x = v1(vec![1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8)]);
    assert_eq!(
        cast(&x, DType::BF16),
        Data::BF16(vec![bf16::ONE, bf16::from_f32(1.0 + 2f32.powi(-6))])
    );
    let x = v1(vec![1.0 + 2f64.powi(-11) + 2f64.powi(-40)]);
    assert_eq!(
        cast(&x, DType::F16),
        Data::F16(vec![f16::from_f32(1.0 + 2f32.powi(-10))])
    );
    // The same just above a bf16 tie, and exact ties still going to even.
    let x = v1(vec![
        1.0 + 2f64.powi(-8) + 2f64.powi(-40),
        1.0 + 2f64.powi(-8),
        -(1.0 + 2f64.powi(-8) + 2f64.powi(-40)),
        1e300,
        1e-300,
    ]);
    let want = vec![
        bf16::from_f32(1.0 + 2f32.powi(-7)),
        bf16::ONE,
        bf16::from_f32(-(1.0 + 2f32.powi(-7))),
        bf16::INFINITY,
        bf16::ZERO,
    ];
    assert_eq!(cast(&x, DType::BF16), Data::BF16(want));
    let x = v1(vec![
        65519.99f64,
        65520.0,
        2f64.powi(-25) + 2f64.powi(-60),
        2f64.powi(-25),
        f64::NAN,
    ]);
    let Data::F16(h) = cast(&x, DType::F16) else {
        panic!()
    };
    assert_eq!(
        &h[..4],
        &[f16::MAX, f16::INFINITY, f16::from_bits(1), f16::ZERO]
    );
    assert!(h[4].is_nan());
    assert_eq!(
        cast(&v1(vec![f16::from_f32(1.5)]), DType::F64),
        Data::F64(vec![1.5])
    );
}

#[test]
fn large_elementwise_runs_in_parallel_and_matches() {
    let n = 300_001;
    let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let b: Vec<f32> = (0..n).map(|i| (i % 7) as f32).collect();
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    let cpu = kuaxin_cpu::CpuBackend::new(Some(2)).unwrap();
    let out = cpu.install(|| bin(B::Mul, &v1(a), &v1(b)));
    assert_eq!(f32s(&out), want);
}

#[test]
fn unsupported_combinations_are_errors() {
    let e = err(Prim::Unary(U::Sin), &[&v1(vec![1i32])]);
    assert!(e.is_unsupported(), "{e}");
    let e = err(
        Prim::Binary(B::Shl),
        &[&v1(vec![1.0f32]), &v1(vec![1.0f32])],
    );
    assert!(e.is_unsupported(), "{e}");
    err(Prim::Binary(B::Add), &[&v1(vec![1i32]), &v1(vec![1i64])]);
    err(Prim::Binary(B::Add), &[&v1(vec![1i32]), &v1(vec![1i32, 2])]);
}
