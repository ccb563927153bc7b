//! RNN, GRU and LSTM, unrolled over the (concrete) sequence length at trace time. The input
//! projection of all steps is one matmul; each step adds the recurrent matmul and gate math.
use super::Registry;
use crate::builder::{opt_tensor, tensor_arg, tv};
use crate::lower::Cx;
use crate::value::{TVal, Value};
use kuaxin_core::graph::{Attr, Node};
use kuaxin_core::prim::{BinaryOp, Prim, UnaryOp};
use kuaxin_core::{bail_invalid, bail_unsupported, DType, Result, Tensor};

/// A gate activation with its parameters.
#[derive(Debug, Clone, Copy)]
enum Act {
    Relu,
    Tanh,
    Sigmoid,
    Affine(f64, f64),
    LeakyRelu(f64),
    ThresholdedRelu(f64),
    ScaledTanh(f64, f64),
    HardSigmoid(f64, f64),
    Elu(f64),
    Softsign,
    Softplus,
}

/// Parses `activations` with `activation_alpha` / `activation_beta`, consumed in order by the
/// functions that take them. Returns one list of `per_dir` functions per direction.
fn activations(n: &Node, defaults: &[&str], dirs: usize) -> Result<Vec<Vec<Act>>> {
    let names: Vec<String> = match n.attr("activations") {
        Some(Attr::Strings(v)) => v
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
        Some(_) => bail_invalid!("activations must be a list of strings"),
        None => defaults.iter().map(|s| s.to_string()).collect(),
    };
    let k = defaults.len();
    let names = if names.len() == k && dirs == 2 {
        [names.clone(), names].concat()
    } else {
        names
    };
    if names.len() != k * dirs {
        bail_invalid!("expected {} activations, got {}", k * dirs, names.len());
    }
    let alphas = n.attr_floats("activation_alpha")?.unwrap_or_default();
    let betas = n.attr_floats("activation_beta")?.unwrap_or_default();
    let (mut ai, mut bi) = (alphas.iter(), betas.iter());
    let mut alpha = |d: f64| ai.next().map_or(d, |&v| v as f64);
    let mut beta = |d: f64| bi.next().map_or(d, |&v| v as f64);
    let mut acts = Vec::with_capacity(names.len());
    for name in &names {
        acts.push(match name.to_ascii_lowercase().as_str() {
            "relu" => Act::Relu,
            "tanh" => Act::Tanh,
            "sigmoid" => Act::Sigmoid,
            "affine" => Act::Affine(alpha(1.0), beta(0.0)),
            "leakyrelu" => Act::LeakyRelu(alpha(0.01)),
            "thresholdedrelu" => Act::ThresholdedRelu(alpha(1.0)),
            "scaledtanh" => Act::ScaledTanh(alpha(1.0), beta(1.0)),
            "hardsigmoid" => Act::HardSigmoid(alpha(0.2), beta(0.5)),
            "elu" => Act::Elu(alpha(1.0)),
            "softsign" => Act::Softsign,
            "softplus" => Act::Softplus,
            other => bail_unsupported!("RNN activation '{other}' is not supported"),
        });
    }
    Ok(acts.chunks(k).map(|c| c.to_vec()).collect())
}

impl Cx<'_, '_> {
    fn activate(&mut self, act: Act, x: &TVal) -> Result<TVal> {
        let zero = self.scalar(0.0, x.dtype());
        match act {
            Act::Relu => self.binary(BinaryOp::Max, x, &zero),
            Act::Tanh => self.unary(UnaryOp::Tanh, x),
            Act::Sigmoid => self.unary(UnaryOp::Sigmoid, x),
            Act::Affine(a, b) => {
                let y = self.binary_scalar(BinaryOp::Mul, x, a)?;
                self.binary_scalar(BinaryOp::Add, &y, b)
            }
            Act::LeakyRelu(a) => {
                let neg = self.binary(BinaryOp::Lt, x, &zero)?;
                let y = self.binary_scalar(BinaryOp::Mul, x, a)?;
                self.where_(&neg, &y, x)
            }
            Act::ThresholdedRelu(a) => {
                let keep = self.binary_scalar(BinaryOp::Gt, x, a)?;
                self.where_(&keep, x, &zero)
            }
            Act::ScaledTanh(a, b) => {
                let y = self.binary_scalar(BinaryOp::Mul, x, b)?;
                let y = self.unary(UnaryOp::Tanh, &y)?;
                self.binary_scalar(BinaryOp::Mul, &y, a)
            }
            Act::HardSigmoid(a, b) => {
                let y = self.binary_scalar(BinaryOp::Mul, x, a)?;
                let y = self.binary_scalar(BinaryOp::Add, &y, b)?;
                let y = self.binary_scalar(BinaryOp::Min, &y, 1.0)?;
                self.binary(BinaryOp::Max, &y, &zero)
            }
            Act::Elu(a) => {
                let neg = self.binary(BinaryOp::Lt, x, &zero)?;
                let e = self.unary(UnaryOp::Exp, x)?;
                let e = self.binary_scalar(BinaryOp::Sub, &e, 1.0)?;
                let e = self.binary_scalar(BinaryOp::Mul, &e, a)?;
                self.where_(&neg, &e, x)
            }
            Act::Softsign => {
                let d = self.unary(UnaryOp::Abs, x)?;
                let d = self.binary_scalar(BinaryOp::Add, &d, 1.0)?;
                self.div(x, &d)
            }
            Act::Softplus => {
                let e = self.unary(UnaryOp::Exp, x)?;
                let e = self.binary_scalar(BinaryOp::Add, &e, 1.0)?;
                self.unary(UnaryOp::Log, &e)
            }
        }
    }

    /// A gate: optional clipping of the pre-activation, then the activation.
    fn gate(&mut self, act: Act, x: &TVal, clip: Option<f64>) -> Result<TVal> {
        let x = match clip {
            Some(c) => {
                let y = self.binary_scalar(BinaryOp::Max, x, -c)?;
                self.binary_scalar(BinaryOp::Min, &y, c)?
            }
            None => x.clone(),
        };
        self.activate(act, &x)
    }

    /// `x[i]` along axis 0, dropping the axis.
    fn index0(&mut self, x: &TVal, i: usize) -> Result<TVal> {
        let s = self.slice_axis(x, 0, i, 1, 1)?;
        self.squeeze(&s, Some(&[0]))
    }

    /// Columns `[k*h, (k+1)*h)` of the last axis.
    fn chunk(&mut self, x: &TVal, k: usize, h: usize) -> Result<TVal> {
        let last = x.rank() - 1;
        self.slice_axis(x, last, k * h, h, 1)
    }

    /// Stacks equal-shaped values along a new axis.
    fn stack(&mut self, xs: &[TVal], axis: usize) -> Result<TVal> {
        let xs: Vec<TVal> = xs
            .iter()
            .map(|x| self.unsqueeze(x, &[axis as i64]))
            .collect::<Result<_>>()?;
        self.concat(&xs, axis)
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Cell {
    Rnn,
    Gru { linear_before_reset: bool },
    Lstm { input_forget: bool },
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Gru { .. } => 3,
            Cell::Lstm { .. } => 4,
        }
    }
    fn default_acts(self) -> &'static [&'static str] {
        match self {
            Cell::Rnn => &["Tanh"],
            Cell::Gru { .. } => &["Sigmoid", "Tanh"],
            Cell::Lstm { .. } => &["Sigmoid", "Tanh", "Tanh"],
        }
    }
}

/// One direction's weights, already arranged for the step.
struct DirWeights {
    /// `R^T`, `[H, G*H]` (GRU: only the update/reset part, `[H, 2H]`).
    rt: TVal,
    /// GRU: `R_h^T`, `[H, H]`, and the recurrent bias of the hidden gate when it is applied
    /// inside the reset (linear_before_reset).
    rht: Option<TVal>,
    rbh: Option<TVal>,
    /// LSTM peepholes `(p_i, p_o, p_f)`, each `[H]`.
    peep: Option<(TVal, TVal, TVal)>,
    acts: Vec<Act>,
}

/// The recurrent state of one direction.
struct State {
    h: TVal,
    c: Option<TVal>,
}

struct Rnn {
    cell: Cell,
    hidden: usize,
    clip: Option<f64>,
}

impl Rnn {
    /// One time step: `xw` is the input projection plus folded biases, `[B, G*H]`.
    fn step(&self, cx: &mut Cx, w: &DirWeights, xw: &TVal, s: &State) -> Result<State> {
        let h = self.hidden;
        let clip = self.clip;
        match self.cell {
            Cell::Rnn => {
                let hr = cx.matmul(&s.h, &w.rt)?;
                let pre = cx.add(xw, &hr)?;
                Ok(State {
                    h: cx.gate(w.acts[0], &pre, clip)?,
                    c: None,
                })
            }
            Cell::Gru {
                linear_before_reset,
            } => {
                let xzr = cx.chunk(xw, 0, 2 * h)?;
                let xh = cx.chunk(xw, 2, h)?;
                let hzr = cx.matmul(&s.h, &w.rt)?;
                let zr = cx.add(&xzr, &hzr)?;
                let (z, r) = (cx.chunk(&zr, 0, h)?, cx.chunk(&zr, 1, h)?);
                let z = cx.gate(w.acts[0], &z, clip)?;
                let r = cx.gate(w.acts[0], &r, clip)?;
                let rht = w
                    .rht
                    .as_ref()
                    .ok_or_else(|| kuaxin_core::Error::backend("GRU weights missing"))?;
                let rec = if linear_before_reset {
                    let mut hr = cx.matmul(&s.h, rht)?;
                    if let Some(b) = &w.rbh {
                        hr = cx.add(&hr, b)?;
                    }
                    cx.mul(&r, &hr)?
                } else {
                    let rh = cx.mul(&r, &s.h)?;
                    cx.matmul(&rh, rht)?
                };
                let pre = cx.add(&xh, &rec)?;
                let cand = cx.gate(w.acts[1], &pre, clip)?;
                // (1 - z) * cand + z * h
                let one = cx.scalar(1.0, z.dtype());
                let omz = cx.sub(&one, &z)?;
                let a = cx.mul(&omz, &cand)?;
                let b = cx.mul(&z, &s.h)?;
                Ok(State {
                    h: cx.add(&a, &b)?,
                    c: None,
                })
            }
            Cell::Lstm { input_forget } => {
                let c_prev =
                    s.c.as_ref()
                        .ok_or_else(|| kuaxin_core::Error::backend("LSTM cell state missing"))?;
                let hr = cx.matmul(&s.h, &w.rt)?;
                let g = cx.add(xw, &hr)?;
                let (mut i, mut o, mut f, c) = (
                    cx.chunk(&g, 0, h)?,
                    cx.chunk(&g, 1, h)?,
                    cx.chunk(&g, 2, h)?,
                    cx.chunk(&g, 3, h)?,
                );
                if let Some((pi, _, pf)) = &w.peep {
                    let a = cx.mul(pi, c_prev)?;
                    i = cx.add(&i, &a)?;
                    let b = cx.mul(pf, c_prev)?;
                    f = cx.add(&f, &b)?;
                }
                let i = cx.gate(w.acts[0], &i, clip)?;
                let f = if input_forget {
                    let one = cx.scalar(1.0, i.dtype());
                    cx.sub(&one, &i)?
                } else {
                    cx.gate(w.acts[0], &f, clip)?
                };
                let cc = cx.gate(w.acts[1], &c, clip)?;
                let fc = cx.mul(&f, c_prev)?;
                let ic = cx.mul(&i, &cc)?;
                let c_new = cx.add(&fc, &ic)?;
                if let Some((_, po, _)) = &w.peep {
                    let a = cx.mul(po, &c_new)?;
                    o = cx.add(&o, &a)?;
                }
                let o = cx.gate(w.acts[0], &o, clip)?;
                let hc = cx.activate(w.acts[2], &c_new)?;
                Ok(State {
                    h: cx.mul(&o, &hc)?,
                    c: Some(c_new),
                })
            }
        }
    }
}

/// Per-batch time reversal within each sequence's length: `idx[t, b] = len[b] - 1 - t` for
/// `t < len[b]`, else `t` (an involution, so it also undoes itself). `lens` is `[1, B]` i64.
fn reverse_index(cx: &mut Cx, lens: &TVal, t: usize) -> Result<TVal> {
    let ts = TVal::constant(Tensor::from_vec(
        vec![t, 1],
        (0..t as i64).collect::<Vec<_>>(),
    )?);
    let valid = cx.binary(BinaryOp::Lt, &ts, lens)?;
    let back = cx.binary_scalar(BinaryOp::Sub, lens, 1.0)?;
    let back = cx.sub(&back, &ts)?;
    cx.where_(&valid, &back, &ts)
}

/// Reverses `x` `[T, B, ..]` in time (per sequence when `idx` is given).
fn reverse_time(cx: &mut Cx, x: &TVal, idx: Option<&TVal>) -> Result<TVal> {
    let t = x.shape()[0];
    match idx {
        None => cx.slice_axis(x, 0, t - 1, t, -1),
        Some(idx) => {
            let mut s = idx.shape().to_vec();
            s.extend(std::iter::repeat_n(1, x.rank() - 2));
            let idx = cx.reshape(idx, &s)?;
            let idx = cx.expand(&idx, x.shape())?;
            cx.emit1(Prim::GatherElements { axis: 0 }, &[x, &idx])
        }
    }
}

fn recurrent(cx: &mut Cx, n: &Node, ins: &[Option<Value>], cell: Cell) -> Result<Vec<Value>> {
    let x = tensor_arg(ins, 0, "X")?;
    let w = tensor_arg(ins, 1, "W")?;
    let r = tensor_arg(ins, 2, "R")?;
    let bias = opt_tensor(ins, 3)?;
    let seq_lens = opt_tensor(ins, 4)?;
    let mut init_h = opt_tensor(ins, 5)?.cloned();
    let is_lstm = matches!(cell, Cell::Lstm { .. });
    let mut init_c = if is_lstm {
        opt_tensor(ins, 6)?.cloned()
    } else {
        None
    };
    let peep = if is_lstm { opt_tensor(ins, 7)? } else { None };
    let dt = x.dtype();
    if !dt.is_float() || x.rank() != 3 || w.rank() != 3 || r.rank() != 3 {
        bail_invalid!(
            "{} needs float X, W, R of rank 3, got {}, {}, {}",
            n.op_type,
            x.ty,
            w.ty,
            r.ty
        );
    }
    let layout = n.int_or("layout", 0)?;
    let x = if layout != 0 {
        cx.permute(x, &[1, 0, 2])?
    } else {
        x.clone()
    };
    if layout != 0 {
        if let Some(h) = &init_h {
            init_h = Some(cx.permute(h, &[1, 0, 2])?);
        }
        if let Some(c) = &init_c {
            init_c = Some(cx.permute(c, &[1, 0, 2])?);
        }
    }
    let direction = n.string_or("direction", "forward")?;
    let dir_list: &[bool] = match direction.as_str() {
        "forward" => &[false],
        "reverse" => &[true],
        "bidirectional" => &[false, true],
        other => bail_invalid!("unknown direction '{other}'"),
    };
    let dirs = dir_list.len();
    let (t, b, input) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let hidden = match n.attr_int("hidden_size")? {
        Some(h) if h > 0 => h as usize,
        Some(h) => bail_invalid!("hidden_size {h} must be positive"),
        None => r.shape()[2],
    };
    let g = cell.gates();
    if w.shape() != [dirs, g * hidden, input] || r.shape() != [dirs, g * hidden, hidden] {
        bail_invalid!(
            "{}: W {} / R {} do not fit {dirs} directions, hidden {hidden}, input {input}",
            n.op_type,
            w.ty,
            r.ty
        );
    }
    if t == 0 {
        bail_unsupported!("{} over an empty sequence is not supported", n.op_type);
    }
    let state_shape = [dirs, b, hidden];
    for s in [&init_h, &init_c].into_iter().flatten() {
        if s.shape() != state_shape {
            bail_invalid!(
                "{}: initial state {} should be {state_shape:?}",
                n.op_type,
                s.ty
            );
        }
    }
    let acts = activations(n, cell.default_acts(), dirs)?;
    let clip = n.attr_float("clip")?.map(|c| c as f64);
    let cell = match cell {
        Cell::Gru { .. } => Cell::Gru {
            linear_before_reset: n.int_or("linear_before_reset", 0)? != 0,
        },
        Cell::Lstm { .. } => Cell::Lstm {
            input_forget: n.int_or("input_forget", 0)? != 0,
        },
        c => c,
    };
    let rnn = Rnn { cell, hidden, clip };

    // Sequence lengths: a per-step validity mask [T, B, 1] unless every sequence is full.
    let lens = match seq_lens {
        Some(l)
            if l.as_const()
                .is_some_and(|c| c.to_i64_vec().iter().all(|&v| v == t as i64)) =>
        {
            None
        }
        Some(l) if l.shape() == [b] => {
            let l = cx.cast(l, DType::I64)?;
            Some(cx.reshape(&l, &[1, b])?)
        }
        Some(l) => bail_invalid!("sequence_lens {} should be [{b}]", l.ty),
        None => None,
    };
    let (valid, rev_idx) = match &lens {
        Some(l) => {
            let ts = TVal::constant(Tensor::from_vec(
                vec![t, 1],
                (0..t as i64).collect::<Vec<_>>(),
            )?);
            let v = cx.binary(BinaryOp::Lt, &ts, l)?;
            (
                Some(cx.unsqueeze(&v, &[2])?),
                Some(reverse_index(cx, l, t)?),
            )
        }
        None => (None, None),
    };

    let mut ys = Vec::with_capacity(dirs);
    let (mut hs, mut cs) = (Vec::with_capacity(dirs), Vec::with_capacity(dirs));
    for (d, &reverse) in dir_list.iter().enumerate() {
        let wd = cx.index0(w, d)?;
        let rd = cx.index0(r, d)?;
        let wdt = cx.transpose_last2(&wd)?;
        let rdt = cx.transpose_last2(&rd)?;
        // Input projection for all steps, with every bias that can be folded into it.
        let mut xw = cx.matmul(&x, &wdt)?;
        let mut rbh = None;
        if let Some(bias) = bias {
            if bias.shape() != [dirs, 2 * g * hidden] {
                bail_invalid!(
                    "{}: B {} should be [{dirs}, {}]",
                    n.op_type,
                    bias.ty,
                    2 * g * hidden
                );
            }
            let bd = cx.index0(bias, d)?;
            let wb = cx.chunk(&bd, 0, g * hidden)?;
            let mut rb = cx.chunk(&bd, 1, g * hidden)?;
            if let Cell::Gru {
                linear_before_reset: true,
            } = cell
            {
                // The hidden gate's recurrent bias sits inside the reset product.
                rbh = Some(cx.chunk(&rb, 2, hidden)?);
                let zr = cx.chunk(&rb, 0, 2 * hidden)?;
                let z = cx.full(0.0, dt, &[hidden])?;
                rb = cx.concat(&[zr, z], 0)?;
            }
            let wb = cx.add(&wb, &rb)?;
            xw = cx.add(&xw, &wb)?;
        }
        if reverse {
            xw = reverse_time(cx, &xw, rev_idx.as_ref())?;
        }
        let (rt, rht) = match cell {
            Cell::Gru { .. } => (
                cx.chunk(&rdt, 0, 2 * hidden)?,
                Some(cx.chunk(&rdt, 2, hidden)?),
            ),
            _ => (rdt, None),
        };
        let peep = match peep {
            Some(p) if p.shape() == [dirs, 3 * hidden] => {
                let pd = cx.index0(p, d)?;
                Some((
                    cx.chunk(&pd, 0, hidden)?,
                    cx.chunk(&pd, 1, hidden)?,
                    cx.chunk(&pd, 2, hidden)?,
                ))
            }
            Some(p) => bail_invalid!("LSTM: P {} should be [{dirs}, {}]", p.ty, 3 * hidden),
            None => None,
        };
        let weights = DirWeights {
            rt,
            rht,
            rbh,
            peep,
            acts: acts[d].clone(),
        };
        let zeros = cx.full(0.0, dt, &[b, hidden])?;
        let h0 = match &init_h {
            Some(h) => cx.index0(h, d)?,
            None => zeros.clone(),
        };
        let c0 = match &init_c {
            Some(c) => Some(cx.index0(c, d)?),
            None if is_lstm => Some(zeros.clone()),
            None => None,
        };
        let mut state = State {
            h: cx.cast(&h0, dt)?,
            c: c0,
        };
        let mut steps = Vec::with_capacity(t);
        for i in 0..t {
            let xi = cx.index0(&xw, i)?;
            let next = rnn.step(cx, &weights, &xi, &state)?;
            match &valid {
                Some(v) => {
                    // Past a sequence's end the state holds and the output is zero.
                    let vi = cx.index0(v, i)?;
                    steps.push(cx.where_(&vi, &next.h, &zeros)?);
                    let h = cx.where_(&vi, &next.h, &state.h)?;
                    let c = match (&next.c, &state.c) {
                        (Some(cn), Some(cp)) => Some(cx.where_(&vi, cn, cp)?),
                        _ => None,
                    };
                    state = State { h, c };
                }
                None => {
                    steps.push(next.h.clone());
                    state = next;
                }
            }
        }
        let mut y = cx.stack(&steps, 0)?;
        if reverse {
            y = reverse_time(cx, &y, rev_idx.as_ref())?;
        }
        ys.push(y);
        hs.push(state.h);
        if let Some(c) = state.c {
            cs.push(c);
        }
    }
    let mut y = cx.stack(&ys, 1)?; // [T, dirs, B, H]
    let mut yh = cx.stack(&hs, 0)?; // [dirs, B, H]
    let mut yc = if is_lstm {
        Some(cx.stack(&cs, 0)?)
    } else {
        None
    };
    if layout != 0 {
        y = cx.permute(&y, &[2, 0, 1, 3])?;
        yh = cx.permute(&yh, &[1, 0, 2])?;
        if let Some(c) = &yc {
            yc = Some(cx.permute(c, &[1, 0, 2])?);
        }
    }
    let mut outs = vec![tv(y), tv(yh)];
    if let Some(c) = yc {
        outs.push(tv(c));
    }
    Ok(outs)
}

pub fn register(r: &mut Registry) {
    r.insert("RNN", |cx, n, ins| recurrent(cx, n, ins, Cell::Rnn));
    r.insert("GRU", |cx, n, ins| {
        recurrent(
            cx,
            n,
            ins,
            Cell::Gru {
                linear_before_reset: false,
            },
        )
    });
    r.insert("LSTM", |cx, n, ins| {
        recurrent(
            cx,
            n,
            ins,
            Cell::Lstm {
                input_forget: false,
            },
        )
    });
}
