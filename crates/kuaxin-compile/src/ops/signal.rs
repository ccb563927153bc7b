//! Signal ops. DFT and STFT are matmuls with host-computed cos/sin matrices (their sizes come
//! from shapes and attributes only); the windows and mel matrix are host-computed constants.
use super::misc::onnx_dtype;
use super::Registry;
use crate::builder::{norm_axis, opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::{bail_invalid, DType, Data, Result, Tensor};
use std::f64::consts::PI;

/// An `[rows, cols]` constant of `dtype` with entries `f(r, c)`.
fn matrix(rows: usize, cols: usize, dtype: DType, f: impl Fn(usize, usize) -> f64) -> Result<TVal> {
    let vals = (0..rows * cols).map(|i| f(i / cols, i % cols));
    Ok(TVal::constant(Tensor::new(
        vec![rows, cols],
        Data::from_f64_iter(dtype, vals),
    )?))
}

/// `a @ m + b @ m2`, skipping absent or all-zero operands.
fn mix(cx: &mut Cx, terms: &[(Option<&TVal>, &TVal)]) -> Result<TVal> {
    let mut acc: Option<TVal> = None;
    for (x, m) in terms {
        let Some(x) = x else { continue };
        let p = cx.matmul(x, m)?;
        acc = Some(match acc {
            Some(a) => cx.add(&a, &p)?,
            None => p,
        });
    }
    acc.ok_or_else(|| kuaxin_core::Error::invalid("DFT of nothing"))
}

/// DFT of `x` `[.., L, .., c]` (c = 1 real or 2 complex) along `axis` with `n` points (input
/// truncated or zero-padded). Output `[.., K, .., 2]`, or `[.., n, .., 1]` for the inverse of a
/// one-sided spectrum.
fn dft(
    cx: &mut Cx,
    x: &TVal,
    axis: usize,
    n: usize,
    inverse: bool,
    onesided: bool,
) -> Result<TVal> {
    let r = x.rank();
    let c = x.shape()[r - 1];
    if r < 2 || axis >= r - 1 || !(c == 1 || c == 2) || n == 0 {
        bail_invalid!("DFT: input {} must be [.., signal, .., 1 or 2] with axis {axis} before the last, length {n}", x.ty);
    }
    let dt = x.dtype();
    // Real and imaginary parts with the transformed axis moved last: [.., L].
    let mut perm: Vec<usize> = (0..r - 1).filter(|&a| a != axis).collect();
    perm.push(axis);
    let part = |cx: &mut Cx, i: usize| -> Result<TVal> {
        let p = cx.slice_axis(x, r - 1, i, 1, 1)?;
        let p = cx.squeeze(&p, Some(&[-1]))?;
        cx.permute(&p, &perm)
    };
    let xr = part(cx, 0)?;
    let xi = if c == 2 { Some(part(cx, 1)?) } else { None };
    let len = x.shape()[axis];
    let nf = n as f64;
    let ang = move |a: usize, b: usize| 2.0 * PI * ((a * b) % n) as f64 / nf;
    let outs: Vec<TVal> = if inverse && onesided {
        // Hermitian-symmetric inverse: bins 0..=n/2 weighted 1 (DC, Nyquist) or 2.
        let bins = n / 2 + 1;
        let wt = move |k: usize| {
            if k >= bins {
                0.0
            } else if k == 0 || (n.is_multiple_of(2) && k == n / 2) {
                1.0
            } else {
                2.0
            }
        };
        let cr = matrix(len, n, dt, |k, t| wt(k) * ang(k, t).cos() / nf)?;
        let ci = matrix(len, n, dt, |k, t| -wt(k) * ang(k, t).sin() / nf)?;
        vec![mix(cx, &[(Some(&xr), &cr), (xi.as_ref(), &ci)])?]
    } else {
        let k = if onesided { n / 2 + 1 } else { n };
        let (sign, scale) = if inverse {
            (1.0, 1.0 / nf)
        } else {
            (-1.0, 1.0)
        };
        let cos = matrix(len, k, dt, |t, f| {
            if t < n {
                ang(t, f).cos() * scale
            } else {
                0.0
            }
        })?;
        let sin = matrix(len, k, dt, |t, f| {
            if t < n {
                sign * ang(t, f).sin() * scale
            } else {
                0.0
            }
        })?;
        let neg_sin = matrix(len, k, dt, |t, f| {
            if t < n {
                -sign * ang(t, f).sin() * scale
            } else {
                0.0
            }
        })?;
        // (xr + i xi)(cos + i sin) = (xr cos - xi sin) + i (xr sin + xi cos)
        let re = mix(cx, &[(Some(&xr), &cos), (xi.as_ref(), &neg_sin)])?;
        let im = mix(cx, &[(Some(&xr), &sin), (xi.as_ref(), &cos)])?;
        vec![re, im]
    };
    // Move the axis back and stack the parts on a new last dim.
    let mut inv = vec![0; r - 1];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    let parts: Vec<TVal> = outs
        .iter()
        .map(|o| {
            let o = cx.permute(o, &inv)?;
            cx.unsqueeze(&o, &[-1])
        })
        .collect::<Result<_>>()?;
    cx.concat(&parts, r - 1)
}

fn scalar_int(cx: &mut Cx, v: &TVal, what: &str) -> Result<i64> {
    cx.ints(v)?
        .first()
        .copied()
        .ok_or_else(|| kuaxin_core::Error::invalid(format!("{what} is empty")))
}

fn dft_op(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let inverse = n.int_or("inverse", 0)? != 0;
    let onesided = n.int_or("onesided", 0)? != 0;
    let axis = if cx.opset >= 20 {
        match opt_tensor(ins, 2)? {
            Some(a) => scalar_int(cx, a, "DFT axis")?,
            None => -2,
        }
    } else {
        n.int_or("axis", 1)?
    };
    let axis = norm_axis(axis, x.rank())?;
    if axis + 1 >= x.rank() {
        bail_invalid!("DFT axis {axis} must not be the last axis of {}", x.ty);
    }
    let len = match opt_tensor(ins, 1)? {
        Some(l) => scalar_int(cx, l, "dft_length")?,
        None if inverse && onesided => 2 * (x.shape()[axis] as i64 - 1),
        None => x.shape()[axis] as i64,
    };
    if len < 1 {
        bail_invalid!("dft_length must be >= 1, got {len}");
    }
    Ok(vec![tv(dft(cx, x, axis, len as usize, inverse, onesided)?)])
}

fn stft(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "signal")?;
    if x.rank() != 3 || !(x.shape()[2] == 1 || x.shape()[2] == 2) {
        bail_invalid!("STFT signal {} must be [batch, length, 1 or 2]", x.ty);
    }
    let step = scalar_int(cx, tensor_arg(ins, 1, "frame_step")?, "frame_step")?;
    let window = opt_tensor(ins, 2)?;
    let frame = match (opt_tensor(ins, 3)?, window) {
        (Some(f), _) => scalar_int(cx, f, "frame_length")?,
        (None, Some(w)) => w.numel() as i64,
        (None, None) => x.shape()[1] as i64,
    };
    let (b, l, c) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    if step < 1 || frame < 1 || frame as usize > l {
        bail_invalid!(
            "STFT frame_step {step} / frame_length {frame} invalid for {}",
            x.ty
        );
    }
    let (step, frame) = (step as usize, frame as usize);
    let frames = 1 + (l - frame) / step;
    let f = cx.view(
        x,
        vec![b, frames, frame, c],
        vec![(l * c) as isize, (step * c) as isize, c as isize, 1],
        0,
    )?;
    let f = match window {
        Some(w) => {
            if w.numel() != frame {
                bail_invalid!("STFT window {} does not fit frame_length {frame}", w.ty);
            }
            let w = cx.cast(w, x.dtype())?;
            let w = cx.reshape(&w, &[frame, 1])?;
            cx.mul(&f, &w)?
        }
        None => f,
    };
    let onesided = n.int_or("onesided", 1)? != 0;
    Ok(vec![tv(dft(cx, &f, 2, frame, false, onesided)?)])
}

/// Generalized cosine windows `a0 - a1 cos(2πk/N) + a2 cos(4πk/N)`.
fn cosine_window(cx: &mut Cx, n: &Node, ins: &[Option<Value>], a: [f64; 3]) -> Result<Vec<Value>> {
    let size = scalar_int(cx, tensor_arg(ins, 0, "size")?, "window size")?;
    if !(0..=(1 << 31)).contains(&size) {
        bail_invalid!("window size {size} is invalid");
    }
    let size = size as usize;
    let periodic = n.int_or("periodic", 1)? != 0;
    let dtype = onnx_dtype(n.int_or("output_datatype", 1)?)?;
    let denom = if periodic {
        size as f64
    } else {
        size as f64 - 1.0
    };
    let vals = (0..size).map(|k| {
        let t = 2.0 * PI * k as f64 / denom;
        a[0] - a[1] * t.cos() + a[2] * (2.0 * t).cos()
    });
    Ok(vec![tv(TVal::constant(Tensor::new(
        vec![size],
        Data::from_f64_iter(dtype, vals),
    )?))])
}

fn mel_weight_matrix(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let mels = scalar_int(cx, tensor_arg(ins, 0, "num_mel_bins")?, "num_mel_bins")?;
    let dft_len = scalar_int(cx, tensor_arg(ins, 1, "dft_length")?, "dft_length")?;
    let rate = scalar_int(cx, tensor_arg(ins, 2, "sample_rate")?, "sample_rate")?;
    let lo_t = tensor_arg(ins, 3, "lower_edge_hertz")?;
    let hi_t = tensor_arg(ins, 4, "upper_edge_hertz")?;
    let lo = cx.floats(lo_t)?.first().copied().unwrap_or(0.0);
    let hi = cx.floats(hi_t)?.first().copied().unwrap_or(0.0);
    if mels < 1 || dft_len < 1 || rate < 1 || mels > 1 << 20 || dft_len > 1 << 24 {
        bail_invalid!(
            "MelWeightMatrix: invalid sizes (mels {mels}, dft_length {dft_len}, rate {rate})"
        );
    }
    let (mels, spec) = (mels as usize, dft_len as usize / 2 + 1);
    let dtype = onnx_dtype(n.int_or("output_datatype", 1)?)?;
    let to_mel = |hz: f64| 2595.0 * (hz / 700.0).ln_1p() / 10f64.ln();
    let (lm, hm) = (to_mel(lo), to_mel(hi));
    let step = (hm - lm) / (mels + 2) as f64;
    let bins: Vec<i64> = (0..mels + 2)
        .map(|i| {
            let hz = 700.0 * ((i as f64 * step + lm) / 2595.0 * 10f64.ln()).exp_m1();
            (((dft_len + 1) as f64 * hz) / rate as f64).floor() as i64
        })
        .collect();
    let mut out = vec![0.0; spec * mels];
    let mut set = |j: i64, i: usize, v: f64| {
        if j >= 0 && (j as usize) < spec {
            out[j as usize * mels + i] = v;
        }
    };
    for i in 0..mels {
        let (l, c, h) = (bins[i], bins[i + 1], bins[i + 2]);
        if c == l {
            set(c, i, 1.0);
        } else {
            for j in l..=c {
                set(j, i, (j - l) as f64 / (c - l) as f64);
            }
        }
        if h > c {
            for j in c..h {
                set(j, i, (h - j) as f64 / (h - c) as f64);
            }
        }
    }
    Ok(vec![tv(TVal::constant(Tensor::new(
        vec![spec, mels],
        Data::from_f64_iter(dtype, out.into_iter()),
    )?))])
}

pub fn register(r: &mut Registry) {
    r.insert("DFT", dft_op);
    r.insert("STFT", stft);
    r.insert("HannWindow", |cx, n, ins| {
        cosine_window(cx, n, ins, [0.5, 0.5, 0.0])
    });
    r.insert("HammingWindow", |cx, n, ins| {
        cosine_window(cx, n, ins, [25.0 / 46.0, 21.0 / 46.0, 0.0])
    });
    r.insert("BlackmanWindow", |cx, n, ins| {
        cosine_window(cx, n, ins, [0.42, 0.5, 0.08])
    });
    r.insert("MelWeightMatrix", mel_weight_matrix);
}
