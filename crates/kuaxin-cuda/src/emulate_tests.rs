//! The generated kernels run without a GPU: rendered in an emulation dialect (plain C++ with
//! one OS thread per CUDA thread, `std::barrier` for `__syncthreads` and warp shuffles),
//! compiled by the host's g++ and compared with the CPU back end on seeded inputs. NVRTC proves
//! the CUDA text compiles; this proves the shared kernel text computes the right values
//! (index maps, reductions across threads and warps, dtype conversions). Only the dialect
//! table differs from CUDA's.
use crate::blas::Gemm;
use crate::dialect::{Dialect, HalfTypes, BF16_BITS};
use crate::plan::{plan, Operand, Plan};
use crate::prims::render;
use crate::text::Launch;
use kuaxin_core::kernel::{Expr, Kernel, Load, Op, Reduction};
use kuaxin_core::prim::{BinaryOp as B, Prim, ReduceOp, TensorType, UnaryOp as U};
use kuaxin_core::{Backend, DType, Data, Tensor};
use std::fmt::Write;
use std::sync::Arc;

const EMU: Dialect = Dialect {
    name: "emulated",
    header: "",
    kernel_qualifier: "static",
    device_fn: "inline",
    warp_size: 32,
    shfl_down: "__shfl_down_sync(0xffffffffu, {v}, {d})",
    barrier: "__syncthreads()",
    half: HalfTypes {
        f16: "unsigned short",
        bf16: "unsigned short",
        f16_conversions: r#"inline float kx_h2f(unsigned short h) { _Float16 f; memcpy(&f, &h, 2); return (float)f; }
inline unsigned short kx_f2h(float f) { _Float16 x = (_Float16)f; unsigned short h; memcpy(&h, &x, 2); return h; }
inline unsigned short kx_d2h(double f) { _Float16 x = (_Float16)f; unsigned short h; memcpy(&h, &x, 2); return h; }
"#,
        bf16_conversions: BF16_BITS,
    },
    thread_idx: "threadIdx.x",
    block_idx: "blockIdx.x",
    block_dim: "blockDim.x",
    grid_dim: "gridDim.x",
    uint_as_float: "__uint_as_float",
    double_as_longlong: "__double_as_longlong",
    longlong_as_double: "__longlong_as_double",
};

/// CUDA's built-ins on the host: blocks run one after another, each thread of a block is an
/// OS thread, warps exchange shuffled values through a slot array between two barriers.
const SHIM: &str = r#"#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>
#include <utility>
#include <vector>
using namespace std;
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__
#define __shared__ static
struct kx_dim { unsigned x, y, z; };
static thread_local kx_dim threadIdx, blockIdx;
static kx_dim blockDim, gridDim;
static barrier<>* kx_block;
struct kx_warp { barrier<>* bar; unsigned long long slot[32]; };
static kx_warp kx_warps[32];
#define __syncthreads() kx_block->arrive_and_wait()
template <class T> T __shfl_down_sync(unsigned, T v, int d) {
  kx_warp& w = kx_warps[threadIdx.x / 32];
  unsigned lane = threadIdx.x % 32;
  memcpy(&w.slot[lane], &v, sizeof(T));
  w.bar->arrive_and_wait();
  T r = v;
  if (lane + d < 32) memcpy(&r, &w.slot[lane + d], sizeof(T));
  w.bar->arrive_and_wait();
  return r;
}
inline float __uint_as_float(unsigned int u) { float f; memcpy(&f, &u, 4); return f; }
inline unsigned int __float_as_uint(float f) { unsigned int u; memcpy(&u, &f, 4); return u; }
inline double __longlong_as_double(long long u) { double f; memcpy(&f, &u, 8); return f; }
template <class... P, size_t... I> void kx_invoke(void (*f)(P...), void** p, index_sequence<I...>) { f(static_cast<P>(p[I])...); }
template <class... P> void kx_launch(void (*f)(P...), void** p, unsigned grid, unsigned block) {
  blockDim = {block, 1, 1}; gridDim = {grid, 1, 1};
  for (unsigned b = 0; b < grid; ++b) {
    barrier<> bar(block);
    kx_block = &bar;
    vector<barrier<>*> wb;
    for (unsigned w = 0; w < (block + 31) / 32; ++w) { wb.push_back(new barrier<>(32)); kx_warps[w].bar = wb.back(); }
    vector<thread> ts;
    for (unsigned t = 0; t < block; ++t)
      ts.emplace_back([=] { blockIdx = {b, 0, 0}; threadIdx = {t, 0, 0}; kx_invoke(f, p, index_sequence_for<P...>{}); });
    for (auto& t : ts) t.join();
    for (auto* w : wb) delete w;
  }
}
static vector<unsigned char> kx_read(const char* path) {
  vector<unsigned char> v; FILE* f = fopen(path, "rb"); int c;
  while ((c = fgetc(f)) != EOF) v.push_back((unsigned char)c);
  fclose(f); return v;
}
"#;

/// Runs every case as its rendered kernel and returns the outputs.
pub(crate) fn emulate(cases: &[(Prim, Vec<Tensor>)]) -> Vec<Tensor> {
    let launches: Vec<(Launch, &[Tensor], TensorType)> = cases
        .iter()
        .enumerate()
        .map(|(i, (prim, inputs))| {
            let ins: Vec<TensorType> = inputs
                .iter()
                .map(|t| TensorType::new(t.dtype(), t.shape.clone()))
                .collect();
            let out = prim.infer(&ins).unwrap().remove(0);
            let l = render(prim, &ins, &out, &EMU)
                .unwrap_or_else(|e| panic!("case {i} ({}): {e}", prim.name()));
            (l, inputs.as_slice(), out)
        })
        .collect();
    emulate_launches(&launches)
}

/// Runs each launch on its inputs into a zeroed output of the given type.
fn emulate_launches(launches: &[(Launch, &[Tensor], TensorType)]) -> Vec<Tensor> {
    let dir = std::env::temp_dir().join(format!(
        "kuaxin-emulate-{}-{}",
        std::process::id(),
        launches.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut src = String::from(SHIM);
    let mut main = String::from("int main(int argc, char** argv) {\n  int a = 1;\n");
    let mut outs = vec![];
    for (i, (l, inputs, out)) in launches.iter().enumerate() {
        let out = out.clone();
        let _ = writeln!(src, "namespace k{i} {{\n{}}}", l.src);
        let n = inputs.len() + 1;
        let _ = writeln!(main, "  {{ vector<vector<unsigned char>> b; void* p[{n}];\n    for (int j = 0; j < {n}; ++j) {{ b.push_back(kx_read(argv[a + j])); }}\n    for (int j = 0; j < {n}; ++j) p[j] = b[j].data();\n    kx_launch(k{i}::kx, p, {}, {});\n    FILE* f = fopen(argv[a], \"wb\"); fwrite(b[0].data(), 1, b[0].size(), f); fclose(f); a += {n}; }}", l.grid, l.block);
        outs.push(out);
    }
    main += "  return 0;\n}\n";
    src += &main;
    std::fs::write(dir.join("k.cpp"), &src).unwrap();
    let exe = dir.join("k");
    let cc = std::process::Command::new("g++")
        .args(["-std=c++20", "-O1", "-pthread", "-w", "-o"])
        .arg(&exe)
        .arg(dir.join("k.cpp"))
        .output()
        .expect("g++ is needed to run the generated kernels on the host (apt-get install g++)");
    assert!(
        cc.status.success(),
        "g++ failed:\n{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let mut args = vec![];
    for (i, ((_, inputs, _), out)) in launches.iter().zip(&outs).enumerate() {
        let o = dir.join(format!("{i}.out"));
        // At least one byte per buffer, so every pointer is valid.
        let zeros = vec![0u8; (out.numel() * out.dtype.size()).max(1)];
        std::fs::write(&o, zeros).unwrap();
        args.push(o);
        for (j, t) in inputs.iter().enumerate() {
            let p = dir.join(format!("{i}.{j}"));
            let mut b = crate::bytes::to_bytes(t);
            if b.is_empty() {
                b.push(0);
            }
            std::fs::write(&p, b).unwrap();
            args.push(p);
        }
    }
    let run = std::process::Command::new(&exe)
        .args(&args)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "emulated kernels failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let results = outs
        .iter()
        .enumerate()
        .map(|(i, ty)| {
            let mut b = std::fs::read(dir.join(format!("{i}.out"))).unwrap();
            b.truncate(ty.numel() * ty.dtype.size());
            crate::bytes::from_bytes(ty, &b).unwrap()
        })
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    results
}

/// Seeded values of `d`: floats in about [-4, 4] with a NaN and infinities among them when
/// `specials`, integers in [-20, 20] (unsigned: [0, 40]).
pub(crate) fn tensor(d: DType, shape: Vec<usize>, seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let vals = (0..n).map(|_| {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let u = (s >> 33) as f64 / (1u64 << 31) as f64;
        if d.is_float() {
            (u * 8.0 - 4.0 + 0.01).round_ties_even() * 0.5 + u * 0.01
        } else if d.is_unsigned_int() {
            (u * 40.0).floor()
        } else {
            (u * 40.0).floor() - 20.0
        }
    });
    Tensor::new(shape, Data::from_f64_iter(d, vals)).unwrap()
}

pub(crate) fn cpu(prim: &Prim, inputs: &[Tensor]) -> Tensor {
    let b = kuaxin_cpu::CpuBackend::new(Some(1)).unwrap();
    let ins: Vec<_> = inputs.iter().map(|t| b.upload(t).unwrap()).collect();
    let types: Vec<TensorType> = ins.iter().map(|t| t.ty.clone()).collect();
    let out = prim.infer(&types).unwrap();
    let refs: Vec<_> = ins.iter().collect();
    b.download(&b.execute(prim, &refs, &out).unwrap()[0])
        .unwrap()
}

fn close(a: &Tensor, b: &Tensor) -> bool {
    if a.shape != b.shape || a.dtype() != b.dtype() {
        return false;
    }
    let tol = match a.dtype() {
        DType::F32 => 2e-6,
        DType::F16 | DType::BF16 => 1e-2,
        _ => 0.0,
    };
    a.to_f64_vec().iter().zip(b.to_f64_vec()).all(|(x, y)| {
        (x.is_nan() && y.is_nan())
            || x == &y
            || (x - y).abs() <= tol * x.abs().max(y.abs()).max(1.0)
    })
}

fn f32_load(arg: usize, strides: Vec<isize>) -> Load {
    Load {
        arg,
        dtype: DType::F32,
        strides,
        offset: 0,
    }
}

fn op(expr: Expr, dtype: DType) -> Op {
    Op { expr, dtype }
}

/// softmax-like: exp(x - 1) summed over the last axis of x: f32[rows, cols], times a
/// per-row scale read in the epilogue.
fn fused_reduce(rows: usize, cols: usize) -> (Prim, Vec<Tensor>) {
    let k = Kernel {
        name: "k".into(),
        domain: vec![rows, cols],
        loads: vec![f32_load(0, vec![cols as isize, 1]), f32_load(1, vec![1, 0])],
        body: vec![
            op(Expr::Load(0), DType::F32),
            op(Expr::Const(1.0), DType::F32),
            op(Expr::Binary(B::Sub, 0, 1), DType::F32),
            op(Expr::Unary(U::Exp, 2), DType::F32),
        ],
        reduce: Some(Reduction {
            op: ReduceOp::Sum,
            value: 3,
            dims: 1,
        }),
        epilogue: vec![
            op(Expr::Reduced, DType::F32),
            op(Expr::Load(1), DType::F32),
            op(Expr::Binary(B::Mul, 0, 1), DType::F32),
        ],
        out: TensorType::new(DType::F32, vec![rows, 1]),
        origins: vec![],
    };
    (
        Prim::Fused(Arc::new(k)),
        vec![
            tensor(DType::F32, vec![rows, cols], 1),
            tensor(DType::F32, vec![rows], 2),
        ],
    )
}

fn cases() -> Vec<(Prim, Vec<Tensor>)> {
    let f = |d, s: &[usize], seed| tensor(d, s.to_vec(), seed);
    let mut v: Vec<(Prim, Vec<Tensor>)> = vec![];
    for u in [
        U::Neg,
        U::Abs,
        U::Exp,
        U::Tanh,
        U::Erf,
        U::Round,
        U::Sign,
        U::Sigmoid,
        U::Floor,
        U::IsNan,
    ] {
        v.push((Prim::Unary(u), vec![f(DType::F32, &[3, 7], 3)]));
    }
    v.push((Prim::Unary(U::Sqrt), vec![f(DType::F16, &[5, 3], 4)]));
    v.push((Prim::Unary(U::Abs), vec![f(DType::I8, &[9], 4)]));
    v.push((Prim::Unary(U::Not), vec![f(DType::Bool, &[9], 4)]));
    for b in [B::Add, B::Div, B::Pow, B::Max, B::Mod, B::FMod, B::Lt] {
        v.push((
            Prim::Binary(b),
            vec![f(DType::F32, &[4, 5], 5), f(DType::F32, &[4, 5], 6)],
        ));
    }
    for b in [
        B::Div,
        B::Mod,
        B::FMod,
        B::Shl,
        B::Shr,
        B::Pow,
        B::Max,
        B::Sub,
    ] {
        v.push((
            Prim::Binary(b),
            vec![f(DType::I32, &[4, 5], 7), f(DType::I32, &[4, 5], 8)],
        ));
    }
    v.push((
        Prim::Binary(B::Mul),
        vec![f(DType::I8, &[11], 7), f(DType::I8, &[11], 8)],
    ));
    v.push((
        Prim::Binary(B::Sub),
        vec![f(DType::U16, &[11], 7), f(DType::U16, &[11], 8)],
    ));
    v.push((
        Prim::Binary(B::Add),
        vec![f(DType::BF16, &[6], 9), f(DType::BF16, &[6], 10)],
    ));
    v.push((
        Prim::Binary(B::Mul),
        vec![f(DType::F64, &[6], 9), f(DType::F64, &[6], 10)],
    ));
    v.push((
        Prim::Where,
        vec![
            f(DType::Bool, &[8], 1),
            f(DType::F32, &[8], 2),
            f(DType::F32, &[8], 3),
        ],
    ));
    for (from, to) in [
        (DType::F32, DType::I32),
        (DType::F32, DType::U8),
        (DType::F32, DType::F16),
        (DType::F64, DType::F16),
        (DType::I64, DType::F32),
        (DType::F32, DType::Bool),
        (DType::Bool, DType::F32),
        (DType::F32, DType::BF16),
        (DType::I32, DType::I8),
    ] {
        v.push((Prim::Cast(to), vec![f(from, &[13], 11)]));
    }
    v.push((
        Prim::View {
            shape: vec![3, 2, 4],
            strides: vec![1, 0, 3],
            offset: 0,
        },
        vec![f(DType::F32, &[12], 12)],
    ));
    v.push((
        Prim::View {
            shape: vec![4],
            strides: vec![-2],
            offset: 7,
        },
        vec![f(DType::I64, &[8], 12)],
    ));
    for (op, d) in [
        (ReduceOp::Sum, DType::F32),
        (ReduceOp::Max, DType::F32),
        (ReduceOp::Min, DType::I32),
        (ReduceOp::Prod, DType::I64),
        (ReduceOp::Sum, DType::Bool),
        (ReduceOp::Sum, DType::F16),
    ] {
        v.push((
            Prim::Reduce { op, axes: vec![1] },
            vec![f(d, &[3, 5, 2], 13)],
        ));
        // A long reduction: a block per output, warp shuffles and shared memory.
        v.push((
            Prim::Reduce {
                op,
                axes: vec![0, 2],
            },
            vec![f(d, &[17, 3, 23], 14)],
        ));
    }
    v.push(fused_reduce(3, 700));
    v.push(fused_reduce(40, 9));
    v.push((
        Prim::PadConstant {
            pads: vec![(1, 2), (0, 1)],
        },
        vec![f(DType::F32, &[2, 3], 15), f(DType::F32, &[], 16)],
    ));
    v.push((
        Prim::Concat { axis: 1 },
        vec![
            f(DType::I32, &[2, 3], 17),
            f(DType::I32, &[2, 0], 18),
            f(DType::I32, &[2, 2], 19),
        ],
    ));
    let idx = Tensor::new(vec![2, 2], Data::I64(vec![0, -1, 2, 1])).unwrap();
    v.push((
        Prim::Gather { axis: 1 },
        vec![f(DType::F32, &[2, 3, 2], 20), idx.clone()],
    ));
    let ge = Tensor::new(vec![2, 2], Data::I64(vec![0, 1, -1, 0])).unwrap();
    v.push((
        Prim::GatherElements { axis: 0 },
        vec![f(DType::F32, &[3, 2], 21), ge],
    ));
    let nd = Tensor::new(vec![2, 2], Data::I64(vec![0, 1, 1, -1])).unwrap();
    v.push((
        Prim::GatherNd { batch_dims: 0 },
        vec![f(DType::F32, &[2, 3, 2], 22), nd],
    ));
    v.push((
        Prim::ArgReduce {
            max: true,
            axis: 1,
            select_last: false,
        },
        vec![f(DType::F32, &[3, 4], 23)],
    ));
    v.push((
        Prim::ArgReduce {
            max: false,
            axis: 0,
            select_last: true,
        },
        vec![f(DType::I32, &[5, 2], 24)],
    ));
    v.push((
        Prim::Cumulative {
            prod: false,
            axis: 1,
            exclusive: true,
            reverse: true,
        },
        vec![f(DType::F32, &[2, 5], 25)],
    ));
    v.push((
        Prim::Cumulative {
            prod: true,
            axis: 0,
            exclusive: false,
            reverse: false,
        },
        vec![f(DType::I64, &[4, 2], 26)],
    ));
    v.push((
        Prim::Conv {
            strides: vec![2, 1],
            dilations: vec![1, 2],
            groups: 2,
        },
        vec![
            f(DType::F32, &[1, 4, 7, 6], 27),
            f(DType::F32, &[6, 2, 3, 2], 28),
        ],
    ));
    v.push((
        Prim::MatMul,
        vec![f(DType::F32, &[2, 3, 5], 29), f(DType::F32, &[2, 5, 4], 30)],
    ));
    v.push((
        Prim::MatMul,
        vec![f(DType::I32, &[3, 4], 31), f(DType::I32, &[4, 2], 32)],
    ));
    v
}

#[test]
fn generated_kernels_compute_what_the_cpu_computes() {
    let cases = cases();
    let got = emulate(&cases);
    let mut bad = vec![];
    for ((prim, inputs), g) in cases.iter().zip(&got) {
        let want = cpu(prim, inputs);
        if !close(g, &want) {
            bad.push(format!(
                "{:?} on {:?}:\n  kernel {:?}\n  cpu    {:?}",
                prim,
                inputs.iter().map(|t| t.type_string()).collect::<Vec<_>>(),
                g.data,
                want.data
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of {} differ:\n{}",
        bad.len(),
        cases.len(),
        bad.join("\n")
    );
}

/// `calls` strided batched products in f64 on the host, as cuBLAS would compute them.
fn host_gemm(a: &[f64], b: &[f64], c: &mut [f64], g: &Gemm, b0: usize, c0: usize) {
    for bi in 0..g.batch {
        for i in 0..g.m {
            for j in 0..g.n {
                let s: f64 = (0..g.k)
                    .map(|q| {
                        a[bi * g.stride_a + i * g.k + q] * b[b0 + bi * g.stride_b + q * g.n + j]
                    })
                    .sum();
                c[c0 + bi * g.stride_c + i * g.n + j] = s;
            }
        }
    }
}

#[test]
fn convolution_as_im2col_and_products_matches_the_cpu() {
    // (x, w, strides, dilations, groups): strided, dilated, grouped, pointwise, 1-D, 3-D.
    type Conv = (Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>, usize);
    let convs: Vec<Conv> = vec![
        (
            vec![2, 4, 7, 6],
            vec![6, 2, 3, 2],
            vec![2, 1],
            vec![1, 2],
            2,
        ),
        (
            vec![1, 3, 5, 5],
            vec![4, 3, 1, 1],
            vec![1, 1],
            vec![1, 1],
            1,
        ),
        (
            vec![1, 3, 5, 5],
            vec![4, 3, 1, 1],
            vec![2, 2],
            vec![1, 1],
            1,
        ),
        (vec![2, 2, 9], vec![3, 2, 4], vec![3], vec![1], 1),
        (
            vec![1, 2, 4, 3, 5],
            vec![2, 1, 2, 2, 3],
            vec![1, 1, 2],
            vec![1, 1, 1],
            2,
        ),
    ];
    for (i, (xs, ws, strides, dilations, groups)) in convs.into_iter().enumerate() {
        let prim = Prim::Conv {
            strides,
            dilations,
            groups,
        };
        let inputs = vec![
            tensor(DType::F32, xs, 40 + i as u64),
            tensor(DType::F32, ws, 50 + i as u64),
        ];
        let types: Vec<TensorType> = inputs
            .iter()
            .map(|t| TensorType::new(t.dtype(), t.shape.clone()))
            .collect();
        let out = prim.infer(&types).unwrap().remove(0);
        let Ok(Plan::Gemm(g)) = plan(&prim, &types, &out, true, &EMU) else {
            panic!("conv {i} is not planned as products");
        };
        let b_values = match (&g.prep, g.b) {
            (Some((l, col)), Operand::Scratch) => {
                emulate_launches(&[(l.clone(), &inputs[..1], col.clone())])
                    .remove(0)
                    .to_f64_vec()
            }
            (None, Operand::Input(0)) => inputs[0].to_f64_vec(),
            other => panic!("conv {i}: unexpected operands {other:?}"),
        };
        assert_eq!(g.a, Operand::Input(1));
        let a_values = inputs[1].to_f64_vec();
        let mut c = vec![f64::NAN; out.numel()];
        for call in 0..g.calls {
            host_gemm(
                &a_values,
                &b_values,
                &mut c,
                &g.gemm,
                call * g.step_b,
                call * g.step_c,
            );
        }
        let got = Tensor::new(
            out.shape.clone(),
            Data::from_f64_iter(DType::F32, c.into_iter()),
        )
        .unwrap();
        let want = cpu(&prim, &inputs);
        assert!(
            close(&got, &want),
            "conv {i}: {:?}\n vs cpu {:?}",
            got.data,
            want.data
        );
    }
}
