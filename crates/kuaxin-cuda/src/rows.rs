//! The row primitives (`SoftmaxRows`, `MaskedSoftmaxRows`, `LayerNormRows`) as one kernel
//! each, with the f32 steps of the primitives they replace (see their doc comments and the CPU
//! back end's `softmax.rs` / `layer_norm.rs`).
//!
//! Layout: a block per row (a grid-stride loop over rows past `MAX_GRID`), its size the row
//! length rounded up to a power of two between one warp and [`BLOCK`]; threads stride over
//! longer rows. A warp per row would serve rows under 32 better, but the rows fusion makes
//! are attention scores (a sequence, 128 and up) and hidden states (384 and up), which fill a
//! block, and one layout keeps one reduction: kernel.rs's shuffle tree and shared partials
//! ([`warp_partials`]), whose partials every thread then combines in the same order, so all
//! threads hold the same bits of the max, the sum, the mean and the variance. A thread
//! rereads only the elements it wrote itself, so a row needs no barrier besides the
//! reductions'.
use crate::ctype::constant;
use crate::dialect::Dialect;
use crate::kernel::{reduce_parts, warp_partials};
use crate::scalar::unary;
use crate::text::{coords, lin, names, reach, source, wide, zip, Launch, BLOCK, MAX_GRID, R};
use kuaxin_core::prim::{strided_in_bounds, Prim, ReduceOp, TensorType, UnaryOp};
use kuaxin_core::tensor::contiguous_strides;
use kuaxin_core::DType;
use std::fmt::Write;

/// The kernel of row primitive `p` on `ins` into `out`, or why it is not rendered.
pub fn render_rows(p: &Prim, ins: &[TensorType], out: &TensorType, dl: &Dialect) -> R<Launch> {
    let name = p.name();
    let x = ins.first().ok_or_else(|| format!("{name}: no input"))?;
    let n = *x
        .shape
        .last()
        .ok_or_else(|| format!("{name}: rows need at least one axis, not {x}"))?;
    if x.dtype != DType::F32 || out.dtype != DType::F32 || out.shape != x.shape {
        return Err(format!("{name} runs on f32 rows, not {x} into {out}"));
    }
    let f32_arg = |i: usize, what: &str| -> R<&TensorType> {
        ins.get(i)
            .filter(|t| t.dtype == DType::F32)
            .ok_or_else(|| format!("{name}: input {i} ({what}) must be f32"))
    };
    let rows = x.numel().checked_div(n).unwrap_or(0);
    let threads = n
        .next_power_of_two()
        .clamp(dl.warp_size as usize, BLOCK as usize) as u32;
    let row = Row { dl, n, threads };
    let mut far = reach(&x.shape, &contiguous_strides(&x.shape), 0);
    let mut b = String::new();
    match p {
        Prim::SoftmaxRows => softmax(&mut b, &row, "a0[base + j]", "")?,
        Prim::MaskedSoftmaxRows {
            scale,
            divide,
            mask,
        } => {
            let m = f32_arg(1, "mask")?;
            let rank = x.shape.len();
            if mask.shape != x.shape
                || mask.strides.len() != rank
                || !strided_in_bounds(&mask.shape, &mask.strides, mask.offset, m.numel())
            {
                return Err(format!(
                    "{name}: the mask view {:?} (strides {:?}, offset {}) does not cover {x} within {m}",
                    mask.shape, mask.strides, mask.offset
                ));
            }
            far = far.max(reach(&mask.shape, &mask.strides, mask.offset));
            // The mask row's first element: the row's coordinates over the outer axes.
            let mut start = String::new();
            coords(&mut start, "m", "row", &x.shape[..rank - 1]);
            let outer = zip(&names("m", rank - 1), &mask.strides[..rank - 1]);
            let _ = writeln!(start, "const kx_i mbase = {};", lin(mask.offset, &outer));
            let op = if *divide { "/" } else { "*" };
            let score = format!(
                "(a0[base + j] {op} {} + a1[mbase + j * {}])",
                constant(*scale as f64, DType::F32, dl),
                mask.strides[rank - 1]
            );
            softmax(&mut b, &row, &score, &start)?
        }
        Prim::LayerNormRows { eps } => {
            for (i, what) in [(1, "scale"), (2, "bias")] {
                if f32_arg(i, what)?.numel() != n {
                    return Err(format!(
                        "{name}: the {what} must have one row of {n} values"
                    ));
                }
            }
            layer_norm(&mut b, &row, *eps)?
        }
        other => return Err(format!("{} is not a row primitive", other.name())),
    }
    let args: Vec<DType> = ins.iter().map(|t| t.dtype).collect();
    let body = format!(
        "__shared__ float kx_part[{}];\nfor (kx_i row = {}; row < (kx_i){rows}; row += {}) {{\nconst kx_i base = row * {n};\n{b}}}\n",
        threads / dl.warp_size,
        dl.block_idx,
        dl.grid_dim
    );
    Ok(Launch {
        src: source(dl, DType::F32, &args, wide(far), threads, &body),
        grid: (rows as u64).clamp(1, MAX_GRID) as u32,
        block: threads,
    })
}

/// One row's loop and reductions.
struct Row<'a> {
    dl: &'a Dialect,
    n: usize,
    threads: u32,
}

impl Row<'_> {
    /// `body` for each element `j` of the row this thread takes.
    fn each(&self, body: &str) -> String {
        format!(
            "for (kx_i j = {}; j < (kx_i){}; j += {}) {{\n{body}}}\n",
            self.dl.thread_idx, self.n, self.threads
        )
    }

    /// `acc` starts at `op`'s identity, takes `value` of each element (after `prep`, in the
    /// loop) and is combined across the block into `const float {name}` in every thread.
    fn reduce(&self, op: ReduceOp, prep: &str, value: &str, name: &str) -> R<String> {
        let (init, comb) = reduce_parts(op, DType::F32, self.dl)?;
        let each = self.each(&format!("{prep}acc = {};\n", comb("acc", value)));
        Ok(format!(
            "{{\nfloat acc = {init};\n{each}{}acc = kx_part[0];\nfor (int w = 1; w < {}; ++w) acc = {};\n{};\n{name} = acc;\n}}\n",
            warp_partials(self.dl, "float", &*comb),
            self.threads / self.dl.warp_size,
            comb("acc", "kx_part[w]"),
            self.dl.barrier
        ))
    }
}

/// `e = exp(s - max(s))`, written out and summed, then `e / sum`, where `s` is `score` of
/// element `j` (after `start`, once per row).
fn softmax(b: &mut String, row: &Row, score: &str, start: &str) -> R<()> {
    let exp = unary(UnaryOp::Exp, DType::F32, "(s - mx)", row.dl)?;
    *b += start;
    *b += "float mx, sum;\n";
    *b += &row.reduce(
        ReduceOp::Max,
        &format!("const float s = {score};\n"),
        "s",
        "mx",
    )?;
    let write = format!("const float s = {score};\nconst float e = {exp};\nout[base + j] = e;\n");
    *b += &row.reduce(ReduceOp::Sum, &write, "e", "sum")?;
    *b += &row.each("out[base + j] = out[base + j] / sum;\n");
    Ok(())
}

/// `mean = sum(x) / n`, `d = x - mean`, `r = 1 / sqrt(sum(d * d) / n + eps)`, then
/// `(d * r) * scale + bias`.
fn layer_norm(b: &mut String, row: &Row, eps: f32) -> R<()> {
    let dl = row.dl;
    let count = constant(row.n as f64, DType::F32, dl);
    let root = unary(UnaryOp::Sqrt, DType::F32, "(var + eps)", dl)?;
    let _ = writeln!(
        b,
        "float mean, var;\nconst float eps = {};",
        constant(eps as f64, DType::F32, dl)
    );
    *b += &row.reduce(ReduceOp::Sum, "", "a0[base + j]", "mean")?;
    let _ = writeln!(b, "mean = mean / {count};");
    let centred = "const float d = a0[base + j] - mean;\n";
    *b += &row.reduce(ReduceOp::Sum, centred, "d * d", "var")?;
    let _ = writeln!(
        b,
        "var = var / {count};\nconst float r = {} / {root};",
        constant(1.0, DType::F32, dl)
    );
    *b += &row.each(&format!(
        "{centred}out[base + j] = d * r * a1[j] + a2[j];\n"
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialect::{CUDA, HIP};
    use kuaxin_core::prim::ViewMap;

    fn f32s(shape: &[usize]) -> TensorType {
        TensorType::new(DType::F32, shape.to_vec())
    }

    #[test]
    fn a_row_takes_a_block_sized_to_it() {
        let x = f32s(&[6, 1000]);
        let l = render_rows(&Prim::SoftmaxRows, std::slice::from_ref(&x), &x, &CUDA).unwrap();
        assert_eq!((l.grid, l.block), (6, 256));
        assert!(l.src.contains("__shared__ float kx_part[8];"), "{}", l.src);
        assert!(l.src.contains("j += 256"), "{}", l.src);
        assert!(l.src.contains("__shfl_down_sync(0xffffffffu, acc, s)"));
        assert!(l.src.contains("kx_maxn"), "{}", l.src);
        let short = f32s(&[7, 5]);
        let l = render_rows(
            &Prim::SoftmaxRows,
            std::slice::from_ref(&short),
            &short,
            &CUDA,
        )
        .unwrap();
        assert_eq!((l.grid, l.block), (7, 32));
        // The same text in another dialect: its warp width, its shuffle.
        let h = render_rows(&Prim::SoftmaxRows, std::slice::from_ref(&x), &x, &HIP).unwrap();
        assert!(h.src.contains("kx_part[4]") && h.src.contains("__shfl_down(acc, s)"));
    }

    #[test]
    fn bad_inputs_are_errors_naming_what_is_wrong() {
        let x = f32s(&[2, 8]);
        let ln = Prim::LayerNormRows { eps: 1e-5 };
        let e = render_rows(&ln, &[x.clone(), f32s(&[8]), f32s(&[7])], &x, &CUDA).unwrap_err();
        assert!(e.contains("bias"), "{e}");
        let e = render_rows(&ln, &[x.clone(), f32s(&[8])], &x, &CUDA).unwrap_err();
        assert!(e.contains("bias"), "{e}");
        let i = TensorType::new(DType::I32, vec![2, 8]);
        assert!(render_rows(&Prim::SoftmaxRows, std::slice::from_ref(&i), &i, &CUDA).is_err());
        let scalar = f32s(&[]);
        assert!(render_rows(
            &Prim::SoftmaxRows,
            std::slice::from_ref(&scalar),
            &scalar,
            &CUDA
        )
        .is_err());
        let masked = |offset| Prim::MaskedSoftmaxRows {
            scale: 8.0,
            divide: true,
            mask: ViewMap {
                shape: vec![2, 8],
                strides: vec![0, 1],
                offset,
            },
        };
        assert!(render_rows(&masked(0), &[x.clone(), f32s(&[8])], &x, &CUDA).is_ok());
        let e = render_rows(&masked(1), &[x.clone(), f32s(&[8])], &x, &CUDA).unwrap_err();
        assert!(e.contains("mask"), "{e}");
        assert!(render_rows(&masked(0), std::slice::from_ref(&x), &x, &CUDA).is_err());
        assert!(render_rows(
            &Prim::Unary(UnaryOp::Exp),
            std::slice::from_ref(&x),
            &x,
            &CUDA
        )
        .is_err());
    }

    /// The fusion pass asks without input types (row_ops.rs, with an empty mask view); typed
    /// questions are answered by `infer` and the renderer.
    #[test]
    fn row_primitives_are_claimed_for_f32_rows() {
        use crate::plan::claims;
        let masked = Prim::MaskedSoftmaxRows {
            scale: 1.0,
            divide: true,
            mask: ViewMap {
                shape: vec![],
                strides: vec![],
                offset: 0,
            },
        };
        let ln = Prim::LayerNormRows { eps: 1e-5 };
        for p in [&Prim::SoftmaxRows, &masked, &ln] {
            assert!(claims(p, &[], true, &CUDA), "{p:?}");
        }
        let x = f32s(&[4, 384]);
        assert!(claims(
            &ln,
            &[x.clone(), f32s(&[384]), f32s(&[1, 384])],
            true,
            &CUDA
        ));
        assert!(!claims(
            &ln,
            &[x.clone(), f32s(&[384]), f32s(&[383])],
            true,
            &CUDA
        ));
        assert!(claims(&Prim::SoftmaxRows, &[x], true, &CUDA));
        let h = TensorType::new(DType::F16, vec![4, 384]);
        assert!(!claims(&Prim::SoftmaxRows, &[h], true, &CUDA));
    }

    #[test]
    fn empty_rows_render_without_dividing_by_zero() {
        for s in [&[3, 0][..], &[0, 4]] {
            let x = f32s(s);
            let l = render_rows(&Prim::SoftmaxRows, std::slice::from_ref(&x), &x, &CUDA).unwrap();
            assert_eq!(l.grid, 1);
        }
    }
}
