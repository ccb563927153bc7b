//! The primitive op set. Every high-level op is defined once, by its lowering to these; a back
//! end that runs these runs every model. Shapes here are concrete: lowering happens after the
//! model's symbolic dims are bound.
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::checked_numel;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Abs,
    Sqrt,
    Exp,
    Log,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Asinh,
    Acosh,
    Atanh,
    Erf,
    Floor,
    Ceil,
    /// Round half to even.
    Round,
    Sign,
    Reciprocal,
    Sigmoid,
    /// Logical not (bool).
    Not,
    /// Bitwise not (integers).
    BitNot,
    /// Float tests, output bool.
    IsNan,
    IsPosInf,
    IsNegInf,
}

impl UnaryOp {
    pub fn output_is_bool(self) -> bool {
        matches!(self, UnaryOp::IsNan | UnaryOp::IsPosInf | UnaryOp::IsNegInf)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// Integer division truncates toward zero.
    Div,
    Pow,
    Max,
    Min,
    /// Remainder with the sign of the divisor (Python `%`); for floats too.
    Mod,
    /// Remainder with the sign of the dividend (C `fmod`).
    FMod,
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
    And,
    Or,
    Xor,
    BitAnd,
    BitOr,
    BitXor,
    Shl,
    Shr,
}

impl BinaryOp {
    pub fn output_is_bool(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Prod,
    Max,
    Min,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScatterReduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

/// Ops run on the host whatever the device: their output shape depends on data, or they are
/// sequential algorithms no generated kernel expresses well. Back ends never see these; the
/// executor moves their inputs to the host and reports that it did.
#[derive(Debug, Clone, PartialEq)]
pub enum HostOp {
    NonZero,
    /// Unique values; outputs (values, indices, inverse_indices, counts). `axis` None = flatten.
    Unique {
        axis: Option<usize>,
        sorted: bool,
    },
    /// Top-k along `axis`; outputs (values, i64 indices).
    TopK {
        k: usize,
        axis: usize,
        largest: bool,
        sorted: bool,
    },
    NonMaxSuppression {
        center_point_box: bool,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Prim {
    /// Elementwise on one input.
    Unary(UnaryOp),
    /// Elementwise on two inputs of identical shape and dtype (comparisons give bool).
    Binary(BinaryOp),
    /// `where(cond, a, b)`: bool cond and two same-dtype values, identical shapes.
    Where,
    Cast(DType),
    /// Reduces `axes`, keeping them as size-1 dims.
    Reduce {
        op: ReduceOp,
        axes: Vec<usize>,
    },
    /// Index (i64) of the max/min along `axis`, kept as size 1. Ties pick the first, or the
    /// last with `select_last`.
    ArgReduce {
        max: bool,
        axis: usize,
        select_last: bool,
    },
    /// Running sum or product along `axis`.
    Cumulative {
        prod: bool,
        axis: usize,
        exclusive: bool,
        reverse: bool,
    },
    /// A strided window on the input's row-major element order: reshape, transpose, expand
    /// (stride 0), slice (any step, negative too), sliding windows and diagonals are all views.
    View {
        shape: Vec<usize>,
        strides: Vec<isize>,
        offset: usize,
    },
    /// Pads with the scalar second input; `pads[i] = (before, after)`.
    PadConstant {
        pads: Vec<(usize, usize)>,
    },
    Concat {
        axis: usize,
    },
    /// `out[.., i, ..] = data[.., idx[i], ..]` with i64 indices (negative counts from the end).
    Gather {
        axis: usize,
    },
    GatherElements {
        axis: usize,
    },
    GatherNd {
        batch_dims: usize,
    },
    /// Inputs: data, indices, updates.
    ScatterElements {
        axis: usize,
        reduction: ScatterReduction,
    },
    ScatterNd {
        reduction: ScatterReduction,
    },
    /// `[.., M, K] x [.., K, N]` with identical batch dims.
    MatMul,
    /// `MatMul` of its inputs as seen through views (`None`: an input as it is), so that a
    /// reshaped or transposed operand is read in place instead of copied first. Made by the
    /// fusion pass for back ends that claim it.
    MatMulOfViews {
        a: Option<ViewMap>,
        b: Option<ViewMap>,
    },
    /// N-d convolution, inputs x `[N, C, ..]`, w `[M, C/groups, ..]`; no padding (lowered to
    /// PadConstant first), no bias.
    Conv {
        strides: Vec<usize>,
        dilations: Vec<usize>,
        groups: usize,
    },
    Host(HostOp),
    /// A fused kernel (see [`crate::kernel`]): made by the fusion pass, never by lowering.
    Fused(std::sync::Arc<crate::kernel::Kernel>),
    /// A convolution whose output goes straight through an elementwise kernel (bias,
    /// activation, residual) while it is in cache. Inputs: x, w, then the kernel's arguments
    /// 1..; the kernel's argument 0 is the convolution's output, read with the identity map.
    /// Made by the fusion pass for back ends that claim it.
    ConvEpilogue {
        strides: Vec<usize>,
        dilations: Vec<usize>,
        groups: usize,
        epilogue: std::sync::Arc<crate::kernel::Kernel>,
    },
    /// A one-group f32 2-D convolution in the blocked layout: x `[N, C/16, H, W, 16]` (sixteen
    /// channels innermost; or `[N, C, H, W]` as it is, a first layer's few channels), w
    /// `[M, C, KH, KW]` as lowering gives it, output
    /// `[N, M/16, OH, OW, 16]`; zero `pads` ((begin, end) per spatial axis) inside. With an
    /// `epilogue`, that kernel runs on the output as [`Prim::ConvEpilogue`]'s does (inputs
    /// after x and w are its arguments 1..). Made by the layout pass for back ends that claim
    /// it, never by lowering.
    ConvBlocked {
        strides: Vec<usize>,
        dilations: Vec<usize>,
        pads: Vec<(usize, usize)>,
        epilogue: Option<std::sync::Arc<crate::kernel::Kernel>>,
    },
    /// A `MatMulOfViews` whose output goes straight through an elementwise kernel (a bias, an
    /// activation, a residual, an attention scale and mask) while it is in cache. Inputs: a, b,
    /// then the kernel's arguments 1..; the kernel's argument 0 is the product, read in its
    /// row-major order (the kernel's domain may reshape it: same count, identity map). Made by
    /// the fusion pass for back ends that claim it.
    MatMulEpilogue {
        a: Option<ViewMap>,
        b: Option<ViewMap>,
        epilogue: std::sync::Arc<crate::kernel::Kernel>,
    },
    /// f32 softmax along the last axis, as the primitives it replaces compute it:
    /// `e = exp(x - max(x))`, then `e / sum(e)` (max and sum as `Reduce` folds them). Made by
    /// the fusion pass for back ends that claim it: one pass per row in cache, where the
    /// primitives are four kernels that each walk the whole tensor.
    SoftmaxRows,
    /// [`Prim::SoftmaxRows`] of an attention's scores: the softmax of `x / scale` (`x * scale`
    /// when not `divide`) plus a mask read through the view `mask` (a broadcast of the mask
    /// input to x's shape), each step as the primitives it replaces compute it. Inputs
    /// `[x, mask]`. Made by the fusion pass for back ends that claim it: the scaled, masked
    /// scores are then never written out.
    MaskedSoftmaxRows {
        scale: f32,
        divide: bool,
        mask: ViewMap,
    },
    /// f32 LayerNorm along the last axis of x `[.., n]`, with a scale and a bias of n values,
    /// as the primitives it replaces compute it: `mean = sum(x) / n`, `d = x - mean`,
    /// `r = 1 / sqrt(sum(d * d) / n + eps)`, `(d * r) * scale + bias` (sums as `Reduce`
    /// folds them). Made by the fusion pass for back ends that claim it.
    LayerNormRows {
        eps: f32,
    },
}

/// A `View`'s index map as data: the row-major elements of `shape` read at
/// `offset + sum(i_k * strides[k])` of the input's row-major storage.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ViewMap {
    pub shape: Vec<usize>,
    pub strides: Vec<isize>,
    pub offset: usize,
}

impl ViewMap {
    /// The `View` primitive with this map.
    pub fn prim(&self) -> Prim {
        Prim::View {
            shape: self.shape.clone(),
            strides: self.strides.clone(),
            offset: self.offset,
        }
    }
}

/// A concrete value type: dtype and dims.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorType {
    pub fn new(dtype: DType, shape: Vec<usize>) -> Self {
        TensorType { dtype, shape }
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl std::fmt::Display for TensorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{:?}", self.dtype, self.shape)
    }
}

/// Largest tensor kernels will allocate: 2^40 elements. Anything larger is hostile input.
pub const MAX_ELEMENTS: usize = 1 << 40;

fn check_size(shape: &[usize]) -> Result<()> {
    match checked_numel(shape) {
        Some(n) if n <= MAX_ELEMENTS => Ok(()),
        _ => Err(Error::invalid(format!("shape {shape:?} is too large"))),
    }
}

fn same(a: &TensorType, b: &TensorType, what: &str) -> Result<()> {
    if a != b {
        return Err(Error::invalid(format!(
            "{what}: operands differ: {a} vs {b}"
        )));
    }
    Ok(())
}

/// Whether every element `offset + sum(i_k * strides_k)` for `i` in `shape` lies in `0..numel`.
pub fn strided_in_bounds(shape: &[usize], strides: &[isize], offset: usize, numel: usize) -> bool {
    if shape.len() != strides.len() {
        return false;
    }
    if shape.contains(&0) {
        return true;
    }
    if offset > isize::MAX as usize {
        return false;
    }
    let (mut lo, mut hi) = (offset as isize, offset as isize);
    for (&d, &s) in shape.iter().zip(strides) {
        match (d as isize - 1).checked_mul(s) {
            Some(sp) if sp < 0 => lo = lo.saturating_add(sp),
            Some(sp) => hi = hi.saturating_add(sp),
            None => return false,
        }
    }
    lo >= 0 && (hi as usize) < numel
}

impl Prim {
    /// Whether load `l` reads its argument in the domain's own row-major order.
    pub fn is_identity_load(l: &crate::kernel::Load, domain: &[usize]) -> bool {
        let identity = crate::tensor::contiguous_strides(domain);
        l.offset == 0
            && l.strides.len() == identity.len()
            && l.strides
                .iter()
                .zip(&identity)
                .zip(domain)
                .all(|((s, i), &d)| d == 1 || s == i)
    }

    /// The output of `epilogue` run on a product `made` (its argument 0) and `rest`: an error
    /// unless the kernel is elementwise, f32, as large as the product, and reads the product
    /// only in its own row-major order.
    fn epilogue_out(
        what: &str,
        epilogue: &std::sync::Arc<crate::kernel::Kernel>,
        made: &TensorType,
        rest: &[TensorType],
    ) -> Result<Vec<TensorType>> {
        let mut args = vec![made.clone()];
        args.extend(rest.iter().cloned());
        let out = Prim::Fused(epilogue.clone()).infer(&args)?;
        let domain = &epilogue.domain;
        let arg0_ok = epilogue
            .loads
            .iter()
            .filter(|l| l.arg == 0)
            .all(|l| Prim::is_identity_load(l, domain));
        let count: Option<usize> = domain.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if epilogue.reduce.is_some()
            || count != Some(made.numel())
            || made.dtype != DType::F32
            || !arg0_ok
        {
            return Err(Error::invalid(format!(
                "{what}: kernel {} does not fit the product {made}",
                epilogue.name
            )));
        }
        Ok(out)
    }

    /// The output of [`Prim::ConvBlocked`] on x and w (`ins`), checked.
    fn blocked_conv_out(
        ins: &[TensorType],
        strides: &[usize],
        dilations: &[usize],
        pads: &[(usize, usize)],
    ) -> Result<TensorType> {
        let bad = || {
            Error::invalid(format!(
                "ConvBlocked: inputs {ins:?} do not fit (strides {strides:?}, dilations \
                 {dilations:?}, pads {pads:?})"
            ))
        };
        let ([x, w], 2, 2, 2) = (ins, strides.len(), dilations.len(), pads.len()) else {
            return Err(bad());
        };
        let xs = &x.shape;
        let channels = match xs.len() {
            5 if xs[4] == 16 => xs[1].checked_mul(16),
            4 => Some(xs[1]),
            _ => None,
        };
        let fits = w.shape.len() == 4
            && channels == Some(w.shape[1])
            && w.shape[0] % 16 == 0
            && x.dtype == DType::F32
            && w.dtype == DType::F32
            && !strides.contains(&0)
            && !dilations.contains(&0);
        if !fits {
            return Err(bad());
        }
        let mut shape = vec![xs[0], w.shape[0] / 16];
        for i in 0..2 {
            let o = window_out(xs[2 + i], pads[i], w.shape[2 + i], strides[i], dilations[i]);
            shape.push(o.ok_or_else(bad)?);
        }
        shape.push(16);
        Ok(TensorType::new(DType::F32, shape))
    }

    /// A `View`'s map: (shape, strides, offset); `None` for any other primitive.
    pub fn as_view(&self) -> Option<(&[usize], &[isize], usize)> {
        match self {
            Prim::View {
                shape,
                strides,
                offset,
            } => Some((shape, strides, *offset)),
            _ => None,
        }
    }

    /// The kernel a product runs on its output (`ConvEpilogue`, `MatMulEpilogue`).
    pub fn epilogue(&self) -> Option<&std::sync::Arc<crate::kernel::Kernel>> {
        match self {
            Prim::ConvEpilogue { epilogue, .. } | Prim::MatMulEpilogue { epilogue, .. } => {
                Some(epilogue)
            }
            Prim::ConvBlocked { epilogue, .. } => epilogue.as_ref(),
            _ => None,
        }
    }

    /// [`Prim::epilogue`], to replace it.
    pub fn epilogue_mut(&mut self) -> Option<&mut std::sync::Arc<crate::kernel::Kernel>> {
        match self {
            Prim::ConvEpilogue { epilogue, .. } | Prim::MatMulEpilogue { epilogue, .. } => {
                Some(epilogue)
            }
            Prim::ConvBlocked { epilogue, .. } => epilogue.as_mut(),
            _ => None,
        }
    }

    /// The kernel-IR kernel this primitive runs: a fused kernel, or a product's epilogue.
    pub fn kernel(&self) -> Option<&std::sync::Arc<crate::kernel::Kernel>> {
        match self {
            Prim::Fused(k) => Some(k),
            p => p.epilogue(),
        }
    }

    /// Whether this is one of the row primitives fusion makes of a normalisation
    /// (`SoftmaxRows`, `MaskedSoftmaxRows`, `LayerNormRows`).
    pub fn is_row_op(&self) -> bool {
        matches!(
            self,
            Prim::SoftmaxRows | Prim::MaskedSoftmaxRows { .. } | Prim::LayerNormRows { .. }
        )
    }

    pub fn name(&self) -> String {
        match self {
            Prim::Unary(op) => format!("{op:?}"),
            Prim::Binary(op) => format!("{op:?}"),
            Prim::Fused(k) => k.name.clone(),
            Prim::Host(h) => format!("Host{:?}", h)
                .split(['{', ' '])
                .next()
                .unwrap_or("Host")
                .to_string(),
            other => format!("{other:?}")
                .split(['{', '(', ' '])
                .next()
                .unwrap_or("?")
                .to_string(),
        }
    }

    /// Output types for these input types, validating every precondition the back ends rely on.
    /// Host ops with data-dependent shapes return an empty list (known only after running).
    pub fn infer(&self, ins: &[TensorType]) -> Result<Vec<TensorType>> {
        let arity = match self {
            Prim::Unary(_)
            | Prim::Cast(_)
            | Prim::Reduce { .. }
            | Prim::ArgReduce { .. }
            | Prim::Cumulative { .. }
            | Prim::View { .. }
            | Prim::SoftmaxRows => Some(1),
            Prim::MaskedSoftmaxRows { .. } => Some(2),
            Prim::Binary(_)
            | Prim::PadConstant { .. }
            | Prim::Gather { .. }
            | Prim::GatherElements { .. }
            | Prim::GatherNd { .. }
            | Prim::MatMul
            | Prim::MatMulOfViews { .. }
            | Prim::Conv { .. } => Some(2),
            Prim::Where
            | Prim::ScatterElements { .. }
            | Prim::ScatterNd { .. }
            | Prim::LayerNormRows { .. } => Some(3),
            Prim::Concat { .. }
            | Prim::Host(_)
            | Prim::Fused(_)
            | Prim::ConvEpilogue { .. }
            | Prim::ConvBlocked { .. }
            | Prim::MatMulEpilogue { .. } => None,
        };
        if let Some(n) = arity {
            if ins.len() != n {
                return Err(Error::invalid(format!(
                    "{} takes {n} inputs, got {}",
                    self.name(),
                    ins.len()
                )));
            }
        }
        let out = match self {
            Prim::Unary(op) => {
                let x = &ins[0];
                let dtype = if op.output_is_bool() {
                    DType::Bool
                } else {
                    x.dtype
                };
                vec![TensorType::new(dtype, x.shape.clone())]
            }
            Prim::Binary(op) => {
                same(&ins[0], &ins[1], &format!("{op:?}"))?;
                let dtype = if op.output_is_bool() {
                    DType::Bool
                } else {
                    ins[0].dtype
                };
                vec![TensorType::new(dtype, ins[0].shape.clone())]
            }
            Prim::Where => {
                if ins[0].dtype != DType::Bool || ins[0].shape != ins[1].shape {
                    return Err(Error::invalid(format!(
                        "Where: condition {} must be bool with the shape of {}",
                        ins[0], ins[1]
                    )));
                }
                same(&ins[1], &ins[2], "Where")?;
                vec![ins[1].clone()]
            }
            Prim::Cast(to) => vec![TensorType::new(*to, ins[0].shape.clone())],
            Prim::SoftmaxRows => {
                if ins[0].dtype != DType::F32 || ins[0].shape.is_empty() {
                    return Err(Error::invalid(format!(
                        "SoftmaxRows runs on f32 rows, not {}",
                        ins[0]
                    )));
                }
                vec![ins[0].clone()]
            }
            Prim::MaskedSoftmaxRows { mask, .. } => {
                let fits = ins[0].dtype == DType::F32
                    && !ins[0].shape.is_empty()
                    && ins[1].dtype == DType::F32
                    && mask.shape == ins[0].shape
                    && strided_in_bounds(&mask.shape, &mask.strides, mask.offset, ins[1].numel());
                if !fits {
                    return Err(Error::invalid(format!(
                        "MaskedSoftmaxRows takes f32 rows and an f32 mask whose view {:?} (strides {:?}, offset {}) covers them, not {}, {}",
                        mask.shape, mask.strides, mask.offset, ins[0], ins[1]
                    )));
                }
                vec![ins[0].clone()]
            }
            Prim::LayerNormRows { .. } => {
                let n = ins[0].shape.last().copied().unwrap_or(0);
                let vector = |t: &TensorType| t.dtype == DType::F32 && t.numel() == n;
                if ins[0].dtype != DType::F32
                    || ins[0].shape.is_empty()
                    || !vector(&ins[1])
                    || !vector(&ins[2])
                {
                    return Err(Error::invalid(format!(
                        "LayerNormRows takes f32 rows and a scale and bias of one row, not {}, {}, {}",
                        ins[0], ins[1], ins[2]
                    )));
                }
                vec![ins[0].clone()]
            }
            Prim::Reduce { axes, .. } => {
                let mut shape = ins[0].shape.clone();
                for &a in axes {
                    if a >= shape.len() {
                        return Err(Error::invalid(format!(
                            "Reduce axis {a} out of range for {}",
                            ins[0]
                        )));
                    }
                    shape[a] = 1;
                }
                vec![TensorType::new(ins[0].dtype, shape)]
            }
            Prim::ArgReduce { axis, .. } => {
                let mut shape = ins[0].shape.clone();
                if *axis >= shape.len() || shape[*axis] == 0 {
                    return Err(Error::invalid(format!(
                        "ArgMax/ArgMin axis {axis} invalid for {}",
                        ins[0]
                    )));
                }
                shape[*axis] = 1;
                vec![TensorType::new(DType::I64, shape)]
            }
            Prim::Cumulative { axis, .. } => {
                if *axis >= ins[0].shape.len() {
                    return Err(Error::invalid(format!(
                        "cumulative axis {axis} out of range for {}",
                        ins[0]
                    )));
                }
                vec![ins[0].clone()]
            }
            Prim::View {
                shape,
                strides,
                offset,
            } => {
                if shape.len() != strides.len() {
                    return Err(Error::invalid("View: shape and strides differ in rank"));
                }
                check_size(shape)?;
                if !strided_in_bounds(shape, strides, *offset, ins[0].numel()) {
                    return Err(Error::invalid(format!(
                        "View {shape:?} strides {strides:?} offset {offset} reads outside {}",
                        ins[0]
                    )));
                }
                vec![TensorType::new(ins[0].dtype, shape.clone())]
            }
            Prim::PadConstant { pads } => {
                if pads.len() != ins[0].shape.len()
                    || !ins[1].shape.is_empty()
                    || ins[1].dtype != ins[0].dtype
                {
                    return Err(Error::invalid(format!(
                        "PadConstant: pads {pads:?} / value {} do not fit {}",
                        ins[1], ins[0]
                    )));
                }
                let shape: Vec<usize> = ins[0]
                    .shape
                    .iter()
                    .zip(pads)
                    .map(|(&d, &(b, a))| {
                        d.checked_add(b)
                            .and_then(|v| v.checked_add(a))
                            .ok_or_else(|| {
                                Error::invalid(format!("PadConstant: pads {pads:?} overflow"))
                            })
                    })
                    .collect::<Result<_>>()?;
                check_size(&shape)?;
                vec![TensorType::new(ins[0].dtype, shape)]
            }
            Prim::Concat { axis } => {
                let first = ins
                    .first()
                    .ok_or_else(|| Error::invalid("Concat of nothing"))?;
                if *axis >= first.shape.len() {
                    return Err(Error::invalid(format!(
                        "Concat axis {axis} out of range for {first}"
                    )));
                }
                let mut shape = first.shape.clone();
                shape[*axis] = 0;
                for t in ins {
                    let ok = t.dtype == first.dtype
                        && t.shape.len() == shape.len()
                        && t.shape
                            .iter()
                            .enumerate()
                            .all(|(i, &d)| i == *axis || d == first.shape[i]);
                    if !ok {
                        return Err(Error::invalid(format!(
                            "Concat: {t} does not fit {first} on axis {axis}"
                        )));
                    }
                    shape[*axis] = shape[*axis]
                        .checked_add(t.shape[*axis])
                        .ok_or_else(|| Error::invalid("Concat: size overflows"))?;
                }
                vec![TensorType::new(first.dtype, shape)]
            }
            Prim::Gather { axis } => {
                let (d, i) = (&ins[0], &ins[1]);
                if *axis >= d.shape.len() || !i.dtype.is_int() {
                    return Err(Error::invalid(format!(
                        "Gather axis {axis} / indices {i} invalid for {d}"
                    )));
                }
                let mut shape = d.shape[..*axis].to_vec();
                shape.extend(&i.shape);
                shape.extend(&d.shape[axis + 1..]);
                check_size(&shape)?;
                vec![TensorType::new(d.dtype, shape)]
            }
            Prim::GatherElements { axis } => {
                let (d, i) = (&ins[0], &ins[1]);
                if *axis >= d.shape.len() || i.shape.len() != d.shape.len() || !i.dtype.is_int() {
                    return Err(Error::invalid(format!(
                        "GatherElements axis {axis} / indices {i} invalid for {d}"
                    )));
                }
                vec![TensorType::new(d.dtype, i.shape.clone())]
            }
            Prim::GatherNd { batch_dims } => {
                let (d, i) = (&ins[0], &ins[1]);
                let b = *batch_dims;
                let last = *i
                    .shape
                    .last()
                    .ok_or_else(|| Error::invalid("GatherND indices must have rank >= 1"))?;
                if b >= i.shape.len()
                    || b.saturating_add(last) > d.shape.len()
                    || d.shape[..b] != i.shape[..b]
                    || !i.dtype.is_int()
                {
                    return Err(Error::invalid(format!(
                        "GatherND: indices {i} invalid for {d} with batch_dims {b}"
                    )));
                }
                let mut shape = i.shape[..i.shape.len() - 1].to_vec();
                shape.extend(&d.shape[b + last..]);
                vec![TensorType::new(d.dtype, shape)]
            }
            Prim::ScatterElements { axis, .. } => {
                let (d, i, u) = (&ins[0], &ins[1], &ins[2]);
                if *axis >= d.shape.len()
                    || i.shape != u.shape
                    || i.shape.len() != d.shape.len()
                    || u.dtype != d.dtype
                    || !i.dtype.is_int()
                {
                    return Err(Error::invalid(format!(
                        "ScatterElements: indices {i} / updates {u} invalid for {d}"
                    )));
                }
                vec![d.clone()]
            }
            Prim::ScatterNd { .. } => {
                let (d, i, u) = (&ins[0], &ins[1], &ins[2]);
                let last = *i
                    .shape
                    .last()
                    .ok_or_else(|| Error::invalid("ScatterND indices must have rank >= 1"))?;
                let mut want = i.shape[..i.shape.len() - 1].to_vec();
                if last > d.shape.len() {
                    return Err(Error::invalid(format!(
                        "ScatterND: indices {i} too deep for {d}"
                    )));
                }
                want.extend(&d.shape[last..]);
                if u.shape != want || u.dtype != d.dtype || !i.dtype.is_int() {
                    return Err(Error::invalid(format!(
                        "ScatterND: updates {u} should be {:?} for {d}",
                        want
                    )));
                }
                vec![d.clone()]
            }
            Prim::MatMul => {
                let (a, b) = (&ins[0], &ins[1]);
                let (ra, rb) = (a.shape.len(), b.shape.len());
                if ra < 2
                    || ra != rb
                    || a.dtype != b.dtype
                    || a.shape[..ra - 2] != b.shape[..rb - 2]
                    || a.shape[ra - 1] != b.shape[rb - 2]
                {
                    return Err(Error::invalid(format!("MatMul: {a} x {b} do not fit")));
                }
                let mut shape = a.shape.clone();
                shape[ra - 1] = b.shape[rb - 1];
                vec![TensorType::new(a.dtype, shape)]
            }
            Prim::MatMulOfViews { a, b } => {
                let seen = |map: &Option<ViewMap>, t: &TensorType| -> Result<TensorType> {
                    match map {
                        Some(m) => Ok(m.prim().infer(std::slice::from_ref(t))?.remove(0)),
                        None => Ok(t.clone()),
                    }
                };
                Prim::MatMul.infer(&[seen(a, &ins[0])?, seen(b, &ins[1])?])?
            }
            Prim::Conv {
                strides,
                dilations,
                groups,
            } => {
                let (x, w) = (&ins[0], &ins[1]);
                let sp = x.shape.len().saturating_sub(2);
                if x.shape.len() < 3
                    || w.shape.len() != x.shape.len()
                    || strides.len() != sp
                    || dilations.len() != sp
                    || *groups == 0
                    || Some(x.shape[1]) != w.shape[1].checked_mul(*groups)
                    || w.shape[0] % groups != 0
                    || x.dtype != w.dtype
                    || strides.contains(&0)
                    || dilations.contains(&0)
                {
                    return Err(Error::invalid(format!(
                        "Conv: input {x} and weight {w} do not fit (groups {groups})"
                    )));
                }
                let mut shape = vec![x.shape[0], w.shape[0]];
                for i in 0..sp {
                    let Some(o) = window_out(
                        x.shape[2 + i],
                        (0, 0),
                        w.shape[2 + i],
                        strides[i],
                        dilations[i],
                    ) else {
                        return Err(Error::invalid(format!(
                            "Conv: kernel {w} is empty or larger than input {x}"
                        )));
                    };
                    shape.push(o);
                }
                vec![TensorType::new(x.dtype, shape)]
            }
            Prim::Host(_) => vec![],
            Prim::ConvEpilogue {
                strides,
                dilations,
                groups,
                epilogue,
            } => {
                if ins.len() < 2 {
                    return Err(Error::invalid(
                        "ConvEpilogue takes x, w and the epilogue's arguments",
                    ));
                }
                let conv = Prim::Conv {
                    strides: strides.clone(),
                    dilations: dilations.clone(),
                    groups: *groups,
                }
                .infer(&ins[..2])?;
                if epilogue.domain != conv[0].shape {
                    return Err(Error::invalid(format!(
                        "ConvEpilogue: kernel {} does not fit the convolution output {}",
                        epilogue.name, conv[0]
                    )));
                }
                Prim::epilogue_out("ConvEpilogue", epilogue, &conv[0], &ins[2..])?
            }
            Prim::ConvBlocked {
                strides,
                dilations,
                pads,
                epilogue,
            } => {
                let conv =
                    Prim::blocked_conv_out(&ins[..ins.len().min(2)], strides, dilations, pads)?;
                match epilogue {
                    None if ins.len() == 2 => vec![conv],
                    None => {
                        return Err(Error::invalid(
                            "ConvBlocked without an epilogue takes x and w",
                        ))
                    }
                    Some(k) => {
                        if k.domain != conv.shape {
                            return Err(Error::invalid(format!(
                                "ConvBlocked: kernel {} does not fit the convolution output {conv}",
                                k.name
                            )));
                        }
                        Prim::epilogue_out("ConvBlocked", k, &conv, &ins[2..])?
                    }
                }
            }
            Prim::MatMulEpilogue { a, b, epilogue } => {
                if ins.len() < 2 {
                    return Err(Error::invalid(
                        "MatMulEpilogue takes a, b and the epilogue's arguments",
                    ));
                }
                let product = Prim::MatMulOfViews {
                    a: a.clone(),
                    b: b.clone(),
                }
                .infer(&ins[..2])?;
                Prim::epilogue_out("MatMulEpilogue", epilogue, &product[0], &ins[2..])?
            }
            Prim::Fused(k) => {
                for l in &k.loads {
                    let arg = ins.get(l.arg).ok_or_else(|| {
                        Error::invalid(format!(
                            "kernel {}: load of missing argument {}",
                            k.name, l.arg
                        ))
                    })?;
                    if arg.dtype != l.dtype
                        || l.strides.len() != k.domain.len()
                        || !strided_in_bounds(&k.domain, &l.strides, l.offset, arg.numel())
                    {
                        return Err(Error::invalid(format!(
                            "kernel {}: load {:?} does not fit argument {arg}",
                            k.name, l
                        )));
                    }
                }
                if k.out.numel() != k.kept().iter().product::<usize>() {
                    return Err(Error::invalid(format!(
                        "kernel {}: output {} does not match its domain",
                        k.name, k.out
                    )));
                }
                vec![k.out.clone()]
            }
        };
        for t in &out {
            check_size(&t.shape)?;
            crate::limits::check_alloc(t.dtype, t.numel())?;
        }
        Ok(out)
    }
}

/// Positions of a sliding window along an axis of `size` padded by `pads` (before, after):
/// a kernel of `kernel` taps `dilation` apart, moved by `stride`. `None` when the kernel is
/// empty or reaches past the padded axis, the stride or dilation is 0, or a size overflows.
pub fn window_out(
    size: usize,
    pads: (usize, usize),
    kernel: usize,
    stride: usize,
    dilation: usize,
) -> Option<usize> {
    let padded = size.checked_add(pads.0)?.checked_add(pads.1)?;
    let extent = kernel
        .checked_sub(1)?
        .checked_mul(dilation)?
        .checked_add(1)?;
    if dilation == 0 {
        return None;
    }
    Some(padded.checked_sub(extent)?.checked_div(stride)? + 1)
}

#[cfg(test)]
mod tests {
    use super::window_out;

    #[test]
    fn window_positions_follow_the_onnx_formula() {
        // floor((size + pads - dilation (kernel - 1) - 1) / stride) + 1, worked by hand.
        assert_eq!(window_out(224, (3, 3), 7, 2, 1), Some(112)); // ResNet's stem
        assert_eq!(window_out(112, (1, 1), 3, 2, 1), Some(56)); // its max pool
        assert_eq!(window_out(5, (0, 0), 3, 1, 2), Some(1)); // dilated to the whole axis
        assert_eq!(window_out(7, (0, 1), 2, 3, 1), Some(3)); // uneven padding
        assert_eq!(window_out(4, (0, 0), 3, 1, 2), None); // reaches past the axis
        assert_eq!(window_out(4, (0, 0), 0, 1, 1), None); // empty kernel
        assert_eq!(window_out(4, (0, 0), 2, 0, 1), None); // stride 0
        assert_eq!(window_out(4, (0, 0), 2, 1, 0), None); // dilation 0
        assert_eq!(window_out(usize::MAX, (1, 0), 1, 1, 1), None); // overflow
    }
}
