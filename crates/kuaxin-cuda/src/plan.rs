//! What the CUDA back end does for one primitive: a generated kernel, products through cuBLAS
//! (matmul; convolution as im2col + products), or nothing (an empty output). `supports` and the
//! codegen check ask the same question, so the check compiles exactly the kernels a GPU would
//! launch.
use crate::blas::{blas_dtype, Gemm};
use crate::dialect::Dialect;
use crate::prims::{im2col, render};
use crate::text::Launch;
use kuaxin_core::prim::{Prim, TensorType};
use kuaxin_core::DType;

/// Largest scratch an im2col may take; bigger convolutions use the direct kernel.
const MAX_IM2COL_BYTES: usize = 1 << 30;

#[derive(Debug)]
pub enum Plan {
    Kernel(Launch),
    Gemm(GemmPlan),
    Empty,
}

/// Where a product's operand lives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Operand {
    Input(usize),
    /// The scratch tensor the `prep` kernel wrote.
    Scratch,
}

/// `calls` strided batched products `C = A·B` one after another; call i reads B and writes C
/// `i·step_b` / `i·step_c` elements further on (A is the same). `prep`, when present, is a kernel
/// from input 0 into a scratch tensor of the given type (im2col), launched first.
#[derive(Debug)]
pub struct GemmPlan {
    pub dtype: DType,
    pub prep: Option<(Launch, TensorType)>,
    pub a: Operand,
    pub b: Operand,
    pub gemm: Gemm,
    pub calls: usize,
    pub step_b: usize,
    pub step_c: usize,
}

/// The plan for `prim` on `ins` (types already validated by `Prim::infer`); Err says why the
/// primitive stays on the host. `blas`: whether cuBLAS is available.
pub fn plan(
    prim: &Prim,
    ins: &[TensorType],
    out: &TensorType,
    blas: bool,
    dl: &Dialect,
) -> Result<Plan, String> {
    match prim {
        Prim::Host(_) => return Err("host op".into()),
        // Duplicate indices make the order of writes matter: the host keeps it.
        Prim::ScatterElements { .. } | Prim::ScatterNd { .. } => {
            return Err("scatters run on the host".into())
        }
        Prim::ConvEpilogue { .. } | Prim::MatMulEpilogue { .. } => {
            return Err("product epilogues are not claimed yet".into())
        }
        Prim::ConvBlocked { .. } => return Err("the blocked layout is the CPU's".into()),
        _ => {}
    }
    let library = blas && blas_dtype(ins[0].dtype);
    let p = match prim {
        Prim::MatMul if library => Plan::Gemm(GemmPlan {
            dtype: ins[0].dtype,
            prep: None,
            a: Operand::Input(0),
            b: Operand::Input(1),
            gemm: Gemm::matmul(&ins[0], &ins[1]),
            calls: 1,
            step_b: 0,
            step_c: 0,
        }),
        Prim::Conv {
            strides,
            dilations,
            groups,
        } if library => match conv_gemm(ins, out, strides, dilations, *groups, dl)? {
            Some(g) => Plan::Gemm(g),
            None => Plan::Kernel(render(prim, ins, out, dl)?),
        },
        p => Plan::Kernel(render(p, ins, out, dl)?),
    };
    // Rendered even when nothing runs, so an unsupported dtype is refused the same way.
    Ok(if out.numel() == 0 { Plan::Empty } else { p })
}

/// Convolution as products: per image and group, `out[Mg, P] = w[Mg, Cg·Kn] · col[Cg·Kn, P]`,
/// where `col` is the image unfolded by im2col (or the image itself for a 1x1 kernel with
/// stride 1). None: the scratch would be too large.
fn conv_gemm(
    ins: &[TensorType],
    out: &TensorType,
    strides: &[usize],
    dilations: &[usize],
    groups: usize,
    dl: &Dialect,
) -> Result<Option<GemmPlan>, String> {
    let (x, w) = (&ins[0], &ins[1]);
    let (n, c, m) = (x.shape[0], x.shape[1], w.shape[0]);
    let kn: usize = w.shape[2..].iter().product();
    let p: usize = out.shape[2..].iter().product();
    let (cg, mg) = (c / groups, m / groups);
    let pointwise = kn == 1 && strides.iter().all(|&s| s == 1);
    let prep = if pointwise {
        None
    } else {
        if n * c * kn * p * x.dtype.size() > MAX_IM2COL_BYTES {
            return Ok(None);
        }
        Some(im2col(x, w, &out.shape, strides, dilations, dl)?)
    };
    Ok(Some(GemmPlan {
        dtype: x.dtype,
        b: if prep.is_some() {
            Operand::Scratch
        } else {
            Operand::Input(0)
        },
        prep,
        a: Operand::Input(1),
        gemm: Gemm {
            m: mg,
            k: cg * kn,
            n: p,
            batch: groups,
            stride_a: mg * cg * kn,
            stride_b: cg * kn * p,
            stride_c: mg * p,
        },
        calls: n,
        step_b: c * kn * p,
        step_c: m * p,
    }))
}

/// The plan of a primitive asked about before its input types are known (the fusion pass asks
/// about kernels so): only kernels can be answered without them.
pub fn plan_kernel_only(prim: &Prim, dl: &Dialect) -> Result<Plan, String> {
    match prim {
        Prim::Fused(k) => {
            let n_args = k.loads.iter().map(|l| l.arg + 1).max().unwrap_or(0);
            crate::kernel::render_kernel(k, n_args, dl).map(Plan::Kernel)
        }
        _ => Err("input types unknown".into()),
    }
}

/// What the back end claims of a primitive asked about without input types: the fusion pass
/// asks so whether to make kernels and row primitives. Row primitives are claimed for every
/// f32 input their `infer` accepts (anything else is refused by [`claims`] with types).
pub fn claims_untyped(prim: &Prim, dl: &Dialect) -> bool {
    prim.is_row_op() || plan_kernel_only(prim, dl).is_ok()
}

/// `Backend::supports` of the CUDA back end (and of the codegen check, which claims the same).
/// The fusion pass asks with no input types, about kernels and row primitives only.
pub fn claims(prim: &Prim, inputs: &[TensorType], blas: bool, dl: &Dialect) -> bool {
    if inputs.is_empty() {
        return claims_untyped(prim, dl);
    }
    prim.infer(inputs)
        .is_ok_and(|o| o.len() == 1 && plan(prim, inputs, &o[0], blas, dl).is_ok())
}
