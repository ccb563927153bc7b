//! Round trips, files written by numpy (embedded by gen_fixtures.py), malformed input,
//! and (when the project venv exists) numpy reading the files we write.
mod fixtures;

use std::path::PathBuf;

use half::{bf16, f16};
use kuaxin_core::error::ErrorKind;
use kuaxin_core::{DType, Data, Tensor};
use kuaxin_npy::{read_npy, read_npy_bytes, to_npy_bytes, write_npy};

fn t<T: kuaxin_core::tensor::Element>(shape: &[usize], v: Vec<T>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

/// One tensor per dtype, with extreme values.
fn samples() -> Vec<Tensor> {
    vec![
        t(
            &[2, 3],
            vec![
                1.5f32,
                -0.0,
                f32::INFINITY,
                f32::MIN_POSITIVE,
                f32::MAX,
                -7.25,
            ],
        ),
        t(&[3], vec![1e300f64, -2.5, f64::NEG_INFINITY]),
        t(
            &[2, 2],
            vec![
                f16::from_f32(0.5),
                f16::MAX,
                f16::MIN_POSITIVE_SUBNORMAL,
                f16::NEG_INFINITY,
            ],
        ),
        t(&[4], vec![i8::MIN, i8::MAX, 0, -1]),
        t(&[3], vec![i16::MIN, i16::MAX, 258]),
        t(&[2, 1, 2], vec![i32::MIN, i32::MAX, 1, -1]),
        t(&[3], vec![i64::MIN, i64::MAX, -1]),
        t(&[3], vec![0u8, 255, 7]),
        t(&[2], vec![u16::MAX, 1]),
        t(&[2], vec![u32::MAX, 0x0102_0304]),
        t(&[2], vec![u64::MAX, 0]),
        t(&[2, 3], vec![true, false, true, false, false, true]),
        Tensor::scalar(3.5f32),
        Tensor::zeros(DType::I64, vec![0, 3]),
        Tensor::zeros(DType::U8, vec![4, 0]),
        Tensor::zeros(DType::F32, vec![1, 1, 1, 1, 1, 1, 1]),
    ]
}

#[test]
fn round_trip_every_dtype() {
    let ss = samples();
    for d in DType::ALL {
        if d != DType::BF16 {
            assert!(ss.iter().any(|s| s.dtype() == d), "no sample of {d}");
        }
    }
    for s in ss {
        let bytes = to_npy_bytes(&s);
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0, "data not 64-byte aligned");
        assert_eq!(bytes[9 + hlen], b'\n');
        let back = read_npy_bytes(&bytes, "mem").unwrap();
        assert_eq!(back, s, "{}", s.type_string());
    }
}

#[test]
fn bf16_is_written_as_f32() {
    let vals = vec![
        bf16::from_f32(1.0),
        bf16::from_f32(-3.140625),
        bf16::MAX,
        bf16::MIN_POSITIVE,
        bf16::NEG_INFINITY,
    ];
    let s = t(&[5], vals.clone());
    let back = read_npy_bytes(&to_npy_bytes(&s), "mem").unwrap();
    assert_eq!(back.dtype(), DType::F32);
    assert_eq!(back.shape, vec![5]);
    assert_eq!(
        back.data,
        Data::F32(vals.iter().map(|v| v.to_f32()).collect())
    );
    assert_eq!(back.cast(DType::BF16), s);
}

#[test]
fn file_round_trip_and_io_errors() {
    let dir = tempdir("files");
    let p = dir.join("a.npy");
    let s = t(&[2, 2], vec![1i32, 2, 3, 4]);
    write_npy(&p, &s).unwrap();
    assert_eq!(read_npy(&p).unwrap(), s);
    let missing = dir.join("missing.npy");
    let e = read_npy(&missing).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(e.message.contains("missing.npy"), "{e}");
    let e = write_npy(&dir.join("no-such-dir").join("x.npy"), &s).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Io);
    assert!(e.message.contains("x.npy"), "{e}");
    // Errors from a malformed file name the file.
    let bad = dir.join("bad.npy");
    std::fs::write(&bad, &fixtures::F32_C[..50]).unwrap();
    let e = read_npy(&bad).unwrap_err();
    assert!(e.message.contains("bad.npy"), "{e}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn large_header_uses_version_2() {
    let s = Tensor::zeros(DType::U8, vec![1; 30_000]);
    let bytes = to_npy_bytes(&s);
    assert_eq!(&bytes[..8], b"\x93NUMPY\x02\x00");
    let hlen = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    assert_eq!((12 + hlen) % 64, 0);
    assert_eq!(read_npy_bytes(&bytes, "mem").unwrap(), s);
}

fn read(bytes: &[u8]) -> Tensor {
    read_npy_bytes(bytes, "fixture").unwrap()
}

#[test]
fn reads_numpy_files() {
    use fixtures::*;
    assert_eq!(
        read(F32_C),
        t(
            &[2, 3],
            vec![1.5f32, -2.25, f32::INFINITY, -0.0, 1e-38, 3.4e38]
        )
    );
    assert!(matches!(&read(F32_C).data, Data::F32(v) if v[3].is_sign_negative()));
    assert_eq!(read(F64_BE), t(&[3], vec![1.0f64, -2.5, 1e300]));
    let h = |x: f32| f16::from_f32(x);
    assert_eq!(
        read(F16_LE),
        t(
            &[2, 2],
            vec![h(0.5), h(-1.0), h(65504.0), f16::MIN_POSITIVE_SUBNORMAL]
        )
    );
    assert_eq!(read(F16_BE), t(&[2], vec![h(0.5), h(-3.0)]));
    assert_eq!(read(I8), t(&[4], vec![-128i8, 127, 0, -1]));
    assert_eq!(read(I16_BE), t(&[3], vec![-32768i16, 32767, 258]));
    assert_eq!(read(I32_3D), t(&[2, 1, 2], vec![1i32, -2, 300000, -400000]));
    assert_eq!(read(I64), t(&[3], vec![i64::MIN, i64::MAX, -1]));
    assert_eq!(read(U8), t(&[3], vec![0u8, 255, 7]));
    assert_eq!(read(U16), t(&[2], vec![65535u16, 1]));
    assert_eq!(read(U32_BE), t(&[2], vec![u32::MAX, 0x0102_0304]));
    assert_eq!(read(U64), t(&[2], vec![u64::MAX, 0]));
    assert_eq!(
        read(BOOL),
        t(&[2, 3], vec![true, false, true, false, false, true])
    );
    let c: Vec<i32> = (0..2)
        .flat_map(|i| (0..3).flat_map(move |j| (0..4).map(move |k| 100 * i + 10 * j + k)))
        .collect();
    assert_eq!(read(FORTRAN_I32), t(&[2, 3, 4], c));
    assert_eq!(
        read(FORTRAN_F64_BE),
        t(&[2, 3], vec![1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0])
    );
    assert_eq!(read(SCALAR_F32), Tensor::scalar(3.5f32));
    assert_eq!(read(EMPTY_F32), Tensor::zeros(DType::F32, vec![0, 3]));
    assert_eq!(&V2_F32[6..8], b"\x02\x00");
    assert_eq!(read(V2_F32), t(&[4], vec![0.0f32, 1.0, 2.0, 3.0]));
    assert_eq!(&V3_I64[6..8], b"\x03\x00");
    assert_eq!(read(V3_I64), t(&[3], vec![0i64, 1, 2]));
}

#[test]
fn unsupported_numpy_dtypes() {
    for (bytes, descr) in [
        (fixtures::COMPLEX_C8, "<c8"),
        (fixtures::OBJECT, "|O"),
        (fixtures::UNICODE, "<U2"),
    ] {
        let e = read_npy_bytes(bytes, "odd.npy").unwrap_err();
        assert!(e.is_unsupported(), "{e}");
        assert!(e.message.starts_with("odd.npy: "), "{e}");
        assert!(e.message.contains(descr), "{e}");
    }
}

/// A well-formed v1.0 file with `header` (padded) followed by `data`.
fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    let pad = (64 - (10 + h.len() + 1) % 64) % 64;
    h.resize(h.len() + pad, b' ');
    h.push(b'\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(h.len() as u16).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

#[test]
fn malformed_inputs_are_errors() {
    let good = fixtures::F32_C;
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("magic only", b"\x93NUMPY".to_vec()),
        ("wrong magic", b"\x93NUMPZ\x01\x00\x10\x00".to_vec()),
        ("version 4", [&good[..6], b"\x04\x00", &good[8..]].concat()),
        (
            "version 1.1",
            [&good[..6], b"\x01\x01", &good[8..]].concat(),
        ),
        ("no header length", good[..9].to_vec()),
        ("truncated header", good[..40].to_vec()),
        (
            "header length past end",
            [&good[..8], &[0xff, 0xff][..], &good[10..]].concat(),
        ),
        (
            "v2 huge header length",
            [b"\x93NUMPY\x02\x00".as_slice(), &[0xff, 0xff, 0xff, 0xff]].concat(),
        ),
        ("truncated data", good[..good.len() - 1].to_vec()),
        ("trailing data", [good, b"x"].concat()),
        (
            "header says more data",
            with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000,), }",
                &[0; 16],
            ),
        ),
        (
            "numel overflows",
            with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 2), }",
                &[],
            ),
        ),
        (
            "bytes overflow",
            with_header(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (2305843009213693952, 2), }",
                &[],
            ),
        ),
        (
            "dim beyond usize",
            with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551616,), }",
                &[],
            ),
        ),
        (
            "negative dim",
            with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
                &[],
            ),
        ),
        (
            "shape not a tuple",
            with_header(
                "{'descr': '<f4', 'fortran_order': False, 'shape': 3, }",
                &[0; 12],
            ),
        ),
        (
            "missing key",
            with_header("{'descr': '<f4', 'shape': (3,), }", &[0; 12]),
        ),
        ("not a dict", with_header("['<f4', False, (3,)]", &[0; 12])),
        ("garbage header", with_header("\u{0}\u{1}\u{2}", &[])),
        ("deep nesting", with_header(&"(".repeat(30000), &[])),
        (
            "structured",
            with_header(
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
                &[0; 4],
            ),
        ),
        (
            "complex",
            with_header(
                "{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }",
                &[0; 8],
            ),
        ),
        (
            "object",
            with_header(
                "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }",
                &[0; 8],
            ),
        ),
        (
            "no byte order",
            with_header(
                "{'descr': 'f4', 'fortran_order': False, 'shape': (1,), }",
                &[0; 4],
            ),
        ),
        (
            "fortran overflow",
            with_header(
                "{'descr': '<f4', 'fortran_order': True, 'shape': (4294967296, 4294967296, 2), }",
                &[],
            ),
        ),
    ];
    // v3 header that is not UTF-8.
    let mut v3 = with_header(
        "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
        &[0; 4],
    );
    v3[7] = 0;
    v3[6] = 3;
    v3.splice(8..10, [0u8, 0, 0, 0]);
    let hl = (v3.len() - 12 - 4) as u32;
    v3[8..12].copy_from_slice(&hl.to_le_bytes());
    v3[20] = 0xff;
    cases.push(("v3 invalid utf-8", v3));
    // Every prefix of a valid file fails cleanly.
    for n in 0..good.len() {
        cases.push(("prefix", good[..n].to_vec()));
    }
    for (what, bytes) in cases {
        match read_npy_bytes(&bytes, "hostile.npy") {
            Ok(t) => panic!("{what}: accepted as {}", t.type_string()),
            Err(e) => {
                assert!(e.message.starts_with("hostile.npy: "), "{what}: {e}");
                assert!(
                    matches!(e.kind, ErrorKind::Invalid | ErrorKind::Unsupported),
                    "{what}: {e:?}"
                );
            }
        }
    }
}

#[test]
fn fuzz_byte_flips_never_panic() {
    // Flipping any single byte of a valid file either still reads or gives an error.
    for good in [fixtures::F32_C, fixtures::FORTRAN_I32, fixtures::V3_I64] {
        for i in 0..good.len() {
            for x in [0x00u8, 0xff, b'(', b'9', b'\'', b','] {
                let mut b = good.to_vec();
                b[i] = x;
                let _ = read_npy_bytes(&b, "flip.npy");
            }
        }
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kuaxin-npy-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// numpy reads what we write: runs only when the project venv exists.
#[test]
fn numpy_reads_our_files() {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/py-venv/bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", "import numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        println!(
            "skipping numpy_reads_our_files: no python with numpy at {} (run scripts/py-env.sh)",
            py.display()
        );
        return;
    }
    let dir = tempdir("numpy");
    let s = samples();
    let names = [
        "f32",
        "f64",
        "f16",
        "i8",
        "i16",
        "i32",
        "i64",
        "u8",
        "u16",
        "u32",
        "u64",
        "bool",
        "scalar",
        "empty_i64",
        "empty_u8",
        "ones7",
    ];
    assert_eq!(s.len(), names.len());
    for (t, n) in s.iter().zip(names) {
        write_npy(&dir.join(format!("{n}.npy")), t).unwrap();
    }
    write_npy(
        &dir.join("bf16.npy"),
        &t(&[2], vec![bf16::from_f32(1.0), bf16::from_f32(-3.140625)]),
    )
    .unwrap();
    let script = r#"
import sys, os
import numpy as np
d = sys.argv[1]
inf = np.inf
expect = {
    "f32": ("<f4", [[1.5, -0.0, inf], [np.finfo(np.float32).tiny, np.finfo(np.float32).max, -7.25]]),
    "f64": ("<f8", [1e300, -2.5, -inf]),
    "f16": ("<f2", [[0.5, 65504.0], [2.0**-24, -inf]]),
    "i8": ("|i1", [-128, 127, 0, -1]),
    "i16": ("<i2", [-32768, 32767, 258]),
    "i32": ("<i4", [[[-2**31, 2**31 - 1]], [[1, -1]]]),
    "i64": ("<i8", [-2**63, 2**63 - 1, -1]),
    "u8": ("|u1", [0, 255, 7]),
    "u16": ("<u2", [65535, 1]),
    "u32": ("<u4", [2**32 - 1, 0x01020304]),
    "u64": ("<u8", [2**64 - 1, 0]),
    "bool": ("|b1", [[True, False, True], [False, False, True]]),
    "scalar": ("<f4", 3.5),
    "empty_i64": ("<i8", np.zeros((0, 3))),
    "empty_u8": ("|u1", np.zeros((4, 0))),
    "ones7": ("<f4", np.zeros((1,) * 7)),
    "bf16": ("<f4", [1.0, -3.140625]),
}
for name, (descr, vals) in expect.items():
    a = np.load(os.path.join(d, name + ".npy"))
    want = np.array(vals, dtype=descr)
    assert a.dtype.str == descr, (name, a.dtype.str)
    assert a.shape == want.shape, (name, a.shape, want.shape)
    assert a.tobytes() == want.tobytes(), (name, a, want)
print("numpy read", len(expect), "files")
"#;
    let out = std::process::Command::new(&py)
        .arg("-c")
        .arg(script)
        .arg(&dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "numpy failed to read our files:\n{text}"
    );
    println!("{text}");
    std::fs::remove_dir_all(dir).ok();
}
