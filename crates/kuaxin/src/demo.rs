//! A small transformer encoder block built in memory (no files), used by `kuaxin demo` and the
//! tests: the same graph in f32 and in f64 lets a run be checked against a more precise reference.
use crate::random::{random_tensor, Rng};
use kuaxin_core::graph::{Attr, Dim, Model};
use kuaxin_core::graph_builder::GraphBuilder;
use kuaxin_core::{DType, Data, Tensor};

pub struct BlockConfig {
    pub hidden: usize,
    pub heads: usize,
    pub ffn: usize,
}

impl Default for BlockConfig {
    fn default() -> Self {
        BlockConfig {
            hidden: 64,
            heads: 4,
            ffn: 256,
        }
    }
}

struct Builder {
    g: GraphBuilder,
    rng: Rng,
    dtype: DType,
}

impl Builder {
    fn node(&mut self, op: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        self.g.node(op, inputs, attrs)
    }
    fn weight(&mut self, name: &str, shape: Vec<usize>, scale: f64) -> String {
        let t = random_tensor(&mut self.rng, DType::F64, shape);
        let scaled = Tensor {
            shape: t.shape.clone(),
            data: Data::from_f64_iter(self.dtype, t.to_f64_vec().into_iter().map(|x| x * scale)),
        };
        self.g.constant(name, scaled)
    }
    fn ones(&mut self, name: &str, n: usize, v: f64) -> String {
        self.g.constant(name, Tensor::full(self.dtype, vec![n], v))
    }
    fn shape(&mut self, name: &str, dims: &[i64]) -> String {
        self.g.ints(name, dims)
    }
}

/// Pre-norm encoder block: x + Attn(LN(x)), then + MLP(LN(.)) with GELU. Input `x`
/// `[batch, seq, hidden]` with symbolic batch and seq.
pub fn transformer_block(cfg: &BlockConfig, dtype: DType, seed: u64) -> Model {
    let mut b = Builder {
        g: GraphBuilder::new("kuaxin_demo_block"),
        rng: Rng::new(seed),
        dtype,
    };
    let (h, nh, f) = (cfg.hidden, cfg.heads, cfg.ffn);
    let hd = h / nh;
    let s = 1.0 / (h as f64).sqrt();
    let g1 = b.ones("ln1.weight", h, 1.0);
    let b1 = b.ones("ln1.bias", h, 0.0);
    let ln1 = b.node(
        "LayerNormalization",
        &["x", &g1, &b1],
        vec![("axis", Attr::Int(-1))],
    );
    let heads_shape = b.shape("heads_shape", &[0, 0, nh as i64, hd as i64]);
    let mut qkv = Vec::new();
    for p in ["q", "k", "v"] {
        let w = b.weight(&format!("attn.{p}.weight"), vec![h, h], s);
        let bias = b.weight(&format!("attn.{p}.bias"), vec![h], 0.1);
        let mm = b.node("MatMul", &[&ln1, &w], vec![]);
        let add = b.node("Add", &[&mm, &bias], vec![]);
        let r = b.node("Reshape", &[&add, &heads_shape], vec![]);
        let perm = if p == "k" {
            vec![0, 2, 3, 1]
        } else {
            vec![0, 2, 1, 3]
        };
        qkv.push(b.node("Transpose", &[&r], vec![("perm", Attr::Ints(perm))]));
    }
    let scores = b.node("MatMul", &[&qkv[0], &qkv[1]], vec![]);
    let scale = b.ones("attn.scale", 1, 1.0 / (hd as f64).sqrt());
    let scaled = b.node("Mul", &[&scores, &scale], vec![]);
    let probs = b.node("Softmax", &[&scaled], vec![("axis", Attr::Int(-1))]);
    let ctx = b.node("MatMul", &[&probs, &qkv[2]], vec![]);
    let ctx_t = b.node(
        "Transpose",
        &[&ctx],
        vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
    );
    let merge = b.shape("merge_shape", &[0, 0, h as i64]);
    let merged = b.node("Reshape", &[&ctx_t, &merge], vec![]);
    let wo = b.weight("attn.out.weight", vec![h, h], s);
    let proj = b.node("MatMul", &[&merged, &wo], vec![]);
    let res1 = b.node("Add", &["x", &proj], vec![]);
    let g2 = b.ones("ln2.weight", h, 1.0);
    let b2 = b.ones("ln2.bias", h, 0.0);
    let ln2 = b.node(
        "LayerNormalization",
        &[&res1, &g2, &b2],
        vec![("axis", Attr::Int(-1))],
    );
    let w1 = b.weight("mlp.fc1.weight", vec![h, f], s);
    let bias1 = b.weight("mlp.fc1.bias", vec![f], 0.1);
    let up = b.node("MatMul", &[&ln2, &w1], vec![]);
    let up_b = b.node("Add", &[&up, &bias1], vec![]);
    // GELU written out with Erf so the demo needs only basic ops: 0.5 x (1 + erf(x / sqrt 2)).
    let inv_sqrt2 = b.ones("gelu.inv_sqrt2", 1, std::f64::consts::FRAC_1_SQRT_2);
    let half = b.ones("gelu.half", 1, 0.5);
    let one = b.ones("gelu.one", 1, 1.0);
    let xs = b.node("Mul", &[&up_b, &inv_sqrt2], vec![]);
    let erf = b.node("Erf", &[&xs], vec![]);
    let erf1 = b.node("Add", &[&erf, &one], vec![]);
    let hx = b.node("Mul", &[&up_b, &half], vec![]);
    let act = b.node("Mul", &[&hx, &erf1], vec![]);
    let w2 = b.weight("mlp.fc2.weight", vec![f, h], 1.0 / (f as f64).sqrt());
    let down = b.node("MatMul", &[&act, &w2], vec![]);
    let out = b.node("Add", &[&res1, &down], vec![]);
    let y = b.node("Identity", &[&out], vec![]);
    let dims = vec![
        Dim::Sym("batch".into()),
        Dim::Sym("seq".into()),
        Dim::Known(h),
    ];
    b.g.input("x", dtype, dims.clone());
    b.g.output(&y, dtype, Some(dims));
    b.g.finish("kuaxin demo", "built-in transformer block")
}
