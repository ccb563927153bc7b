//! Attention (opset 23+: 3-d/4-d layouts, GQA, masks, causal and sliding windows, KV cache,
//! softcap), RotaryEmbedding and LinearAttention, lowered to matmuls and elementwise ops.
use super::misc::onnx_dtype;
use super::Registry;
use crate::builder::{opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::Node;
use kuaxin_core::prim::{BinaryOp, Prim, ReduceOp, UnaryOp};
use kuaxin_core::{bail_invalid, DType, Error, Result, Tensor};

impl Cx<'_, '_> {
    /// `[B, S, H*D]` -> `[B, H, S, D]`.
    pub(crate) fn split_heads(&mut self, x: &TVal, heads: usize) -> Result<TVal> {
        let s = x.shape().to_vec();
        if x.rank() != 3 || heads == 0 || !s[2].is_multiple_of(heads) {
            bail_invalid!("cannot split {} into {heads} heads", x.ty);
        }
        let x = self.reshape(x, &[s[0], s[1], heads, s[2] / heads])?;
        self.permute(&x, &[0, 2, 1, 3])
    }

    /// `[B, H, S, D]` -> `[B, S, H*D]`.
    pub(crate) fn merge_heads(&mut self, x: &TVal) -> Result<TVal> {
        let s = x.shape().to_vec();
        let x = self.permute(x, &[0, 2, 1, 3])?;
        self.reshape(&x, &[s[0], s[2], s[1] * s[3]])
    }

    /// Repeats each head `rep` times in place (`[h0, h0, h1, h1, ..]`) along axis 1.
    pub(crate) fn repeat_heads(&mut self, x: &TVal, rep: usize) -> Result<TVal> {
        if rep == 1 {
            return Ok(x.clone());
        }
        let s = x.shape().to_vec();
        let x = self.unsqueeze(x, &[2])?;
        let x = self.expand(&x, &[s[0], s[1], rep, s[2], s[3]])?;
        self.reshape(&x, &[s[0], s[1] * rep, s[2], s[3]])
    }

    /// 0 where `allowed`, -inf elsewhere.
    pub(crate) fn additive_mask(&mut self, allowed: &TVal, dtype: DType) -> Result<TVal> {
        let zero = self.scalar(0.0, dtype);
        let ninf = self.scalar(f64::NEG_INFINITY, dtype);
        self.where_(allowed, &zero, &ninf)
    }

    /// Softmax over the last axis; a row that is all -inf gives zeros instead of NaN.
    pub(crate) fn guarded_softmax(&mut self, x: &TVal) -> Result<TVal> {
        let last = x.rank() - 1;
        let mx = self.reduce(ReduceOp::Max, x, &[last], true)?;
        let dead = self.unary(UnaryOp::IsNegInf, &mx)?;
        let zero = self.scalar(0.0, x.dtype());
        let mx = self.where_(&dead, &zero, &mx)?;
        let e = self.sub(x, &mx)?;
        let e = self.unary(UnaryOp::Exp, &e)?;
        let s = self.reduce(ReduceOp::Sum, &e, &[last], true)?;
        let empty = self.binary(BinaryOp::Eq, &s, &zero)?;
        let one = self.scalar(1.0, x.dtype());
        let s = self.where_(&empty, &one, &s)?;
        self.div(&e, &s)
    }

    /// `tanh(x / cap) * cap`.
    fn softcap(&mut self, x: &TVal, cap: f64) -> Result<TVal> {
        let y = self.binary_scalar(BinaryOp::Div, x, cap)?;
        let y = self.unary(UnaryOp::Tanh, &y)?;
        self.binary_scalar(BinaryOp::Mul, &y, cap)
    }

    fn and_opt(&mut self, a: Option<TVal>, b: TVal) -> Result<TVal> {
        match a {
            Some(a) => self.binary(BinaryOp::And, &a, &b),
            None => Ok(b),
        }
    }

    fn add_opt(&mut self, a: Option<TVal>, b: TVal) -> Result<TVal> {
        match a {
            Some(a) => self.add(&a, &b),
            None => Ok(b),
        }
    }
}

fn i64_table(shape: Vec<usize>, f: impl Fn(usize) -> i64) -> Result<TVal> {
    let n = shape.iter().product::<usize>();
    Ok(TVal::constant(Tensor::from_vec(
        shape,
        (0..n).map(f).collect::<Vec<_>>(),
    )?))
}

/// Where each query may look, before masks: causal and sliding-window limits on
/// `diff = (query index + offset) - key index`, and the keys past each batch's valid length.
struct Structure {
    q: usize,
    kv: usize,
    causal: bool,
    left: i64,
    right: i64,
    /// Per-batch valid key counts (external cache), `[B]` i64.
    nonpad: Option<TVal>,
    /// Cached keys before this block (internal cache).
    past: usize,
}

impl Structure {
    /// A bool tensor broadcastable to `[B, H, q, kv]`, or None when everything is allowed.
    fn allowed(&self, cx: &mut Cx) -> Result<Option<TVal>> {
        let (q, kv) = (self.q, self.kv);
        let mut allowed = None;
        if self.causal || self.left >= 0 || self.right >= 0 {
            // diff[i, j] = i - j (+ offset).
            let mut diff = i64_table(vec![q, kv], |e| (e / kv) as i64 - (e % kv) as i64)?;
            match (&self.nonpad, self.past) {
                (Some(np), 0) => {
                    let b = np.shape().first().copied().unwrap_or(1);
                    let np = cx.cast(np, DType::I64)?;
                    let off = cx.binary_scalar(BinaryOp::Sub, &np, q as f64)?;
                    let off = cx.reshape(&off, &[b, 1, 1, 1])?;
                    diff = cx.add(&diff, &off)?;
                }
                _ => diff = cx.binary_scalar(BinaryOp::Add, &diff, self.past as f64)?,
            }
            let zero = cx.scalar(0.0, DType::I64);
            if self.causal {
                let ok = cx.binary(BinaryOp::Ge, &diff, &zero)?;
                allowed = Some(ok);
            }
            if self.left >= 0 {
                let ok = cx.binary_scalar(BinaryOp::Le, &diff, self.left as f64)?;
                allowed = Some(cx.and_opt(allowed, ok)?);
            }
            if self.right >= 0 {
                let ok = cx.binary_scalar(BinaryOp::Ge, &diff, -self.right as f64)?;
                allowed = Some(cx.and_opt(allowed, ok)?);
            }
        }
        if let Some(np) = &self.nonpad {
            let b = np.shape().first().copied().unwrap_or(1);
            let np = cx.cast(np, DType::I64)?;
            let np = cx.reshape(&np, &[b, 1, 1, 1])?;
            let j = i64_table(vec![kv], |e| e as i64)?;
            let ok = cx.binary(BinaryOp::Lt, &j, &np)?;
            allowed = Some(cx.and_opt(allowed, ok)?);
        }
        Ok(allowed)
    }
}

/// The user mask as an additive bias in `dtype`, padded on the key axis up to `kv`.
fn mask_bias(cx: &mut Cx, mask: &TVal, kv: usize, dtype: DType) -> Result<TVal> {
    let r = mask.rank();
    let last = *mask
        .shape()
        .last()
        .ok_or_else(|| Error::invalid("attn_mask must have rank >= 1"))?;
    if last > kv {
        bail_invalid!("attn_mask {} is longer than the {kv} keys", mask.ty);
    }
    let is_bool = mask.dtype() == DType::Bool;
    let mut m = if is_bool {
        mask.clone()
    } else {
        cx.cast(mask, dtype)?
    };
    if last < kv {
        let fill = if is_bool {
            cx.scalar(0.0, DType::Bool)
        } else {
            cx.scalar(f64::NEG_INFINITY, dtype)
        };
        let mut pads = vec![(0, 0); r];
        pads[r - 1] = (0, kv - last);
        m = cx.emit1(Prim::PadConstant { pads }, &[&m, &fill])?;
    }
    if is_bool {
        m = cx.additive_mask(&m, dtype)?;
    }
    Ok(m)
}

fn attention(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let (q, k, v) = (
        tensor_arg(ins, 0, "Q")?,
        tensor_arg(ins, 1, "K")?,
        tensor_arg(ins, 2, "V")?,
    );
    let mask = opt_tensor(ins, 3)?;
    let (past_k, past_v) = (opt_tensor(ins, 4)?, opt_tensor(ins, 5)?);
    let nonpad = opt_tensor(ins, 6)?;
    let dt = q.dtype();
    let rank = q.rank();
    if !dt.is_float()
        || k.dtype() != dt
        || v.dtype() != dt
        || !(rank == 3 || rank == 4)
        || k.rank() != rank
        || v.rank() != rank
    {
        bail_invalid!(
            "Attention needs float Q, K, V of one dtype and rank 3 or 4, got {}, {}, {}",
            q.ty,
            k.ty,
            v.ty
        );
    }
    if past_k.is_some() != past_v.is_some() {
        bail_invalid!("past_key and past_value must be given together");
    }
    let (q4, k4, v4) = if rank == 3 {
        let hq = n
            .attr_int("q_num_heads")?
            .ok_or_else(|| Error::invalid("3-d Attention needs q_num_heads"))?;
        let hk = n
            .attr_int("kv_num_heads")?
            .ok_or_else(|| Error::invalid("3-d Attention needs kv_num_heads"))?;
        if hq <= 0 || hk <= 0 {
            bail_invalid!("Attention head counts must be positive");
        }
        (
            cx.split_heads(q, hq as usize)?,
            cx.split_heads(k, hk as usize)?,
            cx.split_heads(v, hk as usize)?,
        )
    } else {
        (q.clone(), k.clone(), v.clone())
    };
    let (b, hq, sq, dq) = (q4.shape()[0], q4.shape()[1], q4.shape()[2], q4.shape()[3]);
    let hk = k4.shape()[1];
    if k4.shape()[0] != b
        || v4.shape()[0] != b
        || v4.shape()[1] != hk
        || k4.shape()[3] != dq
        || v4.shape()[2] != k4.shape()[2]
    {
        bail_invalid!(
            "Attention: Q {}, K {}, V {} do not fit",
            q4.ty,
            k4.ty,
            v4.ty
        );
    }
    if hk == 0 || hq % hk != 0 {
        bail_invalid!("Attention: {hq} query heads are not a multiple of {hk} key/value heads");
    }
    // Scale split evenly over Q and K: sqrt(scale) each, in the input dtype.
    let scale = match n.attr_float("scale")? {
        Some(s) => s as f64,
        None => 1.0 / (dq as f64).sqrt(),
    };
    let s = cx.scalar(scale.sqrt(), dt);
    let past_len = past_k.map_or(0, |p| p.shape().get(2).copied().unwrap_or(0));
    let present_k = match past_k {
        Some(p) => {
            let p = cx.cast(p, dt)?;
            cx.concat(&[p, k4], 2)?
        }
        None => k4,
    };
    let present_v = match past_v {
        Some(p) => {
            let p = cx.cast(p, dt)?;
            cx.concat(&[p, v4], 2)?
        }
        None => v4,
    };
    let kv = present_k.shape()[2];

    // Additive bias: user mask plus causal / window / padding structure.
    let structure = Structure {
        q: sq,
        kv,
        causal: n.int_or("is_causal", 0)? != 0,
        left: n.int_or("left_window_size", -1)?,
        right: n.int_or("right_window_size", -1)?,
        nonpad: if past_k.is_none() {
            nonpad.cloned()
        } else {
            None
        },
        past: past_len,
    };
    if nonpad.is_some() && past_k.is_some() {
        bail_invalid!("nonpad_kv_seqlen cannot be combined with past_key / past_value");
    }
    let mut bias = match mask {
        Some(m) => Some(mask_bias(cx, m, kv, dt)?),
        None => None,
    };
    if let Some(allowed) = structure.allowed(cx)? {
        let add = cx.additive_mask(&allowed, dt)?;
        bias = Some(cx.add_opt(bias, add)?);
    }

    // Grouped heads: query head h reads key/value head h / rep. Folding each group's queries
    // into rows ([B, hk, rep * S, D]) shares one K and V per group instead of copying them
    // rep times (in decoding, K and V are the whole cache).
    let rep = hq / hk;
    let qs = cx.mul(&q4, &s)?;
    let qs = cx.reshape(&qs, &[b, hk, rep * sq, dq])?;
    let ks = cx.mul(&present_k, &s)?;
    let kt = cx.transpose_last2(&ks)?;
    let qk = cx.matmul(&qs, &kt)?;
    let mut qk = cx.reshape(&qk, &[b, hq, sq, kv])?;
    let cap = n.float_or("softcap", 0.0)? as f64;
    if cap > 0.0 {
        qk = cx.softcap(&qk, cap)?;
    }
    let scores = match &bias {
        Some(bias) => cx.add(&qk, bias)?,
        None => qk.clone(),
    };
    let sm_dt = match n.attr_int("softmax_precision")? {
        Some(c) if c != 0 => onnx_dtype(c)?,
        _ => dt,
    };
    let sm_in = cx.cast(&scores, sm_dt)?;
    let mut p = cx.guarded_softmax(&sm_in)?;
    if let Some(bias) = &bias {
        // Rows the bias masks entirely attend nothing: zero them, whatever the scores were.
        let last = bias.rank() - 1;
        let mx = cx.reduce(ReduceOp::Max, bias, &[last], true)?;
        let dead = cx.unary(UnaryOp::IsNegInf, &mx)?;
        let zero = cx.scalar(0.0, sm_dt);
        p = cx.where_(&dead, &zero, &p)?;
    }
    let p = cx.cast(&p, dt)?;
    let pg = cx.reshape(&p, &[b, hk, rep * sq, kv])?;
    let y = cx.matmul(&pg, &present_v)?;
    let dv = present_v.shape()[3];
    let mut y = cx.reshape(&y, &[b, hq, sq, dv])?;
    if rank == 3 {
        y = cx.merge_heads(&y)?;
    }
    let mut outs = vec![tv(y), tv(present_k), tv(present_v)];
    if n.outputs.get(3).is_some_and(|o| !o.is_empty()) {
        let qk_out = match n.int_or("qk_matmul_output_mode", 0)? {
            0 | 1 => qk,
            2 => scores,
            3 => p,
            m => bail_invalid!("qk_matmul_output_mode {m} is not one of 0..3"),
        };
        outs.push(tv(qk_out));
    }
    Ok(outs)
}

fn rotary_embedding(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "input")?;
    let cos = tensor_arg(ins, 1, "cos_cache")?;
    let sin = tensor_arg(ins, 2, "sin_cache")?;
    let pos = opt_tensor(ins, 3)?;
    // Work in [B, S, H, D].
    let x4 = match x.rank() {
        4 => cx.permute(x, &[0, 2, 1, 3])?,
        3 => {
            let h = n.int_or("num_heads", 0)?;
            let s = x.shape();
            if h <= 0 || s[2] % h as usize != 0 {
                bail_invalid!(
                    "RotaryEmbedding on 3-d input needs num_heads dividing {}",
                    s[2]
                );
            }
            cx.reshape(x, &[s[0], s[1], h as usize, s[2] / h as usize])?
        }
        _ => bail_invalid!("RotaryEmbedding input must be 3-d or 4-d, got {}", x.ty),
    };
    let d = x4.shape()[3];
    let rd = match n.int_or("rotary_embedding_dim", 0)? {
        0 => d,
        r if r > 0 && r as usize <= d && r % 2 == 0 => r as usize,
        r => bail_invalid!("rotary_embedding_dim {r} invalid for head size {d}"),
    };
    let half = rd / 2;
    let (mut cos, mut sin) = (cos.clone(), sin.clone());
    if let Some(p) = pos {
        cos = cx.emit1(Prim::Gather { axis: 0 }, &[&cos, p])?;
        sin = cx.emit1(Prim::Gather { axis: 0 }, &[&sin, p])?;
    }
    if cos.shape().last() != Some(&half) || sin.shape() != cos.shape() {
        bail_invalid!(
            "RotaryEmbedding caches {} / {} do not match rotary dim {rd}",
            cos.ty,
            sin.ty
        );
    }
    let ax = cos.rank() as i64 - 1;
    let cos = cx.unsqueeze(&cos, &[ax])?;
    let sin = cx.unsqueeze(&sin, &[ax])?;
    let cos = cx.cast(&cos, x.dtype())?;
    let sin = cx.cast(&sin, x.dtype())?;
    let interleaved = n.int_or("interleaved", 0)? != 0;
    let (x1, x2) = if interleaved {
        (
            cx.slice_axis(&x4, 3, 0, half, 2)?,
            cx.slice_axis(&x4, 3, 1, half, 2)?,
        )
    } else {
        (
            cx.slice_axis(&x4, 3, 0, half, 1)?,
            cx.slice_axis(&x4, 3, half, half, 1)?,
        )
    };
    let (c1, s2) = (cx.mul(&cos, &x1)?, cx.mul(&sin, &x2)?);
    let real = cx.sub(&c1, &s2)?;
    let (s1, c2) = (cx.mul(&sin, &x1)?, cx.mul(&cos, &x2)?);
    let imag = cx.add(&s1, &c2)?;
    let rotated = if interleaved {
        let r = cx.unsqueeze(&real, &[-1])?;
        let i = cx.unsqueeze(&imag, &[-1])?;
        let ri = cx.concat(&[r, i], 4)?;
        let mut s = ri.shape()[..3].to_vec();
        s.push(rd);
        cx.reshape(&ri, &s)?
    } else {
        cx.concat(&[real, imag], 3)?
    };
    let out = if rd < d {
        let rest = cx.slice_axis(&x4, 3, rd, d - rd, 1)?;
        cx.concat(&[rotated, rest], 3)?
    } else {
        rotated
    };
    let out = if x.rank() == 4 {
        cx.permute(&out, &[0, 2, 1, 3])?
    } else {
        cx.reshape(&out, x.shape())?
    };
    Ok(vec![tv(out)])
}

/// Recurrent linear attention, unrolled over time in f32:
/// `S = S * exp(g)` (gated), `v = beta * (v - S^T k)` (delta), `S += k v^T`, `o = scale q^T S`.
fn linear_attention(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let (q, k, v) = (
        tensor_arg(ins, 0, "query")?,
        tensor_arg(ins, 1, "key")?,
        tensor_arg(ins, 2, "value")?,
    );
    let past = opt_tensor(ins, 3)?;
    let decay = opt_tensor(ins, 4)?;
    let beta = opt_tensor(ins, 5)?;
    let rule = n.string_or("update_rule", "gated_delta")?;
    let (gating, delta) = match rule.as_str() {
        "linear" => (false, false),
        "gated" => (true, false),
        "delta" => (false, true),
        "gated_delta" => (true, true),
        other => bail_invalid!("LinearAttention update_rule '{other}' is unknown"),
    };
    if gating != decay.is_some() || delta != beta.is_some() {
        bail_invalid!(
            "LinearAttention update_rule '{rule}' does not match the decay / beta inputs given"
        );
    }
    let hq = n.attr_int("q_num_heads")?.unwrap_or(0);
    let hk = n.attr_int("kv_num_heads")?.unwrap_or(0);
    if hq <= 0 || hk <= 0 || hq % hk != 0 || q.rank() != 3 || k.rank() != 3 || v.rank() != 3 {
        bail_invalid!(
            "LinearAttention needs 3-d inputs and q_num_heads a positive multiple of kv_num_heads"
        );
    }
    let (hq, hk) = (hq as usize, hk as usize);
    let (b, t) = (q.shape()[0], q.shape()[1]);
    let f = DType::F32;
    let (qf, kf, vf) = (cx.cast(q, f)?, cx.cast(k, f)?, cx.cast(v, f)?);
    let q4 = cx.split_heads(&qf, hq)?;
    let k4 = cx.split_heads(&kf, hk)?;
    let v4 = cx.split_heads(&vf, hk)?;
    let (dk, dv) = (k4.shape()[3], v4.shape()[3]);
    if q4.shape()[3] != dk || k4.shape()[2] != t || v4.shape()[2] != t {
        bail_invalid!(
            "LinearAttention query {} / key {} / value {} do not fit",
            q.ty,
            k.ty,
            v.ty
        );
    }
    // Per-step gate [B, Hk, T, 1 or dk] and beta [B, Hk|1, T, 1].
    let decay4 = match decay {
        Some(g) if g.rank() == 3 && g.shape()[2] == hk => {
            let g = cx.cast(g, f)?;
            let g = cx.reshape(&g, &[b, t, hk, 1])?;
            Some(cx.permute(&g, &[0, 2, 1, 3])?)
        }
        Some(g) if g.rank() == 3 && g.shape()[2] == hk * dk => {
            let g = cx.cast(g, f)?;
            Some(cx.split_heads(&g, hk)?)
        }
        Some(g) => bail_invalid!("LinearAttention decay {} does not fit", g.ty),
        None => None,
    };
    let beta4 = match beta {
        Some(bt) if bt.rank() == 3 && (bt.shape()[2] == hk || bt.shape()[2] == 1) => {
            let bl = bt.shape()[2];
            let x = cx.cast(bt, f)?;
            let x = cx.reshape(&x, &[b, t, bl, 1])?;
            Some(cx.permute(&x, &[0, 2, 1, 3])?)
        }
        Some(bt) => bail_invalid!("LinearAttention beta {} does not fit", bt.ty),
        None => None,
    };
    let mut state = match past {
        Some(p) if p.shape() == [b, hk, dk, dv] => cx.cast(p, f)?,
        Some(p) => bail_invalid!(
            "LinearAttention past_state {} should be [{b}, {hk}, {dk}, {dv}]",
            p.ty
        ),
        None => cx.full(0.0, f, &[b, hk, dk, dv])?,
    };
    let scale = match n.float_or("scale", 0.0)? {
        s if s != 0.0 => s as f64,
        _ => 1.0 / (dk as f64).sqrt(),
    };
    let step = |cx: &mut Cx, x: &TVal, i: usize| cx.slice_axis(x, 2, i, 1, 1);
    let mut outs = Vec::with_capacity(t);
    for i in 0..t {
        let kt = step(cx, &k4, i)?; // [B, Hk, 1, dk]
        let mut vt = step(cx, &v4, i)?; // [B, Hk, 1, dv]
        if let Some(g) = &decay4 {
            let g = step(cx, g, i)?; // [B, Hk, 1, 1|dk]
            let g = cx.unary(UnaryOp::Exp, &g)?;
            let g = cx.transpose_last2(&g)?; // [B, Hk, 1|dk, 1]
            state = cx.mul(&state, &g)?;
        }
        if let Some(bt) = &beta4 {
            let retrieved = cx.matmul(&kt, &state)?; // [B, Hk, 1, dv]
            let diff = cx.sub(&vt, &retrieved)?;
            let bi = step(cx, bt, i)?;
            vt = cx.mul(&bi, &diff)?;
        }
        let ktt = cx.transpose_last2(&kt)?; // [B, Hk, dk, 1]
        let outer = cx.matmul(&ktt, &vt)?;
        state = cx.add(&state, &outer)?;
        let read = cx.repeat_heads(&state, hq / hk)?;
        let qt = step(cx, &q4, i)?; // [B, Hq, 1, dk]
        let o = cx.matmul(&qt, &read)?;
        outs.push(cx.binary_scalar(BinaryOp::Mul, &o, scale)?);
    }
    let o = cx.concat(&outs, 2)?; // [B, Hq, T, dv]
    let o = cx.merge_heads(&o)?;
    let o = cx.cast(&o, q.dtype())?;
    let state_dt = past.map_or(q.dtype(), |p| p.dtype());
    Ok(vec![tv(o), tv(cx.cast(&state, state_dt)?)])
}

/// Runs a score / prob modifier subgraph on one tensor, keeping `dtype`.
fn call_mod(cx: &mut Cx, n: &Node, attr: &str, x: TVal) -> Result<TVal> {
    let Some(g) = n.attr_graph(attr)? else {
        return Ok(x);
    };
    let dtype = x.dtype();
    let outs = cx.run_subgraph(&g, vec![tv(x)])?;
    match outs.into_iter().next() {
        Some(Value::Tensor(t)) => cx.cast(&t, dtype),
        _ => bail_invalid!("FlexAttention {attr} must produce one tensor"),
    }
}

/// FlexAttention (ai.onnx.preview): softmax(score_mod(Q K^T * scale)) then prob_mod, times V,
/// in f32 for half-precision inputs unless softmax_precision says otherwise.
fn flex_attention(cx: &mut Cx, n: &Node, ins: &[Option<Value>]) -> Result<Vec<Value>> {
    let (q, k, v) = (
        tensor_arg(ins, 0, "Q")?,
        tensor_arg(ins, 1, "K")?,
        tensor_arg(ins, 2, "V")?,
    );
    let dt = q.dtype();
    if !dt.is_float() || q.rank() != 4 || k.rank() != 4 || v.rank() != 4 || k.dtype() != dt {
        bail_invalid!(
            "FlexAttention needs float rank-4 Q, K, V, got {}, {}, {}",
            q.ty,
            k.ty,
            v.ty
        );
    }
    let (hq, hk, e) = (q.shape()[1], k.shape()[1], q.shape()[3]);
    if hk == 0
        || hq % hk != 0
        || v.shape()[1] != hk
        || v.shape()[2] != k.shape()[2]
        || k.shape()[3] != e
    {
        bail_invalid!(
            "FlexAttention: Q {}, K {}, V {} do not fit",
            q.ty,
            k.ty,
            v.ty
        );
    }
    let scale = match n.attr_float("scale")? {
        Some(s) => s,
        None => (1.0 / (e as f64).sqrt()) as f32,
    };
    let s = cx.scalar(scale.sqrt() as f64, dt);
    let kr = cx.repeat_heads(k, hq / hk)?;
    let vr = cx.repeat_heads(v, hq / hk)?;
    let qs = cx.mul(q, &s)?;
    let ks = cx.mul(&kr, &s)?;
    let kt = cx.transpose_last2(&ks)?;
    let scores = cx.matmul(&qs, &kt)?;
    let work = match n.attr_int("softmax_precision")? {
        Some(c) => onnx_dtype(c)?,
        None if matches!(dt, DType::F16 | DType::BF16) => DType::F32,
        None => dt,
    };
    let scores = cx.cast(&scores, work)?;
    let scores = call_mod(cx, n, "score_mod", scores)?;
    let p = cx.guarded_softmax(&scores)?;
    let p = call_mod(cx, n, "prob_mod", p)?;
    let vf = cx.cast(&vr, work)?;
    let y = cx.matmul(&p, &vf)?;
    Ok(vec![tv(cx.cast(&y, v.dtype())?)])
}

pub fn register(r: &mut Registry) {
    r.insert("FlexAttention", flex_attention);
    r.insert("Attention", attention);
    r.insert("RotaryEmbedding", rotary_embedding);
    r.insert("LinearAttention", linear_attention);
}
