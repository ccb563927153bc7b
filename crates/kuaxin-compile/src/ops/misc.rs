//! Constants, shapes, casts and other ops that mostly fold away at compile time.
use super::Registry;
use crate::builder::{norm_axis, opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::{bail_invalid, bail_unsupported, DType, Data, Error, Result, Tensor};

/// ONNX TensorProto.DataType code to a kuaxin dtype.
pub fn onnx_dtype(code: i64) -> Result<DType> {
    Ok(match code {
        1 => DType::F32,
        2 => DType::U8,
        3 => DType::I8,
        4 => DType::U16,
        5 => DType::I16,
        6 => DType::I32,
        7 => DType::I64,
        9 => DType::Bool,
        10 => DType::F16,
        11 => DType::F64,
        12 => DType::U32,
        13 => DType::U64,
        16 => DType::BF16,
        8 => bail_unsupported!("dtype STRING is not supported"),
        14 | 15 => bail_unsupported!("complex dtypes are not supported"),
        17..=26 => {
            bail_unsupported!("dtype code {code} (float8/int4/int2/float4) is not supported")
        }
        _ => bail_invalid!("unknown dtype code {code}"),
    })
}

fn constant(_cx: &mut Cx, n: &Node, _ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let t = if let Some(t) = n.attr_tensor("value")? {
        (*t).clone()
    } else if let Some(v) = n.attr_float("value_float")? {
        Tensor::scalar(v)
    } else if let Some(v) = n.attr_floats("value_floats")? {
        Tensor::from_vec(vec![v.len()], v)?
    } else if let Some(v) = n.attr_int("value_int")? {
        Tensor::scalar(v)
    } else if let Some(v) = n.attr_ints("value_ints")? {
        Tensor::from_vec(vec![v.len()], v)?
    } else if n.attr("value_string").is_some() || n.attr("value_strings").is_some() {
        bail_unsupported!("string constants are not supported")
    } else if n.attr("sparse_value").is_some() {
        bail_unsupported!("sparse constants are not supported")
    } else {
        bail_invalid!("Constant has no value attribute")
    };
    Ok(vec![tv(TVal::constant(t))])
}

fn identity(_cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    match ins.first() {
        Some(Some(v)) => Ok(vec![v.clone()]),
        _ => bail_invalid!("Identity needs an input"),
    }
}

fn cast(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let to = onnx_dtype(
        n.attr_int("to")?
            .ok_or_else(|| Error::invalid("Cast needs attribute 'to'"))?,
    )?;
    Ok(vec![tv(cx.cast(x, to)?)])
}

fn cast_like(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let like = tensor_arg(ins, 1, "target_type")?;
    Ok(vec![tv(cx.cast(x, like.dtype())?)])
}

fn shape(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    let r = x.rank() as i64;
    let clamp = |v: i64| if v < 0 { (v + r).max(0) } else { v.min(r) } as usize;
    let start = clamp(n.int_or("start", 0)?);
    let end = clamp(n.int_or("end", r)?);
    let dims: Vec<i64> = x.shape().iter().map(|&d| d as i64).collect();
    let sel = if start < end {
        dims[start..end].to_vec()
    } else {
        vec![]
    };
    Ok(vec![tv(cx.i64s(&sel))])
}

fn size(_cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    Ok(vec![tv(TVal::constant(Tensor::scalar(x.numel() as i64)))])
}

/// Reads a 1-d shape tensor, rejecting negative dims.
pub fn shape_arg(cx: &mut Cx, v: &TVal, what: &str) -> Result<Vec<usize>> {
    cx.ints(v)?
        .into_iter()
        .map(|d| {
            usize::try_from(d)
                .map_err(|_| Error::invalid(format!("{what}: negative dimension {d}")))
        })
        .collect()
}

fn constant_of_shape(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let s = tensor_arg(ins, 0, "input")?;
    let shape = shape_arg(cx, s, "ConstantOfShape")?;
    let value = match n.attr_tensor("value")? {
        Some(t) if t.numel() == 1 => (*t).clone(),
        Some(t) => bail_invalid!(
            "ConstantOfShape value must have one element, has {}",
            t.numel()
        ),
        None => Tensor::scalar(0f32),
    };
    let scalar = TVal::constant(value.reshaped(vec![])?);
    Ok(vec![tv(cx.expand(&scalar, &shape)?)])
}

fn range(cx: &mut Cx, _n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let start = tensor_arg(ins, 0, "start")?;
    let limit = tensor_arg(ins, 1, "limit")?;
    let delta = tensor_arg(ins, 2, "delta")?;
    let dtype = start.dtype();
    let (s, l, d) = (
        cx.floats(start)?[0],
        cx.floats(limit)?[0],
        cx.floats(delta)?[0],
    );
    if d == 0.0 {
        bail_invalid!("Range delta is zero");
    }
    let n = ((l - s) / d).ceil().max(0.0);
    if n > (1u64 << 32) as f64 {
        bail_invalid!("Range of {n} elements is too large");
    }
    let n = n as usize;
    kuaxin_core::limits::check_alloc(dtype, n)?;
    let data = if dtype.is_float() {
        // Accumulate in the output dtype like the reference (start + i*delta in f64, rounded).
        Data::from_f64_iter(dtype, (0..n).map(|i| s + i as f64 * d))
    } else {
        let (si, di) = (cx.ints(start)?[0], cx.ints(delta)?[0]);
        Data::from_i64_iter(dtype, (0..n as i64).map(|i| si + i * di))
    };
    Ok(vec![tv(TVal::constant(Tensor::new(vec![n], data)?))])
}

fn eye_like(_cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    if x.rank() != 2 {
        bail_invalid!("EyeLike needs a 2-d input, got {}", x.ty);
    }
    let dtype = match n.attr_int("dtype")? {
        Some(c) => onnx_dtype(c)?,
        None => x.dtype(),
    };
    let k = n.int_or("k", 0)?;
    let (r, c) = (x.shape()[0], x.shape()[1]);
    let vals = (0..r * c).map(|i| {
        if (i % c) as i64 - (i / c) as i64 == k {
            1.0
        } else {
            0.0
        }
    });
    Ok(vec![tv(TVal::constant(Tensor::new(
        vec![r, c],
        Data::from_f64_iter(dtype, vals),
    )?))])
}

fn dropout(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "data")?;
    let training = match opt_tensor(ins, 2)? {
        Some(t) => cx.ints(t)?.first().copied().unwrap_or(0) != 0,
        None => false,
    };
    let ratio = match opt_tensor(ins, 1)? {
        Some(t) => cx.floats(t)?.first().copied().unwrap_or(0.5),
        None => n.float_or("ratio", 0.5)? as f64,
    };
    if training && ratio != 0.0 {
        bail_unsupported!("Dropout in training mode (random masks) is not supported");
    }
    let mask = cx.full(1.0, DType::Bool, x.shape())?;
    Ok(vec![tv(x.clone()), tv(mask)])
}

fn flatten(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let r = x.rank();
    let axis = n.int_or("axis", 1)?;
    let axis = if axis == r as i64 {
        r
    } else {
        norm_axis(axis, r)?
    };
    let a: usize = x.shape()[..axis].iter().product();
    let b: usize = x.shape()[axis..].iter().product();
    Ok(vec![tv(cx.reshape(x, &[a, b])?)])
}

pub fn register(r: &mut Registry) {
    r.insert("Constant", constant);
    r.insert("Identity", identity);
    r.insert("Cast", cast);
    r.insert("CastLike", cast_like);
    r.insert("Shape", shape);
    r.insert("Size", size);
    r.insert("ConstantOfShape", constant_of_shape);
    r.insert("Range", range);
    r.insert("EyeLike", eye_like);
    r.insert("Dropout", dropout);
    r.insert("Flatten", flatten);
}
