//! Feed-forward blocks: the gated MLP, and mixtures of experts with softmax routing (Mixtral,
//! Qwen3-MoE) or DeepSeek-V3's grouped sigmoid routing plus shared experts.
//!
//! Experts run densely: every expert sees every token and its output is weighted by a routing
//! weight that is exactly zero for the experts a token did not choose. The result equals
//! sparse dispatch (up to summation order) at `experts / top_k` times the arithmetic; a gathered
//! dispatch is the next step for large models.
use super::net::Net;
use crate::config::{Moe, Routing};
use kuaxin_core::graph::Attr;
use kuaxin_core::{DType, Data, Error, Result, Tensor};

/// Names of an expert's three projections (gate, up, down).
struct ExpertNames {
    gate: String,
    up: String,
    down: String,
}

impl Net<'_> {
    /// Routing runs in f32 (f64 for f64 models), like the reference.
    fn router_dtype(&self) -> DType {
        if self.dtype == DType::F64 {
            DType::F64
        } else {
            DType::F32
        }
    }

    pub fn feed_forward(&mut self, x: &str, layer: usize) -> Result<String> {
        let c = self.cfg;
        match &c.moe {
            Some(m) if m.sparse_layers[layer] => self.moe(x, layer, m),
            _ => self.mlp(x, &format!("model.layers.{layer}.mlp"), c.intermediate),
        }
    }

    /// `down(act(gate(x)) * up(x))`.
    pub fn mlp(&mut self, x: &str, prefix: &str, inter: usize) -> Result<String> {
        let (h, bias) = (self.cfg.hidden, self.cfg.mlp_bias);
        let g = self.linear(x, &format!("{prefix}.gate_proj"), h, inter, bias)?;
        let u = self.linear(x, &format!("{prefix}.up_proj"), h, inter, bias)?;
        let a = self.act(&g)?;
        let m = self.g.node("Mul", &[&a, &u], vec![]);
        self.linear(&m, &format!("{prefix}.down_proj"), inter, h, bias)
    }

    /// Stacks `[out, inp]` expert weights into one `[experts, inp, out]` constant.
    fn stacked(&mut self, name: &str, parts: &[String], inp: usize, out: usize) -> Result<String> {
        let mut data: Option<Data> = None;
        for p in parts {
            let t = self.ck.linear(p, inp, out, self.dtype)?;
            data = Some(match (data, t.data) {
                (None, d) => d,
                (Some(Data::F32(mut a)), Data::F32(b)) => {
                    a.extend(b);
                    Data::F32(a)
                }
                (Some(Data::F16(mut a)), Data::F16(b)) => {
                    a.extend(b);
                    Data::F16(a)
                }
                (Some(Data::BF16(mut a)), Data::BF16(b)) => {
                    a.extend(b);
                    Data::BF16(a)
                }
                (Some(Data::F64(mut a)), Data::F64(b)) => {
                    a.extend(b);
                    Data::F64(a)
                }
                _ => return Err(Error::invalid(format!("expert weight '{p}' changed dtype"))),
            });
        }
        let t = Tensor {
            shape: vec![parts.len(), inp, out],
            data: data.ok_or_else(|| Error::invalid(format!("{name}: no experts")))?,
        };
        self.weight_bytes += (t.numel() * self.dtype.size()) as u64;
        Ok(self.g.constant(name, t))
    }

    fn expert_names(&self, layer: usize, e: usize) -> ExpertNames {
        let mixtral = self.cfg.arch == crate::config::Arch::Mixtral;
        let (block, g, u, d) = if mixtral {
            ("block_sparse_moe", "w1", "w3", "w2")
        } else {
            ("mlp", "gate_proj", "up_proj", "down_proj")
        };
        let p = format!("model.layers.{layer}.{block}.experts.{e}");
        ExpertNames {
            gate: format!("{p}.{g}.weight"),
            up: format!("{p}.{u}.weight"),
            down: format!("{p}.{d}.weight"),
        }
    }

    fn moe(&mut self, x: &str, layer: usize, m: &Moe) -> Result<String> {
        let c = self.cfg;
        let h = c.hidden;
        let block = if c.arch == crate::config::Arch::Mixtral {
            "block_sparse_moe"
        } else {
            "mlp"
        };
        let p = format!("model.layers.{layer}.{block}");
        let flat = self.reshape(x, &[-1, h as i64]);
        // Routing in f32 whatever the model dtype, like the reference.
        let xf = self.cast(&flat, self.dtype, self.router_dtype());
        let gw = format!("{p}.gate.weight");
        let gate = self.ck.linear(&gw, h, m.experts, self.router_dtype())?;
        self.weight_bytes += (gate.numel() * self.router_dtype().size()) as u64;
        let gate = self.g.constant(&gw, gate);
        let logits = self.g.node("MatMul", &[&xf, &gate], vec![]);
        let dense = match &m.routing {
            Routing::Softmax { renormalize } => {
                let probs = self
                    .g
                    .node("Softmax", &[&logits], vec![("axis", Attr::Int(-1))]);
                let k = self.shape_const(&format!("k{}", m.top_k), &[m.top_k as i64]);
                let top = self
                    .g
                    .node_n("TopK", &[&probs, &k], vec![("axis", Attr::Int(-1))], 2);
                let w = if *renormalize {
                    self.normalize_rows(&top[0], 0.0)
                } else {
                    top[0].clone()
                };
                self.scatter_rows(&probs, &top[1], &w)
            }
            Routing::GroupedSigmoid {
                n_group,
                topk_group,
                renormalize,
                scaling,
            } => self.grouped_routing(
                &p,
                &logits,
                m,
                *n_group,
                *topk_group,
                *renormalize,
                *scaling,
            )?,
        };
        // Experts: [N, h] @ [E, h, i] -> [E, N, i].
        let names: Vec<ExpertNames> = (0..m.experts)
            .map(|e| self.expert_names(layer, e))
            .collect();
        let gates: Vec<String> = names.iter().map(|n| n.gate.clone()).collect();
        let ups: Vec<String> = names.iter().map(|n| n.up.clone()).collect();
        let downs: Vec<String> = names.iter().map(|n| n.down.clone()).collect();
        let wg = self.stacked(
            &format!("{p}.experts.gate.stacked"),
            &gates,
            h,
            m.intermediate,
        )?;
        let wu = self.stacked(&format!("{p}.experts.up.stacked"), &ups, h, m.intermediate)?;
        let wd = self.stacked(
            &format!("{p}.experts.down.stacked"),
            &downs,
            m.intermediate,
            h,
        )?;
        let g = self.g.node("MatMul", &[&flat, &wg], vec![]);
        let u = self.g.node("MatMul", &[&flat, &wu], vec![]);
        let a = self.act(&g)?;
        let hm = self.g.node("Mul", &[&a, &u], vec![]);
        let y = self.g.node("MatMul", &[&hm, &wd], vec![]);
        // Weight by the routing: [N, E] -> [E, N, 1].
        let wt = self.transpose(&dense, &[1, 0]);
        let ax = self.shape_const("axes[-1]", &[-1]);
        let wt = self.g.node("Unsqueeze", &[&wt, &ax], vec![]);
        let wt = self.cast(&wt, self.router_dtype(), self.dtype);
        let yw = self.g.node("Mul", &[&y, &wt], vec![]);
        let ax0 = self.shape_const("axes[0]", &[0]);
        let mut out = self
            .g
            .node("ReduceSum", &[&yw, &ax0], vec![("keepdims", Attr::Int(0))]);
        if m.shared_intermediate > 0 {
            let s = self.mlp(&flat, &format!("{p}.shared_experts"), m.shared_intermediate)?;
            out = self.g.node("Add", &[&out, &s], vec![]);
        }
        let shape = self.g.node("Shape", &[x], vec![]);
        Ok(self.g.node("Reshape", &[&out, &shape], vec![]))
    }

    /// `w / (sum(w) + eps)` over the last axis.
    fn normalize_rows(&mut self, w: &str, eps: f64) -> String {
        let ax = self.shape_const("axes[-1]", &[-1]);
        let s = self
            .g
            .node("ReduceSum", &[w, &ax], vec![("keepdims", Attr::Int(1))]);
        let s = if eps > 0.0 {
            let e = self.scalar(
                &format!("eps{eps:e}_{}", self.router_dtype()),
                self.router_dtype(),
                eps,
            );
            self.g.node("Add", &[&s, &e], vec![])
        } else {
            s
        };
        self.g.node("Div", &[w, &s], vec![])
    }

    /// A `[N, E]` tensor (shaped like `like`) with `w` at `idx` and zeros elsewhere.
    fn scatter_rows(&mut self, like: &str, idx: &str, w: &str) -> String {
        let zero = self.scalar(
            &format!("zero_{}", self.router_dtype()),
            self.router_dtype(),
            0.0,
        );
        let zeros = self.g.node("Mul", &[like, &zero], vec![]);
        self.g.node(
            "ScatterElements",
            &[&zeros, idx, w],
            vec![("axis", Attr::Int(-1))],
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn grouped_routing(
        &mut self,
        p: &str,
        logits: &str,
        m: &Moe,
        n_group: usize,
        topk_group: usize,
        renormalize: bool,
        scaling: f64,
    ) -> Result<String> {
        let e = m.experts;
        let per = e / n_group;
        if per < 2 || topk_group == 0 || topk_group > n_group {
            return Err(Error::invalid(format!(
                "{p}: grouped routing needs at least 2 experts per group and 1..={n_group} groups chosen (got {per} per group, topk_group {topk_group})"
            )));
        }
        let scores = self.g.node("Sigmoid", &[logits], vec![]);
        let bias = self.weight_as(
            &format!("{p}.gate.e_score_correction_bias"),
            &[e],
            self.router_dtype(),
        )?;
        let choice = self.g.node("Add", &[&scores, &bias], vec![]);
        // Group score: sum of the best two experts in each group.
        let grouped = self.reshape(&choice, &[-1, n_group as i64, per as i64]);
        let k2 = self.shape_const("k2", &[2]);
        let best2 = self
            .g
            .node_n("TopK", &[&grouped, &k2], vec![("axis", Attr::Int(-1))], 2);
        let ax = self.shape_const("axes[-1]", &[-1]);
        let gscore = self.g.node(
            "ReduceSum",
            &[&best2[0], &ax],
            vec![("keepdims", Attr::Int(0))],
        );
        let kg = self.shape_const(&format!("k{topk_group}"), &[topk_group as i64]);
        let gtop = self
            .g
            .node_n("TopK", &[&gscore, &kg], vec![("axis", Attr::Int(-1))], 2);
        let one = self.scalar(
            &format!("one_{}", self.router_dtype()),
            self.router_dtype(),
            1.0,
        );
        let zero = self.scalar(
            &format!("zero_{}", self.router_dtype()),
            self.router_dtype(),
            0.0,
        );
        let ones = self.g.node("Mul", &[&gtop[0], &zero], vec![]);
        let ones = self.g.node("Add", &[&ones, &one], vec![]);
        let gmask = self.scatter_rows(&gscore, &gtop[1], &ones);
        let gmask = self.g.node("Unsqueeze", &[&gmask, &ax], vec![]);
        let keep = self.g.node("Greater", &[&gmask, &zero], vec![]);
        let ninf = self.scalar(
            &format!("ninf_{}", self.router_dtype()),
            self.router_dtype(),
            f64::NEG_INFINITY,
        );
        let masked = self.g.node("Where", &[&keep, &grouped, &ninf], vec![]);
        let masked = self.reshape(&masked, &[-1, e as i64]);
        let k = self.shape_const(&format!("k{}", m.top_k), &[m.top_k as i64]);
        let top = self
            .g
            .node_n("TopK", &[&masked, &k], vec![("axis", Attr::Int(-1))], 2);
        let w = self.g.node(
            "GatherElements",
            &[&scores, &top[1]],
            vec![("axis", Attr::Int(-1))],
        );
        let w = if renormalize {
            self.normalize_rows(&w, 1e-20)
        } else {
            w
        };
        let s = self.scalar(
            &format!("routed_scaling{scaling}_{}", self.router_dtype()),
            self.router_dtype(),
            scaling,
        );
        let w = self.g.node("Mul", &[&w, &s], vec![]);
        Ok(self.scatter_rows(&scores, &top[1], &w))
    }
}
