//! Linear quantization: QuantizeLinear / DequantizeLinear (per-tensor, per-axis, blocked),
//! DynamicQuantizeLinear, MatMulInteger and QLinearMatMul. Integer formats only.
use super::misc::onnx_dtype;
use super::Registry;
use crate::builder::{norm_axis, opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::prim::{BinaryOp, Prim, ReduceOp, UnaryOp};
use kuaxin_core::{bail_invalid, bail_unsupported, DType, Result, Tensor};

/// The representable range of a quantized integer type.
fn quant_range(dt: DType) -> Result<(f64, f64)> {
    Ok(match dt {
        DType::U8 => (0.0, 255.0),
        DType::I8 => (-128.0, 127.0),
        DType::U16 => (0.0, 65535.0),
        DType::I16 => (-32768.0, 32767.0),
        DType::I32 => (i32::MIN as f64, i32::MAX as f64),
        other => bail_unsupported!("quantized type {other} is not supported"),
    })
}

/// A float type wide enough to hold every value of `dt` (and of f32) exactly.
fn wide_float(dt: DType) -> DType {
    if matches!(
        dt,
        DType::I32 | DType::U32 | DType::I64 | DType::U64 | DType::F64
    ) {
        DType::F64
    } else {
        DType::F32
    }
}

impl Cx<'_, '_> {
    /// Rounds half to even and clamps to `[lo, hi]`, then casts to `to`.
    pub(crate) fn round_clamp_cast(
        &mut self,
        x: &TVal,
        lo: f64,
        hi: f64,
        to: DType,
    ) -> Result<TVal> {
        let r = self.unary(UnaryOp::Round, x)?;
        self.clamp_cast(&r, lo, hi, to)
    }

    pub(crate) fn clamp_cast(&mut self, x: &TVal, lo: f64, hi: f64, to: DType) -> Result<TVal> {
        let r = self.binary_scalar(BinaryOp::Max, x, lo)?;
        let r = self.binary_scalar(BinaryOp::Min, &r, hi)?;
        self.cast(&r, to)
    }

    /// Broadcasts a scale / zero point to `x_shape`: scalar, per-axis (1-d along `axis`) or
    /// blocked (same rank, `axis` holding ceil(dim / block) entries).
    fn quant_param(&mut self, v: &TVal, x_shape: &[usize], axis: i64, block: i64) -> Result<TVal> {
        if v.numel() == 1 {
            return self.reshape(v, &[]);
        }
        let axis = norm_axis(axis, x_shape.len())?;
        let d = x_shape[axis];
        if block <= 0 {
            if v.rank() != 1 || v.shape()[0] != d {
                bail_invalid!(
                    "per-axis quantization parameter {} does not fit axis {axis} of {x_shape:?}",
                    v.ty
                );
            }
            let mut s = vec![1; x_shape.len()];
            s[axis] = d;
            return self.reshape(v, &s);
        }
        let block = block as usize;
        if v.rank() != x_shape.len() || v.shape()[axis] != d.div_ceil(block) {
            bail_invalid!("blocked quantization parameter {} does not fit {x_shape:?} (axis {axis}, block {block})", v.ty);
        }
        let idx = TVal::constant(Tensor::from_vec(
            vec![d],
            (0..d as i64).map(|i| i / block as i64).collect::<Vec<_>>(),
        )?);
        let g = self.emit1(Prim::Gather { axis }, &[v, &idx])?;
        if g.shape() != x_shape {
            bail_invalid!(
                "blocked quantization parameter {} does not fit {x_shape:?}",
                v.ty
            );
        }
        Ok(g)
    }
}

fn quantize_linear(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "x")?;
    let scale = tensor_arg(ins, 1, "y_scale")?;
    let zp = opt_tensor(ins, 2)?;
    let axis = n.int_or("axis", 1)?;
    let block = n.int_or("block_size", 0)?;
    let out = match (zp, n.int_or("output_dtype", 0)?) {
        (Some(z), _) => z.dtype(),
        (None, 0) => DType::U8,
        (None, code) => onnx_dtype(code)?,
    };
    let (lo, hi) = quant_range(out)?;
    // x / scale in a common float type (or the requested precision), as the reference does.
    let prec = match n.attr_int("precision")? {
        Some(c) if c != 0 => onnx_dtype(c)?,
        _ if x.dtype() == scale.dtype() => x.dtype(),
        _ => wide_float(x.dtype()).max(wide_float(scale.dtype())),
    };
    let s = cx.quant_param(scale, x.shape(), axis, block)?;
    let (xf, sf) = (cx.cast(x, prec)?, cx.cast(&s, prec)?);
    let q = cx.div(&xf, &sf)?;
    let q = cx.unary(UnaryOp::Round, &q)?;
    let wide = wide_float(out).max(wide_float(prec));
    let mut q = cx.cast(&q, wide)?;
    if let Some(z) = zp {
        let z = cx.quant_param(z, x.shape(), axis, block)?;
        let z = cx.cast(&z, wide)?;
        q = cx.add(&q, &z)?;
    }
    Ok(vec![tv(cx.clamp_cast(&q, lo, hi, out)?)])
}

fn dequantize_linear(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "x")?;
    let scale = tensor_arg(ins, 1, "x_scale")?;
    let axis = n.int_or("axis", 1)?;
    let block = n.int_or("block_size", 0)?;
    quant_range(x.dtype())?;
    let out = match n.int_or("output_dtype", 0)? {
        0 => scale.dtype(),
        code => onnx_dtype(code)?,
    };
    let work = wide_float(x.dtype()).max(wide_float(scale.dtype()));
    let xf = cx.cast(x, DType::F32)?;
    let mut dx = cx.cast(&xf, work)?;
    if let Some(z) = opt_tensor(ins, 2)? {
        if z.dtype() != x.dtype() {
            bail_invalid!(
                "DequantizeLinear zero point {} differs in type from x {}",
                z.ty,
                x.ty
            );
        }
        let z = cx.quant_param(z, x.shape(), axis, block)?;
        let z = cx.cast(&z, work)?;
        dx = cx.sub(&dx, &z)?;
    }
    let s = cx.quant_param(scale, x.shape(), axis, block)?;
    let s = cx.cast(&s, work)?;
    let y = cx.mul(&dx, &s)?;
    Ok(vec![tv(cx.cast(&y, out)?)])
}

/// Per-tensor uint8 quantization with scale and zero point computed from the data range.
fn dynamic_quantize_linear(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "x")?;
    if !x.dtype().is_float() {
        bail_invalid!("DynamicQuantizeLinear needs a float input, got {}", x.ty);
    }
    let xf = cx.cast(x, DType::F32)?;
    let all: Vec<usize> = (0..x.rank()).collect();
    let mx = cx.reduce(ReduceOp::Max, &xf, &all, false)?;
    let mn = cx.reduce(ReduceOp::Min, &xf, &all, false)?;
    let mx = cx.binary_scalar(BinaryOp::Max, &mx, 0.0)?;
    let mn = cx.binary_scalar(BinaryOp::Min, &mn, 0.0)?;
    let same = cx.binary(BinaryOp::Eq, &mx, &mn)?;
    let range = cx.sub(&mx, &mn)?;
    let one = cx.scalar(1.0, DType::F32);
    let range = cx.where_(&same, &one, &range)?;
    let scale = cx.binary_scalar(BinaryOp::Div, &range, 255.0)?;
    let zp0 = cx.div(&mn, &scale)?;
    let zp0 = cx.unary(UnaryOp::Neg, &zp0)?;
    let zp0 = cx.binary_scalar(BinaryOp::Max, &zp0, 0.0)?;
    let zp0 = cx.binary_scalar(BinaryOp::Min, &zp0, 255.0)?;
    let zp = cx.unary(UnaryOp::Round, &zp0)?;
    let q = cx.div(&xf, &scale)?;
    let q = cx.unary(UnaryOp::Round, &q)?;
    let q = cx.add(&q, &zp)?;
    let y = cx.clamp_cast(&q, 0.0, 255.0, DType::U8)?;
    let scale_out = cx.cast(&scale, x.dtype())?;
    let zp_out = cx.cast(&zp, DType::U8)?;
    Ok(vec![tv(y), tv(scale_out), tv(zp_out)])
}

impl Cx<'_, '_> {
    /// `x - zero_point` in i32. A 1-d zero point of a matrix's row count is per row.
    fn centered_i32(&mut self, x: &TVal, zp: Option<&TVal>, per_row: bool) -> Result<TVal> {
        let xi = self.cast(x, DType::I32)?;
        let Some(z) = zp else { return Ok(xi) };
        let mut zi = self.cast(z, DType::I32)?;
        let r = x.rank();
        if per_row && r >= 2 && z.rank() == 1 && z.numel() > 1 && z.numel() == x.shape()[r - 2] {
            zi = self.unsqueeze(&zi, &[1])?;
        }
        self.sub(&xi, &zi)
    }
}

fn matmul_integer(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let a = tensor_arg(ins, 0, "A")?;
    let b = tensor_arg(ins, 1, "B")?;
    let a = cx.centered_i32(a, opt_tensor(ins, 2)?, true)?;
    let b = cx.centered_i32(b, opt_tensor(ins, 3)?, false)?;
    Ok(vec![tv(cx.matmul(&a, &b)?)])
}

fn qlinear_matmul(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let a = tensor_arg(ins, 0, "a")?;
    let a_scale = tensor_arg(ins, 1, "a_scale")?;
    let b = tensor_arg(ins, 3, "b")?;
    let b_scale = tensor_arg(ins, 4, "b_scale")?;
    let y_scale = tensor_arg(ins, 6, "y_scale")?;
    let y_zp = opt_tensor(ins, 7)?;
    let ai = cx.centered_i32(a, opt_tensor(ins, 2)?, true)?;
    let bi = cx.centered_i32(b, opt_tensor(ins, 5)?, false)?;
    let c = cx.matmul(&ai, &bi)?;
    // Combined scale in the scales' dtype, then applied in f64 like numpy's promotion.
    let s = cx.mul(a_scale, b_scale)?;
    let s = cx.div(&s, y_scale)?;
    let s = cx.cast(&s, DType::F64)?;
    let c = cx.cast(&c, DType::F64)?;
    let mut d = cx.mul(&c, &s)?;
    let out = y_zp.map_or(a.dtype(), |z| z.dtype());
    if let Some(z) = y_zp {
        let z = cx.cast(z, DType::F64)?;
        d = cx.add(&d, &z)?;
    }
    let (lo, hi) = quant_range(out)?;
    Ok(vec![tv(cx.round_clamp_cast(&d, lo, hi, out)?)])
}

pub fn register(r: &mut Registry) {
    r.insert("QuantizeLinear", quantize_linear);
    r.insert("DequantizeLinear", dequantize_linear);
    r.insert("DynamicQuantizeLinear", dynamic_quantize_linear);
    r.insert("MatMulInteger", matmul_integer);
    r.insert("QLinearMatMul", qlinear_matmul);
}
