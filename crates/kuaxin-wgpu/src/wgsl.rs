//! WGSL for one primitive or one fused kernel. Elementwise primitives, views and reductions are
//! first written as kernels of the kernel IR (`kuaxin_core::prim_kernel`, shared with the CUDA
//! back end), so a single renderer covers them and `Prim::Fused`; the other primitives have their own templates. Sizes and strides are baked
//! into the source; the back end caches pipelines by source text.
use kuaxin_core::kernel::{Expr, Kernel, Load, Op, Reduction};
use kuaxin_core::prim::{BinaryOp as B, Prim, ReduceOp, TensorType, UnaryOp as U};
use kuaxin_core::prim_kernel::prim_kernel;
use kuaxin_core::tensor::contiguous_strides;
use kuaxin_core::DType;
use std::fmt::Write;

pub struct Shader {
    pub src: String,
    pub groups: [u32; 3],
}

type R<T> = std::result::Result<T, String>;

/// The element type a tensor of `d` has in a storage buffer; None: not computed on the device.
pub fn storage_type(d: DType, f16: bool) -> Option<&'static str> {
    match d {
        DType::F32 => Some("f32"),
        DType::F16 if f16 => Some("f16"),
        DType::I32 | DType::I64 => Some("i32"),
        DType::U32 | DType::U64 | DType::Bool => Some("u32"),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Class {
    F,
    I,
    U,
    Bool,
}

fn class(d: DType) -> Class {
    match d {
        DType::F32 | DType::F16 => Class::F,
        DType::I32 | DType::I64 => Class::I,
        DType::Bool => Class::Bool,
        _ => Class::U,
    }
}

/// The type values of `d` are computed in.
fn ct(d: DType) -> &'static str {
    match class(d) {
        Class::F => "f32",
        Class::I => "i32",
        _ => "u32",
    }
}

fn zero(d: DType) -> &'static str {
    match class(d) {
        Class::F => "0.0",
        Class::I => "0",
        _ => "0u",
    }
}

/// A loaded element in its compute type.
fn load(d: DType, e: String) -> String {
    if d == DType::F16 {
        format!("f32({e})")
    } else {
        e
    }
}

/// A computed value in its storage type.
fn store(d: DType, e: &str) -> String {
    if d == DType::F16 {
        format!("f16({e})")
    } else {
        e.to_string()
    }
}

const PRELUDE: &str = r#"
var<private> KINF: u32 = 0x7f800000u;
var<private> KNAN: u32 = 0x7fc00000u;
fn finf() -> f32 { return bitcast<f32>(KINF); }
fn fnanv() -> f32 { return bitcast<f32>(KNAN); }
fn fnan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn fmaxn(a: f32, b: f32) -> f32 { if (fnan(a)) { return a; } if (fnan(b) || b > a) { return b; } return a; }
fn fminn(a: f32, b: f32) -> f32 { if (fnan(a)) { return a; } if (fnan(b) || b < a) { return b; } return a; }
fn fsign(x: f32) -> f32 { if (x > 0.0) { return 1.0; } if (x < 0.0) { return -1.0; } return x; }
fn ftanh(x: f32) -> f32 { if (abs(x) > 10.0) { return sign(x); } return tanh(x); }
fn fsigmoid(x: f32) -> f32 { if (x >= 0.0) { return 1.0 / (1.0 + exp(-x)); } let e = exp(x); return e / (1.0 + e); }
fn ffmod(a: f32, b: f32) -> f32 { if (abs(b) == finf() && abs(a) != finf()) { return a; } return a % b; }
fn fmodpy(a: f32, b: f32) -> f32 {
  let r = ffmod(a, b);
  if (r == 0.0) { return bitcast<f32>(bitcast<u32>(b) & 0x80000000u); }
  if ((r < 0.0) != (b < 0.0)) { return r + b; }
  return r;
}
fn fpow(a: f32, b: f32) -> f32 {
  if (b == 0.0 || a == 1.0) { return 1.0; }
  if (fnan(a) || fnan(b)) { return fnanv(); }
  let x = abs(a);
  var r = pow(x, b);
  if (x == 0.0) { r = select(0.0, finf(), b < 0.0); }
  if (x == 1.0) { r = 1.0; }
  let ib = floor(b) == b;
  if (a < 0.0 && !ib) { return fnanv(); }
  if ((bitcast<u32>(a) >> 31u) == 1u && ib && abs(b) < 16777216.0 && fract(b * 0.5) != 0.0) { return -r; }
  return r;
}
fn fatan(a: f32) -> f32 {
  var x = abs(a);
  var y = 0.0;
  if (x > 2.414213562373095) { y = 1.5707963267948966; x = -1.0 / x; }
  else if (x > 0.4142135623730950) { y = 0.7853981633974483; x = (x - 1.0) / (x + 1.0); }
  let z = x * x;
  y = y + ((((8.05374449538e-2 * z - 1.38776856032e-1) * z + 1.99777106478e-1) * z - 3.33329491539e-1) * z * x + x);
  return select(y, -y, a < 0.0);
}
fn fasin(v: f32) -> f32 {
  let a = abs(v);
  if (a > 1.0) { return fnanv(); }
  var x = a;
  var z = a * a;
  if (a > 0.5) { z = 0.5 * (1.0 - a); x = sqrt(z); }
  var r = ((((4.2163199048e-2 * z + 2.4181311049e-2) * z + 4.5470025998e-2) * z + 7.4953002686e-2) * z + 1.6666752422e-1) * z * x + x;
  if (a > 0.5) { r = 1.5707963267948966 - (r + r); }
  return select(r, -r, v < 0.0);
}
fn facos(x: f32) -> f32 {
  if (x < -0.5) { return 3.141592653589793 - 2.0 * fasin(sqrt(0.5 * (1.0 + x))); }
  if (x > 0.5) { return 2.0 * fasin(sqrt(0.5 * (1.0 - x))); }
  return 1.5707963267948966 - fasin(x);
}
fn ferf(a: f32) -> f32 {
  let t = abs(a);
  let s = a * a;
  var r: f32;
  if (t > 0.927734375) {
    r = fma(-1.72853470e-5, t, 3.83197126e-4);
    let u = fma(-3.88396438e-3, t, 2.42546219e-2);
    r = fma(r, s, u);
    r = fma(r, t, -1.06777877e-1);
    r = fma(r, t, -6.34846687e-1);
    r = fma(r, t, -1.28717512e-1);
    r = fma(r, t, -t);
    r = 1.0 - exp(r);
    if (a < 0.0) { r = -r; }
  } else {
    r = -5.96761703e-4;
    r = fma(r, s, 4.99119423e-3);
    r = fma(r, s, -2.67681349e-2);
    r = fma(r, s, 1.12819925e-1);
    r = fma(r, s, -3.76125336e-1);
    r = fma(r, s, 1.28379166e-1);
    r = fma(r, a, a);
  }
  return r;
}
fn f2i(x: f32) -> i32 { if (fnan(x)) { return 0; } return i32(clamp(x, -2147483648.0, 2147483520.0)); }
fn f2u(x: f32) -> u32 { if (fnan(x)) { return 0u; } return u32(clamp(x, 0.0, 4294967040.0)); }
fn idiv(a: i32, b: i32) -> i32 { if (b == 0) { return 0; } return a / b; }
fn ifmod(a: i32, b: i32) -> i32 { if (b == 0) { return 0; } return a % b; }
fn imod(a: i32, b: i32) -> i32 { if (b == 0) { return 0; } let r = a % b; if (r != 0 && ((r < 0) != (b < 0))) { return r + b; } return r; }
fn ishl(a: i32, b: i32) -> i32 { if (b < 0 || b >= 32) { return 0; } return a << u32(b); }
fn ishr(a: i32, b: i32) -> i32 { if (b < 0 || b >= 32) { return select(0, -1, a < 0); } return a >> u32(b); }
fn ipow(a: i32, e: i32) -> i32 {
  if (e < 0) { if (a == 1) { return 1; } if (a == -1) { return select(-1, 1, (e & 1) == 0); } return 0; }
  var acc = 1; var b = a; var k = e;
  loop { if (k == 0) { break; } if ((k & 1) == 1) { acc = acc * b; } k = k >> 1u; b = b * b; }
  return acc;
}
fn udiv(a: u32, b: u32) -> u32 { if (b == 0u) { return 0u; } return a / b; }
fn umod(a: u32, b: u32) -> u32 { if (b == 0u) { return 0u; } return a % b; }
fn ushl(a: u32, b: u32) -> u32 { if (b >= 32u) { return 0u; } return a << b; }
fn ushr(a: u32, b: u32) -> u32 { if (b >= 32u) { return 0u; } return a >> b; }
fn upow(a: u32, e: u32) -> u32 {
  var acc = 1u; var b = a; var k = e;
  loop { if (k == 0u) { break; } if ((k & 1u) == 1u) { acc = acc * b; } k = k >> 1u; b = b * b; }
  return acc;
}
"#;

/// Workgroups for `n` threads of 64, spilling into y past 65535 groups.
fn grid(n: usize) -> R<[u32; 3]> {
    let g = n.div_ceil(64);
    if g <= 65535 {
        return Ok([g as u32, 1, 1]);
    }
    let y = g.div_ceil(65535);
    if y > 65535 {
        return Err(format!("{n} elements are too many for one dispatch"));
    }
    Ok([65535, y as u32, 1])
}

/// Declarations: output at binding 0, argument i at binding i + 1 (None: not read).
fn header(out: DType, args: &[Option<DType>], f16: bool) -> R<String> {
    let ty = |d: DType| {
        storage_type(d, f16).ok_or_else(|| format!("{d} is not computed on this device"))
    };
    let mut s = String::new();
    if std::iter::once(Some(out))
        .chain(args.iter().copied())
        .any(|d| d == Some(DType::F16))
    {
        s += "enable f16;\n";
    }
    let _ = writeln!(
        s,
        "@group(0) @binding(0) var<storage, read_write> out: array<{}>;",
        ty(out)?
    );
    for (i, a) in args.iter().enumerate() {
        if let Some(d) = a {
            let _ = writeln!(
                s,
                "@group(0) @binding({}) var<storage, read> a{i}: array<{}>;",
                i + 1,
                ty(*d)?
            );
        }
    }
    s += PRELUDE;
    Ok(s)
}

/// A shader running `body` once per output element `o` (u32).
fn per_element(out: &TensorType, args: &[Option<DType>], f16: bool, body: &str) -> R<Shader> {
    let mut s = header(out.dtype, args, f16)?;
    let _ = write!(
        s,
        "@compute @workgroup_size(64)\nfn main(@builtin(global_invocation_id) gid: vec3<u32>) {{\nlet o = gid.x + gid.y * 4194240u;\nif (o >= {}u) {{ return; }}\n{body}}}\n",
        out.numel()
    );
    Ok(Shader {
        src: s,
        groups: grid(out.numel())?,
    })
}

/// `let {p}k = ...` : the row-major coordinates of linear index `idx` in `dims`.
fn coords(b: &mut String, p: &str, idx: &str, dims: &[usize]) {
    if dims.is_empty() {
        return;
    }
    let _ = writeln!(b, "var {p}r: u32 = {idx};");
    for (k, &d) in dims.iter().enumerate().rev() {
        let d = d.max(1);
        let _ = writeln!(b, "let {p}{k} = i32({p}r % {d}u); {p}r = {p}r / {d}u;");
    }
}

/// `offset + Σ coord·stride` as an i32 expression.
fn lin(offset: isize, terms: &[(String, isize)]) -> String {
    let mut s = format!("({offset}");
    for (c, st) in terms {
        if *st != 0 {
            let _ = write!(s, " + {c} * {st}");
        }
    }
    s + ")"
}

fn names(p: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{p}{i}")).collect()
}

fn zip(c: &[String], s: &[isize]) -> Vec<(String, isize)> {
    c.iter().cloned().zip(s.iter().copied()).collect()
}

fn konst(v: f64, d: DType) -> String {
    match class(d) {
        Class::F => {
            let f = v as f32;
            if f.is_finite() {
                format!("bitcast<f32>({:#010x}u)", f.to_bits())
            } else if f.is_nan() {
                "fnanv()".into()
            } else if f > 0.0 {
                "finf()".into()
            } else {
                "(-finf())".into()
            }
        }
        Class::I => format!("bitcast<i32>({:#010x}u)", (v as i64 as i32) as u32),
        Class::U => format!("{}u", v as i64 as u32),
        Class::Bool => format!("{}u", (v != 0.0) as u32),
    }
}

fn unary(op: U, d: DType, x: &str) -> R<String> {
    let f = |name: &str| Ok(format!("{name}({x})"));
    match (class(d), op) {
        (Class::F, U::Neg) | (Class::I, U::Neg) => Ok(format!("(-{x})")),
        (Class::F, U::Abs) | (Class::I, U::Abs) => f("abs"),
        (Class::F, U::Sqrt) => f("sqrt"),
        (Class::F, U::Exp) => f("exp"),
        (Class::F, U::Log) => f("log"),
        (Class::F, U::Sin) => f("sin"),
        (Class::F, U::Cos) => f("cos"),
        (Class::F, U::Tan) => f("tan"),
        (Class::F, U::Asin) => f("fasin"),
        (Class::F, U::Acos) => f("facos"),
        (Class::F, U::Atan) => f("fatan"),
        (Class::F, U::Sinh) => f("sinh"),
        (Class::F, U::Cosh) => f("cosh"),
        (Class::F, U::Tanh) => f("ftanh"),
        (Class::F, U::Asinh) => f("asinh"),
        (Class::F, U::Acosh) => f("acosh"),
        (Class::F, U::Atanh) => f("atanh"),
        (Class::F, U::Erf) => f("ferf"),
        (Class::F, U::Floor) => f("floor"),
        (Class::F, U::Ceil) => f("ceil"),
        (Class::F, U::Round) => f("round"),
        (Class::F, U::Sign) => f("fsign"),
        (Class::F, U::Reciprocal) => Ok(format!("(1.0 / {x})")),
        (Class::F, U::Sigmoid) => f("fsigmoid"),
        (Class::F, U::IsNan) => Ok(format!("u32(fnan({x}))")),
        (Class::F, U::IsPosInf) => Ok(format!("u32(bitcast<u32>({x}) == 0x7f800000u)")),
        (Class::F, U::IsNegInf) => Ok(format!("u32(bitcast<u32>({x}) == 0xff800000u)")),
        (Class::I, U::Sign) => f("sign"),
        (Class::I | Class::U, U::BitNot) => Ok(format!("(~{x})")),
        (Class::U, U::Neg) => Ok(format!("(0u - {x})")),
        (Class::U, U::Abs) => Ok(x.to_string()),
        (Class::U, U::Sign) => Ok(format!("u32({x} != 0u)")),
        (Class::Bool, U::Not) => Ok(format!("(1u - {x})")),
        (c, op) => Err(format!("{op:?} on {c:?} values")),
    }
}

fn binary(op: B, d: DType, a: &str, b: &str) -> R<String> {
    let c = class(d);
    let infix = |o: &str| Ok(format!("({a} {o} {b})"));
    let call = |f: &str| Ok(format!("{f}({a}, {b})"));
    match (c, op) {
        (Class::F | Class::I | Class::U, B::Add) => infix("+"),
        (Class::F | Class::I | Class::U, B::Sub) => infix("-"),
        (Class::F | Class::I | Class::U, B::Mul) => infix("*"),
        (Class::F, B::Div) => infix("/"),
        (Class::F, B::Pow) => call("fpow"),
        (Class::F, B::Max) => call("fmaxn"),
        (Class::F, B::Min) => call("fminn"),
        (Class::F, B::Mod) => call("fmodpy"),
        (Class::F, B::FMod) => call("ffmod"),
        (_, B::Eq) => Ok(format!("u32({a} == {b})")),
        (_, B::Lt) => Ok(format!("u32({a} < {b})")),
        (_, B::Le) => Ok(format!("u32({a} <= {b})")),
        (_, B::Gt) => Ok(format!("u32({a} > {b})")),
        (_, B::Ge) => Ok(format!("u32({a} >= {b})")),
        (Class::I | Class::U | Class::Bool, B::Max) => call("max"),
        (Class::I | Class::U | Class::Bool, B::Min) => call("min"),
        (Class::I | Class::U, B::BitAnd) | (Class::Bool, B::And) => infix("&"),
        (Class::I | Class::U, B::BitOr) | (Class::Bool, B::Or) => infix("|"),
        (Class::I | Class::U, B::BitXor) | (Class::Bool, B::Xor) => infix("^"),
        (Class::I, B::Div) => call("idiv"),
        (Class::I, B::Pow) => call("ipow"),
        (Class::I, B::Mod) => call("imod"),
        (Class::I, B::FMod) => call("ifmod"),
        (Class::I, B::Shl) => call("ishl"),
        (Class::I, B::Shr) => call("ishr"),
        (Class::U, B::Div) => call("udiv"),
        (Class::U, B::Pow) => call("upow"),
        (Class::U, B::Mod | B::FMod) => call("umod"),
        (Class::U, B::Shl) => call("ushl"),
        (Class::U, B::Shr) => call("ushr"),
        (c, op) => Err(format!("{op:?} on {c:?} values")),
    }
}

fn cast(from: DType, to: DType, x: &str) -> R<String> {
    // 64-bit integers live in 32 bits: a cast that changes signedness into a 64-bit type would
    // widen the wrong way on download.
    if (to == DType::U64 && class(from) == Class::I)
        || (to == DType::I64 && class(from) == Class::U)
    {
        return Err(format!(
            "cast {from} -> {to} of 64-bit integers narrowed to 32 bits"
        ));
    }
    Ok(match (class(from), class(to)) {
        (a, b) if a == b => x.to_string(),
        (Class::F, Class::Bool) => format!("u32({x} != 0.0)"),
        (Class::I, Class::Bool) => format!("u32({x} != 0)"),
        (Class::U, Class::Bool) => format!("u32({x} != 0u)"),
        (Class::Bool | Class::I | Class::U, Class::F) => format!("f32({x})"),
        (Class::Bool, Class::I) => format!("i32({x})"),
        (Class::Bool, Class::U) => x.to_string(),
        (Class::F, Class::I) => format!("f2i({x})"),
        (Class::F, Class::U) => format!("f2u({x})"),
        (Class::I, Class::U) => format!("bitcast<u32>({x})"),
        (Class::U, Class::I) => format!("bitcast<i32>({x})"),
        (a, b) => return Err(format!("cast {a:?} -> {b:?}")),
    })
}

/// `let {p}i = ...;` for each op. `coords` are the domain coordinates loads index with
/// (fewer than the strides in the epilogue: reduced axes are ignored there).
fn ops(
    b: &mut String,
    list: &[Op],
    p: &str,
    loads: &[Load],
    coords: &[String],
    reduced: Option<&str>,
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
                    format!("a{}[{}]", ld.arg, lin(ld.offset as isize, &terms)),
                )
            }
            Expr::Const(c) => konst(*c, op.dtype),
            Expr::Reduced => reduced
                .ok_or("reduced value outside the epilogue")?
                .to_string(),
            Expr::Unary(u, a) => {
                let (x, d) = val(*a)?;
                unary(*u, d, &x)?
            }
            Expr::Binary(o, x, y) => {
                let ((x, dx), (y, dy)) = (val(*x)?, val(*y)?);
                if dx != dy {
                    return Err(format!("{o:?} of {dx} and {dy}"));
                }
                binary(*o, dx, &x, &y)?
            }
            Expr::Where(c, x, y) => {
                let ((c, _), (x, _), (y, _)) = (val(*c)?, val(*x)?, val(*y)?);
                format!("select({y}, {x}, {c} != 0u)")
            }
            Expr::Cast(a) => {
                let (x, d) = val(*a)?;
                cast(d, op.dtype, &x)?
            }
        };
        let e = if op.dtype == DType::F16 && !matches!(op.expr, Expr::Load(_)) {
            format!("f32(f16({e}))")
        } else {
            e
        };
        let _ = writeln!(b, "let {p}{i}: {} = {e};", ct(op.dtype));
    }
    Ok(())
}

fn reduce_parts(op: ReduceOp, d: DType) -> (&'static str, &'static str) {
    match (op, class(d)) {
        (ReduceOp::Sum, Class::Bool) | (ReduceOp::Max, Class::Bool | Class::U) => ("0u", "max"),
        (ReduceOp::Prod, Class::Bool) | (ReduceOp::Min, Class::Bool) => ("1u", "min"),
        (ReduceOp::Sum, _) => (zero(d), "+"),
        (ReduceOp::Prod, Class::F) => ("1.0", "*"),
        (ReduceOp::Prod, Class::I) => ("1", "*"),
        (ReduceOp::Prod, _) => ("1u", "*"),
        (ReduceOp::Max, Class::F) => ("(-finf())", "fmaxn"),
        (ReduceOp::Max, _) => ("i32(-2147483648)", "max"),
        (ReduceOp::Min, Class::F) => ("finf()", "fminn"),
        (ReduceOp::Min, Class::I) => ("2147483647", "min"),
        (ReduceOp::Min, _) => ("4294967295u", "min"),
    }
}

fn combine(f: &str, a: &str, x: &str) -> String {
    if f.len() == 1 {
        format!("{a} {f} {x}")
    } else {
        format!("{f}({a}, {x})")
    }
}

pub fn render_kernel(k: &Kernel, f16: bool) -> R<Shader> {
    let n_args = k.loads.iter().map(|l| l.arg + 1).max().unwrap_or(0);
    let mut args: Vec<Option<DType>> = vec![None; n_args];
    for l in &k.loads {
        if args[l.arg].is_some_and(|d| d != l.dtype) || l.strides.len() != k.domain.len() {
            return Err("inconsistent loads".into());
        }
        args[l.arg] = Some(l.dtype);
    }
    let rd = k.reduce.as_ref().map_or(0, |r| r.dims);
    let kept = &k.domain[..k.domain.len() - rd];
    let kc = names("c", kept.len());
    let mut b = String::new();
    coords(&mut b, "c", "o", kept);
    let last = match &k.reduce {
        None => {
            ops(&mut b, &k.body, "v", &k.loads, &kc, None)?;
            format!("v{}", k.body.len().checked_sub(1).ok_or("empty kernel")?)
        }
        Some(Reduction { op, value, dims }) => {
            let vd = k
                .body
                .get(*value)
                .ok_or("reduced value out of range")?
                .dtype;
            let (init, f) = reduce_parts(*op, vd);
            let rdims = &k.domain[kept.len()..];
            let _ = writeln!(
                b,
                "var acc: {} = {init};\nfor (var j: u32 = 0u; j < {}u; j = j + 1u) {{",
                ct(vd),
                rdims.iter().product::<usize>()
            );
            coords(&mut b, "d", "j", rdims);
            let all: Vec<String> = kc.iter().cloned().chain(names("d", *dims)).collect();
            ops(&mut b, &k.body, "v", &k.loads, &all, None)?;
            let _ = writeln!(b, "acc = {};\n}}", combine(f, "acc", &format!("v{value}")));
            ops(&mut b, &k.epilogue, "e", &k.loads, &kc, Some("acc"))?;
            format!(
                "e{}",
                k.epilogue.len().checked_sub(1).ok_or("empty epilogue")?
            )
        }
    };
    let list = if k.reduce.is_some() {
        &k.epilogue
    } else {
        &k.body
    };
    if list.last().map(|o| o.dtype) != Some(k.out.dtype) {
        return Err("stored value does not have the output dtype".into());
    }
    let _ = writeln!(b, "out[o] = {};", store(k.out.dtype, &last));
    per_element(&k.out, &args, f16, &b)
}

pub fn render(p: &Prim, ins: &[TensorType], out: &TensorType, f16: bool) -> R<Shader> {
    // Elementwise primitives, views and reductions are kernels of the kernel IR.
    if let Some(k) = prim_kernel(p, ins, out) {
        return render_kernel(&k, f16);
    }
    let ty = |t: &TensorType| Some(t.dtype);
    let cs = |t: &TensorType| contiguous_strides(&t.shape);
    match p {
        Prim::PadConstant { pads } => {
            let (x, s) = (&ins[0], cs(&ins[0]));
            let mut b = String::new();
            coords(&mut b, "c", "o", &out.shape);
            b += "var inb = true;\n";
            for (k, &(before, _)) in pads.iter().enumerate() {
                let _ = writeln!(
                    b,
                    "let x{k} = c{k} - {before}; inb = inb && x{k} >= 0 && x{k} < {};",
                    x.shape[k]
                );
            }
            let idx = lin(0, &zip(&names("x", s.len()), &s));
            let _ = writeln!(
                b,
                "if (inb) {{ out[o] = a0[{idx}]; }} else {{ out[o] = a1[0]; }}"
            );
            per_element(out, &[ty(x), ty(&ins[1])], f16, &b)
        }
        Prim::Concat { axis } => {
            let mut b = String::new();
            coords(&mut b, "c", "o", &out.shape);
            let mut start = 0;
            let c = names("c", out.shape.len());
            for (i, t) in ins.iter().enumerate() {
                let n = t.shape[*axis];
                if n == 0 {
                    continue;
                }
                let mut terms = zip(&c, &cs(t));
                terms[*axis].0 = format!("(c{axis} - {start})");
                let _ = write!(
                    b,
                    "if (c{axis} < {}) {{ out[o] = a{i}[{}]; }} else ",
                    start + n,
                    lin(0, &terms)
                );
                start += n;
            }
            b += "{}\n";
            per_element(out, &ins.iter().map(ty).collect::<Vec<_>>(), f16, &b)
        }
        Prim::Gather { axis } => {
            let (d, i) = (&ins[0], &ins[1]);
            let (ds, ri) = (cs(d), i.shape.len());
            let c = names("c", out.shape.len());
            let mut b = String::new();
            coords(&mut b, "c", "o", &out.shape);
            let _ = writeln!(
                b,
                "var j = i32(a1[{}]);\nif (j < 0) {{ j = j + {n}; }}\nj = clamp(j, 0, {n} - 1);",
                lin(0, &zip(&c[*axis..axis + ri], &cs(i))),
                n = d.shape[*axis]
            );
            let mut terms = zip(&c[..*axis], &ds[..*axis]);
            terms.push(("j".into(), ds[*axis]));
            terms.extend(zip(&c[axis + ri..], &ds[axis + 1..]));
            let _ = writeln!(b, "out[o] = a0[{}];", lin(0, &terms));
            per_element(out, &[ty(d), ty(i)], f16, &b)
        }
        Prim::GatherElements { axis } => {
            let (d, ds) = (&ins[0], cs(&ins[0]));
            let mut b = String::new();
            coords(&mut b, "c", "o", &out.shape);
            let mut terms = zip(&names("c", out.shape.len()), &ds);
            terms[*axis].0 = "j".into();
            let _ = writeln!(b, "var j = i32(a1[o]);\nif (j < 0) {{ j = j + {n}; }}\nj = clamp(j, 0, {n} - 1);\nout[o] = a0[{}];", lin(0, &terms), n = d.shape[*axis]);
            per_element(out, &[ty(d), ty(&ins[1])], f16, &b)
        }
        Prim::ArgReduce {
            max,
            axis,
            select_last,
        } => {
            let (x, s) = (&ins[0], cs(&ins[0]));
            let mut b = String::new();
            coords(&mut b, "c", "o", &out.shape);
            let base = lin(0, &zip(&names("c", s.len()), &s));
            let cmp = match (max, select_last) {
                (true, false) => ">",
                (true, true) => ">=",
                (false, false) => "<",
                (false, true) => "<=",
            };
            let _ = writeln!(b, "let base = {base};\nvar best = {};\nvar bi = 0;\nfor (var j = 1; j < {}; j = j + 1) {{ let v = {}; if (v {cmp} best) {{ best = v; bi = j; }} }}\nout[o] = bi;",
                load(x.dtype, "a0[base]".into()), x.shape[*axis], load(x.dtype, format!("a0[base + j * {}]", s[*axis])));
            per_element(out, &[ty(x)], f16, &b)
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
            let mut b = String::new();
            coords(&mut b, "c", "o", &out.shape);
            let mut terms = zip(&names("c", s.len()), &s);
            terms.remove(*axis);
            let inc = match (reverse, exclusive) {
                (false, false) => "j <= p",
                (false, true) => "j < p",
                (true, false) => "j >= p",
                (true, true) => "j > p",
            };
            let (init, f) =
                reduce_parts(if *prod { ReduceOp::Prod } else { ReduceOp::Sum }, x.dtype);
            let _ = writeln!(b, "let p = c{axis};\nlet base = {};\nvar acc: {} = {init};\nfor (var j = 0; j < {}; j = j + 1) {{ if ({inc}) {{ acc = {}; }} }}\nout[o] = {};",
                lin(0, &terms), ct(x.dtype), x.shape[*axis], combine(f, "acc", &load(x.dtype, format!("a0[base + j * {}]", s[*axis]))), store(x.dtype, "acc"));
            per_element(out, &[ty(x)], f16, &b)
        }
        Prim::MatMul => matmul(ins, out, f16),
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
            let (c, cg, mg) = (x.shape[1], w.shape[1], w.shape[0] / groups);
            let kn: usize = ksz.iter().product();
            let mut b = String::new();
            coords(&mut b, "c", "o", &out.shape);
            let _ = writeln!(b, "let g = c1 / {mg};\nvar acc: {} = {};\nfor (var ci = 0; ci < {cg}; ci = ci + 1) {{\nlet xc = (c0 * {c} + g * {cg} + ci) * {};\nlet wc = (c1 * {cg} + ci) * {kn};\nfor (var q: u32 = 0u; q < {kn}u; q = q + 1u) {{",
                ct(x.dtype), zero(x.dtype), xs[1]);
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
                "acc = acc + {} * {};\n}}\n}}\nout[o] = {};",
                load(x.dtype, format!("a0[xc + {}]", lin(0, &terms))),
                load(w.dtype, "a1[wc + i32(q)]".into()),
                store(out.dtype, "acc")
            );
            per_element(out, &[ty(x), ty(w)], f16, &b)
        }
        other => Err(format!("{} is not rendered for wgpu yet", other.name())),
    }
}

/// Batched `[.., M, K] x [.., K, N]` in 16x16 tiles through workgroup memory.
fn matmul(ins: &[TensorType], out: &TensorType, f16: bool) -> R<Shader> {
    let (a, d) = (&ins[0], ins[0].dtype);
    if class(d) == Class::Bool {
        return Err("matmul of bool".into());
    }
    let r = a.shape.len();
    let (m, k, n) = (a.shape[r - 2], a.shape[r - 1], ins[1].shape[r - 1]);
    let batch: usize = a.shape[..r - 2].iter().product();
    if batch > 65535 || m.div_ceil(16) > 65535 || n.div_ceil(16) > 65535 {
        return Err(format!(
            "matmul {a} x {} is too large for one dispatch",
            ins[1]
        ));
    }
    let (t, z) = (ct(d), zero(d));
    let mut s = header(d, &[Some(d), Some(d)], f16)?;
    let _ = write!(
        s,
        r#"
var<workgroup> ta: array<array<{t}, 16>, 16>;
var<workgroup> tb: array<array<{t}, 16>, 16>;
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) w: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {{
  let row = w.y * 16u + l.y;
  let col = w.x * 16u + l.x;
  let ab = w.z * {mk}u;
  let bb = w.z * {kn}u;
  var acc: {t} = {z};
  for (var t = 0u; t < {k}u; t = t + 16u) {{
    var x: {t} = {z};
    if (row < {m}u && t + l.x < {k}u) {{ x = {la}; }}
    ta[l.y][l.x] = x;
    var y: {t} = {z};
    if (t + l.y < {k}u && col < {n}u) {{ y = {lb}; }}
    tb[l.y][l.x] = y;
    workgroupBarrier();
    for (var q = 0u; q < 16u; q = q + 1u) {{ acc = acc + ta[l.y][q] * tb[q][l.x]; }}
    workgroupBarrier();
  }}
  if (row < {m}u && col < {n}u) {{ out[w.z * {mn}u + row * {n}u + col] = {st}; }}
}}
"#,
        mk = m * k,
        kn = k * n,
        mn = m * n,
        la = load(d, format!("a0[ab + row * {k}u + t + l.x]")),
        lb = load(d, format!("a1[bb + (t + l.y) * {n}u + col]")),
        st = store(d, "acc")
    );
    let _ = out;
    Ok(Shader {
        src: s,
        groups: [n.div_ceil(16) as u32, m.div_ceil(16) as u32, batch as u32],
    })
}
