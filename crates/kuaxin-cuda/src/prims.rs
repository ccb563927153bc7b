//! Primitives that are not kernels of the kernel IR, as C-style templates over the shared
//! kernel text: one thread per output element. Elementwise primitives, views and reductions go
//! through the kernel renderer; float matmul goes to cuBLAS (this template is for integers).
use crate::ctype::{accumulator, class, compute, constant, load, store, Class};
use crate::dialect::Dialect;
use crate::kernel::render_kernel;
use crate::text::{
    coords, grid, lin, names, per_element, reach, source, wide, zip, Launch, BLOCK, R,
};
use kuaxin_core::prim::{Prim, TensorType};
use kuaxin_core::prim_kernel::prim_kernel;
use kuaxin_core::tensor::contiguous_strides;
use std::fmt::Write;

/// The launch that computes `p` on `ins` into `out`, or why it is not rendered.
pub fn render(p: &Prim, ins: &[TensorType], out: &TensorType, dl: &Dialect) -> R<Launch> {
    if let Prim::Fused(k) = p {
        return render_kernel(k, ins.len(), dl);
    }
    if p.is_row_op() {
        return crate::rows::render_rows(p, ins, out, dl);
    }
    if let Some(k) = prim_kernel(p, ins, out) {
        return render_kernel(&k, ins.len(), dl);
    }
    let cs = |t: &TensorType| contiguous_strides(&t.shape);
    let c = names("c", out.shape.len());
    let mut b = String::new();
    coords(&mut b, "c", "o", &out.shape);
    match p {
        Prim::PadConstant { pads } => {
            let (x, s) = (&ins[0], cs(&ins[0]));
            b += "bool inb = true;\n";
            for (k, &(before, _)) in pads.iter().enumerate() {
                let _ = writeln!(
                    b,
                    "const kx_i x{k} = c{k} - {before}; inb = inb && x{k} >= 0 && x{k} < {};",
                    x.shape[k]
                );
            }
            let idx = lin(0, &zip(&names("x", s.len()), &s));
            let _ = writeln!(b, "out[o] = inb ? a0[{idx}] : a1[0];");
        }
        Prim::Concat { axis } => {
            let mut start = 0;
            for (i, t) in ins.iter().enumerate() {
                let n = t.shape[*axis];
                if n == 0 {
                    continue;
                }
                let mut terms = zip(&c, &cs(t));
                terms[*axis].0 = format!("(c{axis} - {start})");
                let _ = write!(
                    b,
                    "if (c{axis} < {}) out[o] = a{i}[{}]; else ",
                    start + n,
                    lin(0, &terms)
                );
                start += n;
            }
            b += "{}\n";
        }
        Prim::Gather { axis } => {
            let (d, i) = (&ins[0], &ins[1]);
            let (ds, ri) = (cs(d), i.shape.len());
            index(
                &mut b,
                "j",
                &format!("a1[{}]", lin(0, &zip(&c[*axis..axis + ri], &cs(i)))),
                d.shape[*axis],
            );
            let mut terms = zip(&c[..*axis], &ds[..*axis]);
            terms.push(("j".into(), ds[*axis]));
            terms.extend(zip(&c[axis + ri..], &ds[axis + 1..]));
            let _ = writeln!(b, "out[o] = a0[{}];", lin(0, &terms));
        }
        Prim::GatherElements { axis } => {
            let (d, ds) = (&ins[0], cs(&ins[0]));
            index(&mut b, "j", "a1[o]", d.shape[*axis]);
            let mut terms = zip(&c, &ds);
            terms[*axis].0 = "j".into();
            let _ = writeln!(b, "out[o] = a0[{}];", lin(0, &terms));
        }
        Prim::GatherNd { batch_dims } => {
            let (d, i) = (&ins[0], &ins[1]);
            let (ds, is, ri) = (cs(d), cs(i), i.shape.len());
            let last = i.shape[ri - 1];
            let lead = &c[..ri - 1];
            let mut terms = zip(&c[..*batch_dims], &ds[..*batch_dims]);
            for k in 0..last {
                let mut at = zip(lead, &is[..ri - 1]);
                at.push((k.to_string(), is[ri - 1]));
                index(
                    &mut b,
                    &format!("j{k}"),
                    &format!("a1[{}]", lin(0, &at)),
                    d.shape[batch_dims + k],
                );
                terms.push((format!("j{k}"), ds[batch_dims + k]));
            }
            terms.extend(zip(&c[ri - 1..], &ds[batch_dims + last..]));
            let _ = writeln!(b, "out[o] = a0[{}];", lin(0, &terms));
        }
        Prim::ArgReduce {
            max,
            axis,
            select_last,
        } => {
            let (x, s) = (&ins[0], cs(&ins[0]));
            let cmp = match (max, select_last) {
                (true, false) => ">",
                (true, true) => ">=",
                (false, false) => "<",
                (false, true) => "<=",
            };
            let base = lin(0, &zip(&c, &s));
            let t = compute(x.dtype);
            let _ = writeln!(b, "const kx_i base = {base};\n{t} best = {};\nlong long bi = 0;\nfor (kx_i j = 1; j < {}; ++j) {{ const {t} v = {}; if (v {cmp} best || (v != v && best == best)) {{ best = v; bi = j; }} }}\nout[o] = bi;",
                load(x.dtype, "a0[base]"), x.shape[*axis], load(x.dtype, &format!("a0[base + j * {}]", s[*axis])));
        }
        Prim::Cumulative {
            prod,
            axis,
            exclusive,
            reverse,
        } => {
            let (x, s) = (&ins[0], cs(&ins[0]));
            if class(x.dtype) == Class::Bool {
                return Err("cumulative of bool".into());
            }
            let mut terms = zip(&c, &s);
            terms[*axis].1 = 0;
            let inc = match (reverse, exclusive) {
                (false, false) => "j <= p",
                (false, true) => "j < p",
                (true, false) => "j >= p",
                (true, true) => "j > p",
            };
            let (init, op) = if *prod { (1.0, "*") } else { (0.0, "+") };
            let t = accumulator(x.dtype);
            let _ = writeln!(b, "const kx_i p = c{axis};\nconst kx_i base = {};\n{t} acc = {};\nfor (kx_i j = 0; j < {}; ++j) if ({inc}) acc = acc {op} {};\nout[o] = {};",
                lin(0, &terms), constant(init, x.dtype, dl), x.shape[*axis], load(x.dtype, &format!("a0[base + j * {}]", s[*axis])), store(x.dtype, "acc"));
        }
        Prim::Conv {
            strides,
            dilations,
            groups,
        } => {
            let (x, w) = (&ins[0], &ins[1]);
            if class(x.dtype) == Class::Bool {
                return Err("conv of bool".into());
            }
            let sp = x.shape.len() - 2;
            let (xs, ksz) = (cs(x), &w.shape[2..]);
            let (ch, cg, mg) = (x.shape[1], w.shape[1], w.shape[0] / groups);
            let kn: usize = ksz.iter().product();
            let t = accumulator(x.dtype);
            let _ = writeln!(b, "const kx_i g = c1 / {mg};\n{t} acc = 0;\nfor (kx_i ci = 0; ci < {cg}; ++ci) {{\nconst kx_i xc = (c0 * {ch} + g * {cg} + ci) * {};\nconst kx_i wc = (c1 * {cg} + ci) * {kn};\nfor (kx_i q = 0; q < {kn}; ++q) {{", xs[1]);
            coords(&mut b, "k", "q", ksz);
            let terms: Vec<(String, isize)> = (0..sp)
                .map(|i| {
                    (
                        format!("(c{} * {} + k{i} * {})", i + 2, strides[i], dilations[i]),
                        xs[i + 2],
                    )
                })
                .collect();
            let _ = writeln!(
                b,
                "acc += {} * {};\n}}\n}}\nout[o] = {};",
                load(x.dtype, &format!("a0[xc + {}]", lin(0, &terms))),
                load(w.dtype, "a1[wc + q]"),
                store(out.dtype, "acc")
            );
        }
        Prim::MatMul => {
            let (a, bt) = (&ins[0], &ins[1]);
            if class(a.dtype) == Class::Bool {
                return Err("matmul of bool".into());
            }
            let r = a.shape.len();
            let (m, k, n) = (a.shape[r - 2], a.shape[r - 1], bt.shape[r - 1]);
            let t = accumulator(a.dtype);
            let _ = writeln!(b, "const kx_i bt = o / {};\nconst kx_i ab = bt * {} + c{} * {k};\nconst kx_i bb = bt * {} + c{};\n{t} acc = 0;\nfor (kx_i q = 0; q < {k}; ++q) acc += {} * {};\nout[o] = {};",
                m * n, m * k, r - 2, k * n, r - 1, load(a.dtype, "a0[ab + q]"), load(a.dtype, &format!("a1[bb + q * {n}]")), store(out.dtype, "acc"));
        }
        other => return Err(format!("{} is not rendered for CUDA yet", other.name())),
    }
    let far = ins
        .iter()
        .chain([out])
        .map(|t| reach(&t.shape, &cs(t), 0))
        .max()
        .unwrap_or(0);
    let args: Vec<_> = ins.iter().map(|t| t.dtype).collect();
    let n = out.numel();
    Ok(Launch {
        src: source(
            dl,
            out.dtype,
            &args,
            wide(far),
            BLOCK,
            &per_element(dl, n, &b),
        ),
        grid: grid(n, BLOCK),
        block: BLOCK,
    })
}

/// `const kx_i {name}` = the index read by `expr`, negative counting from the end, clamped to
/// `0..n` (a kernel cannot fail; out-of-range indices read the nearest element).
fn index(b: &mut String, name: &str, expr: &str, n: usize) {
    let _ = writeln!(
        b,
        "kx_i {name} = (kx_i)({expr});\nif ({name} < 0) {name} += {n};\n{name} = {name} < 0 ? 0 : ({name} >= {n} ? {n} - 1 : {name});"
    );
}

/// The im2col of convolution input `x` for weights `w`: `col[n, c, q, p]` = the input element
/// kernel tap `q` of channel `c` reads for output position `p` (no padding: the lowering pads
/// first). Returns the kernel (input: x, output: col) and col's type.
pub fn im2col(
    x: &TensorType,
    w: &TensorType,
    out_shape: &[usize],
    strides: &[usize],
    dilations: &[usize],
    dl: &Dialect,
) -> R<(Launch, TensorType)> {
    let sp = x.shape.len() - 2;
    let (ksz, osz) = (&w.shape[2..], &out_shape[2..]);
    let (kn, p): (usize, usize) = (ksz.iter().product(), osz.iter().product());
    let col = TensorType::new(x.dtype, vec![x.shape[0], x.shape[1], kn, p]);
    let xs = contiguous_strides(&x.shape);
    let mut b = String::new();
    coords(&mut b, "c", "o", &col.shape);
    coords(&mut b, "k", "c2", ksz);
    coords(&mut b, "s", "c3", osz);
    let mut terms = vec![("c0".to_string(), xs[0]), ("c1".to_string(), xs[1])];
    terms.extend((0..sp).map(|i| {
        (
            format!("(s{i} * {} + k{i} * {})", strides[i], dilations[i]),
            xs[i + 2],
        )
    }));
    let _ = writeln!(b, "out[o] = a0[{}];", lin(0, &terms));
    let n = col.numel();
    let far = reach(&col.shape, &contiguous_strides(&col.shape), 0).max(reach(&x.shape, &xs, 0));
    Ok((
        Launch {
            src: source(
                dl,
                x.dtype,
                &[x.dtype],
                wide(far),
                BLOCK,
                &per_element(dl, n, &b),
            ),
            grid: grid(n, BLOCK),
            block: BLOCK,
        },
        col,
    ))
}
