//! Inference BatchNormalization folded into the convolution it follows, as onnxruntime's
//! graph optimiser does: `BN(conv(x, W) + B) = conv(x, W') + B'` with
//! `W'[m] = W[m] s[m]`, `B'[m] = (B[m] - mean[m]) s[m] + beta[m]`, `s = scale / sqrt(var + eps)`
//! (worked out in f64 and rounded once). The convolution's epilogue then holds a bias add and
//! the activation instead of four more ops per element: ResNet-50's 53 BatchNormalizations
//! cost about a tenth of its time on the CPU.
//!
//! Only when every operand is a constant of the graph (an initializer this run does not
//! override with an input), the convolution's output feeds nothing but the BatchNormalization,
//! and the graph holds no subgraphs (which may read any value by name).
//! The result differs from the unfolded graph by rounding only.
use kuaxin_core::graph::{Attr, Graph, Node};
use kuaxin_core::{Data, Tensor};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// `g` with each foldable Conv -> BatchNormalization pair made one Conv; `None` when there is
/// none. `opset` is the default-domain op-set version (training mode exists from 14);
/// `overridden` names the initializers this run's inputs replace.
pub fn fold_batch_norms(g: &Graph, opset: i64, overridden: &HashSet<&str>) -> Option<Graph> {
    let has_subgraph = g.nodes.iter().any(|n| {
        n.attrs
            .values()
            .any(|a| matches!(a, Attr::Graph(_) | Attr::Graphs(_)))
    });
    if has_subgraph {
        return None;
    }
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for name in g
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter())
        .chain(g.outputs.iter().map(|o| &o.name))
    {
        *uses.entry(name.as_str()).or_default() += 1;
    }
    let producer: HashMap<&str, usize> = g
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let constant = |name: Option<&str>| -> Option<Constant> {
        let name = name.filter(|n| !overridden.contains(n))?;
        let t = g.initializer(name)?;
        match &t.data {
            Data::F32(v) => Some((v.as_slice(), t.shape.as_slice())),
            _ => None,
        }
    };
    let mut nodes = g.nodes.clone();
    let mut removed: HashSet<usize> = HashSet::new();
    let mut initializers = g.initializers.clone();
    // The operands the folded pairs read, dropped below when nothing else reads them.
    let mut replaced: HashSet<String> = HashSet::new();
    for (b, bn) in g.nodes.iter().enumerate() {
        if !is_default(bn, "BatchNormalization") || !inference(bn, opset) {
            continue;
        }
        let Some(x) = bn.input(0) else { continue };
        let Some(&c) = producer.get(x) else { continue };
        let conv = &g.nodes[c];
        if !is_default(conv, "Conv") || uses.get(x) != Some(&1) || removed.contains(&c) {
            continue;
        }
        let Some(folded) = fold(conv, bn, &constant) else {
            continue;
        };
        let (w, bias) = folded;
        let base = format!("{}::batchnorm_folded", x);
        let (wn, bn_name) = (format!("{base}_W"), format!("{base}_B"));
        if g.initializer(&wn).is_some() || g.initializer(&bn_name).is_some() {
            continue;
        }
        replaced.extend(conv.inputs[1..].iter().chain(&bn.inputs[1..]).cloned());
        initializers.push((wn.clone(), Arc::new(w)));
        initializers.push((bn_name.clone(), Arc::new(bias)));
        let merged = &mut nodes[c];
        merged.inputs.truncate(1);
        merged.inputs.extend([wn, bn_name]);
        merged.outputs = vec![bn.outputs[0].clone()];
        removed.insert(b);
    }
    if removed.is_empty() {
        return None;
    }
    let nodes: Vec<Node> = nodes
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !removed.contains(i))
        .map(|(_, n)| n)
        .collect();
    let read: HashSet<&str> = nodes
        .iter()
        .flat_map(|n| n.inputs.iter())
        .chain(g.outputs.iter().map(|o| &o.name))
        .map(|s| s.as_str())
        .collect();
    let dropped: HashSet<String> = replaced
        .into_iter()
        .filter(|n| !read.contains(n.as_str()))
        .collect();
    initializers.retain(|(n, _)| !dropped.contains(n));
    // Older models list initializers among the inputs too; one no node reads goes from both.
    let mut inputs = g.inputs.clone();
    inputs.retain(|v| !dropped.contains(&v.name) || g.initializer(&v.name).is_none());
    Some(Graph {
        nodes,
        initializers,
        inputs,
        ..g.clone()
    })
}

fn is_default(n: &Node, op: &str) -> bool {
    n.op_type == op && (n.domain.is_empty() || n.domain == "ai.onnx")
}

/// Whether a BatchNormalization normalises with its stored statistics and has one output.
fn inference(bn: &Node, opset: i64) -> bool {
    let training = opset >= 14 && bn.int_or("training_mode", 0).map_or(true, |t| t != 0);
    !training && bn.outputs.iter().skip(1).all(|o| o.is_empty()) && !bn.outputs[0].is_empty()
}

/// An f32 constant's values and shape.
type Constant<'g> = (&'g [f32], &'g [usize]);

/// The folded weight and bias, when every operand is a constant that fits.
fn fold<'g>(
    conv: &Node,
    bn: &Node,
    constant: &dyn Fn(Option<&str>) -> Option<Constant<'g>>,
) -> Option<(Tensor, Tensor)> {
    let (w, wshape) = constant(conv.input(1))?;
    let m = *wshape.first()?;
    if m == 0 || w.len() % m != 0 || wshape.len() < 3 {
        return None;
    }
    let bias = match conv.input(2) {
        Some(name) => Some(constant(Some(name))?.0),
        None => None,
    };
    let param = |i: usize| {
        constant(bn.input(i))
            .map(|(v, _)| v)
            .filter(|v| v.len() == m)
    };
    let (scale, beta, mean, var) = (param(1)?, param(2)?, param(3)?, param(4)?);
    if bias.is_some_and(|b| b.len() != m) {
        return None;
    }
    let eps = bn.float_or("epsilon", 1e-5).ok()? as f64;
    let s: Vec<f64> = (0..m)
        .map(|i| scale[i] as f64 / (var[i] as f64 + eps).sqrt())
        .collect();
    let per = w.len() / m;
    let folded_w: Vec<f32> = w
        .iter()
        .enumerate()
        .map(|(i, &v)| (v as f64 * s[i / per]) as f32)
        .collect();
    let folded_b: Vec<f32> = (0..m)
        .map(|i| {
            let b = bias.map_or(0.0, |b| b[i] as f64);
            ((b - mean[i] as f64) * s[i] + beta[i] as f64) as f32
        })
        .collect();
    Some((
        Tensor::new(wshape.to_vec(), Data::F32(folded_w)).ok()?,
        Tensor::new(vec![m], Data::F32(folded_b)).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kuaxin_core::graph::{Dim, ValueInfo, ValueType};
    use kuaxin_core::DType;

    fn node(op: &str, ins: &[&str], out: &str) -> Node {
        Node {
            name: out.into(),
            op_type: op.into(),
            domain: String::new(),
            inputs: ins.iter().map(|s| s.to_string()).collect(),
            outputs: vec![out.into()],
            attrs: Default::default(),
        }
    }

    fn vi(name: &str, shape: &[usize]) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            ty: ValueType::Tensor {
                dtype: DType::F32,
                shape: Some(shape.iter().map(|&d| Dim::Known(d)).collect()),
            },
        }
    }

    fn f32s(shape: &[usize], v: Vec<f32>) -> Arc<Tensor> {
        Arc::new(Tensor::new(shape.to_vec(), Data::F32(v)).unwrap())
    }

    /// x -> Conv(W [2, 1, 1, 1], B) -> BatchNormalization -> Relu, every operand a constant;
    /// `also_read` makes Relu read the convolution's output too.
    fn graph(also_read: bool) -> Graph {
        Graph {
            name: "g".into(),
            nodes: vec![
                node("Conv", &["x", "W", "B"], "c"),
                node("BatchNormalization", &["c", "s", "beta", "mu", "var"], "n"),
                if also_read {
                    node("Add", &["n", "c"], "y")
                } else {
                    node("Relu", &["n"], "y")
                },
            ],
            inputs: vec![vi("x", &[1, 1, 2, 2]), vi("s", &[2])],
            outputs: vec![vi("y", &[1, 2, 2, 2])],
            initializers: vec![
                ("W".into(), f32s(&[2, 1, 1, 1], vec![2.0, -3.0])),
                ("B".into(), f32s(&[2], vec![0.5, 1.0])),
                ("s".into(), f32s(&[2], vec![1.5, 0.25])),
                ("beta".into(), f32s(&[2], vec![0.1, -0.2])),
                ("mu".into(), f32s(&[2], vec![0.3, 0.4])),
                ("var".into(), f32s(&[2], vec![3.0, 15.0])),
            ],
            value_info: vec![],
        }
    }

    #[test]
    fn a_batchnorm_after_a_convolution_becomes_its_weight_and_bias() {
        let g = graph(false);
        let f = fold_batch_norms(&g, 17, &HashSet::new()).expect("folds");
        assert!(f.nodes.iter().all(|n| n.op_type != "BatchNormalization"));
        let conv = &f.nodes[0];
        assert_eq!(
            conv.outputs,
            vec!["n".to_string()],
            "the conv now makes the BN's output"
        );
        let t = |i: usize| match &f.initializer(&conv.inputs[i]).unwrap().data {
            Data::F32(v) => v.clone(),
            _ => unreachable!(),
        };
        // s / sqrt(var + 1e-5) per channel; W' = W s', B' = (B - mu) s' + beta.
        // The stored f32 values, widened.
        let d = |v: f32| v as f64;
        let eps = d(1e-5);
        let k = [
            d(1.5) / (d(3.0) + eps).sqrt(),
            d(0.25) / (d(15.0) + eps).sqrt(),
        ];
        let want_w = [(d(2.0) * k[0]) as f32, (d(-3.0) * k[1]) as f32];
        let want_b = [
            ((d(0.5) - d(0.3)) * k[0] + d(0.1)) as f32,
            ((d(1.0) - d(0.4)) * k[1] + d(-0.2)) as f32,
        ];
        assert_eq!(t(1), want_w);
        assert_eq!(t(2), want_b);
        // The replaced constants no node reads are gone, from the inputs too ("s" was listed).
        for gone in ["W", "B", "s", "beta", "mu", "var"] {
            assert!(f.initializer(gone).is_none(), "{gone}");
        }
        assert_eq!(f.inputs.len(), 1);
    }

    #[test]
    fn nothing_folds_when_the_conv_output_is_read_twice_or_an_operand_is_overridden() {
        assert!(fold_batch_norms(&graph(true), 17, &HashSet::new()).is_none());
        let overridden: HashSet<&str> = ["s"].into();
        assert!(fold_batch_norms(&graph(false), 17, &overridden).is_none());
        let mut training = graph(false);
        training.nodes[1]
            .attrs
            .insert("training_mode".into(), Attr::Int(1));
        assert!(fold_batch_norms(&training, 17, &HashSet::new()).is_none());
        // Before opset 14 the attribute does not exist: the BN normalises with its statistics.
        assert!(fold_batch_norms(&training, 9, &HashSet::new()).is_some());
        let mut wrong = graph(false);
        wrong.initializers[2] = ("s".into(), f32s(&[3], vec![1.0; 3]));
        assert!(fold_batch_norms(&wrong, 17, &HashSet::new()).is_none());
    }
}
