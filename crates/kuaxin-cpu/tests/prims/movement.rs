use crate::common::*;
use kuaxin_core::prim::Prim;
use kuaxin_core::Data;

fn view(shape: &[usize], strides: &[isize], offset: usize) -> Prim {
    Prim::View {
        shape: shape.to_vec(),
        strides: strides.to_vec(),
        offset,
    }
}

/// Every element of the view `shape` / `strides` / `offset` of `x`, by its definition.
fn viewed<T: Copy>(x: &[T], shape: &[usize], strides: &[isize], offset: usize) -> Vec<T> {
    let n: usize = shape.iter().product();
    (0..n)
        .map(|mut e| {
            let mut at = offset as isize;
            for (&d, &s) in shape.iter().zip(strides).rev() {
                at += (e % d) as isize * s;
                e /= d;
            }
            x[at as usize]
        })
        .collect()
}

#[test]
fn transposing_views_match_the_definition() {
    // Views whose last axis is strided and whose next-to-last has unit stride: the blocked
    // layout read back (two images of three blocks of 55 x 55, whose parallel chunks of rows
    // cross planes), a reversed last axis from an offset, planes of their own stride, more
    // columns than a tile; groups of sixteen rows and columns (32-bit elements go through
    // registers sixteen by sixteen) with rows and columns left over, columns reversed, and
    // rows per plane not a multiple of sixteen, whose chunks start inside a plane.
    let cases: [(Vec<usize>, Vec<isize>, usize); 7] = [
        (
            vec![2, 3, 16, 3025],
            vec![3 * 3025 * 16, 3025 * 16, 1, 16],
            0,
        ),
        (vec![5, 7], vec![1, -5], 30),
        (vec![3, 4, 70], vec![600, 1, 8], 2),
        (vec![2, 200], vec![1, 3], 1),
        (vec![40, 37], vec![1, -41], 41 * 36 + 3),
        (vec![3, 24, 1500], vec![24 * 1500, 1, 24], 0),
        (vec![33, 20], vec![1, 40], 5),
    ];
    for (shape, strides, offset) in cases {
        let reach = shape
            .iter()
            .zip(&strides)
            .map(|(&d, &s)| (d as isize - 1) * s.max(0))
            .sum::<isize>() as usize;
        let x: Vec<f32> = (0..offset + reach + 1).map(|i| i as f32).collect();
        let want = viewed(&x, &shape, &strides, offset);
        let y = run1(view(&shape, &strides, offset), &[&v1(x)]);
        assert_eq!(y.shape, shape);
        assert_eq!(
            y.data,
            Data::F32(want),
            "{shape:?} / {strides:?} from {offset}"
        );
        // Other widths of element: 32-bit integers (the registers' path too), 64-bit.
        let n = offset + reach + 1;
        let xi: Vec<i32> = (0..n as i32).map(|i| i.wrapping_mul(-7919)).collect();
        let want = Data::I32(viewed(&xi, &shape, &strides, offset));
        let y = run1(view(&shape, &strides, offset), &[&t(&[n], xi)]);
        assert_eq!(y.data, want, "i32 {shape:?} / {strides:?} from {offset}");
        let xl: Vec<i64> = (0..n as i64).map(|i| i << 33).collect();
        let want = Data::I64(viewed(&xl, &shape, &strides, offset));
        let y = run1(view(&shape, &strides, offset), &[&t(&[n], xl)]);
        assert_eq!(y.data, want, "i64 {shape:?} / {strides:?} from {offset}");
    }
}

#[test]
fn view_transpose_reverse_expand_diagonal() {
    let x = t(&[2, 3], vec![1i32, 2, 3, 4, 5, 6]);
    let y = run1(view(&[3, 2], &[1, 3], 0), &[&x]);
    assert_eq!(
        (y.shape.clone(), y.data),
        (vec![3, 2], Data::I32(vec![1, 4, 2, 5, 3, 6]))
    );
    let y = run1(view(&[6], &[-1], 5), &[&x]);
    assert_eq!(y.data, Data::I32(vec![6, 5, 4, 3, 2, 1]));
    let y = run1(view(&[2, 2, 3], &[0, 3, 1], 0), &[&x]);
    assert_eq!(y.data, Data::I32(vec![1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6]));
    let y = run1(view(&[2], &[4], 0), &[&x]);
    assert_eq!(y.data, Data::I32(vec![1, 5]));
    // x[:, ::-2]: columns 2 and 0.
    let y = run1(view(&[2, 2], &[3, -2], 2), &[&x]);
    assert_eq!(y.data, Data::I32(vec![3, 1, 6, 4]));
    let y = run1(view(&[], &[], 4), &[&x]);
    assert_eq!((y.shape.clone(), y.data), (vec![], Data::I32(vec![5])));
    let y = run1(view(&[0, 3], &[3, 1], 0), &[&x]);
    assert_eq!(y.data, Data::I32(vec![]));
    // Sliding windows of 3 with step 1 over [1..6].
    let y = run1(view(&[4, 3], &[1, 1], 0), &[&x]);
    assert_eq!(y.data, Data::I32(vec![1, 2, 3, 2, 3, 4, 3, 4, 5, 4, 5, 6]));
}

#[test]
fn view_out_of_bounds_is_an_error() {
    let x = v1(vec![1.0f32, 2.0, 3.0]);
    err(view(&[3], &[1], 1), &[&x]);
    err(view(&[2], &[-1], 0), &[&x]);
    err(view(&[2], &[isize::MAX], 0), &[&x]);
}

#[test]
fn large_transpose_in_parallel() {
    let (r, c) = (513, 301);
    let x = t(&[r, c], (0..r * c).map(|i| i as u32).collect());
    let cpu = kuaxin_cpu::CpuBackend::new(Some(2)).unwrap();
    let y = cpu.install(|| run1(view(&[c, r], &[1, c as isize], 0), &[&x]));
    let want: Vec<u32> = (0..c)
        .flat_map(|j| (0..r).map(move |i| (i * c + j) as u32))
        .collect();
    assert_eq!(y.data, Data::U32(want));
}

#[test]
fn pad_constant() {
    let x = t(&[2, 2], vec![1.0f32, 2.0, 3.0, 4.0]);
    let y = run1(
        Prim::PadConstant {
            pads: vec![(1, 0), (0, 2)],
        },
        &[&x, &scalar(9.0f32)],
    );
    assert_eq!(y.shape, vec![3, 4]);
    assert_eq!(
        f32s(&y),
        vec![9.0, 9.0, 9.0, 9.0, 1.0, 2.0, 9.0, 9.0, 3.0, 4.0, 9.0, 9.0]
    );
    let y = run1(
        Prim::PadConstant { pads: vec![(2, 1)] },
        &[&v1(vec![true]), &scalar(false)],
    );
    assert_eq!(y.data, Data::Bool(vec![false, false, true, false]));
    err(
        Prim::PadConstant { pads: vec![(1, 1)] },
        &[&v1(vec![1i32]), &scalar(1i64)],
    );
}

#[test]
fn concat_along_axes() {
    let a = t(&[2, 1], vec![1i64, 2]);
    let b = t(&[2, 2], vec![3i64, 4, 5, 6]);
    let y = run1(Prim::Concat { axis: 1 }, &[&a, &b]);
    assert_eq!(
        (y.shape.clone(), i64s(&y)),
        (vec![2, 3], vec![1, 3, 4, 2, 5, 6])
    );
    let c = t(&[1, 2], vec![7i64, 8]);
    let y = run1(Prim::Concat { axis: 0 }, &[&b, &c]);
    assert_eq!(
        (y.shape.clone(), i64s(&y)),
        (vec![3, 2], vec![3, 4, 5, 6, 7, 8])
    );
    err(Prim::Concat { axis: 0 }, &[&a, &b]);
}
