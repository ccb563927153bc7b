//! A kernel of the kernel IR (fused, or an elementwise primitive, view or reduction written
//! as one) as C-style source. Without a reduction: one thread per output element. With one:
//! a thread per output when the reduced extent is short, else a block per output that strides
//! over it and combines partial results with warp shuffles and shared memory.
use crate::ctype::{
    accumulator, class, compute, constant, highest, load, lowest, round, store, Class,
};
use crate::dialect::Dialect;
use crate::scalar::{binary, cast, unary};
use crate::text::{
    coords, grid, lin, names, per_element, reach, source, wide, zip, Launch, BLOCK, MAX_GRID, R,
};
use kuaxin_core::kernel::{Expr, Kernel, Load, Op};
use kuaxin_core::prim::ReduceOp;
use kuaxin_core::DType;
use std::fmt::Write;

/// Reduced extents from which a block, not a thread, computes one output.
const BLOCK_REDUCE_FROM: usize = 64;

pub fn render_kernel(k: &Kernel, n_args: usize, dl: &Dialect) -> R<Launch> {
    let mut args: Vec<Option<DType>> = vec![None; n_args];
    for l in &k.loads {
        let slot = args.get_mut(l.arg).ok_or("load of a missing argument")?;
        if slot.is_some_and(|d| d != l.dtype) || l.strides.len() != k.domain.len() {
            return Err("inconsistent loads".into());
        }
        *slot = Some(l.dtype);
    }
    // Arguments no load reads still take their place in the parameter list.
    let args: Vec<DType> = args.into_iter().map(|d| d.unwrap_or(DType::U8)).collect();
    let rd = k.reduce.as_ref().map_or(0, |r| r.dims);
    let kept = k
        .domain
        .get(
            ..k.domain
                .len()
                .checked_sub(rd)
                .ok_or("reduces more axes than the domain has")?,
        )
        .ok_or("bad domain")?;
    let n_out: usize = kept.iter().product();
    let far = k
        .loads
        .iter()
        .map(|l| reach(&k.domain, &l.strides, l.offset))
        .chain([k.domain.iter().map(|&d| d as u128).product::<u128>()])
        .max()
        .unwrap_or(0);
    let wide = wide(far);
    let list = if k.reduce.is_some() {
        &k.epilogue
    } else {
        &k.body
    };
    if list.last().map(|o| o.dtype) != Some(k.out.dtype) {
        return Err("stored value does not have the output dtype".into());
    }
    let kc = names("c", kept.len());
    let Some(red) = &k.reduce else {
        let mut b = String::new();
        coords(&mut b, "c", "o", kept);
        ops(&mut b, &k.body, "v", &k.loads, &kc, None, dl)?;
        let _ = writeln!(
            b,
            "out[o] = {};",
            store(k.out.dtype, &format!("v{}", k.body.len() - 1))
        );
        return Ok(Launch {
            src: source(
                dl,
                k.out.dtype,
                &args,
                wide,
                BLOCK,
                &per_element(dl, n_out, &b),
            ),
            grid: grid(n_out, BLOCK),
            block: BLOCK,
        });
    };
    let vd = k
        .body
        .get(red.value)
        .ok_or("reduced value out of range")?
        .dtype;
    let rdims = &k.domain[kept.len()..];
    let r_len: usize = rdims.iter().product();
    let acc_t = accumulator(vd);
    let (init, comb) = reduce_parts(red.op, vd, dl)?;
    let all: Vec<String> = kc.iter().cloned().chain(names("d", rd)).collect();
    // The reduced value for the epilogue, rounded to its dtype once.
    let reduced = round(vd, &format!("(({})acc)", compute(vd)));
    let mut inner = String::new();
    coords(&mut inner, "d", "j", rdims);
    ops(&mut inner, &k.body, "v", &k.loads, &all, None, dl)?;
    let _ = writeln!(inner, "acc = {};", comb("acc", &format!("v{}", red.value)));
    let mut tail = String::new();
    ops(
        &mut tail,
        &k.epilogue,
        "e",
        &k.loads,
        &kc,
        Some(&reduced),
        dl,
    )?;
    let _ = writeln!(
        tail,
        "out[o] = {};",
        store(k.out.dtype, &format!("e{}", k.epilogue.len() - 1))
    );
    let mut b = String::new();
    if r_len < BLOCK_REDUCE_FROM {
        coords(&mut b, "c", "o", kept);
        let _ = writeln!(
            b,
            "{acc_t} acc = {init};\nfor (kx_i j = 0; j < (kx_i){r_len}; ++j) {{\n{inner}}}\n{tail}"
        );
        return Ok(Launch {
            src: source(
                dl,
                k.out.dtype,
                &args,
                wide,
                BLOCK,
                &per_element(dl, n_out, &b),
            ),
            grid: grid(n_out, BLOCK),
            block: BLOCK,
        });
    }
    let warp = dl.warp_size;
    let threads = (r_len.next_power_of_two() as u32).clamp(warp, BLOCK);
    let (t, bi, g) = (dl.thread_idx, dl.block_idx, dl.grid_dim);
    let _ = writeln!(b, "__shared__ {acc_t} kx_part[{}];", threads / warp);
    let _ = writeln!(b, "for (kx_i o = {bi}; o < (kx_i){n_out}; o += {g}) {{");
    coords(&mut b, "c", "o", kept);
    let _ = writeln!(b, "{acc_t} acc = {init};\nfor (kx_i j = {t}; j < (kx_i){r_len}; j += {threads}) {{\n{inner}}}");
    b += &warp_partials(dl, acc_t, &*comb);
    let _ = writeln!(
        b,
        "if ({t} == 0) {{\nfor (int w = 1; w < {}; ++w) acc = {};\n{tail}}}\n{};\n}}",
        threads / warp,
        comb("acc", "kx_part[w]"),
        dl.barrier
    );
    Ok(Launch {
        src: source(dl, k.out.dtype, &args, wide, threads, &b),
        grid: (n_out as u64).clamp(1, MAX_GRID) as u32,
        block: threads,
    })
}

/// The first half of a block reduction of each thread's `acc` (of C type `acc_t`): a shuffle
/// tree within each warp, then lane 0 of every warp stores the warp's partial in the shared
/// `kx_part` (the caller declares it, one slot per warp) and the block waits at a barrier.
/// The caller combines the partials. The block is a whole number of warps.
pub(crate) fn warp_partials(
    dl: &Dialect,
    acc_t: &str,
    comb: &dyn Fn(&str, &str) -> String,
) -> String {
    let (warp, t) = (dl.warp_size, dl.thread_idx);
    format!(
        "for (int s = {}; s > 0; s >>= 1) {{ {acc_t} t = {}; acc = {}; }}\nif ({t} % {warp} == 0) kx_part[{t} / {warp}] = acc;\n{};\n",
        warp / 2,
        dl.shuffle_down("acc", "s"),
        comb("acc", "t"),
        dl.barrier
    )
}

/// Identity and combining expression of a reduction of values of `d`.
#[allow(clippy::type_complexity)]
pub(crate) fn reduce_parts(
    op: ReduceOp,
    d: DType,
    dl: &Dialect,
) -> R<(String, Box<dyn Fn(&str, &str) -> String>)> {
    let c = class(d);
    let f: Box<dyn Fn(&str, &str) -> String> = match (op, c) {
        (ReduceOp::Sum | ReduceOp::Max, Class::Bool) => Box::new(|a, x| format!("({a} || {x})")),
        (ReduceOp::Prod | ReduceOp::Min, Class::Bool) => Box::new(|a, x| format!("({a} && {x})")),
        (ReduceOp::Sum, _) => Box::new(|a, x| format!("{a} + {x}")),
        (ReduceOp::Prod, _) => Box::new(|a, x| format!("{a} * {x}")),
        (ReduceOp::Max, Class::Float) => Box::new(|a, x| format!("kx_maxn({a}, {x})")),
        (ReduceOp::Min, Class::Float) => Box::new(|a, x| format!("kx_minn({a}, {x})")),
        (ReduceOp::Max, _) => Box::new(|a, x| format!("({x} > {a} ? {x} : {a})")),
        (ReduceOp::Min, _) => Box::new(|a, x| format!("({x} < {a} ? {x} : {a})")),
    };
    let init = match (op, c) {
        (ReduceOp::Sum, Class::Float) => constant(0.0, d, dl),
        (ReduceOp::Prod, Class::Float) => constant(1.0, d, dl),
        (ReduceOp::Sum, _) => "0".into(),
        (ReduceOp::Prod, _) => "1".into(),
        (ReduceOp::Max, _) => lowest(d, dl),
        (ReduceOp::Min, _) => highest(d, dl),
    };
    Ok((init, f))
}

/// `T {p}i = ...;` for each op. `coords` are the domain coordinates loads index with (fewer
/// than the strides in the epilogue: reduced axes are ignored there).
fn ops(
    b: &mut String,
    list: &[Op],
    p: &str,
    loads: &[Load],
    coords: &[String],
    reduced: Option<&str>,
    dl: &Dialect,
) -> R<()> {
    let val = |i: usize| -> R<(String, DType)> {
        list.get(i)
            .map(|o| (format!("{p}{i}"), o.dtype))
            .ok_or_else(|| format!("operand {i} out of range"))
    };
    for (i, op) in list.iter().enumerate() {
        let e = match &op.expr {
            Expr::Load(l) => {
                let ld = loads.get(*l).ok_or("load out of range")?;
                if ld.dtype != op.dtype {
                    return Err("load dtype mismatch".into());
                }
                let terms = zip(coords, &ld.strides[..coords.len().min(ld.strides.len())]);
                load(
                    ld.dtype,
                    &format!("a{}[{}]", ld.arg, lin(ld.offset, &terms)),
                )
            }
            Expr::Const(c) => constant(*c, op.dtype, dl),
            Expr::Reduced => reduced
                .ok_or("reduced value outside the epilogue")?
                .to_string(),
            Expr::Unary(u, a) => {
                let (x, d) = val(*a)?;
                let want = if u.output_is_bool() { DType::Bool } else { d };
                if want != op.dtype {
                    return Err(format!("{u:?} of {d} gives {}", op.dtype));
                }
                round(op.dtype, &unary(*u, d, &x, dl)?)
            }
            Expr::Binary(o, x, y) => {
                let ((x, dx), (y, dy)) = (val(*x)?, val(*y)?);
                let want = if o.output_is_bool() { DType::Bool } else { dx };
                if dx != dy || want != op.dtype {
                    return Err(format!("{o:?} of {dx} and {dy} gives {}", op.dtype));
                }
                round(op.dtype, &binary(*o, dx, &x, &y)?)
            }
            Expr::Where(c, x, y) => {
                let ((c, dc), (x, dx), (y, dy)) = (val(*c)?, val(*x)?, val(*y)?);
                if dc != DType::Bool || dx != dy || dx != op.dtype {
                    return Err("where of mismatched operands".into());
                }
                format!("({c} ? {x} : {y})")
            }
            Expr::Cast(a) => {
                let (x, d) = val(*a)?;
                round(op.dtype, &cast(d, op.dtype, &x)?)
            }
        };
        let _ = writeln!(b, "const {} {p}{i} = {e};", compute(op.dtype));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::{CUDA, HIP};
    use kuaxin_core::kernel::Reduction;
    use kuaxin_core::prim::{BinaryOp, TensorType, UnaryOp};

    fn load(arg: usize, strides: Vec<isize>) -> Load {
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

    /// Row sums of exp(x) of `x: f32[rows, cols]`, divided by the column count.
    fn mean_exp(rows: usize, cols: usize) -> Kernel {
        Kernel {
            name: "k".into(),
            domain: vec![rows, cols],
            loads: vec![load(0, vec![cols as isize, 1])],
            body: vec![
                op(Expr::Load(0), DType::F32),
                op(Expr::Unary(UnaryOp::Exp, 0), DType::F32),
            ],
            reduce: Some(Reduction {
                op: ReduceOp::Sum,
                value: 1,
                dims: 1,
            }),
            epilogue: vec![
                op(Expr::Reduced, DType::F32),
                op(Expr::Const(cols as f64), DType::F32),
                op(Expr::Binary(BinaryOp::Div, 0, 1), DType::F32),
            ],
            out: TensorType::new(DType::F32, vec![rows, 1]),
            origins: vec![],
        }
    }

    #[test]
    fn an_elementwise_kernel_is_one_thread_per_element() {
        let k = Kernel {
            name: "k".into(),
            domain: vec![4, 8],
            // The second argument is broadcast along the rows (stride 0).
            loads: vec![load(0, vec![8, 1]), load(1, vec![0, 1])],
            body: vec![
                op(Expr::Load(0), DType::F32),
                op(Expr::Load(1), DType::F32),
                op(Expr::Binary(BinaryOp::Max, 0, 1), DType::F32),
                op(Expr::Cast(2), DType::F16),
            ],
            reduce: None,
            epilogue: vec![],
            out: TensorType::new(DType::F16, vec![4, 8]),
            origins: vec![],
        };
        let l = render_kernel(&k, 2, &CUDA).unwrap();
        assert_eq!((l.grid, l.block), (1, BLOCK));
        let s = &l.src;
        assert!(s.contains("kx(unsigned short* __restrict__ out, const float* __restrict__ a0, const float* __restrict__ a1)"), "{s}");
        assert!(
            s.contains("const float v1 = a1[((kx_i)0 + c1 * 1)];"),
            "{s}"
        );
        assert!(s.contains("const float v2 = kx_maxn(v0, v1);"), "{s}");
        assert!(s.contains("out[o] = kx_f2h(v3);"), "{s}");
        assert!(
            s.contains("cvt.rn.f16.f32") && s.contains("T kx_maxn"),
            "{s}"
        );
        assert!(s.contains("typedef int kx_i;"));
    }

    #[test]
    fn a_long_reduction_takes_a_block_per_output() {
        let l = render_kernel(&mean_exp(3, 1000), 1, &CUDA).unwrap();
        assert_eq!((l.grid, l.block), (3, 256));
        assert!(l.src.contains("__shared__ float kx_part[8];"), "{}", l.src);
        assert!(l.src.contains("__shfl_down_sync(0xffffffffu, acc, s)"));
        assert!(l
            .src
            .contains("for (kx_i j = threadIdx.x; j < (kx_i)1000; j += 256)"));
        assert!(l.src.contains("const float e2 = (e0 / e1);"), "{}", l.src);
        // The same kernel in another dialect: only the table's spellings change.
        let h = render_kernel(&mean_exp(3, 1000), 1, &HIP).unwrap();
        assert!(
            h.src.contains("__shared__ float kx_part[4];") && h.src.contains("__shfl_down(acc, s)")
        );
        assert!(h.src.starts_with("#include <hip/hip_runtime.h>"));
    }

    #[test]
    fn a_short_reduction_takes_a_thread_per_output() {
        let l = render_kernel(&mean_exp(1000, 7), 1, &CUDA).unwrap();
        assert_eq!((l.grid, l.block), (4, BLOCK));
        assert!(!l.src.contains("__shared__"));
        assert!(
            l.src.contains("for (kx_i j = 0; j < (kx_i)7; ++j)"),
            "{}",
            l.src
        );
    }

    #[test]
    fn malformed_kernels_are_refused_not_rendered() {
        let mut k = mean_exp(2, 2);
        k.epilogue[2].dtype = DType::F64;
        assert!(render_kernel(&k, 1, &CUDA).is_err());
        assert!(
            render_kernel(&mean_exp(2, 2), 0, &CUDA).is_err(),
            "load of a missing argument"
        );
    }
}
